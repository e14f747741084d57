//! `--cacert`, `--cert`, `--key` against an etcd that requires TLS and client
//! certificates. Built with the `tls` feature only:
//! `cargo test -p distlock-cli --features tls --test tls`.
//!
//! The certificates are made with `openssl` for this test; etcd is started
//! here (the shared harness starts plain-text members only) and killed on drop.
#![cfg(feature = "tls")]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_distlock");

/// An etcd member serving TLS with client-certificate authentication.
struct TlsEtcd {
    child: Child,
    endpoint: String,
    dir: tempfile::TempDir,
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate.
fn make_certificates(dir: &Path) {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=distlock-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    );
    for who in ["server", "client"] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={who}"),
                "-keyout",
                &format!("{who}.key"),
                "-out",
                &format!("{who}.csr"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{who}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &format!("{who}.ext"),
                "-out",
                &format!("{who}.crt"),
            ],
        );
    }
}

impl TlsEtcd {
    fn start() -> TlsEtcd {
        let dir = tempfile::tempdir().unwrap();
        make_certificates(dir.path());
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("https://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let path = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
        let child = Command::new(std::env::var("DISTLOCK_ETCD_BIN").unwrap_or("etcd".into()))
            .args(["--name", "tls", "--data-dir", &path("data")])
            .args([
                "--listen-client-urls",
                &endpoint,
                "--advertise-client-urls",
                &endpoint,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("tls={peer_url}")])
            .args([
                "--cert-file",
                &path("server.crt"),
                "--key-file",
                &path("server.key"),
            ])
            .args(["--trusted-ca-file", &path("ca.crt"), "--client-cert-auth"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        TlsEtcd {
            child,
            endpoint,
            dir,
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn distlock(&self, tls: &[&str], args: &[&str]) -> Output {
        let mut cmd = assert_cmd::Command::new(BIN);
        for var in [
            "DISTLOCK_CACERT",
            "DISTLOCK_CERT",
            "DISTLOCK_KEY",
            "DISTLOCK_USER",
            "DISTLOCK_PASSWORD",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("DISTLOCK_ENDPOINTS", &self.endpoint)
            .env("DISTLOCK_NAMESPACE", "/tls")
            .args(["--timeout", "2s"])
            .args(tls)
            .args(args)
            .timeout(Duration::from_secs(20))
            .output()
            .unwrap()
    }
}

#[test]
fn tls_flags_reach_an_etcd_that_requires_client_certificates() {
    let etcd = TlsEtcd::start();
    let (ca, cert, key) = (
        etcd.file("ca.crt"),
        etcd.file("client.crt"),
        etcd.file("client.key"),
    );
    let tls = [
        "--cacert",
        ca.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = etcd.distlock(&tls, &["list", "--json"]);
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "etcd over TLS never answered: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let script = r#""$DISTLOCK_BIN" info held --json --cacert "$CA" --cert "$CERT" --key "$KEY""#;
    let out = {
        let mut cmd = assert_cmd::Command::new(BIN);
        cmd.env("DISTLOCK_ENDPOINTS", &etcd.endpoint)
            .env("DISTLOCK_NAMESPACE", "/tls")
            .env("DISTLOCK_BIN", BIN)
            .env("CA", &ca)
            .env("CERT", &cert)
            .env("KEY", &key)
            .args(tls)
            .args(["hold", "held", "--", "sh", "-c", script])
            .timeout(Duration::from_secs(20))
            .output()
            .unwrap()
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["name"], "held");

    // Without the client certificate, or without trusting the CA: refused, status 69.
    for partial in [&tls[..2], &tls[2..]] {
        let out = etcd.distlock(partial, &["list"]);
        assert_eq!(
            out.status.code(),
            Some(69),
            "{partial:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A certificate without its key is bad input.
    let out = etcd.distlock(&tls[..4], &["list"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
