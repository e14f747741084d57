//! Starting, inspecting and stopping etcd members for tests.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::unique_namespace;

/// Comma-separated client URLs of an external etcd to use instead of starting one.
pub(crate) const ENDPOINTS_ENV: &str = "DISTLOCK_ETCD_ENDPOINTS";
/// When set, etcd's stdout/stderr go to the test's own instead of a log file.
pub(crate) const LOG_ENV: &str = "DISTLOCK_ETCD_LOG";
/// Overrides the `etcd` binary (default: `etcd` from `PATH`).
pub(crate) const ETCD_BIN_ENV: &str = "DISTLOCK_ETCD_BIN";

/// How long members get to become healthy.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`Etcd::leader`] waits for an agreed leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long members get to exit after SIGTERM before they are SIGKILLed.
const STOP_GRACE: Duration = Duration::from_millis(500);
/// Timeout of one raw HTTP request to a member.
const HTTP_TIMEOUT: Duration = Duration::from_secs(1);
/// Delay between two polls (health, leader, exit).
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How often a start is retried when a member exits early (e.g. its port was taken).
const START_ATTEMPTS: usize = 3;
/// Member-list requests tried before a healthy port counts as not ours.
const IDENTITY_TRIES: usize = 10;
/// How many lines of a member's log go into a panic message.
const LOG_TAIL_LINES: usize = 20;

/// How to start a member beyond the defaults: extra flags, client TLS.
///
/// ```no_run
/// # async fn f() {
/// use distlock_tests::{Etcd, EtcdSettings};
/// let etcd = Etcd::start_with(EtcdSettings::default().arg("--auth-token-ttl").arg("2")).await;
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct EtcdSettings {
    args: Vec<String>,
    tls: Option<ServerTls>,
}

/// The certificate files of a member serving client TLS.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// The server certificate (PEM), for `--cert-file`.
    pub cert: PathBuf,
    /// Its private key (PEM), for `--key-file`.
    pub key: PathBuf,
    /// With `Some(ca)`, clients must present a certificate signed by `ca`
    /// (`--client-cert-auth --trusted-ca-file ca`).
    pub client_ca: Option<PathBuf>,
}

impl EtcdSettings {
    /// Adds one command-line argument for every member.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Serves clients over TLS (`https://` endpoints) with these files.
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// A running etcd: one member or a cluster, started by the harness (or an external one).
///
/// Dropping it stops every member it started (SIGTERM, a short grace period, then
/// SIGKILL), reaps them and removes their data directories. Drop also runs when a test
/// panics, so no etcd process outlives the test.
pub struct Etcd {
    members: Vec<Member>,
    managed: bool,
    /// Holds the members' data dirs and logs. Declared last so that it is removed only
    /// after [`Drop::drop`] has reaped the processes.
    _dir: Option<TempDir>,
}

/// One member of an [`Etcd`].
struct Member {
    /// Client URL, `http://127.0.0.1:PORT` (`https://` with TLS).
    endpoint: String,
    /// Plain-HTTP URL serving `/health` (the client URL without TLS, a
    /// metrics URL with it).
    health: String,
    /// The process; `None` for an external member or once the member is dead.
    child: Option<Child>,
    /// File holding the member's stderr; `None` when inherited or external.
    log: Option<PathBuf>,
    /// Peer URL it was started with; empty for an external member.
    peer: String,
}

impl Member {
    /// If our process (member `i`) has exited: reaps it and says how (`when`
    /// it exited, its status, the tail of its log).
    fn exited(&mut self, i: usize, when: &str) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(format!(
            "member {i} ({}) exited {when} with {status}{}",
            self.endpoint,
            log_tail(self.log.as_deref())
        ))
    }
}

/// Raft timing flags, in milliseconds.
#[derive(Clone, Copy)]
struct Timing {
    heartbeat_ms: u32,
    election_ms: u32,
}

/// Fast elections for a lone member.
const SINGLE_MEMBER_TIMING: Timing = Timing {
    heartbeat_ms: 25,
    election_ms: 250,
};
/// Slower for clusters, whose members share the test machine's few cores.
const CLUSTER_TIMING: Timing = Timing {
    heartbeat_ms: 50,
    election_ms: 500,
};

