//! distlock-tower's protections and issue #9's layer defects, with real axum
//! servers on loopback and real etcd: work that completes as its lock is
//! lost returns its result; `max_hold`, `max_waiters`, `require_key`;
//! empty client-supplied keys are 400 even with a prefix; a zero wait is
//! bounded when etcd does not answer; rejections in an outage do not log one
//! warning each.

mod support;
use support::http::open;

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use distlock::{EtcdConfig, LockManager, LockOptions};
use distlock_tests::{Etcd, TcpProxy};
use distlock_tower::{Header, HeldLock, LockLayer, Query, Rejection, RejectionKind};
use http::StatusCode;
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant, Sleep};

const KEY: &str = "x-key";

// ------------------------------------------------------------- fixtures ---

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

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

/// `GET path` with `key` in the key header (if any), read to its end.
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

/// Records the kinds of a layer's rejections.
type Kinds = Arc<Mutex<Vec<RejectionKind>>>;

fn record<E>(layer: LockLayer<E>, kinds: &Kinds) -> LockLayer<E> {
    let seen = kinds.clone();
    layer.on_rejection(move |r: &Rejection| {
        seen.lock().unwrap().push(r.kind());
        r.default_response()
    })
}

/// Whether `name` can be taken from `manager`, within `within`.
async fn frees_within(manager: &LockManager, name: &str, within: Duration) -> bool {
    let lock = manager.new_lock(name, LockOptions::default()).unwrap();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(guard) = lock.try_lock().await.unwrap() {
            guard.unlock().await.unwrap();
            return true;
        }
        sleep(Duration::from_millis(20)).await;
    }
    false
}

// ------------------------------------------------------------- handlers ---

/// Rendezvous of a test with its handlers.
#[derive(Default)]
struct Probe {
    started: Notify,
    events: Mutex<Vec<String>>,
}

impl Probe {
    fn event(&self, e: impl Into<String>) {
        self.events.lock().unwrap().push(e.into());
    }
    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
}

/// Waits until its lock is lost, then answers "done" (in that very poll).
async fn finish_on_loss(probe: Arc<Probe>, req: Request) -> String {
    let lock = req.extensions().get::<HeldLock>().unwrap().clone();
    probe.started.notify_one();
    lock.lost().await;
    probe.event("finished");
    format!("done; held: {}", lock.is_held())
}

/// A body: "a" at once; then, once its lock has ended, "b" as its last
/// frame (`ends`), or nothing more, ever.
struct LastWords {
    stage: u8,
    ends: bool,
    lost: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl http_body::Body for LastWords {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.stage {
            0 => {
                self.stage = 1;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"a")))))
            }
            1 => {
                std::task::ready!(self.lost.as_mut().poll(cx));
                if !self.ends {
                    return Poll::Pending;
                }
                self.stage = 2;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"b")))))
            }
            _ => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stage == 2
    }
}

async fn last_words(req: Request) -> Body {
    let lock = req.extensions().get::<HeldLock>().unwrap().clone();
    Body::new(LastWords {
        stage: 0,
        ends: req.uri().path() == "/last-words",
        lost: Box::pin(lock.lost()),
    })
}

/// Never answers.
async fn hang(probe: Arc<Probe>) -> &'static str {
    probe.started.notify_one();
    sleep(Duration::from_secs(120)).await;
    "unreachable"
}

/// A chunk every 20 ms, forever.
struct Forever(Pin<Box<Sleep>>);

impl http_body::Body for Forever {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        std::task::ready!(self.0.as_mut().poll(cx));
        let next = Instant::now() + Duration::from_millis(20);
        self.0.as_mut().reset(next);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"tick\n")))))
    }
}

/// The key the request runs under, or `-`.
async fn whoami(req: Request) -> String {
    req.extensions()
        .get::<HeldLock>()
        .map_or("-".to_owned(), |l| l.key().to_owned())
}

/// The test routes, to be layered.
fn routes(probe: Arc<Probe>) -> Router {
    let p1 = probe.clone();
    let p2 = probe;
    Router::new()
        .route("/finish", get(move |req| finish_on_loss(p1.clone(), req)))
        .route("/last-words", get(last_words))
        .route("/no-last-words", get(last_words))
        .route("/hang", get(move || hang(p2.clone())))
        .route(
            "/forever",
            get(|| async { Body::new(Forever(Box::pin(sleep(Duration::ZERO)))) }),
        )
        .route("/whoami", get(whoami))
}

/// etcd, a server's manager, a jobs/admin manager, and the server.
struct Fixture {
    _etcd: Etcd,
    admin: LockManager,
    probe: Arc<Probe>,
    server: Server,
}

/// Serves the routes with the layer `layered` puts on them.
async fn start(layered: impl FnOnce(LockManager, Router) -> Router) -> Fixture {
    let etcd = Etcd::start().await;
    let namespace = etcd.namespace();
    let (server_manager, admin) = (
        manager(&etcd, &namespace).await,
        manager(&etcd, &namespace).await,
    );
    let probe = Arc::new(Probe::default());
    let server = serve(layered(server_manager, routes(probe.clone()))).await;
    Fixture {
        _etcd: etcd,
        admin,
        probe,
        server,
    }
}

