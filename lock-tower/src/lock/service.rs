//! [`LockService`]: extracts the key and starts the [`ResponseFuture`].

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use distlock::{ErrorCode, LockError};
use http::{Request, Response};
use tower_service::Service;

use super::future::{Pending, Refusal};
use super::layer::Settings;
use super::{HeldLock, LockBody, ResponseFuture};
use crate::extract::KeyExtractor;
use crate::grpc::is_grpc;
use crate::RejectionKind;

/// Runs the inner service under the lock its request's key names; made by
/// [`LockLayer`](super::LockLayer).
///
/// Each request takes a clone of the inner service and makes it ready in its
/// [`ResponseFuture`]: a request without a key at once, a keyed request only
/// once it holds its lock, and then calls it with a [`HeldLock`] in the
/// request's extensions. So `poll_ready` of this service is always ready, and
/// capacity that the inner service reserves in its `poll_ready` (tower's
/// `ConcurrencyLimit`, `Buffer`) is never held by a request that waits for a
/// busy key.
///
/// With the `tonic` feature it has its inner service's gRPC name
/// (`tonic::server::NamedService`), so `Server::builder().add_service`
/// takes it in place of the service it wraps: one service of a server
/// locked, the others not.
///
/// # Example
///
/// ```
/// use distlock_tower::{Header, LockLayer};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let layer = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key").prefix("k:"));
/// let service = layer.layer(service_fn(|req: http::Request<String>| async move {
///     let lock = req.extensions().get::<distlock_tower::HeldLock>().unwrap();
///     Ok::<_, std::convert::Infallible>(http::Response::new(lock.key().to_owned()))
/// }));
///
/// let req = http::Request::get("/").header("x-key", "k1").body(String::new()).unwrap();
/// let response = service.oneshot(req).await.unwrap();
/// assert_eq!(response.status(), 200);
/// # }
/// ```
pub struct LockService<S, E> {
    inner: S,
    extractor: Arc<E>,
    settings: Arc<Settings>,
}

impl<S, E> LockService<S, E> {
    pub(crate) fn new(inner: S, extractor: Arc<E>, settings: Arc<Settings>) -> Self {
        LockService {
            inner,
            extractor,
            settings,
        }
    }

    /// The inner service.
    ///
    /// ```
    /// # use distlock_tower::{Header, LockLayer};
    /// # use tower::Layer;
    /// let layer = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key").prefix("k:"));
    /// let service = layer.layer(42);
    /// assert_eq!(*service.get_ref(), 42);
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    ///
    /// ```
    /// # use distlock_tower::{Header, LockLayer};
    /// # use tower::Layer;
    /// # let layer = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key").prefix("k:"));
    /// let mut service = layer.layer(42);
    /// *service.get_mut() += 1;
    /// assert_eq!(service.into_inner(), 43);
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    ///
    /// ```
    /// # use distlock_tower::{Header, LockLayer};
    /// # use tower::Layer;
    /// # let layer = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key").prefix("k:"));
    /// assert_eq!(layer.layer("inner").into_inner(), "inner");
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, E> Clone for LockService<S, E> {
    fn clone(&self) -> Self {
        LockService {
            inner: self.inner.clone(),
            extractor: Arc::clone(&self.extractor),
            settings: Arc::clone(&self.settings),
        }
    }
}

impl<S: fmt::Debug, E: fmt::Debug> fmt::Debug for LockService<S, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockService")
            .field("inner", &self.inner)
            .field("extractor", &self.extractor)
            .field("settings", &self.settings)
            .finish()
    }
}

impl<S, E, ReqBody, ResBody> Service<Request<ReqBody>> for LockService<S, E>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    E: KeyExtractor<ReqBody>,
    ReqBody: Send + 'static,
{
    type Response = Response<LockBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    /// Always ready: each request makes its own clone of the inner service
    /// ready in its future, keyed requests only once they hold their lock.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let key = self.extractor.extract(&req);
        let grpc = is_grpc(&req);
        let Some(key) = key else {
            if self.settings.require_key {
                let refusal = Refusal::new(
                    RejectionKind::MissingKey,
                    LockError::new(ErrorCode::InvalidKey, "the request names no lock key"),
                );
                return ResponseFuture::rejected(
                    Arc::clone(&self.settings),
                    String::new(),
                    grpc,
                    refusal,
                );
            }
            let inner = self.inner.clone();
            return ResponseFuture::unlocked(InnerCall::new(inner, req));
        };
        // What the request takes of its key, by the layer's mode: the lock,
        // a permit, or the read or write side.
        let (take, req) = self.settings.access.take(req);
        let inner = self.inner.clone();
        let call = InnerCall::new(inner, req);
        ResponseFuture::locked(Arc::clone(&self.settings), key, take, grpc, call)
    }
}

/// A request and the clone of the inner service that will serve it.
pub(crate) struct InnerCall<S, R> {
    inner: S,
    req: Request<R>,
}

impl<S, R> InnerCall<S, R> {
    pub(crate) fn new(inner: S, req: Request<R>) -> Box<Self> {
        Box::new(InnerCall { inner, req })
    }
}

impl<S, R, ResBody> Pending<S::Future> for InnerCall<S, R>
where
    S: Service<Request<R>, Response = Response<ResBody>> + Send,
    R: Send,
{
    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Result<S::Response, S::Error>>> {
        self.inner.poll_ready(cx).map_err(Err)
    }

    fn call(mut self: Box<Self>, held: Option<HeldLock>) -> S::Future {
        if let Some(held) = held {
            self.req.extensions_mut().insert(held);
        }
        self.inner.call(self.req)
    }
}

#[cfg(feature = "tonic")]
impl<S: tonic::server::NamedService, E> tonic::server::NamedService for LockService<S, E> {
    const NAME: &'static str = S::NAME;
}
