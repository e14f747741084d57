//! distlock-tower in front of a tonic 0.14 server (the gRPC health service of
//! `tonic-health`), on real etcd: rejections are gRPC statuses, each kind
//! with its own code (a busy key `ABORTED`, a full queue
//! `RESOURCE_EXHAUSTED`, an outage `UNAVAILABLE`, a configuration fault
//! `INTERNAL`) and retry advice in `grpc-retry-pushback-ms`; a
//! server-streaming call holds its lock until the client drops the stream,
//! and one cut off by a lost lock ends with `ABORTED`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use distlock::{EtcdConfig, LockManager, LockOptions};
use distlock_tests::Etcd;
use distlock_tower::{GrpcCode, GrpcMethod, Header, KeyExtractor, LockLayer, RejectionKind};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};
use tonic::transport::{server::TcpIncoming, Channel, Server};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// How long a call waits for its lock.
const WAIT: Duration = Duration::from_millis(300);

struct Fixture {
    _etcd: Etcd,
    /// The server's manager.
    manager: LockManager,
    /// A second manager on the namespace: background jobs and admin calls.
    jobs: LockManager,
    client: HealthClient<Channel>,
    server: JoinHandle<()>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Fixture {
    async fn start() -> Fixture {
        Fixture::start_with(Header::new("x-key"), |layer| layer).await
    }

    /// The health service behind a layer keyed by `extractor`, set up by
    /// `configure`.
    async fn start_with<E>(
        extractor: E,
        configure: impl FnOnce(LockLayer<E>) -> LockLayer<E>,
    ) -> Fixture
    where
        E: KeyExtractor<tonic::body::Body> + Send + Sync + 'static,
    {
        let etcd = Etcd::start().await;
        let namespace = etcd.namespace();
        let connect = || LockManager::connect(EtcdConfig::new(etcd.endpoints()), &namespace);
        let (manager, jobs) = (connect().await.unwrap(), connect().await.unwrap());
        Fixture::serve(etcd, manager, jobs, extractor, configure).await
    }

    /// The health service behind a layer on `manager`.
    async fn serve<E>(
        etcd: Etcd,
        manager: LockManager,
        jobs: LockManager,
        extractor: E,
        configure: impl FnOnce(LockLayer<E>) -> LockLayer<E>,
    ) -> Fixture
    where
        E: KeyExtractor<tonic::body::Body> + Send + Sync + 'static,
    {
        let (_reporter, health) = tonic_health::server::health_reporter();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let layer = LockLayer::new(manager.clone(), extractor)
            .ttl(Duration::from_secs(5))
            .unwrap()
            .wait(WAIT);
        let layer = configure(layer);
        let server = tokio::spawn(async move {
            Server::builder()
                .layer(layer)
                .add_service(health)
                .serve_with_incoming(TcpIncoming::from(listener))
                .await
                .unwrap()
        });
        let channel = Channel::from_shared(format!("http://{addr}")).unwrap();
        let client = HealthClient::new(channel.connect().await.unwrap());
        Fixture {
            _etcd: etcd,
            manager,
            jobs,
            client,
            server,
        }
    }

    /// Holds `name` from the jobs manager until the guard is dropped.
    async fn hold(&self, name: &str) -> distlock::LockGuard {
        let lock = self.jobs.new_lock(name, LockOptions::default()).unwrap();
        lock.lock().await.unwrap()
    }
}

fn request(key: Option<&str>) -> tonic::Request<HealthCheckRequest> {
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    if let Some(key) = key {
        req.metadata_mut().insert("x-key", key.parse().unwrap());
    }
    req
}

/// `Check` with `key`: the serving status, or the error status.
async fn check(client: &HealthClient<Channel>, key: Option<&str>) -> Result<i32, tonic::Status> {
    let mut client = client.clone();
    Ok(client.check(request(key)).await?.into_inner().status)
}

const SERVING: i32 = ServingStatus::Serving as i32;

/// The status's `grpc-retry-pushback-ms`, if any.
fn pushback(status: &tonic::Status) -> Option<&str> {
    status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .map(|v| v.to_str().unwrap())
}

/// A busy key is `ABORTED` (a concurrency conflict, not an unavailable
/// server), with the retry advice as `grpc-retry-pushback-ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_key_answers_aborted_with_pushback_and_others_pass() {
    let fx = Fixture::start().await;
    let _busy = fx.hold("busy").await;

