//! The layer's modes on real etcd, with two axum servers (two managers, as
//! two processes) on one namespace, and a tonic server:
//!
//! - `.permits(n)`: at most `n` requests per key in flight across both
//!   servers, keys limited separately; a busy key, the `HeldLock`, the body
//!   carrying the permit and a lost permit as with a lock; servers that
//!   disagree on `n`, and `n = 0`, are configuration errors;
//! - `.read_write()`: `GET`s of one key overlap, a `POST` overlaps no other
//!   request of its key, a `GET` queued after a `POST` waits for it;
//! - `.read_if(..)` with gRPC, where every call is a `POST`: by path.
//!
//! That `.permits(n)` and `.read_write()` on one layer do not compile is a
//! `compile_fail` example in `distlock_tower::mode`.

mod support;
use support::http::{open, status_of};
use support::OverlapDetector;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use distlock::{ErrorCode, EtcdConfig, LockManager, LockOptions};
use distlock_tests::Etcd;
use distlock_tower::{Header, HeldLock, HoldKind, LockLayer, Rejection, RejectionKind};
use http::StatusCode;
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

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

/// What the handlers share with the test.
#[derive(Default)]
struct Probe {
    /// Per key: how many requests are inside at once.
    inside: Mutex<HashMap<String, OverlapDetector>>,
    /// Across all keys.
    all: OverlapDetector,
    /// Per key: readers and writers inside now; and whether a writer ever
    /// shared its key with anyone.
    rw: Mutex<HashMap<String, (usize, usize)>>,
    rw_violations: Mutex<Vec<String>>,
    /// `/gate/{name}` requests wait for their gate.
    gates: Mutex<HashMap<String, Arc<Notify>>>,
    events: Mutex<Vec<String>>,
    kinds: Mutex<Vec<RejectionKind>>,
}

impl Probe {
    fn detector(&self, key: &str) -> OverlapDetector {
        let mut inside = self.inside.lock().unwrap();
        inside.entry(key.to_owned()).or_default().clone()
    }

    fn gate(&self, name: &str) -> Arc<Notify> {
        let mut gates = self.gates.lock().unwrap();
        gates.entry(name.to_owned()).or_default().clone()
    }

    fn open_gate(&self, name: &str) {
        self.gate(name).notify_one();
    }

    fn event(&self, e: String) {
        self.events.lock().unwrap().push(e);
    }

    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    /// Enters a read or write section of `key`; a writer that finds anyone
    /// inside, or a reader that finds a writer, is a violation.
    fn enter_rw(&self, key: &str, write: bool) {
        let mut rw = self.rw.lock().unwrap();
        let (readers, writers) = rw.entry(key.to_owned()).or_default();
        if *writers > 0 || (write && *readers > 0) {
            let who = if write { "a writer" } else { "a reader" };
            self.rw_violations.lock().unwrap().push(format!(
                "{who} entered `{key}` beside {readers} reader(s) and {writers} writer(s)"
            ));
        }
        if write {
            *writers += 1;
        } else {
            *readers += 1;
        }
    }

    fn leave_rw(&self, key: &str, write: bool) {
        let mut rw = self.rw.lock().unwrap();
        let (readers, writers) = rw.get_mut(key).unwrap();
        if write {
            *writers -= 1;
        } else {
            *readers -= 1;
        }
    }
}

/// `/work?ms=N` (any method): inside the key's detectors for N ms (default
/// 150); answers the hold's kind and fencing token.
async fn work(State(probe): State<Arc<Probe>>, req: Request) -> String {
    let held = req.extensions().get::<HeldLock>().unwrap().clone();
    let ms = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("ms="))
        .map_or(150, |ms| ms.parse().unwrap());
    // What the client asked for (not what the layer gave: that is tested).
    let rw = matches!(held.kind(), HoldKind::Read | HoldKind::Write);
    let write = req.method() != http::Method::GET;
    {
        let detector = probe.detector(held.key());
        let _key = detector.enter();
        let _all = probe.all.enter();
        if rw {
            probe.enter_rw(held.key(), write);
        }
        sleep(Duration::from_millis(ms)).await;
        if rw {
            probe.leave_rw(held.key(), write);
        }
    }
    format!("{:?} {}", held.kind(), held.fencing_token())
}

/// `/gate/{name}`: records "{name} in", waits for its gate, records
/// "{name} out".
async fn gate(State(probe): State<Arc<Probe>>, Path(name): Path<String>, req: Request) -> String {
    let held = req.extensions().get::<HeldLock>().unwrap().clone();
    probe.event(format!("{name} in"));
    probe.gate(&name).notified().await;
    probe.event(format!("{name} out"));
    format!("{:?}", held.kind())
}

