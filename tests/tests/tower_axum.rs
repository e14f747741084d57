//! distlock-tower in an axum 0.8 `Router`, on real etcd, with real servers
//! and clients over loopback: two servers on two managers sharing one etcd
//! namespace, plus background jobs locking the same names directly.

mod support;
use support::http::{open, status_of};
use support::log::Captured;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use distlock::{EtcdConfig, LockManager, LockOptions};
use distlock_tests::{Etcd, TcpProxy};
use distlock_tower::{Header, HeldLock, LockLayer, PathSegment, Rejection, RejectionKind};
use http::{HeaderMap, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::{Barrier, Notify};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant, Sleep};

/// The header the layer takes the lock name from.
const KEY: &str = "x-key";

// ---------------------------------------------------------------- servers ---

/// What the handlers of every server in a test share: an overlap detector
/// per key, an event log, and rendezvous points.
#[derive(Default)]
struct Probe {
    state: Mutex<ProbeState>,
    /// Released when a `/hang` handler has started.
    hanging: Notify,
    barrier: Mutex<Option<Arc<Barrier>>>,
}

#[derive(Default)]
struct ProbeState {
    in_flight: HashMap<String, usize>,
    overlaps: Vec<String>,
    /// Fencing tokens per key, in the order the critical sections ran.
    tokens: HashMap<String, Vec<u64>>,
    events: Vec<String>,
}

impl Probe {
    fn state(&self) -> std::sync::MutexGuard<'_, ProbeState> {
        self.state.lock().unwrap()
    }

    /// Enters `key`'s critical section; a second one at once is an overlap.
    fn enter(&self, key: &str, token: Option<u64>) {
        let mut s = self.state();
        let n = s.in_flight.entry(key.to_owned()).or_default();
        *n += 1;
        if *n > 1 {
            s.overlaps.push(key.to_owned());
        }
        if let Some(token) = token {
            s.tokens.entry(key.to_owned()).or_default().push(token);
        }
    }

    fn leave(&self, key: &str) {
        *self.state().in_flight.get_mut(key).unwrap() -= 1;
    }

    fn event(&self, event: impl Into<String>) {
        self.state().events.push(event.into());
    }

    fn events(&self) -> Vec<String> {
        self.state().events.clone()
    }

    fn position(&self, event: &str) -> usize {
        let events = self.events();
        events
            .iter()
            .position(|e| e == event)
            .unwrap_or_else(|| panic!("no event {event:?} in {events:?}"))
    }
}

/// The key and fencing token a request runs under (`-` without a lock).
fn held(req: &Request) -> (String, Option<u64>) {
    match req.extensions().get::<HeldLock>() {
        Some(lock) => (lock.key().to_owned(), Some(lock.fencing_token())),
        None => ("-".to_owned(), None),
    }
}

/// A short critical section.
async fn work(State(probe): State<Arc<Probe>>, req: Request) -> &'static str {
    let (key, token) = held(&req);
    probe.event(format!("work:{key}:start"));
    probe.enter(&key, token);
    sleep(Duration::from_millis(20)).await;
    probe.leave(&key);
    "ok"
}

/// Passes only when `n` requests are in their handlers at once.
async fn rendezvous(State(probe): State<Arc<Probe>>) -> StatusCode {
    let barrier = probe.barrier.lock().unwrap().clone().unwrap();
    match timeout(Duration::from_secs(5), barrier.wait()).await {
        Ok(_) => StatusCode::OK,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Never answers; logs `hang:cancelled` when its future is dropped.
async fn hang(State(probe): State<Arc<Probe>>) -> &'static str {
    struct OnDrop(Arc<Probe>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.event("hang:cancelled");
        }
    }
    let _on_drop = OnDrop(probe.clone());
    probe.event("hang:start");
    probe.hanging.notify_one();
    sleep(Duration::from_secs(60)).await;
    "unreachable"
}

/// `/stream`: 4 chunks, 50 ms apart; `/forever`: a chunk every 20 ms, forever.
async fn stream(State(probe): State<Arc<Probe>>, req: Request) -> Body {
    let tag = req.headers()["x-tag"].to_str().unwrap().to_owned();
    let chunks = if req.uri().path() == "/forever" {
        usize::MAX
    } else {
        4
    };
    let period = Duration::from_millis(if chunks == 4 { 50 } else { 20 });
    probe.event(format!("{tag}:start"));
    Body::new(Ticks {
        tag,
        left: chunks,
        period,
        sleep: Box::pin(sleep(Duration::ZERO)),
        probe,
    })
}

