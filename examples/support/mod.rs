//! Where the examples' etcd is: the cluster named by `DISTLOCK_ENDPOINTS`
//! (comma-separated client URLs, e.g. `http://127.0.0.1:2379`), or else a
//! throwaway single-member etcd started for this run — from the `etcd` on
//! `PATH`, on free loopback ports, with its data in a temporary directory —
//! and stopped and removed when the returned [`Etcd`] is dropped.
//!
//! In your service, the endpoints come from your configuration:
//! `EtcdConfig::new(endpoints)`. This module only saves you starting etcd by
//! hand to run an example.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The environment variable naming an etcd to use instead of starting one.
const ENDPOINTS_ENV: &str = "DISTLOCK_ENDPOINTS";

/// How long a throwaway etcd gets to become healthy.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// An etcd for an example: `DISTLOCK_ENDPOINTS`, or one started here and
/// stopped when this is dropped.
pub struct Etcd {
    endpoints: Vec<String>,
    /// The throwaway server and its data directory (removed after it stopped).
    server: Option<(Child, tempfile::TempDir)>,
}

impl Etcd {
    /// The client URLs, for `EtcdConfig::new`.
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints.clone()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some((child, _dir)) = &mut self.server {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The etcd of `DISTLOCK_ENDPOINTS`, or a throwaway one. Fails when neither
/// is available (no `etcd` on `PATH`, or it does not come up).
pub async fn etcd() -> Result<Etcd, Error> {
    if let Ok(list) = std::env::var(ENDPOINTS_ENV) {
        let endpoints: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect();
        if !endpoints.is_empty() {
            return Ok(Etcd {
                endpoints,
                server: None,
            });
        }
    }
    // A port another process took between our probe and etcd's bind makes
    // etcd exit at once: try again on new ports.
    let mut last = None;
    for _ in 0..3 {
        match start().await {
            Ok(etcd) => return Ok(etcd),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("three attempts"))
}

/// Starts one etcd member on free loopback ports and waits until it is healthy.
async fn start() -> Result<Etcd, Error> {
    // tmpfs when there is one: etcd fsyncs every write.
    let shm = Path::new("/dev/shm");
    let parent = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::Builder::new()
        .prefix("distlock-example-")
        .tempdir_in(parent)?;
    let (client, peer) = {
        let a = TcpListener::bind("127.0.0.1:0")?;
        let b = TcpListener::bind("127.0.0.1:0")?;
        (a.local_addr()?.port(), b.local_addr()?.port())
    };
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let log = std::fs::File::create(dir.path().join("etcd.log"))?;
    let child = Command::new("etcd")
        .args(["--name", "example", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .arg(format!("--initial-cluster=example={peer_url}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run `etcd` ({e}): install etcd, or set {ENDPOINTS_ENV} to a running one"
            )
        })?;
    let mut etcd = Etcd {
        endpoints: vec![client_url],
        server: Some((child, dir)),
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if healthy(client).await {
            return Ok(etcd);
        }
        let (child, dir) = etcd.server.as_mut().expect("started here");
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(dir.path().join("etcd.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            return Err(format!("etcd exited ({status}): {}", tail.join(" | ")).into());
        }
        if Instant::now() > deadline {
            return Err(format!("etcd was not healthy within {READY_TIMEOUT:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether etcd on `port` answers `GET /health` with `"health":"true"`.
async fn healthy(port: u16) -> bool {
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        Ok::<_, std::io::Error>(answer.contains(r#""health":"true""#))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), ask).await,
        Ok(Ok(true))
    )
}
