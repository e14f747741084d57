//! `LeaderOnly` (issue #20) on real etcd: axum servers, each with its own
//! manager and `Candidacy` (its address as the value), share one election.
//! Exactly one serves the leader-only route; the others answer 421 naming
//! it and forward nothing; after the leader resigns, its manager closes, its
//! key is deleted behind its back, or it is cut off from etcd, another takes
//! over and the followers' header follows. A shared checker sees every
//! handler run: never two leaders' requests at once, never an older leader's
//! request starting after a newer one's, always in the leadership's scope.
//! A tonic service behind the layer answers `UNAVAILABLE` on followers.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use distlock::layout::Keyspace;
use distlock::testing::{Fault, Faults, Op};
use distlock::{LockManager, LockOptions};
use distlock_tests::Etcd;
use distlock_tower::{Candidacy, HeldLock, HoldKind, LeaderOnly, Role, LEADER_HEADER};
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use support::{connect, init_tracing, raw_client, short_ttl};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

/// The election every server campaigns in.
const ELECTION: &str = "writer";

/// Bounds every wait for a takeover or an observation.
const SETTLE: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------- checker ---

/// Sees every leader-only handler of the fleet run.
#[derive(Default)]
struct Checker {
    state: Mutex<CheckState>,
}

#[derive(Default)]
struct CheckState {
    /// Handlers inside, per fencing token.
    inside: BTreeMap<u64, usize>,
    /// The highest token a handler has started with.
    newest: u64,
    violations: Vec<String>,
    /// Handlers that ran to their end.
    finished: usize,
    /// Handlers whose future was dropped before their end.
    cancelled: usize,
}

impl Checker {
    fn state(&self) -> std::sync::MutexGuard<'_, CheckState> {
        self.state.lock().unwrap()
    }

    /// A handler of `node` starts under `token`: no other leader's handler
    /// may be inside, and no newer leader's may have started already.
    fn enter(self: &Arc<Self>, node: usize, token: u64) -> Inside {
        let mut s = self.state();
        let others: Vec<u64> = s
            .inside
            .iter()
            .filter(|(t, n)| **t != token && **n > 0)
            .map(|(t, _)| *t)
            .collect();
        if !others.is_empty() {
            s.violations.push(format!(
                "node {node} ran under token {token} while {others:?} ran"
            ));
        }
        let newest = s.newest;
        if token < newest {
            s.violations.push(format!(
                "node {node} started under token {token} after token {newest} had"
            ));
        }
        s.newest = s.newest.max(token);
        *s.inside.entry(token).or_default() += 1;
        Inside {
            checker: Arc::clone(self),
            token,
            done: false,
        }
    }

    fn violation(&self, what: String) {
        self.state().violations.push(what);
    }

    fn assert_clean(&self) {
        let s = self.state();
        assert!(s.violations.is_empty(), "{:#?}", s.violations);
    }
}

/// A handler inside; it leaves when dropped (also when cancelled).
struct Inside {
    checker: Arc<Checker>,
    token: u64,
    done: bool,
}

impl Drop for Inside {
    fn drop(&mut self) {
        let mut s = self.checker.state();
        *s.inside.get_mut(&self.token).unwrap() -= 1;
        if self.done {
            s.finished += 1;
        } else {
            s.cancelled += 1;
        }
    }
}

// ----------------------------------------------------------------- servers ---

/// One server's handler state.
struct Node {
    id: usize,
    /// Calls that reached the leader-only handler on this server.
    calls: AtomicUsize,
    checker: Arc<Checker>,
}

/// `POST /write[?ms=N]`: the leader-only route. Runs N ms (default 0) under
/// the leadership and answers `{node} {token}`.
async fn write(State(node): State<Arc<Node>>, leader: HeldLock, req: Request) -> String {
    node.calls.fetch_add(1, Ordering::SeqCst);
    let token = leader.fencing_token();
    if leader.kind() != HoldKind::Leader || leader.key() != ELECTION {
        node.checker
            .violation(format!("node {} ran under {leader:?}", node.id));
    }
    if distlock::current_fencing_token() != Some(token) {
        node.checker.violation(format!(
            "node {} ran outside its leadership's scope ({:?})",
            node.id,
            distlock::current_fencing_token()
        ));
    }
    let mut inside = node.checker.enter(node.id, token);
    let ms = req
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("ms="))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0);
    sleep(Duration::from_millis(ms)).await;
    inside.done = true;
    format!("{} {token}", node.id)
}