/// A streaming body that logs `{tag}:end` after its last chunk and
/// `{tag}:dropped` when dropped.
struct Ticks {
    tag: String,
    left: usize,
    period: Duration,
    sleep: Pin<Box<Sleep>>,
    probe: Arc<Probe>,
}

impl http_body::Body for Ticks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            self.probe.event(format!("{}:end", self.tag));
            return Poll::Ready(None);
        }
        std::task::ready!(self.sleep.as_mut().poll(cx));
        self.left -= 1;
        let next = Instant::now() + self.period;
        self.sleep.as_mut().reset(next);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"tick\n")))))
    }
}

impl Drop for Ticks {
    fn drop(&mut self) {
        self.probe.event(format!("{}:dropped", self.tag));
    }
}

fn app(probe: Arc<Probe>, layer: LockLayer<Header>) -> Router {
    Router::new()
        .route("/work", get(work))
        .route("/rendezvous", get(rendezvous))
        .route("/hang", get(hang))
        .route("/stream", get(stream))
        .route("/forever", get(stream))
        .layer(layer)
        .with_state(probe)
}

fn layer(manager: &LockManager) -> LockLayer<Header> {
    LockLayer::new(manager.clone(), Header::new(KEY))
        .ttl(Duration::from_secs(5))
        .unwrap()
        .wait(Duration::from_secs(10))
}

/// A server on a free loopback port; stopped when dropped.
struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(app: Router) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server { addr, task }
}

async fn manager(etcd: &Etcd, namespace: &str) -> LockManager {
    LockManager::connect(EtcdConfig::new(etcd.endpoints()), namespace)
        .await
        .expect("connect to etcd")
}

/// etcd, two managers on one namespace, one server on each, one probe.
struct Fleet {
    etcd: Etcd,
    namespace: String,
    probe: Arc<Probe>,
    servers: [Server; 2],
}

impl Fleet {
    async fn start() -> Fleet {
        Fleet::start_with(layer).await
    }

    async fn start_with(make: impl Fn(&LockManager) -> LockLayer<Header>) -> Fleet {
        let etcd = Etcd::start().await;
        let namespace = etcd.namespace();
        let probe = Arc::new(Probe::default());
        let managers = [
            manager(&etcd, &namespace).await,
            manager(&etcd, &namespace).await,
        ];
        let servers = [
            serve(app(probe.clone(), make(&managers[0]))).await,
            serve(app(probe.clone(), make(&managers[1]))).await,
        ];
        Fleet {
            etcd,
            namespace,
            probe,
            servers,
        }
    }

    fn addr(&self, i: usize) -> SocketAddr {
        self.servers[i % 2].addr
    }

    /// A third manager on the namespace, for background jobs.
    async fn job_manager(&self) -> LockManager {
        manager(&self.etcd, &self.namespace).await
    }
}

// ---------------------------------------------------------------- clients ---

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

