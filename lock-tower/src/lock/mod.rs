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

pub use body::LockBody;
pub use future::ResponseFuture;
pub use layer::LockLayer;
pub use service::LockService;

/// The lock a request runs under, in its extensions: read it in a handler to
/// pass the fencing token along with the writes the lock protects.
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLock {
    key: String,
    fencing_token: u64,
}

impl HeldLock {
    pub(crate) fn new(key: String, fencing_token: u64) -> Self {
        HeldLock { key, fencing_token }
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