/// Why a start attempt failed.
enum StartError {
    /// A member exited before the cluster was healthy: worth retrying on new ports.
    Exited(String),
    /// The members stayed unhealthy for [`READY_TIMEOUT`].
    Timeout(String),
}

impl Etcd {
    /// One member on free loopback ports, with its data dir in a tempdir under `/dev/shm`
    /// (or the system temp dir when `/dev/shm` is missing). Returns once it is healthy.
    ///
    /// If the environment variable `DISTLOCK_ETCD_ENDPOINTS` is set (comma separated
    /// client URLs, e.g. `http://127.0.0.1:2379`), nothing is started and those
    /// endpoints are used instead (see [`Etcd::is_managed`]).
    pub async fn start() -> Etcd {
        if let Some(endpoints) = external_endpoints() {
            let mut etcd = Etcd {
                members: endpoints
                    .into_iter()
                    .map(|endpoint| Member {
                        health: endpoint.clone(),
                        endpoint,
                        child: None,
                        log: None,
                        peer: String::new(),
                    })
                    .collect(),
                managed: false,
                _dir: None,
            };
            if let Err(StartError::Exited(msg) | StartError::Timeout(msg)) =
                etcd.wait_healthy().await
            {
                panic!("external etcd from {ENDPOINTS_ENV} is not healthy: {msg}");
            }
            return etcd;
        }
        Etcd::launch(1, SINGLE_MEMBER_TIMING, &EtcdSettings::default()).await
    }

    /// One member like [`Etcd::start`], started with `settings` (extra flags,
    /// client TLS). Always started by the harness: `DISTLOCK_ETCD_ENDPOINTS`
    /// is ignored, since the test depends on how etcd runs.
    pub async fn start_with(settings: EtcdSettings) -> Etcd {
        Etcd::launch(1, SINGLE_MEMBER_TIMING, &settings).await
    }

    /// The sum of a Prometheus counter of member 0 over the series whose
    /// labels contain every one of `labels` (e.g. `grpc_method="Watch"`),
    /// read from its `/metrics` endpoint; 0 when there is no such series.
    ///
    /// # Panics
    /// If the member does not answer.
    pub async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let body = http10_get(&self.member(0).health, "/metrics")
            .await
            .expect("etcd answers GET /metrics");
        body.lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter(|line| labels.iter().all(|l| line.contains(l)))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The server version of member 0 (e.g. `3.4.23`), read from its
    /// `/version` endpoint.
    ///
    /// # Panics
    /// If the member does not answer.
    pub async fn version(&self) -> String {
        let body = http_request(&self.member(0).health, "GET", "/version", "")
            .await
            .expect("etcd answers GET /version");
        json_string(&body, "etcdserver")
            .unwrap_or_else(|| panic!("no etcdserver version in {body}"))
            .to_owned()
    }

    /// A cluster of `n` members on loopback, each with its own client and peer port.
    /// Returns once every member is healthy (which implies an elected leader).
    ///
    /// Always started by the harness: `DISTLOCK_ETCD_ENDPOINTS` is ignored.
    pub async fn start_cluster(n: usize) -> Etcd {
        assert!(n > 0, "an etcd cluster needs at least one member");
        Etcd::launch(n, CLUSTER_TIMING, &EtcdSettings::default()).await
    }