/// `GET path`, with `key` in the key header if given, read to its end.
async fn call(addr: SocketAddr, path: &str, key: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = key.map(|k| (KEY, k)).into_iter().collect();
    let (response, _conn) = open(addr, path, &headers).await;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("a complete body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Holds lock `name` through `manager` (as a background job would) until the
/// returned sender fires or is dropped; resolves once the lock is held.
async fn hold(
    manager: &LockManager,
    name: &str,
    probe: Option<Arc<Probe>>,
) -> tokio::sync::oneshot::Sender<()> {
    let lock = manager.new_lock(name, LockOptions::default()).unwrap();
    let (held_tx, held_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let name = name.to_owned();
    tokio::spawn(async move {
        let guard = lock.lock().await.unwrap();
        if let Some(p) = &probe {
            p.enter(&name, Some(guard.fencing_token()));
            p.event(format!("job:{name}:start"));
        }
        let _ = held_tx.send(());
        let _ = release_rx.await;
        if let Some(p) = &probe {
            p.event(format!("job:{name}:end"));
            p.leave(&name);
        }
        guard.unlock().await.unwrap();
    });
    held_rx.await.unwrap();
    release_tx
}

/// Waits until `cond` holds, for at most `within`.
async fn eventually(within: Duration, what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        sleep(Duration::from_millis(10)).await;
    }
}

// ------------------------------------------------------------------ tests ---

/// Same key: one request at a time across both servers and a background job
/// on a third manager; each server keeps one etcd waiter per key; fencing
/// tokens grow in the order the critical sections ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_runs_one_at_a_time_across_servers_and_jobs() {
    let fleet = Fleet::start().await;
    let jobs = fleet.job_manager().await;
    let release_job = hold(&jobs, "k0", Some(fleet.probe.clone())).await;

    let mut requests = tokio::task::JoinSet::new();
    for i in 0..18 {
        let (addr, key) = (fleet.addr(i), format!("k{}", i % 3));
        requests.spawn(async move { call(addr, "/work", Some(&key)).await.status });
    }

    // Six requests wait for k0; in etcd, that is one waiter per server.
    eventually(
        Duration::from_secs(5),
        "both servers queue in etcd",
        async || jobs.lock_info("k0").await.unwrap().unwrap().waiters == 2,
    )
    .await;
    sleep(Duration::from_millis(100)).await;
    assert_eq!(jobs.lock_info("k0").await.unwrap().unwrap().waiters, 2);
    assert!(
        !fleet.probe.events().contains(&"work:k0:start".to_owned()),
        "a k0 request ran while the job held k0"
    );
    release_job.send(()).unwrap();

    while let Some(status) = requests.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    let state = fleet.probe.state();
    assert!(state.overlaps.is_empty(), "overlaps: {:?}", state.overlaps);
    for key in ["k0", "k1", "k2"] {
        let tokens = &state.tokens[key];
        assert_eq!(tokens.len(), if key == "k0" { 7 } else { 6 }, "{key}");
        assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{key}: {tokens:?}");
    }
}

/// Distinct keys run at once: four requests on four keys, over both servers,
/// meet at a barrier that only opens when all four are in their handlers.
/// Requests without a key pass while a job holds a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_keys_run_concurrently_and_keyless_requests_pass() {
    let fleet = Fleet::start().await;
    *fleet.probe.barrier.lock().unwrap() = Some(Arc::new(Barrier::new(4)));
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..4 {
        let addr = fleet.addr(i);
        requests.spawn(async move {
            call(addr, "/rendezvous", Some(&format!("d{i}")))
                .await
                .status
        });
    }
    while let Some(status) = requests.join_next().await {
        assert_eq!(
            status.unwrap(),
            StatusCode::OK,
            "the four keys did not run at once"
        );
    }

    let _job = hold(&fleet.job_manager().await, "d0", None).await;
    let reply = timeout(Duration::from_secs(2), call(fleet.addr(0), "/work", None))
        .await
        .expect("a request without a key does not wait for any lock");
    assert_eq!(reply.status, StatusCode::OK);
}

/// A wait past `.wait(..)` for a busy key is a 429 with `Retry-After` (not a
/// server failure); bad keys are 400; `on_rejection` replaces the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_key_answers_429_with_retry_after_and_is_customizable() {
    let kinds = Arc::new(Mutex::new(Vec::new()));
    let seen = kinds.clone();
    let fleet = Fleet::start_with(move |m| {
        let base = layer(m)
            .wait(Duration::from_millis(300))
            .retry_after(Duration::from_millis(1500));
        let seen = seen.clone();
        base.on_rejection(move |r: &Rejection| {
            seen.lock().unwrap().push(r.kind());
            if r.key() == "custom" {
                http::Response::builder()
                    .status(StatusCode::CONFLICT)
                    .body(format!("busy: {}", r.key()).into())
                    .unwrap()
            } else {
                r.default_response()
            }
        })
    })
    .await;
    let jobs = fleet.job_manager().await;
    let _busy = hold(&jobs, "busy", None).await;
    let _custom = hold(&jobs, "custom", None).await;

    let started = Instant::now();
    let reply = call(fleet.addr(0), "/work", Some("busy")).await;
    let waited = started.elapsed();
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.headers["retry-after"], "2");
    assert!(reply.body.contains("busy"), "{}", reply.body);
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "{waited:?}"
    );

    let reply = call(fleet.addr(1), "/work", Some("custom")).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.body, "busy: custom");

    for bad in [String::new(), "x".repeat(2000)] {
        let reply = call(fleet.addr(0), "/work", Some(&bad)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert!(reply.headers.get("retry-after").is_none());
    }
    assert_eq!(
        *kinds.lock().unwrap(),
        [
            RejectionKind::Timeout,
            RejectionKind::Timeout,
            RejectionKind::InvalidKey,
            RejectionKind::InvalidKey
        ]
    );
    assert!(fleet.probe.events().is_empty(), "a rejected request ran");
}