fn app(node: Arc<Node>, layer: LeaderOnly) -> Router {
    Router::new()
        .route("/write", post(write).route_layer(layer))
        .route("/read", get(|| async { "read" }))
        .with_state(node)
}

/// A server: its manager, candidacy and handler state; stopped when dropped.
struct Server {
    addr: SocketAddr,
    manager: LockManager,
    candidacy: Candidacy,
    node: Arc<Node>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// What this server proclaims when it leads: its address.
    fn value(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn calls(&self) -> usize {
        self.node.calls.load(Ordering::SeqCst)
    }
}

/// Servers on one etcd namespace, and the checker they share.
struct Fleet {
    etcd: Etcd,
    namespace: String,
    checker: Arc<Checker>,
    servers: Vec<Server>,
}

impl Fleet {
    /// `n` servers campaigning with `options`; server 0 leads (it campaigns
    /// first) and, given `faults`, reaches etcd through them.
    async fn start(n: usize, options: LockOptions, faults: Option<&Faults>) -> Fleet {
        init_tracing();
        let etcd = Etcd::start().await;
        let namespace = etcd.namespace();
        let checker = Arc::new(Checker::default());
        let mut servers = Vec::new();
        for id in 0..n {
            let manager = connect(&etcd, &namespace).await;
            let manager = match faults {
                Some(faults) if id == 0 => manager.with_faults(faults),
                _ => manager,
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let value = format!("http://{addr}");
            let candidacy = Candidacy::start(&manager, ELECTION, value, options.clone()).unwrap();
            if id == 0 {
                role_becomes(&candidacy, |r| matches!(r, Role::Leader { .. })).await;
            }
            let node = Arc::new(Node {
                id,
                calls: AtomicUsize::new(0),
                checker: Arc::clone(&checker),
            });
            let router = app(Arc::clone(&node), LeaderOnly::new(candidacy.clone()));
            let task = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
            servers.push(Server {
                addr,
                manager,
                candidacy,
                node,
                task,
            });
        }
        Fleet {
            etcd,
            namespace,
            checker,
            servers,
        }
    }

    /// Waits until exactly one of `live` leads and every other one of them
    /// follows it, then checks it over HTTP: the leader serves `/write`,
    /// each other answers 421 naming it and calls nothing. Returns the
    /// leader's index and fencing token.
    async fn settle(&self, live: &[usize]) -> (usize, u64) {
        let deadline = Instant::now() + SETTLE;
        let (leader, token) = loop {
            let roles: Vec<Role> = live
                .iter()
                .map(|&i| self.servers[i].candidacy.role())
                .collect();
            let leaders: Vec<(usize, u64)> = live
                .iter()
                .zip(&roles)
                .filter_map(|(&i, r)| match r {
                    Role::Leader { fencing_token } => Some((i, *fencing_token)),
                    _ => None,
                })
                .collect();
            if let [(leader, token)] = leaders[..] {
                let value = self.servers[leader].value();
                let all_follow = live.iter().zip(&roles).all(|(&i, r)| {
                    i == leader || matches!(r, Role::Follower(l) if l.value == value.as_bytes())
                });
                if all_follow {
                    break (leader, token);
                }
            }
            assert!(Instant::now() < deadline, "never settled: {roles:?}");
            sleep(Duration::from_millis(20)).await;
        };
        let value = self.servers[leader].value();
        let before: Vec<usize> = self.servers.iter().map(Server::calls).collect();
        for &i in live {
            let reply = send(self.servers[i].addr, "POST", "/write").await;
            if i == leader {
                assert_eq!(
                    reply.status,
                    StatusCode::OK,
                    "the leader, {i}: {}",
                    reply.body
                );
                assert_eq!(reply.body, format!("{i} {token}"));
            } else {
                assert_eq!(
                    reply.status,
                    StatusCode::MISDIRECTED_REQUEST,
                    "{i}: {}",
                    reply.body
                );
                assert_eq!(reply.leader().as_deref(), Some(value.as_str()), "{i}");
            }
        }
        for (i, server) in self.servers.iter().enumerate() {
            let want = before[i] + usize::from(i == leader);
            assert_eq!(server.calls(), want, "server {i} ran the handler");
        }
        (leader, token)
    }

    /// Deletes the election's leading key through etcd, behind its owner's
    /// back (as an operator's `etcdctl del` would); checks it is `value`'s.
    async fn delete_leader_key(&self, value: &str) {
        let prefix = Keyspace::new(&self.namespace).election(ELECTION);
        let mut client = raw_client(&self.etcd).await;
        let listing = client
            .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .unwrap();
        let head = listing
            .kvs()
            .iter()
            .min_by_key(|kv| kv.create_revision())
            .expect("a candidate");
        assert_eq!(head.value(), value.as_bytes());
        let deleted = client.delete(head.key(), None).await.unwrap();
        assert_eq!(deleted.deleted(), 1);
    }
}

async fn role_becomes(c: &Candidacy, pred: impl FnMut(&Role) -> bool) -> Role {
    timeout(SETTLE, c.wait_for(pred))
        .await
        .unwrap_or_else(|_| panic!("{c:?} never got there"))
}

// ----------------------------------------------------------------- client ---

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn leader(&self) -> Option<String> {
        let value = self.headers.get(LEADER_HEADER)?;
        Some(value.to_str().unwrap().to_owned())
    }
}

/// `method path` on a connection of its own, read to its end.
async fn send(addr: SocketAddr, method: &str, path: &str) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(req).await.expect("an answer");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("a complete body").to_bytes();
    conn.abort();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

// ------------------------------------------------------------------ tests ---

/// One server serves the route, in the leadership's scope; the others
/// answer 421 with the leader's address and call nothing; routes, paths
/// and methods without the layer are answered by every server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_serves_the_route_and_the_others_send_clients_to_it() {
    let fleet = Fleet::start(3, LockOptions::default(), None).await;
    let (leader, token) = fleet.settle(&[0, 1, 2]).await;
    assert_eq!(leader, 0);
    assert_eq!(
        fleet.servers[0]
            .candidacy
            .leadership()
            .unwrap()
            .fencing_token(),
        token
    );
    for _ in 0..5 {
        fleet.settle(&[0, 1, 2]).await;
    }
    assert_eq!(fleet.servers[0].calls(), 6);

