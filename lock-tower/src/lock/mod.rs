//! Per-key request serialization: [`LockLayer`] makes a [`LockService`],
//! whose [`ResponseFuture`] waits for the request's lock, runs the inner
//! service under it, and hands the guard to the response's [`LockBody`].
//!
//! # Lifecycle of a request
//!
//! 1. The [`KeyExtractor`](crate::KeyExtractor) names the lock, or `None`: the
//!    request then goes straight to the inner service (or, with
//!    [`require_key`](LockLayer::require_key), is answered 400).
//! 2. If [`max_waiters`](LockLayer::max_waiters) requests already wait for
//!    the key on this server, the request is answered 429 at once
//!    ([`QueueFull`](crate::RejectionKind::QueueFull)).
//! 3. The future waits up to [`wait`](LockLayer::wait) for the lock (a zero
//!    wait tries once, bounded by 1 s). Requests for one key in one process
//!    queue in FIFO order in front of etcd (one etcd waiter per key per
//!    manager); across processes they queue in etcd. Dropping the future (the
//!    client went away) leaves the queue at once.
//! 4. Holding the lock, the future makes its clone of the inner service ready
//!    (so capacity the inner service reserves in `poll_ready` goes only to
//!    requests that can run) and calls it with a [`HeldLock`] in the
//!    request's extensions.
//! 5. The response body carries the guard: the lock is released when the body
//!    ends, fails, or is dropped (a client that disconnects mid-stream), or
//!    after [`max_hold`](LockLayer::max_hold).
//!
//! In a [`permits`](LockLayer::permits) layer "the lock" above is a permit
//! of the key's semaphore, and in a [`read_write`](LockLayer::read_write)
//! layer the read or the write side of the key's read-write lock (see
//! [`mode`](crate::mode)); the steps are the same, except that permits and
//! readers are not queued in-process in front of etcd (each waits as a key
//! of its own).
//!
//! # Owners
//!
//! Each request is an owner of its own (DESIGN §7): its handler runs under
//! the request's hold, so a `#[distributed_lock]` call, another `LockLayer`,
//! or `manager.new_lock(key, ..)` on the same key inside it enters a child
//! section instead of queueing behind its own request; two requests for one
//! key never run at once, even when one connection's task serves both. A
//! request made from a task that holds the key through a plain
//! `Lock::lock` (a client and server in one task, as in tests) runs as a
//! child section of that hold.
//!
//! A read or write request runs in its guard's scope the same way
//! (`distlock::current_lock()` is its read or write lock), and is an owner
//! of its own even when one task makes several requests at once. Where its
//! key is held already by the code around it, it runs under that hold: in
//! an owner scope holding the key as a child section, in a task holding the
//! key through a plain `Lock::lock` as a second guard of that hold (such
//! requests of one task do not take turns). A permit is no lock and has no
//! scope: a permit-limited request runs in the scope around it, if any
//! (normally none, so `distlock::current_lock()` is `None`).
//!
//! A wait that runs out while the key is held by another owner is a busy
//! key ([`RejectionKind::Timeout`](crate::RejectionKind::Timeout): 429 /
//! `ABORTED`, not a server failure); one that runs out while etcd failed or
//! did not answer is an outage
//! ([`RejectionKind::Unavailable`](crate::RejectionKind::Unavailable):
//! 503 / `UNAVAILABLE`, logged at `warn`); etcd refusing the credentials
//! access is a configuration fault
//! ([`RejectionKind::Misconfigured`](crate::RejectionKind::Misconfigured):
//! 500 / `INTERNAL`, logged at `error`).
//!
//! # When the lock is lost
//!
//! A lock is lost when its lease cannot be renewed in time or its key is
//! deleted (`force_unlock`); a request past its `max_hold` is treated the
//! same. As with the `#[distributed_lock]` macro, the work is cancelled at
//! its next await point:
//!
//! - before the inner service has answered, its future is dropped and the
//!   client gets a [`RejectionKind::Lost`](crate::RejectionKind::Lost) (or
//!   `MaxHold`) rejection: 503 without `Retry-After`, gRPC `ABORTED` with
//!   `grpc-retry-pushback-ms: -1`. Not `UNAVAILABLE`, which retry policies
//!   re-send on their own: the handler had started, and part of its work may
//!   be done;
//! - while the body streams, the body stops: an HTTP body ends with an error,
//!   so the server resets the stream or closes the connection and the client
//!   sees a truncated response rather than a complete-looking one; a gRPC body
//!   ends with `grpc-status: 10` (`ABORTED`) trailers.
//!
//! Work that completes in the very poll in which the loss is seen is not
//! reported as failed: a handler that returns then gets its response sent,
//! and a body that yields its last frame then is delivered whole (the loss is
//! logged). Its side effects are done; a rejection would invite the client
//! to do them again. The handler learns of the loss through
//! [`HeldLock::lost`] / [`HeldLock::is_held`] before that poll.
//!
//! Work the inner service spawned elsewhere is not cancelled; it can watch
//! [`HeldLock::lost`], and external writes should carry the
//! [fencing token](HeldLock::fencing_token).
//!
//! # Logging
//!
//! Every rejection is logged at `debug` level with its key and error.
//! Backend failures, losses, `max_hold` and shed requests are also logged at
//! `warn` level, at most once per 10 s per layer. Configuration faults
//! ([`Misconfigured`](crate::RejectionKind::Misconfigured)) are logged at
//! `error` level, rate-limited too but on their own limiter: the first at
//! once, then at most one a minute per layer while they last (not once per
//! layer for good: a fault that is fixed and comes back, or a second one,
//! must show again). The ones held back are counted and summarized (count,
//! last key, last error) with the next message of their level, or as soon as
//! a request takes its lock again. A busy or bad key is the layer working as
//! configured: `debug` only.
//!
//! # Example
//!
//! ```
//! use distlock_tower::lock::{LockLayer, LockService};
//! use distlock_tower::Header;
//! use tower::{service_fn, Layer};
//!
//! let layer: LockLayer<Header> = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key").prefix("k:"));
//! let service: LockService<_, Header> = layer.layer(service_fn(|_req: http::Request<String>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//! }));
//! ```