/// The lock covers the streamed body: a second request for the key starts
/// only after the first response's last chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_response_holds_the_lock_to_its_end() {
    let fleet = Fleet::start().await;
    let (first, _conn) = open(fleet.addr(0), "/stream", &[(KEY, "s"), ("x-tag", "A")]).await;
    assert_eq!(first.status(), StatusCode::OK);

    // The handler has returned; its body has yet to stream (4 × 50 ms).
    let addr = fleet.addr(1);
    let second = tokio::spawn(async move { call(addr, "/work", Some("s")).await.status });
    let body = first.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "tick\n".repeat(4));
    assert_eq!(second.await.unwrap(), StatusCode::OK);

    let probe = &fleet.probe;
    assert!(
        probe.position("A:end") < probe.position("work:s:start"),
        "{:?}",
        probe.events()
    );
}

/// A client that goes away releases the lock at once: mid-stream, and while
/// the handler is still running (its future is dropped); one that goes away
/// while waiting leaves the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnecting_client_releases_the_lock() {
    let fleet = Fleet::start().await;
    let jobs = fleet.job_manager().await;
    let is_held = async |name: &str| {
        let lock = jobs.new_lock(name, LockOptions::default()).unwrap();
        lock.try_lock().await.unwrap().is_none()
    };

    // Mid-stream: an endless body, abandoned after its first chunk.
    let (response, conn) = open(fleet.addr(0), "/forever", &[(KEY, "f"), ("x-tag", "F")]).await;
    let mut body = response.into_body();
    let chunk = body.frame().await.unwrap().unwrap();
    assert_eq!(chunk.into_data().unwrap(), "tick\n");
    assert!(is_held("f").await, "the stream holds its lock");
    drop((body, conn));
    let started = Instant::now();
    let reply = call(fleet.addr(1), "/work", Some("f")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(fleet.probe.events().contains(&"F:dropped".to_owned()));

    // Before the response: the handler hangs; the client closes its socket.
    let addr = fleet.addr(0);
    let pending = tokio::spawn(async move { open(addr, "/hang", &[(KEY, "h")]).await });
    timeout(Duration::from_secs(5), fleet.probe.hanging.notified())
        .await
        .expect("the handler started");
    assert!(is_held("h").await, "the handler runs under its lock");
    pending.abort(); // drops the connection
    let started = Instant::now();
    let reply = call(fleet.addr(1), "/work", Some("h")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(fleet.probe.events().contains(&"hang:cancelled".to_owned()));

    // While waiting for the lock: the waiter leaves etcd's queue at once.
    let _job = hold(&jobs, "q", None).await;
    let addr = fleet.addr(0);
    let waiting = tokio::spawn(async move { open(addr, "/work", &[(KEY, "q")]).await });
    let waiters = async || jobs.lock_info("q").await.unwrap().unwrap().waiters;
    eventually(
        Duration::from_secs(5),
        "the request waits in etcd",
        async || waiters().await == 1,
    )
    .await;
    waiting.abort();
    eventually(Duration::from_secs(2), "the waiter left", async || {
        waiters().await == 0
    })
    .await;
    assert!(!fleet.probe.events().contains(&"work:q:start".to_owned()));
}

/// A lock lost mid-request (here: force-unlocked) cancels the handler at its
/// next await and answers 503 without `Retry-After` (part of its work may be
/// done: no advice to simply send it again); lost mid-stream, the body ends
/// in an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lock_cancels_the_handler_or_ends_the_body() {
    let fleet = Fleet::start().await;
    let admin = fleet.job_manager().await;

    let addr = fleet.addr(0);
    let pending = tokio::spawn(async move { call(addr, "/hang", Some("l")).await });
    timeout(Duration::from_secs(5), fleet.probe.hanging.notified())
        .await
        .expect("the handler started");
    assert!(admin.force_unlock("l").await.unwrap());
    let reply = timeout(Duration::from_secs(3), pending)
        .await
        .expect("the lost lock ends the request")
        .unwrap();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!reply.headers.contains_key("retry-after"));
    assert!(reply.body.contains("partly"), "{}", reply.body);
    assert!(fleet.probe.events().contains(&"hang:cancelled".to_owned()));

    let (response, _conn) = open(fleet.addr(1), "/forever", &[(KEY, "ls"), ("x-tag", "L")]).await;
    let mut body = response.into_body();
    assert!(body.frame().await.unwrap().is_ok());
    assert!(admin.force_unlock("ls").await.unwrap());
    let rest = timeout(Duration::from_secs(3), body.collect())
        .await
        .expect("the lost lock ends the body");
    assert!(rest.is_err(), "a truncated body must not look complete");
    eventually(
        Duration::from_secs(2),
        "the stream is dropped",
        async || fleet.probe.events().contains(&"L:dropped".to_owned()),
    )
    .await;
}

