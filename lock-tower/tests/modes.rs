//! The layer's modes in one process (an in-memory manager): `.permits(n)`
//! and `.read_write()` with requests made from one task, which must still be
//! owners of their own; what a handler's owner scope is in each mode; the
//! configuration errors. The fleet-wide behaviour, on etcd with real
//! servers, is in `tests/tests/tower_kinds.rs`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distlock::{ErrorCode, LockManager, LockOptions};
use distlock_tower::{Header, HeldLock, HoldKind, LockLayer, LockService};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::time::{sleep, timeout};
use tower::{service_fn, Layer, ServiceExt};

/// Counts the requests inside their handlers; remembers the most at once.
#[derive(Default, Clone)]
struct Inside {
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl Inside {
    async fn during(&self, pause: Duration) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        sleep(pause).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
    }

    fn most(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }
}

fn request(method: Method, key: &str) -> Request<String> {
    Request::builder()
        .method(method)
        .uri("/")
        .header("x-key", key)
        .body(String::new())
        .unwrap()
}

type Service = LockService<
    tower::util::BoxCloneSyncService<Request<String>, Response<String>, Infallible>,
    Header,
>;

/// `layer` around `handler`.
fn serve<M, F, Fut>(layer: LockLayer<Header, M>, handler: F) -> Service
where
    F: Fn(Request<String>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = String> + Send + 'static,
{
    layer.layer(tower::util::BoxCloneSyncService::new(service_fn(
        move |req: Request<String>| {
            let body = handler(req);
            async move { Ok::<_, Infallible>(Response::new(body.await)) }
        },
    )))
}

/// A service whose handler spends `pause` inside `inside`.
fn counting<M>(layer: LockLayer<Header, M>, inside: &Inside, pause: Duration) -> Service {
    let inside = inside.clone();
    serve(layer, move |_req| {
        let inside = inside.clone();
        async move {
            inside.during(pause).await;
            String::new()
        }
    })
}

/// The body of `method` with `key`.
async fn body(service: &Service, method: Method, key: &str) -> String {
    let response = service.clone().oneshot(request(method, key)).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

async fn status(service: &Service, method: Method, key: &str) -> StatusCode {
    service
        .clone()
        .oneshot(request(method, key))
        .await
        .unwrap()
        .status()
}

fn layer(manager: &LockManager) -> LockLayer<Header> {
    LockLayer::new(manager.clone(), Header::new("x-key"))
}

/// Writes made from one task (`join!`, as tower's `CallAll` does) still
/// exclude each other and the reads: each request is an owner of its own,
/// though the core makes a read-write hold its task's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_write_requests_from_one_task_are_owners_of_their_own() {
    let manager = LockManager::in_memory();
    let writes = Inside::default();
    let service = counting(
        layer(&manager).read_write(),
        &writes,
        Duration::from_millis(100),
    );
    let (a, b, c) = tokio::join!(
        status(&service, Method::POST, "k"),
        status(&service, Method::PUT, "k"),
        status(&service, Method::DELETE, "k"),
    );
    assert_eq!([a, b, c], [StatusCode::OK; 3]);
    assert_eq!(writes.most(), 1, "writers of one key overlapped");

    // A read and a write from one task: the write waits (it is not refused
    // as an upgrade of the task's own read lock, nor let in beside it).
    let mixed = Inside::default();
    let service = counting(
        layer(&manager).read_write(),
        &mixed,
        Duration::from_millis(100),
    );
    let (get, post) = tokio::join!(
        status(&service, Method::GET, "m"),
        status(&service, Method::POST, "m"),
    );
    assert_eq!([get, post], [StatusCode::OK; 2]);
    assert_eq!(mixed.most(), 1);
}

/// Reads of one key from one task run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_from_one_task_share_their_key() {
    let manager = LockManager::in_memory();
    let reads = Inside::default();
    let service = counting(
        layer(&manager).read_write(),
        &reads,
        Duration::from_millis(300),
    );
    let all = futures_join3(
        status(&service, Method::GET, "k"),
        status(&service, Method::HEAD, "k"),
        status(&service, Method::OPTIONS, "k"),
    );
    let statuses = timeout(Duration::from_secs(5), all).await.unwrap();
    assert_eq!(statuses, [StatusCode::OK; 3]);
    assert_eq!(reads.most(), 3, "readers of one key did not overlap");
}

async fn futures_join3<T>(
    a: impl Future<Output = T>,
    b: impl Future<Output = T>,
    c: impl Future<Output = T>,
) -> [T; 3] {
    let (a, b, c) = tokio::join!(a, b, c);
    [a, b, c]
}

/// `permits(2)`: two requests of a key at once, from one task too; other
/// keys are not counted against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permits_admit_n_requests_per_key() {
    let manager = LockManager::in_memory();
    let inside = Inside::default();
    let service = counting(
        layer(&manager).permits(2).unwrap(),
        &inside,
        Duration::from_millis(100),
    );
    let (a, b, c, d) = tokio::join!(
        status(&service, Method::POST, "k"),
        status(&service, Method::POST, "k"),
        status(&service, Method::POST, "k"),
        status(&service, Method::POST, "k"),
    );
    assert_eq!([a, b, c, d], [StatusCode::OK; 4]);
    assert_eq!(inside.most(), 2);

    let inside = Inside::default();
    let service = counting(
        layer(&manager).permits(2).unwrap(),
        &inside,
        Duration::from_millis(200),
    );
    let (a, b, c, d) = tokio::join!(
        status(&service, Method::POST, "a"),
        status(&service, Method::POST, "a"),
        status(&service, Method::POST, "b"),
        status(&service, Method::POST, "b"),
    );
    assert_eq!([a, b, c, d], [StatusCode::OK; 4]);
    assert_eq!(inside.most(), 4, "keys a and b are limited separately");
}