mod acquire;
mod body;
#[cfg(feature = "axum")]
mod from_request;
mod future;
mod guard;
mod layer;
mod service;

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};

use tokio_util::sync::CancellationToken;

use future::BoxFuture;

pub(crate) use acquire::Take;
pub(crate) use future::Refusal;
pub(crate) use guard::Guard;
pub(crate) use layer::Settings;
pub(crate) use service::InnerCall;

pub use body::LockBody;
#[cfg(feature = "axum")]
pub use from_request::MissingHeldLock;
pub use future::ResponseFuture;
pub use guard::HoldKind;
pub use layer::LockLayer;
pub use service::LockService;

/// The lock a request runs under, in its extensions: read it in a handler to
/// pass the fencing token along with the writes the lock protects, and to
/// stop early when the lock is lost.
///
/// With the `axum` feature it is an extractor: a handler takes `lock:
/// HeldLock` (a request that holds no lock is answered 500 with
/// `MissingHeldLock`: the route is wired wrong),
/// or `lock: Option<HeldLock>` where requests may run unlocked. Elsewhere,
/// read it from the request's extensions (`Extension<HeldLock>` works too).
///
/// Clones share one state: [`is_held`](HeldLock::is_held) and
/// [`lost`](HeldLock::lost) can be used from tasks the handler spawns.
///
/// Behind a [`LeaderOnly`](crate::LeaderOnly) layer it is this server's
/// leadership: its [`kind`](HeldLock::kind) is
/// [`HoldKind::Leader`], its key the election's name, its fencing token the
/// leadership's, and `is_held`/`lost` follow the leadership.
///
/// # Example
///
/// ```
/// use axum::{routing::post, Router};
/// use distlock::LockManager;
/// use distlock_tower::{HeldLock, LockLayer, PathParam};
///
/// async fn pay(lock: HeldLock) -> String {
///     // e.g. `UPDATE orders SET .., fence = $token WHERE id = $id AND fence <= $token`
///     format!("paid under {} with token {}", lock.key(), lock.fencing_token())
/// }
///
/// let layer = LockLayer::new(LockManager::in_memory(), PathParam::new("id").prefix("order:"));
/// let app: Router = Router::new().route("/orders/{id}/pay", post(pay).route_layer(layer));
/// ```
#[derive(Clone)]
pub struct HeldLock {
    key: String,
    kind: HoldKind,
    fencing_token: u64,
    state: Arc<HoldState>,
}

/// What all clones of a [`HeldLock`] share.
struct HoldState {
    /// Cancelled when the request's hold ends: lost, past `max_hold`, or
    /// released with the response.
    ended: CancellationToken,
    /// The guard's own `lost()` future, polled without a waker by `is_held`
    /// to see a loss before the request's future has noticed it.
    probe: Mutex<BoxFuture<()>>,
}