fn base(manager: LockManager) -> LockLayer<Header> {
    LockLayer::new(manager, Header::new(KEY).prefix("req:"))
        .ttl(Duration::from_secs(5))
        .unwrap()
        .wait(Duration::from_secs(10))
}

// ---------------------------------------------------------------- tests ---

/// Issue #9.5: a handler that completes in the poll in which its lock is
/// lost gets its response sent (200, not a 503 rejection); so does a body
/// that ends in that poll; a body that does not end is cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_completed_as_the_lock_is_lost_returns_its_result() {
    let kinds = Kinds::default();
    let k = kinds.clone();
    let fx = start(move |m, r| r.layer(record(base(m), &k))).await;

    let addr = fx.server.addr;
    let pending = tokio::spawn(async move { call(addr, "/finish", Some("f")).await });
    timeout(Duration::from_secs(5), fx.probe.started.notified())
        .await
        .expect("the handler started");
    assert!(fx.admin.force_unlock("req:f").await.unwrap());
    let reply = timeout(Duration::from_secs(5), pending)
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body, "done; held: false");
    assert!(reply.headers.get("retry-after").is_none());
    assert_eq!(fx.probe.events(), ["finished"]);

    // The body: its last frame comes in the poll that sees the loss.
    let (response, _conn) = open(addr, "/last-words", &[(KEY, "w")]).await;
    let mut body = response.into_body();
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        "a"
    );
    assert!(fx.admin.force_unlock("req:w").await.unwrap());
    let rest = timeout(Duration::from_secs(5), body.collect())
        .await
        .expect("the body ends");
    assert_eq!(rest.expect("a complete body").to_bytes(), "b");

    // A body that would go on is still cut off, visibly.
    let (response, _conn) = open(addr, "/no-last-words", &[(KEY, "n")]).await;
    let mut body = response.into_body();
    assert!(body.frame().await.unwrap().is_ok());
    assert!(fx.admin.force_unlock("req:n").await.unwrap());
    let rest = timeout(Duration::from_secs(5), body.collect())
        .await
        .expect("the body ends");
    assert!(rest.is_err(), "a truncated body must not look complete");
    assert!(
        kinds.lock().unwrap().is_empty(),
        "{:?}",
        kinds.lock().unwrap()
    );
}

/// `max_hold`: a slow-reading client and a hanging handler hold their key
/// for at most `max_hold`; then the body ends with an error or the client
/// gets 503 (without `Retry-After`: the handler had started), and the key is
/// free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_hold_bounds_how_long_a_request_holds_its_key() {
    const LIMIT: Duration = Duration::from_millis(600);
    let kinds = Kinds::default();
    let k = kinds.clone();
    let fx = start(move |m, r| r.layer(record(base(m).max_hold(LIMIT), &k))).await;
    let addr = fx.server.addr;

    // A client that reads one chunk and then stops reading.
    let started = Instant::now();
    let (response, _conn) = open(addr, "/forever", &[(KEY, "slow")]).await;
    let mut body = response.into_body();
    assert!(body.frame().await.unwrap().is_ok());
    assert!(
        frees_within(&fx.admin, "req:slow", Duration::from_secs(5)).await,
        "max_hold did not free the key"
    );
    let held = started.elapsed();
    assert!(held >= LIMIT, "{held:?}");
    let rest = timeout(Duration::from_secs(5), body.collect())
        .await
        .expect("the body ends");
    assert!(rest.is_err(), "a cut-off body must not look complete");

    let started = Instant::now();
    let reply = timeout(Duration::from_secs(5), call(addr, "/hang", Some("hang")))
        .await
        .expect("max_hold ends a hanging handler");
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!reply.headers.contains_key("retry-after"));
    assert!(reply.body.contains("as long as it may"), "{}", reply.body);
    assert!(started.elapsed() >= LIMIT, "{:?}", started.elapsed());
    assert_eq!(*kinds.lock().unwrap(), [RejectionKind::MaxHold]);
    assert!(frees_within(&fx.admin, "req:hang", Duration::from_secs(2)).await);
}