/// `/stream`: one chunk, then a body that never ends (it holds its hold
/// until the client goes away).
async fn stream() -> Body {
    Body::new(FirstThenNothing(false))
}

struct FirstThenNothing(bool);

impl http_body::Body for FirstThenNothing {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.0 {
            return Poll::Pending;
        }
        self.0 = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"first\n")))))
    }
}

fn routes(probe: Arc<Probe>) -> Router<()> {
    Router::new()
        .route("/work", any(work))
        .route("/gate/{name}", any(gate))
        .route("/stream", any(stream))
        .with_state(probe)
}

/// Records the layer's rejections in `probe`.
fn recorded<M>(layer: LockLayer<Header, M>, probe: &Arc<Probe>) -> LockLayer<Header, M> {
    let probe = probe.clone();
    layer.on_rejection(move |r: &Rejection| {
        probe.kinds.lock().unwrap().push(r.kind());
        r.default_response()
    })
}

/// etcd, two servers (each with its own manager), a jobs manager.
struct Fleet {
    etcd: Etcd,
    jobs: LockManager,
    probe: Arc<Probe>,
    servers: [Server; 2],
}

impl Fleet {
    /// Two servers, each with the layer `layer` makes for its manager.
    async fn start<M: 'static>(layer: impl Fn(LockLayer<Header>) -> LockLayer<Header, M>) -> Fleet {
        let etcd = Etcd::start().await;
        let namespace = etcd.namespace();
        let probe = Arc::new(Probe::default());
        let mut servers = Vec::new();
        for _ in 0..2 {
            let base = LockLayer::new(
                manager(&etcd, &namespace).await,
                Header::new(KEY).prefix("k:"),
            )
            .ttl(Duration::from_secs(5))
            .unwrap()
            .wait(Duration::from_secs(10));
            let layer = recorded(layer(base), &probe);
            servers.push(serve(routes(probe.clone()).layer(layer)).await);
        }
        let jobs = manager(&etcd, &namespace).await;
        Fleet {
            servers: servers.try_into().unwrap_or_else(|_| unreachable!()),
            etcd,
            jobs,
            probe,
        }
    }

    fn addr(&self, i: usize) -> SocketAddr {
        self.servers[i % 2].addr
    }
}

/// `method path` with `key` to `addr`: the status.
async fn send(addr: SocketAddr, method: &str, path: &str, key: &str) -> StatusCode {
    status_of(addr, method, path, &[(KEY, key)]).await
}