impl HeldLock {
    /// The request's view of `guard`, and the token that ends it (cancelled
    /// when the returned drop guard is dropped).
    pub(crate) fn new(key: String, guard: &Guard) -> (Self, CancellationToken) {
        let ended = CancellationToken::new();
        let held = HeldLock {
            key,
            kind: guard.kind(),
            fencing_token: guard.fencing_token(),
            state: Arc::new(HoldState {
                ended: ended.clone(),
                probe: Mutex::new(Box::pin(guard.lost())),
            }),
        };
        (held, ended)
    }

    /// The lock's name (in a [`permits`](LockLayer::permits) layer the
    /// semaphore's, in a [`read_write`](LockLayer::read_write) layer the
    /// read-write lock's): the key the extractor gave.
    ///
    /// ```
    /// # fn handler(req: http::Request<()>) {
    /// if let Some(lock) = req.extensions().get::<distlock_tower::HeldLock>() {
    ///     println!("running under lock {}", lock.key());
    /// }
    /// # }
    /// ```
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Which kind of hold the request runs under: the key's lock, a permit
    /// of its semaphore, or the read or write side of its read-write lock
    /// (see [`mode`](crate::mode)).
    ///
    /// ```
    /// use distlock_tower::{HeldLock, HoldKind};
    ///
    /// fn may_write(lock: &HeldLock) -> bool {
    ///     matches!(lock.kind(), HoldKind::Lock | HoldKind::Write)
    /// }
    /// ```
    pub fn kind(&self) -> HoldKind {
        self.kind
    }

    /// The fencing token of this acquisition
    /// ([`LockGuard::fencing_token`](distlock::LockGuard::fencing_token), or
    /// the permit's, the read or write guard's): it grows strictly from one
    /// acquisition of the key to the next. In a
    /// [`permits`](LockLayer::permits) or [`read_write`](LockLayer::read_write)
    /// layer several requests hold the key at once, each with its own token,
    /// so a token fences a writer against older writers, not against the
    /// other holders of its time.
    ///
    /// ```
    /// # fn handler(req: http::Request<()>) {
    /// let token = req.extensions().get::<distlock_tower::HeldLock>().map(|l| l.fencing_token());
    /// # }
    /// ```
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// Whether the request still holds its lock: false once the lock is lost
    /// (lease expired, `force_unlock`), once the request has held it for the
    /// layer's [`max_hold`](LockLayer::max_hold), and once it is released with
    /// the response.
    ///
    /// ```
    /// use distlock_tower::{Header, HeldLock, LockLayer};
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let service = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key").prefix("k:"))
    ///     .layer(service_fn(|req: http::Request<String>| async move {
    ///         let lock = req.extensions().get::<HeldLock>().unwrap().clone();
    ///         assert!(lock.is_held()); // check before an irreversible step
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    ///     }));
    /// let req = http::Request::get("/").header("x-key", "k").body(String::new()).unwrap();
    /// assert_eq!(service.oneshot(req).await.unwrap().status(), 200);
    /// # }
    /// ```
    pub fn is_held(&self) -> bool {
        if self.state.ended.is_cancelled() {
            return false;
        }
        let mut probe = self.state.probe.lock().unwrap_or_else(|e| e.into_inner());
        let mut cx = Context::from_waker(Waker::noop());
        probe.as_mut().poll(&mut cx).is_pending()
    }

    /// Resolves when the request's hold ends: the lock is lost, the request
    /// has held it for [`max_hold`](LockLayer::max_hold), or it was released
    /// (so nothing waits on it forever). It does not borrow the `HeldLock`,
    /// so it can race work the handler spawned.
    ///
    /// The layer already cancels the handler itself at its next await when
    /// the lock is lost; this is for work that outlives that await, or that
    /// wants to finish a step cleanly: a handler that completes in the poll
    /// in which the lock is lost still gets its response sent.
    ///
    /// ```
    /// use distlock_tower::{Header, HeldLock, LockLayer};
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let service = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key").prefix("k:"))
    ///     .layer(service_fn(|req: http::Request<String>| async move {
    ///         let lock = req.extensions().get::<HeldLock>().unwrap().clone();
    ///         let report = tokio::spawn(async move {
    ///             tokio::select! {
    ///                 _ = lock.lost() => "stopped: the lock ended",
    ///                 _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => "done",
    ///             }
    ///         });
    ///         let _ = report; // runs on until the lock is released with the response
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    ///     }));
    /// let req = http::Request::get("/").header("x-key", "k").body(String::new()).unwrap();
    /// assert_eq!(service.oneshot(req).await.unwrap().status(), 200);
    /// # }
    /// ```
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        self.state.ended.clone().cancelled_owned()
    }
}