/// What a handler sees of its hold and its owner scope, in each mode.
#[derive(Debug, PartialEq)]
struct Seen {
    kind: HoldKind,
    /// `distlock::current_lock()`: its name, and whether its token is the
    /// request's.
    current: Option<(String, bool)>,
}

fn seeing<M>(layer: LockLayer<Header, M>) -> Service {
    serve(layer, |req| async move {
        let held = req.extensions().get::<HeldLock>().unwrap().clone();
        let current = distlock::current_lock().map(|c| {
            let own = c.fencing_token() == held.fencing_token();
            (c.name().to_owned(), own)
        });
        let seen = Seen {
            kind: held.kind(),
            current,
        };
        format!("{seen:?}")
    })
}

/// A permit-limited request runs in no owner scope of its own (a permit is
/// no lock); a read or write request runs in its guard's.
#[tokio::test]
async fn a_handlers_owner_scope_by_mode() {
    let manager = LockManager::in_memory();
    let expect = |kind, current: Option<&str>| {
        format!(
            "{:?}",
            Seen {
                kind,
                current: current.map(|name| (name.to_owned(), true)),
            }
        )
    };
    let permits = seeing(layer(&manager).permits(3).unwrap());
    assert_eq!(
        body(&permits, Method::POST, "p").await,
        expect(HoldKind::Permit, None)
    );
    let rw = seeing(layer(&manager).read_write());
    assert_eq!(
        body(&rw, Method::GET, "r").await,
        expect(HoldKind::Read, Some("r"))
    );
    assert_eq!(
        body(&rw, Method::POST, "w").await,
        expect(HoldKind::Write, Some("w"))
    );
    let lock = seeing(layer(&manager));
    assert_eq!(
        body(&lock, Method::POST, "l").await,
        expect(HoldKind::Lock, Some("l"))
    );
}

/// Locking the request's key inside a write request enters a child section
/// of the request's hold (same token) instead of waiting for it; inside a
/// read request it is refused at once (`AlreadyHeld`): an exclusive section
/// there would wait for the request itself, or exclude nobody.
#[tokio::test]
async fn locking_the_key_inside_a_write_request_nests_and_inside_a_read_request_is_refused() {
    let manager = LockManager::in_memory();
    let inner = manager.clone();
    let service = serve(layer(&manager).read_write(), move |req| {
        let manager = inner.clone();
        async move {
            let held = req.extensions().get::<HeldLock>().unwrap().clone();
            let lock = manager
                .new_lock(held.key(), LockOptions::default())
                .unwrap();
            let nested = lock.lock_timeout(Duration::from_millis(500)).await;
            match nested {
                Ok(g) => format!("nested: {}", g.fencing_token() == held.fencing_token()),
                Err(err) => format!("{:?}", err.code()),
            }
        }
    });
    assert_eq!(body(&service, Method::POST, "n").await, "nested: true");
    assert_eq!(body(&service, Method::GET, "n").await, "AlreadyHeld");
}

/// A request made where its key is already held by this code — inside a
/// scope holding it, or in a task holding it through a plain `Lock::lock` —
/// runs under that hold instead of waiting for it (and timing out).
#[tokio::test]
async fn a_read_write_request_nested_in_a_hold_of_its_key_runs() {
    let manager = LockManager::in_memory();
    let inside = Inside::default();
    let service = counting(
        layer(&manager)
            .read_write()
            .wait(Duration::from_millis(300)),
        &inside,
        Duration::ZERO,
    );
    let guard = manager
        .new_lock("k", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    // In the task that holds it.
    assert_eq!(status(&service, Method::POST, "k").await, StatusCode::OK);
    // Inside the hold's scope.
    let scoped = guard.scope().run(status(&service, Method::POST, "k")).await;
    assert_eq!(scoped, StatusCode::OK);
    // Another task is another owner: it waits, and gives up.
    let other = service.clone();
    let elsewhere = tokio::spawn(async move { status(&other, Method::POST, "k").await });
    assert_eq!(elsewhere.await.unwrap(), StatusCode::TOO_MANY_REQUESTS);
    guard.unlock().await.unwrap();
}

/// `permits(0)` and more than `MAX_PERMITS` are refused as `ttl` refuses a
/// bad TTL: `InvalidOptions`.
#[test]
fn bad_permit_counts_are_invalid_options() {
    let manager = LockManager::in_memory();
    for n in [0, distlock::MAX_PERMITS + 1] {
        let err = layer(&manager).permits(n).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidOptions, "{n}");
        assert!(err.message().contains(&n.to_string()), "{err}");
    }
    assert!(layer(&manager).permits(distlock::MAX_PERMITS).is_ok());
    assert!(layer(&manager).permits(1).is_ok());
}
