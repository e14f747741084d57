//! etcd serving clients over TLS, with certificates made at test time
//! (`rcgen`): server authentication only, and with client certificates
//! required (`--client-cert-auth`). Locks hand over (which needs the watch
//! stream) and list over TLS; a client that cannot prove what etcd asks for
//! gets a typed error in bounded time.

mod support;

use std::path::Path;
use std::time::Duration;

use distlock::{ErrorCode, EtcdConfig, LockManager, LockOptions};
use distlock_tests::{Etcd, EtcdSettings, ServerTls};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use support::init_tracing;
use tempfile::TempDir;
use tokio::time::timeout;

/// Bound on every call: a TLS failure must be an error, not a hang.
const CALL_BOUND: Duration = Duration::from_secs(20);

/// A CA, a server certificate for 127.0.0.1/localhost signed by it, and a
/// client certificate signed by it, as PEM text and as files for etcd.
struct Pki {
    dir: TempDir,
    ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

impl Pki {
    fn generate() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "distlock test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();

        let leaf = |names: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            "etcd",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert_pem, client_key_pem) = leaf(
            vec!["distlock-client".into()],
            "distlock-client",
            ExtendedKeyUsagePurpose::ClientAuth,
        );

        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", &ca_cert.pem());
        write("server.pem", &server_cert);
        write("server-key.pem", &server_key);
        Pki {
            ca_pem: ca_cert.pem(),
            client_cert_pem,
            client_key_pem,
            dir,
        }
    }

    fn file(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn server(&self, require_client_cert: bool) -> ServerTls {
        ServerTls {
            cert: self.file("server.pem"),
            key: self.file("server-key.pem"),
            client_ca: require_client_cert.then(|| self.file("ca.pem")),
        }
    }
}

async fn start_tls_etcd(pki: &Pki, require_client_cert: bool) -> Etcd {
    assert!(Path::new(&pki.file("ca.pem")).exists());
    let etcd = Etcd::start_with(EtcdSettings::default().tls(pki.server(require_client_cert))).await;
    assert!(etcd.endpoints()[0].starts_with("https://127.0.0.1:"));
    etcd
}

fn config(etcd: &Etcd) -> EtcdConfig {
    EtcdConfig::new(etcd.endpoints())
        .dial_timeout(Duration::from_secs(3))
        .request_timeout(Duration::from_secs(3))
}

async fn connect(config: EtcdConfig, ns: &str) -> distlock::Result<LockManager> {
    timeout(CALL_BOUND, LockManager::connect(config, ns))
        .await
        .expect("connect hung")
}

/// Two managers hand a lock over and list it: unary requests, keep-alives
/// and the watch stream all run over TLS.
async fn hand_over(a: &LockManager, b: &LockManager) {
    let held = a
        .new_lock("tls-job", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let waiter = {
        let lock = b.new_lock("tls-job", LockOptions::default()).unwrap();
        tokio::spawn(async move { lock.lock_timeout(Duration::from_secs(15)).await })
    };
    // Wait until B is queued behind A.
    let deadline = tokio::time::Instant::now() + CALL_BOUND;
    loop {
        let info = a.lock_info("tls-job").await.unwrap().expect("held");
        if info.waiters == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "B never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listed = a.list_locks("").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].fencing_token, held.fencing_token());
    held.renew().await.unwrap();
    held.unlock().await.unwrap();
    let got = timeout(CALL_BOUND, waiter)
        .await
        .expect("B never heard of the release")
        .unwrap()
        .unwrap();
    assert!(got.is_held());
    got.unlock().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_over_tls_with_the_servers_ca() {
    init_tracing();
    let pki = Pki::generate();
    let etcd = start_tls_etcd(&pki, false).await;
    let ns = etcd.namespace();

    let a = connect(config(&etcd).ca_certificate(&pki.ca_pem), &ns)
        .await
        .unwrap();
    let b = connect(config(&etcd).ca_certificate(&pki.ca_pem), &ns)
        .await
        .unwrap();
    hand_over(&a, &b).await;

    // Without our CA the server's certificate is not trusted.
    let err = connect(config(&etcd), &ns)
        .await
        .map(drop)
        .expect_err("untrusted server accepted");
    assert_eq!(err.code(), ErrorCode::Backend, "{err:?}");
    // Plain HTTP to a TLS port fails too (and does not hang).
    let plain = etcd.endpoints()[0].replace("https://", "http://");
    let err = connect(
        EtcdConfig::new([plain])
            .dial_timeout(Duration::from_secs(2))
            .request_timeout(Duration::from_secs(2)),
        &ns,
    )
    .await
    .map(drop)
    .expect_err("plain HTTP to a TLS port succeeded");
    assert_eq!(err.code(), ErrorCode::Backend, "{err:?}");
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_over_tls_with_a_client_certificate() {
    init_tracing();
    let pki = Pki::generate();
    let etcd = start_tls_etcd(&pki, true).await;
    let ns = etcd.namespace();
    let with_identity = || {
        config(&etcd)
            .ca_certificate(&pki.ca_pem)
            .client_identity(&pki.client_cert_pem, &pki.client_key_pem)
    };

    let a = connect(with_identity(), &ns).await.unwrap();
    let b = connect(with_identity(), &ns).await.unwrap();
    hand_over(&a, &b).await;

    // etcd requires a client certificate: without one, no connection.
    let err = connect(config(&etcd).ca_certificate(&pki.ca_pem), &ns)
        .await
        .map(drop)
        .expect_err("connected without a client certificate");
    assert_eq!(err.code(), ErrorCode::Backend, "{err:?}");
    a.close().await;
    b.close().await;
}