    for server in &fleet.servers {
        let read = send(server.addr, "GET", "/read").await;
        assert_eq!((read.status, read.body.as_str()), (StatusCode::OK, "read"));
        assert_eq!(send(server.addr, "GET", "/write").await.status, 405);
        assert_eq!(send(server.addr, "POST", "/nowhere").await.status, 404);
    }
    assert_eq!(fleet.servers[1].calls() + fleet.servers[2].calls(), 0);
    fleet.checker.assert_clean();
}

/// The leader resigns: the next candidate takes over at once, the resigned
/// server follows it, and the token grows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_leader_resigns_another_takes_over() {
    let fleet = Fleet::start(3, LockOptions::default(), None).await;
    let (first, token) = fleet.settle(&[0, 1, 2]).await;
    fleet.servers[first].candidacy.resign().await.unwrap();
    let (next, next_token) = fleet.settle(&[0, 1, 2]).await;
    assert_ne!(next, first);
    assert!(next_token > token);
    fleet.checker.assert_clean();
}

/// The leader's manager is closed: its lease is revoked, another server
/// takes over, and the closed one answers 503 with `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_leaders_manager_closes_another_takes_over() {
    let fleet = Fleet::start(3, LockOptions::default(), None).await;
    let (first, token) = fleet.settle(&[0, 1, 2]).await;
    fleet.servers[first].manager.close().await;
    let live: Vec<usize> = (0..3).filter(|&i| i != first).collect();
    let (next, next_token) = fleet.settle(&live).await;
    assert!(next_token > token);
    assert_ne!(next, first);
    let closed = send(fleet.servers[first].addr, "POST", "/write").await;
    assert_eq!(closed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(closed.headers.contains_key("retry-after"));
    assert_eq!(fleet.servers[first].candidacy.role(), Role::Closed);
    fleet.checker.assert_clean();
}