/// A backend that does not answer, or a closed manager, gets the request a
/// 503 with `Retry-After` (an outage: nothing ran, a later retry may work),
/// not a dropped connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_failures_answer_503() {
    let etcd = Etcd::start().await;
    let proxy = TcpProxy::start_for(&etcd.member_endpoint(0)).await;
    let namespace = etcd.namespace();
    let through_proxy = LockManager::connect(EtcdConfig::new([proxy.endpoint()]), &namespace)
        .await
        .unwrap();
    let kinds = Arc::new(Mutex::new(Vec::new()));
    let seen = kinds.clone();
    let probe = Arc::new(Probe::default());
    let server = serve(app(
        probe.clone(),
        layer(&through_proxy)
            .wait(Duration::from_millis(500))
            .on_rejection(move |r| {
                seen.lock().unwrap().push(r.kind());
                r.default_response()
            }),
    ))
    .await;

    assert_eq!(
        call(server.addr, "/work", Some("b")).await.status,
        StatusCode::OK
    );
    proxy.blackhole();
    let reply = timeout(
        Duration::from_secs(5),
        call(server.addr, "/work", Some("b2")),
    )
    .await
    .expect("answered within the wait");
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.headers.contains_key("retry-after"));
    // An outage, not a busy key (issue #17.8): the wait ran out while etcd
    // did not answer.
    assert_eq!(
        kinds.lock().unwrap().as_slice(),
        [RejectionKind::Unavailable]
    );

    proxy.restore(); // lets close() revoke the lease at once
    through_proxy.close().await;
    let reply = call(server.addr, "/work", Some("b3")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        kinds.lock().unwrap().last(),
        Some(&RejectionKind::Unavailable)
    );
    assert_eq!(probe.events(), ["work:b:start"]);
}

/// `status_for` replaces one kind's status on a real server; the kind's
/// retry advice stays, and other kinds keep their defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_for_replaces_one_kinds_status() {
    let etcd = Etcd::start().await;
    let namespace = etcd.namespace();
    let server_manager = manager(&etcd, &namespace).await;
    let jobs = manager(&etcd, &namespace).await;
    let probe = Arc::new(Probe::default());
    let server = serve(app(
        probe,
        layer(&server_manager)
            .wait(Duration::from_millis(300))
            .status_for(RejectionKind::Timeout, StatusCode::CONFLICT),
    ))
    .await;
    let _busy = hold(&jobs, "busy", None).await;

    let reply = call(server.addr, "/work", Some("busy")).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.headers["retry-after"], "1");
    assert!(reply.body.contains("busy"), "{}", reply.body);
    let reply = call(server.addr, "/work", Some("")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

/// etcd denies the server's credentials access to the key (a user whose
/// role may only read the namespace): each request is answered 500 at once,
/// without `Retry-After` (a configuration fault, not an outage: retrying
/// does not help), and the fault is logged at `error` level once for the
/// lot (rate-limited per layer), each request at `debug`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_credentials_answer_500_and_log_one_error() {
    let captured = Captured::install("distlock_tower=debug");
    let namespace = distlock_tests::unique_namespace("tower-denied");
    let (_etcd, reader) = support::auth::read_only_manager(&namespace).await;
    let kinds = Arc::new(Mutex::new(Vec::new()));
    let seen = kinds.clone();
    let server = serve(app(
        Arc::new(Probe::default()),
        layer(&reader)
            .wait(Duration::from_secs(5))
            .on_rejection(move |r| {
                seen.lock().unwrap().push(r.kind());
                r.default_response()
            }),
    ))
    .await;

    for i in 0..5 {
        let started = Instant::now();
        let reply = call(server.addr, "/work", Some(&format!("denied-{i}"))).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(reply.headers.get("retry-after").is_none());
        assert!(reply.body.contains("as configured"), "{}", reply.body);
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "refused at once, not after the wait: {:?}",
            started.elapsed()
        );
    }
    assert_eq!(*kinds.lock().unwrap(), [RejectionKind::Misconfigured; 5]);
    let lines = captured.lines_with("denied-");
    let errors = lines.iter().filter(|l| l.contains(" ERROR ")).count();
    let debugs = lines.iter().filter(|l| l.contains(" DEBUG ")).count();
    assert_eq!(errors, 1, "{lines:#?}");
    assert_eq!(debugs, 5, "{lines:#?}");
    assert!(lines.iter().all(|l| !l.contains(" WARN ")), "{lines:#?}");
}