/// `max_waiters(2)`: with a job holding the key, two requests wait, the
/// third is answered 429 with `Retry-After` at once (shedding load for a hot
/// key is not a server failure); another key is unaffected; the two run
/// once the job is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_waiters_sheds_load_at_once() {
    let kinds = Kinds::default();
    let k = kinds.clone();
    let fx = start(move |m, r| r.layer(record(base(m).max_waiters(2), &k))).await;
    let addr = fx.server.addr;
    let job = fx
        .admin
        .new_lock("req:hot", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();

    let waiting: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { call(addr, "/whoami", Some("hot")).await }))
        .collect();
    // Both are in the server's queue (one etcd waiter per key per server).
    let deadline = Instant::now() + Duration::from_secs(5);
    while fx
        .admin
        .lock_info("req:hot")
        .await
        .unwrap()
        .unwrap()
        .waiters
        < 1
    {
        assert!(Instant::now() < deadline, "the requests never queued");
        sleep(Duration::from_millis(20)).await;
    }
    sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let shed = call(addr, "/whoami", Some("hot")).await;
    assert_eq!(shed.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(shed.headers["retry-after"], "1");
    assert!(shed.body.contains("too many"), "{}", shed.body);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "shed at once, not after the wait: {:?}",
        started.elapsed()
    );
    assert_eq!(*kinds.lock().unwrap(), [RejectionKind::QueueFull]);
    let other = call(addr, "/whoami", Some("cold")).await;
    assert_eq!(
        (other.status, other.body.as_str()),
        (StatusCode::OK, "req:cold")
    );

    job.unlock().await.unwrap();
    for w in waiting {
        let reply = timeout(Duration::from_secs(5), w).await.unwrap().unwrap();
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "req:hot")
        );
    }
    assert_eq!(kinds.lock().unwrap().len(), 1);
}

/// `require_key` answers a request without a key 400; an empty
/// client-supplied value is 400 even behind a prefix (it used to lock the
/// shared name `req:`); `Query` and `or` find keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_empty_keys_are_400() {
    let kinds = Kinds::default();
    let k = kinds.clone();
    let fx = start(move |m, r| {
        let key = Header::new(KEY)
            .prefix("req:")
            .or(Query::new("key").prefix("req:"));
        r.layer(record(LockLayer::new(m, key).require_key(), &k))
    })
    .await;
    let addr = fx.server.addr;

    let reply = call(addr, "/whoami", None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.headers.get("retry-after").is_none());
    let reply = call(addr, "/whoami", Some("")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = call(addr, "/whoami?key=", None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        *kinds.lock().unwrap(),
        [
            RejectionKind::MissingKey,
            RejectionKind::InvalidKey,
            RejectionKind::InvalidKey
        ]
    );

    let reply = call(addr, "/whoami", Some("7")).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "req:7")
    );
    let reply = call(addr, "/whoami?key=a%20b", None).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "req:a b")
    );
    assert_eq!(kinds.lock().unwrap().len(), 3);
}

/// Issue #9.3 (layer): a zero wait tries once, and that attempt is bounded:
/// with etcd not answering (a blackholed proxy), the request gets its 503
/// within about a second, not after the TTL or never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_wait_is_bounded_when_etcd_does_not_answer() {
    let etcd = Etcd::start().await;
    let proxy = TcpProxy::start_for(&etcd.member_endpoint(0)).await;
    let namespace = etcd.namespace();
    let through_proxy = LockManager::connect(EtcdConfig::new([proxy.endpoint()]), &namespace)
        .await
        .unwrap();
    let probe = Arc::new(Probe::default());
    // The default TTL (30 s): the bound must not come from it.
    let kinds = Kinds::default();
    let layer = record(
        LockLayer::new(through_proxy.clone(), Header::new(KEY).prefix("req:")).wait(Duration::ZERO),
        &kinds,
    );
    let server = serve(routes(probe).layer(layer)).await;

    let reply = call(server.addr, "/whoami", Some("z")).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "req:z")
    );
    proxy.blackhole();
    let started = Instant::now();
    let reply = timeout(
        Duration::from_secs(10),
        call(server.addr, "/whoami", Some("z2")),
    )
    .await
    .expect("a zero wait must not hang on an unreachable etcd");
    let took = started.elapsed();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(took < Duration::from_secs(4), "{took:?}");
    // Not "busy": the lock service did not answer.
    assert_eq!(*kinds.lock().unwrap(), [RejectionKind::Unavailable]);
    proxy.restore();
    through_proxy.close().await;
}

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Issue #9.6: 40 requests rejected in an outage (here: a closed manager)
/// write one warning, not 40; each is still logged at debug level with its
/// key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_does_not_write_a_warning_per_request() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("distlock_tower=debug")
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    // This binary's only subscriber; the lines below are told apart by key.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let etcd = Etcd::start().await;
    let m = manager(&etcd, &etcd.namespace()).await;
    let server = serve(routes(Arc::new(Probe::default())).layer(base(m.clone()))).await;
    m.close().await;
    for i in 0..40 {
        let reply = call(server.addr, "/whoami", Some(&format!("flood-{i}"))).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("req:flood-")).collect();
    let warns = lines.iter().filter(|l| l.contains(" WARN ")).count();
    let debugs = lines.iter().filter(|l| l.contains(" DEBUG ")).count();
    assert_eq!(warns, 1, "{lines:#?}");
    assert_eq!(debugs, 40, "{lines:#?}");
    assert!(lines[0].contains("Unavailable"), "{}", lines[0]);
}