/// Waits (up to 5 s) until `until` holds.
async fn eventually(what: &str, mut until: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !until().await {
        assert!(Instant::now() < deadline, "never: {what}");
        sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------- .permits(n) ---

/// `.permits(2)` on two servers: at most 2 requests of a key in flight
/// across both (a detector in the handler would see a third), and two keys
/// are limited separately (4 requests in flight at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permits_limit_each_key_across_the_fleet() {
    let fleet = Fleet::start(|layer| layer.permits(2).unwrap()).await;
    let mut calls = Vec::new();
    for i in 0..12 {
        let key = if i % 2 == 0 { "a" } else { "b" };
        let addr = fleet.addr(i / 2);
        calls.push(tokio::spawn(async move {
            send(addr, "POST", "/work?ms=250", key).await
        }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap(), StatusCode::OK);
    }
    let probe = &fleet.probe;
    for key in ["k:a", "k:b"] {
        let detector = probe.detector(key);
        assert_eq!(detector.entries(), 6, "{key}");
        assert_eq!(
            detector.most_at_once(),
            2,
            "{key}: the limit is 2, and 2 ran at once"
        );
    }
    assert!(
        probe.all.most_at_once() >= 3,
        "keys a and b did not run beside each other: {}",
        probe.all.most_at_once()
    );
    assert!(probe.kinds.lock().unwrap().is_empty());
    // Every permit came back.
    for key in ["k:a", "k:b"] {
        let jobs = &fleet.jobs;
        eventually("the permits are released", async || {
            jobs.semaphore_info(key).await.unwrap().is_none()
        })
        .await;
    }
}

/// With `n` permits held elsewhere, a request waits `wait` and gets the busy
/// answer (429 + `Retry-After`), as a busy lock does; a permit coming back
/// lets it in. The handler's `HeldLock` is a permit with the permit's
/// fencing token; the response body carries the permit until the client
/// goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permit_is_waited_for_held_and_released_as_a_lock_is() {
    let fleet =
        Fleet::start(|layer| layer.permits(2).unwrap().wait(Duration::from_millis(400))).await;
    let elsewhere = fleet
        .jobs
        .new_semaphore("k:busy", 2, LockOptions::default())
        .unwrap();
    let (one, two) = (
        elsewhere.acquire().await.unwrap(),
        elsewhere.acquire().await.unwrap(),
    );
    let started = Instant::now();
    let (response, _conn) = open(fleet.addr(0), "/work", &[(KEY, "busy")]).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(*fleet.probe.kinds.lock().unwrap(), [RejectionKind::Timeout]);

    // One permit comes back: the next request gets it, with its token.
    one.release().await.unwrap();
    let (response, _conn) = open(fleet.addr(1), "/work", &[(KEY, "busy")]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8(body.to_vec()).unwrap();
    let token: u64 = body.strip_prefix("Permit ").unwrap().parse().unwrap();
    assert!(token > two.fencing_token(), "{body}");
    drop(two);

    // A streaming body holds its permit until the client goes away.
    let (response, conn) = open(fleet.addr(0), "/stream", &[(KEY, "s")]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let info = fleet.jobs.semaphore_info("k:s").await.unwrap().unwrap();
    assert_eq!((info.permits, info.holders.len()), (2, 1));
    drop(response);
    drop(conn);
    let jobs = &fleet.jobs;
    eventually("the stream's permit is released", async || {
        jobs.semaphore_info("k:s").await.unwrap().is_none()
    })
    .await;
}

/// A permit lost while the request runs (its key deleted) ends the request
/// as a lost lock does: the handler is cancelled, the client gets 503
/// without `Retry-After` (`Lost`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_permit_cancels_its_request() {
    let fleet = Fleet::start(|layer| layer.permits(3).unwrap()).await;
    let addr = fleet.addr(0);
    let pending = tokio::spawn(async move { send(addr, "GET", "/gate/never", "lost").await });
    let probe = fleet.probe.clone();
    eventually("the handler runs", async || {
        probe.events().contains(&"never in".to_owned())
    })
    .await;
    let info = fleet.jobs.semaphore_info("k:lost").await.unwrap().unwrap();
    let mut etcd = support::raw_client(&fleet.etcd).await;
    etcd.delete(info.holders[0].key.as_str(), None)
        .await
        .unwrap();
    let status = timeout(Duration::from_secs(5), pending)
        .await
        .expect("the request ends when its permit is lost")
        .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(*fleet.probe.kinds.lock().unwrap(), [RejectionKind::Lost]);
    assert_eq!(
        fleet.probe.events(),
        ["never in"],
        "the handler was cancelled"
    );
}

/// Servers that disagree on a key's permits: the one that differs from the
/// holders is answered 500 (`Misconfigured`: retrying does not help); and
/// `permits(0)` is refused when the layer is built, as a bad TTL is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misconfigured_permits_are_configuration_errors() {
    let etcd = Etcd::start().await;
    let namespace = etcd.namespace();
    let probe = Arc::new(Probe::default());
    let base = async |n: u32| {
        let layer = LockLayer::new(
            manager(&etcd, &namespace).await,
            Header::new(KEY).prefix("k:"),
        )
        .permits(n)
        .unwrap()
        .wait(Duration::from_secs(2));
        serve(routes(probe.clone()).layer(recorded(layer, &probe))).await
    };
    let (two, three) = (base(2).await, base(3).await);
    let (_holding, _conn) = open(two.addr, "/stream", &[(KEY, "x")]).await;
    let started = Instant::now();
    let status = send(three.addr, "POST", "/work", "x").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused at once"
    );
    assert_eq!(*probe.kinds.lock().unwrap(), [RejectionKind::Misconfigured]);

    let manager = manager(&etcd, &namespace).await;
    for n in [0, distlock::MAX_PERMITS + 1] {
        let err = LockLayer::new(manager.clone(), Header::new(KEY))
            .permits(n)
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidOptions);
        let bad_ttl = LockLayer::new(manager.clone(), Header::new(KEY))
            .ttl(Duration::from_millis(10))
            .unwrap_err();
        assert_eq!(err.code(), bad_ttl.code(), "the same error path as ttl");
    }
}

// ---------------------------------------------------------- .read_write() ---