/// The leader's key is deleted behind its back: the request it was serving
/// is cancelled (503, no `Retry-After`, the handler never finishes), the
/// next candidate takes over, and the old leader campaigns again and
/// follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_key_is_deleted_stops_its_request_and_another_takes_over() {
    let fleet = Fleet::start(3, LockOptions::default(), None).await;
    let (first, token) = fleet.settle(&[0, 1, 2]).await;
    let addr = fleet.servers[first].addr;
    let slow = tokio::spawn(async move { send(addr, "POST", "/write?ms=30000").await });
    let deadline = Instant::now() + SETTLE;
    while fleet.checker.state().inside.get(&token) != Some(&1) {
        assert!(Instant::now() < deadline, "the slow request never started");
        sleep(Duration::from_millis(10)).await;
    }

    fleet.delete_leader_key(&fleet.servers[first].value()).await;
    let reply = timeout(Duration::from_secs(5), slow)
        .await
        .expect("the request was not cancelled")
        .unwrap();
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    assert!(!reply.headers.contains_key("retry-after"));
    {
        let s = fleet.checker.state();
        assert_eq!((s.finished, s.cancelled), (1, 1)); // settle's request, the slow one
    }

    let (next, next_token) = fleet.settle(&[0, 1, 2]).await;
    assert_ne!(
        next, first,
        "the deleted leader took over again before the queue"
    );
    assert!(next_token > token);
    fleet.checker.assert_clean();
}

/// The leader is cut off from etcd (its keep-alives fail) while clients
/// hammer every server: it stops serving on its own clock, before etcd lets
/// the next candidate lead, so no two leaders' requests ever overlap, and
/// the followers' header moves to the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_never_serves_beside_the_next() {
    let faults = Faults::new();
    // The leader declares its loss a tenth of the TTL before etcd can
    // expire its lease: 400 ms for a scheduler on a busy machine.
    let fleet = Arc::new(Fleet::start(3, short_ttl(4), Some(&faults)).await);
    let (first, token) = fleet.settle(&[0, 1, 2]).await;
    assert_eq!(first, 0);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let served = Arc::new(Mutex::new(BTreeMap::<usize, usize>::new()));
    let mut clients = Vec::new();
    for i in 0..3 {
        for _ in 0..2 {
            let (fleet, stop, served) = (fleet.clone(), stop.clone(), served.clone());
            clients.push(tokio::spawn(async move {
                let addr = fleet.servers[i].addr;
                while !stop.load(Ordering::SeqCst) {
                    let reply = send(addr, "POST", "/write?ms=30").await;
                    if reply.status == StatusCode::OK {
                        *served.lock().unwrap().entry(i).or_default() += 1;
                    }
                }
            }));
        }
    }
    sleep(Duration::from_millis(300)).await;
    faults.always(Op::KeepAlive, Fault::Fail);

    // Until a new leader has served for a while.
    let deadline = Instant::now() + SETTLE;
    loop {
        let new_served: usize = {
            let served = served.lock().unwrap();
            served
                .iter()
                .filter(|(i, _)| **i != 0)
                .map(|(_, n)| n)
                .sum()
        };
        if new_served >= 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new leader served: {served:?}"
        );
        sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        timeout(Duration::from_secs(10), c).await.unwrap().unwrap();
    }
    fleet.checker.assert_clean();
    assert!(served.lock().unwrap().get(&0).copied().unwrap_or(0) > 0);

    // The cut-off server is a candidate again once it reaches etcd.
    faults.heal();
    let (next, next_token) = fleet.settle(&[0, 1, 2]).await;
    assert!(next_token > token);
    assert_ne!(next, 0);
    fleet.checker.assert_clean();
}

// ------------------------------------------------------------------ tonic ---

mod grpc {
    use super::*;
    use tonic::transport::{server::TcpIncoming, Channel, Server as GrpcServer};
    use tonic::Code;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tower::{Layer, Service};

    /// A service that counts the calls reaching it (and keeps its gRPC name).
    #[derive(Clone)]
    struct Counted<S> {
        inner: S,
        calls: Arc<AtomicUsize>,
    }

    impl<S: tonic::server::NamedService> tonic::server::NamedService for Counted<S> {
        const NAME: &'static str = S::NAME;
    }