    let started = Instant::now();
    let status = check(&fx.client, Some("busy")).await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(pushback(&status), Some("1000"), "{status:?}");
    assert!(status.message().contains("busy"), "{status:?}");
    assert!(started.elapsed() >= WAIT, "{:?}", started.elapsed());

    assert_eq!(check(&fx.client, Some("free")).await.unwrap(), SERVING);
    assert_eq!(check(&fx.client, None).await.unwrap(), SERVING);
    let status = check(&fx.client, Some("")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(pushback(&status), None, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stream_holds_its_lock_until_dropped_or_lost() {
    let fx = Fixture::start().await;

    // An open Watch stream holds "w": a Check on "w" times out.
    let mut client = fx.client.clone();
    let mut watch = client.watch(request(Some("w"))).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, SERVING);
    let status = check(&fx.client, Some("w")).await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted, "{status:?}");

    // The client drops the stream: the lock is released at once.
    drop(watch);
    let started = Instant::now();
    loop {
        match check(&fx.client, Some("w")).await {
            Ok(status) => break assert_eq!(status, SERVING),
            Err(status) => assert_eq!(status.code(), Code::Aborted),
        }
        assert!(started.elapsed() < Duration::from_secs(3), "never released");
        sleep(Duration::from_millis(20)).await;
    }

    // The lock is lost while the stream is open: it ends with ABORTED (not
    // UNAVAILABLE, which retry policies would re-send).
    let mut watch = client
        .watch(request(Some("w2")))
        .await
        .unwrap()
        .into_inner();
    assert!(watch.message().await.unwrap().is_some());
    assert!(fx.jobs.force_unlock("w2").await.unwrap());
    let end = timeout(Duration::from_secs(3), watch.message())
        .await
        .expect("the stream ends when its lock is lost");
    let status = end.unwrap_err();
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(status.message().contains("lost"), "{status:?}");
}

/// `GrpcMethod`: only `Check` is locked, by its `x-key` metadata (prefixed);
/// `Watch` with the same metadata runs unlocked; an empty value is
/// `INVALID_ARGUMENT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_method_locks_one_method_by_a_metadata_key() {
    let fx = Fixture::start_with(
        GrpcMethod::new("/grpc.health.v1.Health/Check", "x-key").prefix("health:"),
        |layer| layer,
    )
    .await;
    let _busy = fx.hold("health:busy").await;

    let status = check(&fx.client, Some("busy")).await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(check(&fx.client, Some("free")).await.unwrap(), SERVING);