/// `GET`s of one key run at once, on both servers: four readers are inside
/// together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_of_one_key_overlap() {
    let fleet = Fleet::start(|layer| layer.read_write()).await;
    let mut calls = Vec::new();
    for i in 0..4 {
        let addr = fleet.addr(i);
        calls.push(tokio::spawn(async move {
            send(addr, "GET", "/work?ms=1500", "doc").await
        }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(fleet.probe.detector("k:doc").most_at_once(), 4);
    assert!(fleet.probe.rw_violations.lock().unwrap().is_empty());
}

/// `POST`s and `GET`s of one key on both servers: a `POST` is never inside
/// with any other request of its key (and the `GET`s still share).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_overlaps_no_other_request_of_its_key() {
    let fleet = Fleet::start(|layer| layer.read_write()).await;
    let mut calls = Vec::new();
    for i in 0..12 {
        let method = if i % 3 == 0 { "POST" } else { "GET" };
        let addr = fleet.addr(i);
        calls.push(tokio::spawn(async move {
            send(addr, method, "/work?ms=120", "doc").await
        }));
        sleep(Duration::from_millis(15)).await;
    }
    for call in calls {
        assert_eq!(call.await.unwrap(), StatusCode::OK);
    }
    let violations = fleet.probe.rw_violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "{violations:?}");
    assert_eq!(fleet.probe.detector("k:doc").entries(), 12);
}

/// FIFO across kinds: with a `GET` inside, a `POST` queued behind it and a
/// `GET` queued after the `POST`, the second `GET` waits for the `POST`
/// (it does not join the reader inside and starve the writer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_queued_after_a_post_waits_for_it() {
    let fleet = Fleet::start(|layer| layer.read_write()).await;
    let probe = fleet.probe.clone();
    let jobs = fleet.jobs.clone();
    let call = |i: usize, method: &'static str, name: &'static str| {
        let addr = fleet.addr(i);
        tokio::spawn(async move { send(addr, method, &format!("/gate/{name}"), "doc").await })
    };
    let queued = async |n: usize| {
        let jobs = jobs.clone();
        eventually(&format!("{n} request(s) queue"), async move || {
            jobs.lock_info("k:doc")
                .await
                .unwrap()
                .is_some_and(|i| i.waiters >= n)
        })
        .await;
    };

    let read1 = call(0, "GET", "read1");
    eventually("the first GET runs", async || {
        probe.events() == ["read1 in"]
    })
    .await;
    let write = call(1, "POST", "write");
    queued(1).await;
    let read2 = call(0, "GET", "read2");
    queued(2).await;
    sleep(Duration::from_millis(300)).await;
    assert_eq!(
        probe.events(),
        ["read1 in"],
        "the second GET joined the first"
    );

    probe.open_gate("read1");
    assert_eq!(read1.await.unwrap(), StatusCode::OK);
    eventually("the POST runs", async || probe.events().len() == 3).await;
    sleep(Duration::from_millis(300)).await;
    assert_eq!(probe.events(), ["read1 in", "read1 out", "write in"]);

    probe.open_gate("write");
    assert_eq!(write.await.unwrap(), StatusCode::OK);
    probe.open_gate("read2");
    assert_eq!(read2.await.unwrap(), StatusCode::OK);
    assert_eq!(
        probe.events(),
        [
            "read1 in",
            "read1 out",
            "write in",
            "write out",
            "read2 in",
            "read2 out"
        ]
    );
}

/// The write side is the key's lock: a job holding `new_lock(key)` keeps
/// both `GET`s and `POST`s out; a job holding a read lock keeps out only
/// `POST`s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_side_is_the_keys_lock() {
    let fleet = Fleet::start(|layer| layer.read_write().wait(Duration::from_millis(300))).await;
    let job = fleet
        .jobs
        .new_lock("k:doc", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    assert_eq!(send(fleet.addr(0), "GET", "/work", "doc").await, 429);
    assert_eq!(send(fleet.addr(1), "POST", "/work", "doc").await, 429);
    job.unlock().await.unwrap();

    let reader = fleet
        .jobs
        .new_rw_lock("k:doc", LockOptions::default())
        .unwrap()
        .read()
        .await
        .unwrap();
    assert_eq!(send(fleet.addr(0), "GET", "/work", "doc").await, 200);
    assert_eq!(send(fleet.addr(1), "POST", "/work", "doc").await, 429);
    reader.release().await.unwrap();
    assert_eq!(send(fleet.addr(1), "POST", "/work", "doc").await, 200);
}

