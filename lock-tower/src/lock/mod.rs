//! Per-key request serialization: [`LockLayer`] makes a [`LockService`],
//! whose [`ResponseFuture`] waits for the request's lock, runs the inner
//! service under it, and hands the guard to the response's [`LockBody`].
//!
//! # Lifecycle of a request
//!
//! 1. The [`KeyExtractor`](crate::KeyExtractor) names the lock, or `None`: the
//!    request then goes straight to the inner service.
//! 2. The future waits up to [`wait`](LockLayer::wait) for the lock. Requests
//!    for one key in one process queue in FIFO order in front of etcd (one etcd
//!    waiter per key per manager); across processes they queue in etcd.
//!    Dropping the future (the client went away) leaves the queue at once.
//! 3. The inner service runs with a [`HeldLock`] in the request's extensions.
//! 4. The response body carries the guard: the lock is released when the body
//!    ends, fails, or is dropped (a client that disconnects mid-stream).
//!
//! # When the lock is lost
//!
//! A lock is lost when its lease cannot be renewed in time or its key is
//! deleted (`force_unlock`). As with the `#[distributed_lock]` macro, the work
//! is cancelled at its next await point:
//!
//! - before the inner service has answered, its future is dropped and the
//!   client gets a [`RejectionKind::Lost`](crate::RejectionKind::Lost)
//!   rejection (503 / gRPC `UNAVAILABLE`);
//! - while the body streams, the body stops: an HTTP body ends with an error,
//!   so the server resets the stream or closes the connection and the client
//!   sees a truncated response rather than a complete-looking one; a gRPC body
//!   ends with `grpc-status: 14` (`UNAVAILABLE`) trailers.
//!
//! Work the inner service spawned elsewhere is not cancelled; guard external
//! writes with the [fencing token](HeldLock::fencing_token).
//!
//! # Example
//!
//! ```
//! use distlock_tower::lock::{LockLayer, LockService};
//! use distlock_tower::Header;
//! use tower::{service_fn, Layer};
//!
//! let layer: LockLayer<Header> = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key"));
//! let service: LockService<_, Header> = layer.layer(service_fn(|_req: http::Request<String>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//! }));
//! ```

mod body;
mod future;
mod layer;
mod service;

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};

use distlock::LockGuard;
use tokio_util::sync::CancellationToken;

use future::BoxFuture;

pub use body::LockBody;
pub use future::ResponseFuture;
pub use layer::LockLayer;
pub use service::LockService;

/// The lock a request runs under, in its extensions: read it in a handler to
/// pass the fencing token along with the writes the lock protects, and to
/// stop early when the lock is lost.
///
/// Clones share one state: [`is_held`](HeldLock::is_held) and
/// [`lost`](HeldLock::lost) can be used from tasks the handler spawns.
///
/// # Example
///
/// ```
/// use axum::{routing::post, Extension, Router};
/// use distlock::LockManager;
/// use distlock_tower::{HeldLock, LockLayer, PathSegment};
///
/// async fn pay(Extension(lock): Extension<HeldLock>) -> String {
///     // e.g. `UPDATE orders SET .., fence = $token WHERE id = $id AND fence <= $token`
///     format!("paid under {} with token {}", lock.key(), lock.fencing_token())
/// }
///
/// let app: Router = Router::new()
///     .route("/orders/{id}/pay", post(pay))
///     .layer(LockLayer::new(LockManager::in_memory(), PathSegment::new(1).prefix("order:")));
/// ```
#[derive(Clone)]
pub struct HeldLock {
    key: String,
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
    pub(crate) fn new(key: String, guard: &LockGuard) -> (Self, CancellationToken) {
        let ended = CancellationToken::new();
        let held = HeldLock {
            key,
            fencing_token: guard.fencing_token(),
            state: Arc::new(HoldState {
                ended: ended.clone(),
                probe: Mutex::new(Box::pin(guard.lost())),
            }),
        };
        (held, ended)
    }

    /// The lock's name: the key the extractor gave.
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

    /// The fencing token of this acquisition
    /// ([`LockGuard::fencing_token`](distlock::LockGuard::fencing_token)):
    /// it grows strictly from one holder of the key to the next.
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
    /// let service = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key"))
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
    /// let service = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key"))
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
            .field("fencing_token", &self.fencing_token)
            .field("ended", &self.state.ended.is_cancelled())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use distlock::{LockManager, LockOptions};
    use http::{Request, Response, StatusCode};
    use tower::{service_fn, Layer, ServiceExt};

    use crate::{Header, LockLayer};

    fn request(key: &str) -> Request<String> {
        Request::get("/")
            .header("x-key", key)
            .body(String::new())
            .unwrap()
    }

    #[tokio::test]
    async fn zero_wait_rejects_a_busy_key_at_once_and_takes_a_free_one() {
        let manager = LockManager::in_memory();
        let service = LockLayer::new(manager.clone(), Header::new("x-key"))
            .wait(Duration::ZERO)
            .layer(service_fn(|_req: Request<String>| async {
                Ok::<_, Infallible>(Response::new(String::from("ok")))
            }));
        let _held = manager
            .new_lock("busy", LockOptions::default())
            .unwrap()
            .lock()
            .await
            .unwrap();

        let started = tokio::time::Instant::now();
        let busy = service.clone().oneshot(request("busy")).await.unwrap();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(started.elapsed() < Duration::from_millis(500));

        let free = service.oneshot(request("free")).await.unwrap();
        assert_eq!(free.status(), StatusCode::OK);
    }
}