    impl<S, R> Service<R> for Counted<S>
    where
        S: Service<R>,
    {
        type Response = S::Response;
        type Error = S::Error;
        type Future = S::Future;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, req: R) -> S::Future {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.inner.call(req)
        }
    }

    struct GrpcNode {
        candidacy: Candidacy,
        value: String,
        calls: Arc<AtomicUsize>,
        client: HealthClient<Channel>,
        task: JoinHandle<()>,
    }

    impl Drop for GrpcNode {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// A tonic server whose health service runs only on the leader.
    async fn node(etcd: &Etcd, namespace: &str) -> GrpcNode {
        let manager = connect(etcd, namespace).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let value = format!("http://{addr}");
        let candidacy =
            Candidacy::start(&manager, ELECTION, value.clone(), LockOptions::default()).unwrap();
        let (_reporter, health) = tonic_health::server::health_reporter();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Counted {
            inner: health,
            calls: calls.clone(),
        };
        let service = LeaderOnly::new(candidacy.clone()).layer(counted);
        let task = tokio::spawn(async move {
            GrpcServer::builder()
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener))
                .await
                .unwrap()
        });
        let channel = Channel::from_shared(value.clone()).unwrap();
        let client = HealthClient::new(channel.connect().await.unwrap());
        GrpcNode {
            candidacy,
            value,
            calls,
            client,
            task,
        }
    }

    fn check_request() -> tonic::Request<HealthCheckRequest> {
        tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        })
    }

    /// Followers answer `UNAVAILABLE` with the leader's address in the
    /// metadata and call nothing; the leader serves; a stream it serves
    /// ends with `ABORTED` when its key is deleted behind its back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn followers_answer_unavailable_naming_the_leader() {
        init_tracing();
        let etcd = Etcd::start().await;
        let namespace = etcd.namespace();
        let leader = node(&etcd, &namespace).await;
        role_becomes(&leader.candidacy, |r| matches!(r, Role::Leader { .. })).await;
        let follower = node(&etcd, &namespace).await;
        let value = leader.value.clone();
        role_becomes(
            &follower.candidacy,
            move |r| matches!(r, Role::Follower(l) if l.value == value.as_bytes()),
        )
        .await;

        let status = follower
            .client
            .clone()
            .check(check_request())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        let named = status.metadata().get(LEADER_HEADER).unwrap();
        assert_eq!(named.to_str().unwrap(), leader.value);
        assert_eq!(
            follower.calls.load(Ordering::SeqCst),
            0,
            "a follower forwarded"
        );

        let served = leader.client.clone().check(check_request()).await.unwrap();
        assert_eq!(served.into_inner().status, 1); // SERVING
        assert_eq!(leader.calls.load(Ordering::SeqCst), 1);

        // A Watch stream runs under the leadership: deleting the key ends it.
        let mut watch = leader
            .client
            .clone()
            .watch(check_request())
            .await
            .unwrap()
            .into_inner();
        assert!(watch.message().await.unwrap().is_some());
        let prefix = Keyspace::new(&namespace).election(ELECTION);
        let mut raw = raw_client(&etcd).await;
        let listing = raw
            .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .unwrap();
        let head = listing
            .kvs()
            .iter()
            .min_by_key(|kv| kv.create_revision())
            .unwrap();
        assert_eq!(head.value(), leader.value.as_bytes());
        raw.delete(head.key(), None).await.unwrap();
        let end = timeout(Duration::from_secs(5), watch.message())
            .await
            .expect("the stream ends when leadership is lost");
        let status = end.unwrap_err();
        assert_eq!(status.code(), Code::Aborted, "{status:?}");

        // The follower leads now, and the old leader names it.
        role_becomes(&follower.candidacy, |r| matches!(r, Role::Leader { .. })).await;
        let value = follower.value.clone();
        role_becomes(
            &leader.candidacy,
            move |r| matches!(r, Role::Follower(l) if l.value == value.as_bytes()),
        )
        .await;
        let status = leader
            .client
            .clone()
            .check(check_request())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        let named = status.metadata().get(LEADER_HEADER).unwrap();
        assert_eq!(named.to_str().unwrap(), follower.value);
        let served = follower
            .client
            .clone()
            .check(check_request())
            .await
            .unwrap();
        assert_eq!(served.into_inner().status, 1);
    }
}