/// A client that goes away while its request waits leaves the queue at
/// once, in both modes: its reader, writer or permit key is gone from etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_leaves_the_queue() {
    for permits in [false, true] {
        let fleet = if permits {
            Fleet::start(|layer| layer.permits(1).unwrap()).await
        } else {
            Fleet::start(|layer| layer.read_write()).await
        };
        let jobs = &fleet.jobs;
        // A job holds the key: its only permit, or its lock (the write side).
        let _job: Box<dyn Send> = if permits {
            let semaphore = jobs.new_semaphore("k:q", 1, LockOptions::default());
            Box::new(semaphore.unwrap().acquire().await.unwrap())
        } else {
            let lock = jobs.new_lock("k:q", LockOptions::default());
            Box::new(lock.unwrap().lock().await.unwrap())
        };
        for method in ["GET", "POST"] {
            let addr = fleet.addr(1);
            let waiting = tokio::spawn(async move { send(addr, method, "/work", "q").await });
            eventually("the request queues", async || {
                waiters(jobs, permits).await == 1
            })
            .await;
            waiting.abort();
            eventually("the request leaves the queue", async || {
                waiters(jobs, permits).await == 0
            })
            .await;
        }
    }
}

/// How many wait for `k:q`: its semaphore's waiters, or its lock's.
async fn waiters(jobs: &LockManager, permits: bool) -> usize {
    if permits {
        let info = jobs.semaphore_info("k:q").await.unwrap();
        info.map_or(0, |i| i.waiters)
    } else {
        let info = jobs.lock_info("k:q").await.unwrap();
        info.map_or(0, |i| i.waiters)
    }
}

// ------------------------------------------------------ .read_if with gRPC ---

mod grpc {
    use super::*;
    use tonic::transport::{server::TcpIncoming, Channel, Server};
    use tonic::Code;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    /// The gRPC health service behind `layer`.
    async fn health(
        layer: LockLayer<Header, distlock_tower::mode::ReadWrite>,
    ) -> (HealthClient<Channel>, JoinHandle<()>) {
        let (_reporter, health) = tonic_health::server::health_reporter();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            Server::builder()
                .layer(layer)
                .add_service(health)
                .serve_with_incoming(TcpIncoming::from(listener))
                .await
                .unwrap()
        });
        let channel = Channel::from_shared(format!("http://{addr}")).unwrap();
        (HealthClient::new(channel.connect().await.unwrap()), server)
    }

    fn request(key: &str) -> tonic::Request<HealthCheckRequest> {
        let mut req = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        req.metadata_mut().insert(KEY, key.parse().unwrap());
        req
    }

    /// `Check` reads, by its path; `Watch` writes. With a job reading the key,
    /// `Check` runs and `Watch` is answered `ABORTED` (busy); with a job
    /// writing it, `Check` is too. Without the rule every gRPC call is a
    /// `POST`, so `Check` writes and waits for the reading job.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn read_if_by_path_works_with_grpc() {
        let etcd = Etcd::start().await;
        let namespace = etcd.namespace();
        let layer = |m: LockManager| {
            LockLayer::new(m, Header::new(KEY).prefix("k:"))
                .read_write()
                .wait(Duration::from_millis(300))
        };
        let by_path =
            layer(manager(&etcd, &namespace).await).read_if(|head: &http::request::Parts| {
                head.uri.path() == "/grpc.health.v1.Health/Check"
            });
        let (mut client, server) = health(by_path).await;
        let (mut plain, plain_server) = health(layer(manager(&etcd, &namespace).await)).await;
        let jobs = manager(&etcd, &namespace).await;
        let rw = jobs.new_rw_lock("k:doc", LockOptions::default()).unwrap();

        let reading = rw.read().await.unwrap();
        assert!(client.check(request("doc")).await.is_ok());
        let status = client.watch(request("doc")).await.unwrap_err();
        assert_eq!(status.code(), Code::Aborted, "{status:?}");
        let status = plain.check(request("doc")).await.unwrap_err();
        assert_eq!(status.code(), Code::Aborted, "{status:?}");
        reading.release().await.unwrap();

        let writing = rw.write().await.unwrap();
        let status = client.check(request("doc")).await.unwrap_err();
        assert_eq!(status.code(), Code::Aborted, "{status:?}");
        writing.release().await.unwrap();

        // An open Watch stream holds the write side: Check waits for it.
        let mut watch = client.watch(request("doc")).await.unwrap().into_inner();
        assert!(watch.message().await.unwrap().is_some());
        let status = client.check(request("doc")).await.unwrap_err();
        assert_eq!(status.code(), Code::Aborted, "{status:?}");
        drop(watch);
        let started = Instant::now();
        while client.check(request("doc")).await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(3), "never released");
        }
        server.abort();
        plain_server.abort();
    }
}