    /// Client URLs (`http://127.0.0.1:PORT`) of all members, alive or not.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.endpoint.clone()).collect()
    }

    /// Client URLs of the members that have not been killed (all of them for an external etcd).
    pub fn live_endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| self.is_live(m))
            .map(|m| m.endpoint.clone())
            .collect()
    }

    /// Client URL of member `i`.
    ///
    /// # Panics
    /// If there is no member `i`.
    pub fn member_endpoint(&self, i: usize) -> String {
        self.member(i).endpoint.clone()
    }

    /// A fresh key namespace, unique to this call (see [`unique_namespace`]), so that
    /// tests sharing one etcd don't see each other's keys.
    pub fn namespace(&self) -> String {
        unique_namespace("t")
    }

    /// Kills member `i` with SIGKILL (no grace period) and reaps it. Killing a dead
    /// member does nothing.
    ///
    /// # Panics
    /// If there is no member `i`, or if this etcd is external.
    pub fn kill_member(&mut self, i: usize) {
        assert!(
            self.managed,
            "cannot kill a member of an external etcd ({ENDPOINTS_ENV})"
        );
        self.member(i); // bounds check with a clear message
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Index of the current leader among the live members, waiting up to 10 s for one.
    ///
    /// A member counts as leader when it reports itself as leader and a majority of
    /// all members (dead ones count as disagreeing) report it as their leader too, so
    /// a stale answer from a member that has not noticed an election is not returned.
    /// Status is read over etcd's HTTP gateway (`POST /v3/maintenance/status`).
    ///
    /// # Panics
    /// If no leader is agreed on in time.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + LEADER_TIMEOUT;
        loop {
            let mut statuses = Vec::new();
            for (i, member) in self.members.iter().enumerate() {
                if !self.is_live(member) {
                    continue;
                }
                let body =
                    http_request(&member.endpoint, "POST", "/v3/maintenance/status", "{}").await;
                if let Some(body) = body {
                    let member_id = json_string(&body, "member_id").map(str::to_owned);
                    let leader = json_string(&body, "leader").map(str::to_owned);
                    statuses.push(Status {
                        index: i,
                        member_id,
                        leader,
                    });
                }
            }
            if let Some(i) = agreed_leader(&statuses, self.members.len()) {
                return i;
            }
            if Instant::now() >= deadline {
                panic!(
                    "no etcd leader agreed on among {:?} after {LEADER_TIMEOUT:?}; statuses: {statuses:?}",
                    self.live_endpoints()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Whether the harness started this etcd (false when `DISTLOCK_ETCD_ENDPOINTS` is used).
    pub fn is_managed(&self) -> bool {
        self.managed
    }

    fn member(&self, i: usize) -> &Member {
        self.members.get(i).unwrap_or_else(|| {
            panic!(
                "no etcd member {i}: there are {} members",
                self.members.len()
            )
        })
    }

    fn is_live(&self, member: &Member) -> bool {
        !self.managed || member.child.is_some()
    }

    /// Starts `n` members and waits until they are healthy, retrying on fresh ports
    /// when a member exits early.
    async fn launch(n: usize, timing: Timing, settings: &EtcdSettings) -> Etcd {
        let mut last_failure = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let mut etcd = Etcd::spawn_members(n, timing, settings);
            match etcd.wait_healthy().await {
                Ok(()) => return etcd,
                Err(StartError::Exited(msg)) => {
                    tracing::warn!(attempt, "etcd start failed, retrying on new ports: {msg}");
                    last_failure = msg;
                }
                Err(StartError::Timeout(msg)) => panic!("etcd did not become healthy: {msg}"),
            }
        }
        panic!("etcd failed to start {START_ATTEMPTS} times; last failure: {last_failure}")
    }

    /// Spawns `n` members forming one new cluster, without waiting for them.
    fn spawn_members(n: usize, timing: Timing, settings: &EtcdSettings) -> Etcd {
        assert!(
            settings.tls.is_none() || n == 1,
            "client TLS is supported for a single member only"
        );
        let dir = temp_root();
        let dir_path = dir.path().to_owned();
        let ports = free_ports(3 * n);
        let (client_ports, rest) = ports.split_at(n);
        let (peer_ports, health_ports) = rest.split_at(n);
        let name = |i: usize| format!("m{i}");
        let initial_cluster = (0..n)
            .map(|i| format!("{}={}", name(i), loopback_url(peer_ports[i])))
            .collect::<Vec<_>>()
            .join(",");
        let token = unique_namespace("distlock-etcd")
            .trim_start_matches('/')
            .to_owned();
        let inherit_output = std::env::var_os(LOG_ENV).is_some();
        let bin = etcd_bin();

        // Built before spawning, so that a failed spawn still stops the earlier members.
        let mut etcd = Etcd {
            members: Vec::with_capacity(n),
            managed: true,
            _dir: Some(dir),
        };
        for i in 0..n {
            let peer_url = loopback_url(peer_ports[i]);
            let mut cmd = Command::new(&bin);
            let (client_url, health) = match &settings.tls {
                None => (loopback_url(client_ports[i]), loopback_url(client_ports[i])),
                Some(tls) => {
                    let health = loopback_url(health_ports[i]);
                    cmd.arg("--cert-file")
                        .arg(&tls.cert)
                        .arg("--key-file")
                        .arg(&tls.key)
                        .args(["--listen-metrics-urls", &health]);
                    if let Some(ca) = &tls.client_ca {
                        cmd.arg("--client-cert-auth")
                            .arg("--trusted-ca-file")
                            .arg(ca);
                    }
                    (format!("https://127.0.0.1:{}", client_ports[i]), health)
                }
            };
            cmd.arg("--name")
                .arg(name(i))
                .arg("--data-dir")
                .arg(dir_path.join(format!("{}.etcd", name(i))))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial_cluster])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &token])
                .args(["--heartbeat-interval", &timing.heartbeat_ms.to_string()])
                .args(["--election-timeout", &timing.election_ms.to_string()])
                .args(["--logger", "zap", "--log-level", "error"])
                .args(&settings.args)
                .stdin(Stdio::null());
            let log = if inherit_output {
                None
            } else {
                let path = dir_path.join(format!("{}.log", name(i)));
                let file = File::create(&path)
                    .unwrap_or_else(|e| panic!("cannot create etcd log {}: {e}", path.display()));
                cmd.stdout(Stdio::null()).stderr(file);
                Some(path)
            };
            let child = cmd.spawn().unwrap_or_else(|e| {
                panic!("cannot run {bin:?}: {e} (is etcd installed? {ETCD_BIN_ENV} overrides the path)")
            });
            etcd.members.push(Member {
                endpoint: client_url,
                health,
                child: Some(child),
                log,
                peer: peer_url,
            });
        }
        etcd
    }

    /// Each plain-HTTP member's port is served by the member we started: the
    /// member list it answers names that member's own peer URL, which only
    /// that process can be listening on. Else another test's etcd holds the
    /// port (our member may still be starting, or about to fail to bind it),
    /// and the start is retried on new ports.
    async fn answered_by_ours(&self) -> Result<(), StartError> {
        for (i, member) in self.members.iter().enumerate() {
            if member.peer.is_empty() || member.health != member.endpoint {
                continue; // external, or TLS (the client port is not plain HTTP)
            }
            let ours = format!("\"peerURLs\":[\"{}\"]", member.peer);
            let mut body = None;
            for _ in 0..IDENTITY_TRIES {
                body = http_request(&member.health, "POST", "/v3/cluster/member/list", "{}").await;
                if body.is_some() {
                    break;
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            match body {
                Some(list) if list.contains(&ours) => {}
                other => {
                    return Err(StartError::Exited(format!(
                        "member {i} ({}): its port is not served by the member started on \
                         peer URL {}; member list: {}",
                        member.endpoint,
                        member.peer,
                        other.as_deref().unwrap_or("(no answer)")
                    )))
                }
            }
        }
        Ok(())
    }

    /// Polls until every member answers `GET /health` with `"health":"true"`.
    async fn wait_healthy(&mut self) -> Result<(), StartError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut healthy = vec![false; self.members.len()];
        loop {
            for (i, member) in self.members.iter_mut().enumerate() {
                if let Some(exit) = member.exited(i, "early") {
                    return Err(StartError::Exited(exit));
                }
                if !healthy[i] {
                    healthy[i] = is_healthy(&member.health).await;
                }
            }
            if healthy.iter().all(|&h| h) {
                return self.answered_by_ours().await;
            }
            if Instant::now() >= deadline {
                let report: String = self
                    .members
                    .iter()
                    .zip(&healthy)
                    .enumerate()
                    .filter(|(_, (_, &h))| !h)
                    .map(|(i, (m, _))| {
                        format!(
                            "\nmember {i} ({}) not healthy{}",
                            m.endpoint,
                            log_tail(m.log.as_deref())
                        )
                    })
                    .collect();
                return Err(StartError::Timeout(format!(
                    "after {READY_TIMEOUT:?}:{report}"
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // A member that exited on its own (not by `kill_member`) explains a
        // test's failed requests: say so, with its log, before it is removed.
        for (i, member) in self.members.iter_mut().enumerate() {
            if let Some(exit) = member.exited(i, "on its own during the test") {
                eprintln!("etcd {exit}");
            }
        }
        let mut children: Vec<Child> = self
            .members
            .iter_mut()
            .filter_map(|m| m.child.take())
            .collect();
        if children.is_empty() {
            return;
        }
        // std can only send SIGKILL and `unsafe` (libc::kill) is forbidden, so SIGTERM
        // goes through kill(1). If that fails, the SIGKILL below still happens.
        let _ = Command::new("kill")
            .arg("-TERM")
            .args(children.iter().map(|c| c.id().to_string()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_GRACE;
        while !children.is_empty() && Instant::now() < deadline {
            // Keep the ones that have not exited (try_wait reaps the others).
            children.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
            std::thread::sleep(Duration::from_millis(10));
        }
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What one member said about itself and its leader.
#[derive(Debug)]
struct Status {
    index: usize,
    member_id: Option<String>,
    leader: Option<String>,
}

/// The index of the member that calls itself leader and is called leader by a majority
/// of `cluster_size` members.
fn agreed_leader(statuses: &[Status], cluster_size: usize) -> Option<usize> {
    let majority = cluster_size / 2 + 1;
    statuses.iter().find_map(|candidate| {
        let id = candidate.member_id.as_deref()?;
        if candidate.leader.as_deref() != Some(id) {
            return None;
        }
        let votes = statuses
            .iter()
            .filter(|s| s.leader.as_deref() == Some(id))
            .count();
        (votes >= majority).then_some(candidate.index)
    })
}

/// The endpoints from `DISTLOCK_ETCD_ENDPOINTS`, if set and not blank.
fn external_endpoints() -> Option<Vec<String>> {
    let value = std::env::var(ENDPOINTS_ENV).ok()?;
    let endpoints: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect();
    (!endpoints.is_empty()).then_some(endpoints)
}

fn etcd_bin() -> String {
    std::env::var(ETCD_BIN_ENV).unwrap_or_else(|_| "etcd".to_owned())
}

fn loopback_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// A temp dir under `/dev/shm` when possible (etcd fsyncs a lot), else the system one.
fn temp_root() -> TempDir {
    let mut builder = tempfile::Builder::new();
    builder.prefix("distlock-etcd-");
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = builder.tempdir_in(shm) {
            return dir;
        }
    }
    builder
        .tempdir()
        .expect("cannot create a temp dir for etcd")
}

/// `count` distinct free loopback ports. All listeners are held at once so the ports
/// differ; they are released before returning, so another process could grab one
/// (the caller retries when etcd then fails to bind).
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("cannot bind a loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("listener address").port())
        .collect()
}

/// The last lines of a member's log, formatted for a panic message.
fn log_tail(log: Option<&Path>) -> String {
    let Some(path) = log else {
        return String::new();
    };
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => return format!(" (cannot read its log {}: {e})", path.display()),
    };
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return " (its log is empty)".to_owned();
    }
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    format!("; last log lines:\n{}", tail.join("\n"))
}

/// Whether the member at `endpoint` answers `GET /health` with `"health":"true"`.
pub(crate) async fn is_healthy(endpoint: &str) -> bool {
    http_request(endpoint, "GET", "/health", "")
        .await
        .is_some_and(|body| body.contains(r#""health":"true""#))
}

/// One HTTP/1.1 request to an `http://host:port` endpoint, with a 1 s timeout.
/// Returns the response body if the status is 200.
async fn http_request(endpoint: &str, method: &str, path: &str, body: &str) -> Option<String> {
    let authority = endpoint.strip_prefix("http://")?.trim_end_matches('/');
    let exchange = async {
        let mut stream = TcpStream::connect(authority).await.ok()?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response.split_once("\r\n\r\n")?;
        let ok = head.starts_with("HTTP/1.1 200 ") || head.starts_with("HTTP/1.0 200 ");
        ok.then(|| body.to_owned())
    };
    tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
}

/// `GET path` over HTTP/1.0 (so the body is never chunked), with a 5 s
/// timeout; the body if the status is 200.
async fn http10_get(endpoint: &str, path: &str) -> Option<String> {
    let authority = endpoint.strip_prefix("http://")?.trim_end_matches('/');
    let exchange = async {
        let mut stream = TcpStream::connect(authority).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response.split_once("\r\n\r\n")?;
        head.contains(" 200 ").then(|| body.to_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// The value of the first `"key":"value"` string field in `json` (etcd's HTTP gateway
/// encodes 64-bit ids as strings). Good enough for the flat fields read here.
fn json_string<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!("\"{key}\":\"");
    let start = json.find(&pattern)? + pattern.len();
    let len = json[start..].find('"')?;
    Some(&json[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(index: usize, member_id: &str, leader: &str) -> Status {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Status {
            index,
            member_id: opt(member_id),
            leader: opt(leader),
        }
    }

    #[test]
    fn json_string_reads_gateway_fields() {
        let body = r#"{"header":{"cluster_id":"1","member_id":"42","revision":"1"},"leader":"42","raftTerm":"2"}"#;
        assert_eq!(json_string(body, "member_id"), Some("42"));
        assert_eq!(json_string(body, "leader"), Some("42"));
        assert_eq!(json_string(body, "missing"), None);
    }

    #[test]
    fn leader_needs_self_claim_and_majority() {
        // Only one of three agrees: no majority yet.
        assert_eq!(
            agreed_leader(&[status(0, "a", "a"), status(1, "b", "")], 3),
            None
        );
        // Two of three agree.
        assert_eq!(
            agreed_leader(&[status(0, "a", "b"), status(1, "b", "b")], 3),
            Some(1)
        );
        // Followers still pointing at a dead leader "c" that is not among the statuses.
        assert_eq!(
            agreed_leader(&[status(0, "a", "c"), status(1, "b", "c")], 3),
            None
        );
        // A single member.
        assert_eq!(agreed_leader(&[status(0, "a", "a")], 1), Some(0));
    }

    /// A member whose client port another etcd answers (the race between
    /// `free_ports` and the bind) is told apart from ours by its peer URL.
    #[tokio::test]
    async fn a_port_answered_by_another_etcd_is_not_ours() {
        if external_endpoints().is_some() {
            return;
        }
        let other = Etcd::start().await;
        assert!(other.answered_by_ours().await.is_ok());
        let endpoint = other.member_endpoint(0);
        let impostor = Etcd {
            members: vec![Member {
                health: endpoint.clone(),
                endpoint,
                child: None,
                log: None,
                peer: loopback_url(free_ports(1)[0]),
            }],
            managed: true,
            _dir: None,
        };
        match impostor.answered_by_ours().await {
            Err(StartError::Exited(msg)) => assert!(msg.contains("not served by"), "{msg}"),
            Err(StartError::Timeout(msg)) => panic!("not an exit: {msg}"),
            Ok(()) => panic!("another etcd's port passed as ours"),
        }
    }

    #[tokio::test]
    async fn drop_stops_members_and_removes_data() {
        if external_endpoints().is_some() {
            return;
        }
        let etcd = Etcd::start().await;
        let pid = etcd.members[0].child.as_ref().unwrap().id();
        let dir = etcd._dir.as_ref().unwrap().path().to_owned();
        let endpoint = etcd.member_endpoint(0);
        drop(etcd);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "etcd {pid} still exists"
        );
        assert!(!dir.exists(), "data dir {} not removed", dir.display());
        assert!(!is_healthy(&endpoint).await);
    }

    #[tokio::test]
    async fn panicking_test_still_stops_etcd() {
        if external_endpoints().is_some() {
            return;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let etcd = Etcd::start().await;
            let pid = etcd.members[0].child.as_ref().unwrap().id();
            tx.send(pid).unwrap();
            panic!("simulated test failure");
        });
        assert!(task.await.unwrap_err().is_panic());
        let pid = rx.await.unwrap();
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "etcd {pid} still exists"
        );
    }
}