impl PartialEq for HeldLock {
    /// Two views of the same acquisition: same key, same fencing token.
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.fencing_token == other.fencing_token
    }
}

impl Eq for HeldLock {}

impl fmt::Debug for HeldLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldLock")
            .field("key", &self.key)
            .field("kind", &self.kind)
            .field("fencing_token", &self.fencing_token)
            .field("ended", &self.state.ended.is_cancelled())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};
    use std::time::Duration;

    use bytes::Bytes;
    use distlock::{LockManager, LockOptions};
    use http::{Request, Response, StatusCode};
    use http_body::Frame;
    use http_body_util::BodyExt;
    use tokio::sync::oneshot;
    use tokio::time::{timeout, Instant};
    use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};

    use super::future::BoxFuture;
    use crate::{Header, HeldLock, LockLayer, Rejection, RejectionKind};

    fn request(key: &str) -> Request<String> {
        Request::get("/")
            .header("x-key", key)
            .body(String::new())
            .unwrap()
    }

    /// Records the kinds of the layer's rejections.
    fn recording(layer: LockLayer<Header>) -> (LockLayer<Header>, Arc<Mutex<Vec<RejectionKind>>>) {
        let kinds = Arc::new(Mutex::new(Vec::new()));
        let seen = kinds.clone();
        let layer = layer.on_rejection(move |r: &Rejection| {
            seen.lock().unwrap().push(r.kind());
            r.default_response()
        });
        (layer, kinds)
    }

    async fn hold(manager: &LockManager, key: &str) -> distlock::LockGuard {
        let lock = manager.new_lock(key, LockOptions::default()).unwrap();
        lock.lock().await.unwrap()
    }

    /// Whether `key` can be taken, within 2 s (a dropped guard is released
    /// in the background).
    async fn is_free(manager: &LockManager, key: &str) -> bool {
        let lock = manager.new_lock(key, LockOptions::default()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if lock.try_lock().await.unwrap().is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn zero_wait_rejects_a_busy_key_at_once_and_takes_a_free_one() {
        let manager = LockManager::in_memory();
        let service = LockLayer::new(manager.clone(), Header::new("x-key"))
            .wait(Duration::ZERO)
            .layer(service_fn(|_req: Request<String>| async {
                Ok::<_, Infallible>(Response::new(String::from("ok")))
            }));
        // Held by another owner (a task of this process holding it would own
        // it, and its requests would run under its hold).
        let _held = hold(&manager.peer(), "busy").await;

        let started = tokio::time::Instant::now();
        let busy = service.clone().oneshot(request("busy")).await.unwrap();
        assert_eq!(busy.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(started.elapsed() < Duration::from_millis(500));

        let free = service.oneshot(request("free")).await.unwrap();
        assert_eq!(free.status(), StatusCode::OK);
    }

    /// Issue #9.5: a handler that completes in the poll in which its lock is
    /// lost returns its response (not a rejection); its `HeldLock` saw the loss.
    #[tokio::test]
    async fn a_handler_completing_as_its_lock_is_lost_returns_its_response() {
        let manager = LockManager::in_memory();
        let (started_tx, started_rx) = oneshot::channel::<()>();
        let started_tx = Arc::new(Mutex::new(Some(started_tx)));
        let (layer, kinds) = recording(LockLayer::new(manager.clone(), Header::new("x-key")));
        let service = layer.layer(service_fn(move |req: Request<String>| {
            let started_tx = started_tx.lock().unwrap().take();
            async move {
                let lock = req.extensions().get::<HeldLock>().unwrap().clone();
                assert!(lock.is_held());
                let _ = started_tx.unwrap().send(());
                // Completes in the very poll in which the layer sees the loss.
                lock.lost().await;
                let body = format!("done; held: {}", lock.is_held());
                Ok::<_, Infallible>(Response::new(body))
            }
        }));
        let call = tokio::spawn(service.oneshot(request("k")));
        started_rx.await.unwrap();
        assert!(manager.force_unlock("k").await.unwrap());
        let response = timeout(Duration::from_secs(5), call)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "done; held: false");
        assert!(
            kinds.lock().unwrap().is_empty(),
            "{:?}",
            kinds.lock().unwrap()
        );
        assert!(is_free(&manager, "k").await);
    }

    /// A body that yields "a", then ends with "b" in the poll in which it sees
    /// its lock end (or, if `ends` is false, never ends).
    struct LastWords {
        stage: u8,
        ends: bool,
        lost: BoxFuture<()>,
    }

    impl http_body::Body for LastWords {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
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

    /// Issue #9.5, the body: one that ends in the poll in which its lock is
    /// lost is delivered whole; one that does not end stops with an error.
    #[tokio::test]
    async fn a_body_ending_as_its_lock_is_lost_is_delivered_whole() {
        for ends in [true, false] {
            let manager = LockManager::in_memory();
            let service = LockLayer::new(manager.clone(), Header::new("x-key")).layer(service_fn(
                move |req: Request<String>| async move {
                    let lock = req.extensions().get::<HeldLock>().unwrap().clone();
                    let body = LastWords {
                        stage: 0,
                        ends,
                        lost: Box::pin(lock.lost()),
                    };
                    Ok::<_, Infallible>(Response::new(body))
                },
            ));
            let mut body = service.oneshot(request("b")).await.unwrap().into_body();
            let first = body.frame().await.unwrap().unwrap();
            assert_eq!(first.into_data().unwrap(), "a");
            assert!(manager.force_unlock("b").await.unwrap());
            let rest = timeout(Duration::from_secs(5), body.collect())
                .await
                .unwrap();
            if ends {
                assert_eq!(rest.unwrap().to_bytes(), "b");
            } else {
                assert!(rest.is_err(), "an unfinished body must not look complete");
            }
            assert!(is_free(&manager, "b").await);
        }
    }

    /// `max_hold`: a handler that hangs is cancelled and answered 503; a body
    /// that streams forever is cut off; the key is free again.
    #[tokio::test]
    async fn max_hold_ends_a_hanging_handler_and_an_endless_body() {
        let manager = LockManager::in_memory();
        let (layer, kinds) = recording(
            LockLayer::new(manager.clone(), Header::new("x-key"))
                .max_hold(Duration::from_millis(200)),
        );
        let service = layer.layer(service_fn(|req: Request<String>| async move {
            let lock = req.extensions().get::<HeldLock>().unwrap().clone();
            if req.uri().path() == "/hang" {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            // An endless body: pending until the hold ends, and then still pending.
            let body = LastWords {
                stage: 0,
                ends: false,
                lost: Box::pin(lock.lost()),
            };
            Ok::<_, Infallible>(Response::new(body))
        }));

        let started = Instant::now();
        let hang = Request::get("/hang")
            .header("x-key", "h")
            .body(String::new())
            .unwrap();
        let response = timeout(Duration::from_secs(5), service.clone().oneshot(hang))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(*kinds.lock().unwrap(), [RejectionKind::MaxHold]);
        assert!(is_free(&manager, "h").await);

        let started = Instant::now();
        let body = service.oneshot(request("s")).await.unwrap().into_body();
        let rest = timeout(Duration::from_secs(5), body.collect())
            .await
            .unwrap();
        assert!(rest.is_err());
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(is_free(&manager, "s").await);
    }

    /// `max_waiters(1)`: one request waits for the busy key, the next is shed
    /// at once; other keys are unaffected; the waiter runs once the key is free.
    #[tokio::test]
    async fn max_waiters_sheds_past_the_limit() {
        let manager = LockManager::in_memory();
        let (layer, kinds) =
            recording(LockLayer::new(manager.clone(), Header::new("x-key")).max_waiters(1));
        let waiters = Arc::clone(&layer.settings.waiters);
        let service = layer.layer(service_fn(|_req: Request<String>| async {
            Ok::<_, Infallible>(Response::new(String::from("ok")))
        }));
        let job = hold(&manager, "hot").await;
        let waiting = tokio::spawn(service.clone().oneshot(request("hot")));
        while waiters.waiting("hot") == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let started = Instant::now();
        let shed = service.clone().oneshot(request("hot")).await.unwrap();
        assert_eq!(shed.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(shed.headers().contains_key("retry-after"));
        assert!(started.elapsed() < Duration::from_millis(500));
        assert_eq!(*kinds.lock().unwrap(), [RejectionKind::QueueFull]);
        let other = service.clone().oneshot(request("cold")).await.unwrap();
        assert_eq!(other.status(), StatusCode::OK);

        drop(job);
        let response = timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(waiters.waiting("hot"), 0);
        drop(response); // its body holds the lock
                        // A dropped waiter leaves the count too.
        let job = hold(&manager, "hot").await;
        let abandoned = tokio::spawn(service.clone().oneshot(request("hot")));
        while waiters.waiting("hot") == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        abandoned.abort();
        let _ = abandoned.await;
        assert_eq!(waiters.waiting("hot"), 0);
        drop(job);
    }

    /// `max_waiters(0)` lets one request in at a time (it used to shed every
    /// request, even for free keys).
    #[tokio::test]
    async fn max_waiters_zero_lets_one_request_in() {
        let manager = LockManager::in_memory();
        let (layer, kinds) =
            recording(LockLayer::new(manager.clone(), Header::new("x-key")).max_waiters(0));
        let waiters = Arc::clone(&layer.settings.waiters);
        let service = layer.layer(service_fn(|_req: Request<String>| async {
            Ok::<_, Infallible>(Response::new(String::from("ok")))
        }));
        let free = service.clone().oneshot(request("free")).await.unwrap();
        assert_eq!(free.status(), StatusCode::OK);

        let job = hold(&manager.peer(), "hot").await;
        let waiting = tokio::spawn(service.clone().oneshot(request("hot")));
        while waiters.waiting("hot") == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let shed = service.clone().oneshot(request("hot")).await.unwrap();
        assert_eq!(shed.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(*kinds.lock().unwrap(), [RejectionKind::QueueFull]);
        drop(job);
        let response = timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    /// `require_key`: no key is 400 (and the handler does not run).
    #[tokio::test]
    async fn require_key_answers_400_without_a_key() {
        let manager = LockManager::in_memory();
        let ran = Arc::new(Mutex::new(0));
        let count = ran.clone();
        let (layer, kinds) = recording(LockLayer::new(manager, Header::new("x-key")).require_key());
        let service = layer.layer(service_fn(move |_req: Request<String>| {
            *count.lock().unwrap() += 1;
            async { Ok::<_, Infallible>(Response::new(String::new())) }
        }));
        let without = Request::get("/").body(String::new()).unwrap();
        let response = service.clone().oneshot(without).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(*kinds.lock().unwrap(), [RejectionKind::MissingKey]);
        assert_eq!(*ran.lock().unwrap(), 0);
        assert_eq!(service.oneshot(request("k")).await.unwrap().status(), 200);
        assert_eq!(*ran.lock().unwrap(), 1);
    }

    /// Capacity reserved in `poll_ready` inside the layer (ConcurrencyLimit,
    /// Buffer) is taken only by requests that hold their lock.
    #[tokio::test]
    async fn waiting_requests_hold_no_inner_capacity() {
        let manager = LockManager::in_memory();
        let handler = service_fn(|_req: Request<String>| async {
            Ok::<_, Infallible>(Response::new(String::from("ok")))
        });
        let layer = LockLayer::new(manager.clone(), Header::new("x-key"));
        let limited = ServiceBuilder::new()
            .layer(layer.clone())
            .concurrency_limit(1)
            .service(handler);
        let buffered = ServiceBuilder::new()
            .layer(layer)
            .buffer(1)
            .concurrency_limit(1)
            .service(handler);
        let _job = hold(&manager, "hot").await;
        // Several requests wait for the hot key, on a service whose
        // poll_ready was driven by the caller (`ready()` then `call`).
        let mut waiting = Vec::new();
        for _ in 0..3 {
            let mut s = limited.clone();
            let call = s.ready().await.unwrap().call(request("hot"));
            waiting.push(tokio::spawn(async move { drop(call.await) }));
            let mut s = buffered.clone();
            let call = s.ready().await.unwrap().call(request("hot"));
            waiting.push(tokio::spawn(async move { drop(call.await) }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let cold = timeout(Duration::from_secs(2), limited.oneshot(request("cold")))
            .await
            .expect("a cold key is served while the hot one has waiters (ConcurrencyLimit)");
        assert_eq!(cold.unwrap().status(), StatusCode::OK);
        let cold = timeout(Duration::from_secs(2), buffered.oneshot(request("cold")))
            .await
            .expect("a cold key is served while the hot one has waiters (Buffer)");
        assert_eq!(cold.unwrap().status(), StatusCode::OK);
        for w in &waiting {
            assert!(!w.is_finished());
        }
        for w in waiting {
            w.abort();
        }
    }
}