// ---------------------------------------------------------- routing seams ---

/// Issue #21.4: where the layer sits in a `Router` decides whether 404 and
/// 405 answers take a lock.
///
/// On each route's `MethodRouter` (`get(h).route_layer(layer)`, the form the
/// crate docs recommend) neither does, and neither reaches etcd: with a
/// closed manager (any lock attempt would be a 503) they stay 404 and 405
/// while the route itself is 503; with a live manager and the key held by a
/// job (any lock attempt would wait out the 10 s wait) they come at once and
/// etcd holds only the job's key, with no waiter.
///
/// The other forms, as the docs' table says: `Router::route_layer` locks
/// before a wrong method's 405; `Router::layer` also before an unknown
/// path's 404, and with `require_key` and a key from the path answers that
/// path 400 instead of 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_layer_keeps_404_and_405_free_of_locks() {
    let etcd = Etcd::start().await;
    let namespace = etcd.namespace();
    let live = manager(&etcd, &namespace).await;
    let jobs = manager(&etcd, &namespace).await;
    let closed = manager(&etcd, &namespace).await;
    closed.close().await;
    let _job = hold(&jobs, "held", None).await;
    let ok = || get(|| async { "ok" });
    let key = |k| [(KEY, k)];

    // The recommended form, on a manager whose every lock attempt fails.
    let recommended = |m: &LockManager| Router::new().route("/work", ok().route_layer(layer(m)));
    let server = serve(recommended(&closed)).await;
    let at = server.addr;
    assert_eq!(status_of(at, "GET", "/work", &key("k")).await, 503);
    assert_eq!(status_of(at, "POST", "/work", &key("k")).await, 405);
    assert_eq!(status_of(at, "GET", "/nowhere", &key("k")).await, 404);

    // ... and on a live one, with the key busy.
    let server = serve(recommended(&live)).await;
    let at = server.addr;
    let started = Instant::now();
    assert_eq!(status_of(at, "POST", "/work", &key("held")).await, 405);
    assert_eq!(status_of(at, "GET", "/nowhere", &key("held")).await, 404);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a 404 or 405 waited for the key: {:?}",
        started.elapsed()
    );
    let locks = jobs.list_locks("").await.unwrap();
    let names: Vec<&str> = locks.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["held"]);
    assert_eq!(locks[0].waiters, 0);

    // Router::route_layer: 404 untouched, but the 405 comes after a lock.
    let server = serve(
        Router::new()
            .route("/work", ok())
            .route_layer(layer(&closed)),
    )
    .await;
    let at = server.addr;
    assert_eq!(status_of(at, "GET", "/nowhere", &key("k")).await, 404);
    assert_eq!(status_of(at, "POST", "/work", &key("k")).await, 503);

    // Router::layer: both come after a lock.
    let server = serve(Router::new().route("/work", ok()).layer(layer(&closed))).await;
    let at = server.addr;
    assert_eq!(status_of(at, "GET", "/nowhere", &key("k")).await, 503);
    assert_eq!(status_of(at, "POST", "/work", &key("k")).await, 503);

    // Router::layer with `require_key` and a key from the path: an unknown
    // path has no key, and is answered 400 instead of 404.
    let by_path = LockLayer::new(live.clone(), PathSegment::new(1).prefix("order:")).require_key();
    let server = serve(Router::new().route("/orders/{id}", ok()).layer(by_path)).await;
    let at = server.addr;
    assert_eq!(status_of(at, "GET", "/orders/7", &[]).await, 200);
    assert_eq!(status_of(at, "GET", "/nowhere", &[]).await, 400);
}