    // Watch is another method: not locked, even with a busy key.
    let mut client = fx.client.clone();
    let mut watch = client
        .watch(request(Some("busy")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status, SERVING);

    let status = check(&fx.client, Some("")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}

/// `max_hold`: a server stream that outlives it ends with `ABORTED`
/// trailers, and its key is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_hold_ends_a_long_server_stream() {
    const LIMIT: Duration = Duration::from_millis(600);
    let fx = Fixture::start_with(Header::new("x-key").prefix("health:"), |layer| {
        layer.max_hold(LIMIT)
    })
    .await;
    let mut client = fx.client.clone();
    let started = Instant::now();
    let mut watch = client
        .watch(request(Some("long")))
        .await
        .unwrap()
        .into_inner();
    assert!(watch.message().await.unwrap().is_some());
    let end = timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("max_hold ends the stream");
    let status = end.unwrap_err();
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(status.message().contains("as long as it may"), "{status:?}");
    assert!(started.elapsed() >= LIMIT, "{:?}", started.elapsed());
    assert_eq!(check(&fx.client, Some("long")).await.unwrap(), SERVING);
}

/// `max_waiters(1)`: with a job holding the key and one call waiting, the
/// next is shed at once with `RESOURCE_EXHAUSTED` (this server's queue for
/// the key is full) and the retry advice; the waiting one runs once the job
/// is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_resource_exhausted() {
    let fx = Fixture::start_with(Header::new("x-key"), |layer| {
        layer
            .wait(Duration::from_secs(10))
            .max_waiters(1)
            .retry_after(Duration::from_millis(1500))
    })
    .await;
    let job = fx.hold("hot").await;
    let client = fx.client.clone();
    let waiting = tokio::spawn(async move { check(&client, Some("hot")).await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while fx.jobs.lock_info("hot").await.unwrap().unwrap().waiters < 1 {
        assert!(Instant::now() < deadline, "the call never queued");
        sleep(Duration::from_millis(20)).await;
    }

    let started = Instant::now();
    let status = check(&fx.client, Some("hot")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(pushback(&status), Some("1500"), "{status:?}");
    assert!(status.message().contains("too many"), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "shed at once");

    job.unlock().await.unwrap();
    let served = timeout(Duration::from_secs(5), waiting).await.unwrap();
    assert_eq!(served.unwrap().unwrap(), SERVING);
}

/// A closed manager (the lock service gone) is `UNAVAILABLE`, with the
/// retry advice: nothing ran, a later retry may work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_answers_unavailable() {
    let fx = Fixture::start().await;
    assert_eq!(check(&fx.client, Some("k")).await.unwrap(), SERVING);
    fx.manager.close().await;
    let status = check(&fx.client, Some("k")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(pushback(&status), Some("1000"), "{status:?}");
    assert_eq!(check(&fx.client, None).await.unwrap(), SERVING);
}

/// etcd denies the server's credentials access to the key: `INTERNAL`,
/// without retry advice (a configuration fault: retrying does not help).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_credentials_answer_internal() {
    let namespace = distlock_tests::unique_namespace("tonic-denied");
    let (etcd, reader) = support::auth::read_only_manager(&namespace).await;
    let fx = Fixture::serve(
        etcd,
        reader.clone(),
        reader,
        Header::new("x-key"),
        |layer| layer.wait(Duration::from_secs(5)),
    )
    .await;
    let started = Instant::now();
    let status = check(&fx.client, Some("k")).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(pushback(&status), None, "{status:?}");
    assert!(status.message().contains("as configured"), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "refused at once"
    );
}

/// `grpc_code_for` replaces one kind's code (here for a fleet whose retry
/// policies list `UNAVAILABLE` only); the retry advice stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_code_for_replaces_one_kinds_code() {
    let fx = Fixture::start_with(Header::new("x-key"), |layer| {
        layer.grpc_code_for(RejectionKind::Timeout, GrpcCode::Unavailable)
    })
    .await;
    let _busy = fx.hold("busy").await;
    let status = check(&fx.client, Some("busy")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(pushback(&status), Some("1000"), "{status:?}");
    let status = check(&fx.client, Some("")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}

/// One service of a server wrapped on its own (`LockService` has the inner
/// service's gRPC name): `add_service(layer.layer(health))` serves it, and
/// a busy key is refused there as through `Server::builder().layer(..)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_wrapped_service_is_added_on_its_own() {
    use tower::Layer;
    let etcd = Etcd::start().await;
    let connect = || LockManager::connect(EtcdConfig::new(etcd.endpoints()), "/one-svc");
    let (manager, jobs) = (connect().await.unwrap(), connect().await.unwrap());
    let (_reporter, health) = tonic_health::server::health_reporter();
    let layer = LockLayer::new(manager.clone(), Header::new("x-key")).wait(WAIT);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        Server::builder()
            .add_service(layer.layer(health))
            .serve_with_incoming(TcpIncoming::from(listener))
            .await
            .unwrap()
    });
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap();
    let client = HealthClient::new(channel.connect().await.unwrap());

    let busy = jobs.new_lock("busy", LockOptions::default()).unwrap();
    let _held = busy.lock().await.unwrap();
    let status = check(&client, Some("busy")).await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(check(&client, Some("free")).await.unwrap(), SERVING);
    server.abort();
    manager.close().await;
}
