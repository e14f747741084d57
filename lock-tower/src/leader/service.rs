//! [`LeaderOnlyService`]: admits a request as leader, or answers it.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::Candidacy;
use crate::grpc::is_grpc;
use crate::lock::{Guard, InnerCall, Settings};
use crate::{LockBody, ResponseFuture};

/// Runs the inner service only while this server leads; made by
/// [`LeaderOnly`](super::LeaderOnly).
///
/// Each request asks the [`Candidacy`] once, when it is called: a leader's
/// request takes a share of the leadership and makes its clone of the inner
/// service ready in its [`ResponseFuture`] (so `poll_ready` of this service
/// is always ready, and a follower never reserves the inner service's
/// capacity); any other request is answered at once.
///
/// With the `tonic` feature it has its inner service's gRPC name
/// (`tonic::server::NamedService`), so `Server::builder().add_service`
/// takes it in place of the service it wraps.
///
/// # Example
///
/// ```
/// use distlock::{LockManager, LockOptions};
/// use distlock_tower::{Candidacy, HeldLock, HoldKind, LeaderOnly, Role};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
/// let candidacy = Candidacy::start(&LockManager::in_memory(), "writer", "a", LockOptions::default())?;
/// let service = LeaderOnly::new(candidacy.clone()).layer(service_fn(|req: http::Request<String>| async move {
///     let leader = req.extensions().get::<HeldLock>().unwrap();
///     assert_eq!(leader.kind(), HoldKind::Leader);
///     Ok::<_, std::convert::Infallible>(http::Response::new(leader.key().to_owned()))
/// }));
/// candidacy.wait_for(|role| matches!(role, Role::Leader { .. })).await;
/// let response = service.oneshot(http::Request::new(String::new())).await.unwrap();
/// assert_eq!(response.status(), 200);
/// # Ok(()) }
/// ```
pub struct LeaderOnlyService<S> {
    inner: S,
    candidacy: Candidacy,
    settings: Arc<Settings>,
}

impl<S> LeaderOnlyService<S> {
    pub(super) fn new(inner: S, candidacy: Candidacy, settings: Arc<Settings>) -> Self {
        LeaderOnlyService {
            inner,
            candidacy,
            settings,
        }
    }

    /// The inner service.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # use distlock_tower::{Candidacy, LeaderOnly};
    /// # use tower::Layer;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// # let candidacy = Candidacy::start(&LockManager::in_memory(), "writer", "a", LockOptions::default())?;
    /// let service = LeaderOnly::new(candidacy).layer(42);
    /// assert_eq!(*service.get_ref(), 42);
    /// # Ok(()) }
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # use distlock_tower::{Candidacy, LeaderOnly};
    /// # use tower::Layer;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// # let candidacy = Candidacy::start(&LockManager::in_memory(), "writer", "a", LockOptions::default())?;
    /// let mut service = LeaderOnly::new(candidacy).layer(42);
    /// *service.get_mut() += 1;
    /// assert_eq!(service.into_inner(), 43);
    /// # Ok(()) }
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # use distlock_tower::{Candidacy, LeaderOnly};
    /// # use tower::Layer;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// # let candidacy = Candidacy::start(&LockManager::in_memory(), "writer", "a", LockOptions::default())?;
    /// assert_eq!(LeaderOnly::new(candidacy).layer("inner").into_inner(), "inner");
    /// # Ok(()) }
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for LeaderOnlyService<S> {
    fn clone(&self) -> Self {
        LeaderOnlyService {
            inner: self.inner.clone(),
            candidacy: self.candidacy.clone(),
            settings: Arc::clone(&self.settings),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for LeaderOnlyService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaderOnlyService")
            .field("inner", &self.inner)
            .field("candidacy", &self.candidacy)
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for LeaderOnlyService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = Response<LockBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    /// Always ready: a leader's request makes its own clone of the inner
    /// service ready in its future; other requests never call it.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let grpc = is_grpc(&req);
        let name = self.candidacy.name().to_owned();
        let settings = Arc::clone(&self.settings);
        match self.candidacy.admit() {
            Ok(leadership) => {
                let call = InnerCall::new(self.inner.clone(), req);
                ResponseFuture::held(settings, name, Guard::Leader(leadership), grpc, call)
            }
            // The request is dropped here, its body unread: nothing is forwarded.
            Err(refusal) => ResponseFuture::rejected(settings, name, grpc, refusal),
        }
    }
}

#[cfg(feature = "tonic")]
impl<S: tonic::server::NamedService> tonic::server::NamedService for LeaderOnlyService<S> {
    const NAME: &'static str = S::NAME;
}
