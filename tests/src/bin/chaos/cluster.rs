//! A three-member etcd cluster on loopback whose members the nemesis can
//! SIGKILL and restart (same ports, same data dir on tmpfs) and SIGSTOP/SIGCONT.
//!
//! The harness's `Etcd` cannot restart a member, so this is its own small
//! launcher (same flags as the harness, same tmpfs data dirs).

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// One member.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    paused: bool,
}

/// The cluster. Dropping it SIGKILLs every member and removes the data.
pub struct Cluster {
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    dir: TempDir,
}

/// Sends `signal` (e.g. `STOP`) to `pid` through kill(1): the workspace forbids
/// `unsafe`, and std only sends SIGKILL.
pub fn signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("address").port())
        .collect()
}

impl Cluster {
    /// Starts `n` members and waits until all are healthy.
    pub async fn start(n: usize) -> Result<Cluster, String> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("distlock-chaos-");
        let dir = builder
            .tempdir_in("/dev/shm")
            .or_else(|_| builder.tempdir())
            .map_err(|e| format!("temp dir: {e}"))?;
        let ports = free_ports(2 * n);
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[i],
                peer_port: ports[n + i],
                child: None,
                paused: false,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            members,
            initial_cluster,
            token: format!("chaos-{}", std::process::id()),
            dir,
        };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for i in 0..n {
            while !cluster.healthy(i).await {
                if Instant::now() > deadline {
                    return Err(format!(
                        "member {i} not healthy after 30 s: {}",
                        cluster.log_tail(i)
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let bin = std::env::var("DISTLOCK_ETCD_BIN").unwrap_or_else(|_| "etcd".to_owned());
        let m = &self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let log: PathBuf = self.dir.path().join(format!("{}.log", m.name));
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("log: {e}"))?;
        let child = Command::new(&bin)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("{}.etcd", m.name)))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {bin:?}: {e} (DISTLOCK_ETCD_BIN overrides)"))?;
        self.members[i].child = Some(child);
        self.members[i].paused = false;
        Ok(())
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    /// All client URLs.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Whether member `i` runs (killed members don't; paused ones do).
    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.members[i].paused = false;
    }

    /// Starts member `i` again on its ports and data dir.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        if self.members[i].child.is_some() {
            return Ok(());
        }
        self.spawn(i)
    }

    /// SIGSTOPs (`true`) or SIGCONTs member `i`.
    pub fn pause(&mut self, i: usize, on: bool) {
        if let Some(child) = &self.members[i].child {
            signal(child.id(), if on { "STOP" } else { "CONT" });
            self.members[i].paused = on;
        }
    }

    /// Whether member `i` answers `/health` with true within 1 s.
    pub async fn healthy(&self, i: usize) -> bool {
        http(&self.endpoint(i), "GET", "/health", "")
            .await
            .is_some_and(|b| b.contains(r#""health":"true""#))
    }

    /// The member that a running, unpaused member names as its leader and that
    /// names itself so, if any answers within 1 s.
    pub async fn leader(&self) -> Option<usize> {
        let mut ids = Vec::new();
        for i in 0..self.len() {
            if !self.is_running(i) || self.members[i].paused {
                ids.push(None);
                continue;
            }
            let body = http(&self.endpoint(i), "POST", "/v3/maintenance/status", "{}").await;
            ids.push(body.map(|b| (field(&b, "member_id"), field(&b, "leader"))));
        }
        ids.iter().enumerate().find_map(|(i, s)| match s {
            Some((Some(me), Some(leader))) if me == leader => Some(i),
            _ => None,
        })
    }

    fn log_tail(&self, i: usize) -> String {
        let path = self
            .dir
            .path()
            .join(format!("{}.log", self.members[i].name));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn field(json: &str, key: &str) -> Option<String> {
    let pattern = format!("\"{key}\":\"");
    let start = json.find(&pattern)? + pattern.len();
    let len = json[start..].find('"')?;
    Some(json[start..start + len].to_owned())
}

/// One HTTP/1.1 request with a 1 s timeout; the body if the status is 200.
async fn http(endpoint: &str, method: &str, path: &str, body: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = endpoint.strip_prefix("http://")?.to_owned();
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&authority).await.ok()?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let response = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = response.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
    };
    tokio::time::timeout(Duration::from_secs(1), exchange)
        .await
        .ok()
        .flatten()
}
