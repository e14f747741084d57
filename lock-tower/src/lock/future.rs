//! [`ResponseFuture`]: wait for the lock, run the inner service under it,
//! hand the guard to the body.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use distlock::{ErrorCode, LockError, LockGuard, LockManager, LockOptions, OwnerScope};
use http::Response;
use pin_project_lite::pin_project;
use tracing::{debug, warn};

use super::layer::Settings;
use super::{HeldLock, LockBody};
use crate::rejection::{Rejection, RejectionKind};

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Calls the (ready) inner service once the lock is held.
pub(crate) type Call<F> = Box<dyn FnOnce(HeldLock) -> F + Send>;

pin_project! {
    /// The response future of [`LockService`](super::LockService): it waits for
    /// the request's lock (if it has a key), runs the inner service's future
    /// under it, and returns its response with the lock handed on to the
    /// [`LockBody`], or a rejection response.
    ///
    /// Dropping it gives up the wait or the lock at once.
    ///
    /// # Example
    ///
    /// ```
    /// use distlock_tower::{Header, LockLayer, ResponseFuture};
    /// use tower::{service_fn, Layer, Service};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut service = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key"))
    ///     .layer(service_fn(|_req: http::Request<String>| async {
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(String::from("hi")))
    ///     }));
    /// let req = http::Request::get("/").header("x-key", "k").body(String::new()).unwrap();
    /// let future: ResponseFuture<_> = service.call(req);
    /// assert_eq!(future.await.unwrap().status(), 200);
    /// # }
    /// ```
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        /// No key: the inner future as it is.
        Unlocked {
            #[pin]
            future: F,
        },
        /// Waiting for the lock.
        Acquiring {
            acquire: BoxFuture<distlock::Result<LockGuard>>,
            call: Option<Call<F>>,
            ctx: Option<Ctx>,
        },
        /// The inner future runs under the lock.
        Running {
            #[pin]
            future: F,
            guard: Option<LockGuard>,
            lost: Option<BoxFuture<()>>,
            ctx: Option<Ctx>,
            // The request's owner scope: the inner service runs in it.
            scope: OwnerScope,
        },
        Done,
    }
}

/// What a keyed request needs besides its lock.
struct Ctx {
    settings: Arc<Settings>,
    key: String,
    grpc: bool,
}

impl Ctx {
    /// The rejection response for `err`.
    fn reject<B>(self, kind: RejectionKind, error: LockError) -> Response<LockBody<B>> {
        match kind {
            RejectionKind::Timeout | RejectionKind::InvalidKey => {
                debug!(key = %self.key, %error, ?kind, "request rejected")
            }
            _ => warn!(key = %self.key, %error, ?kind, "request rejected"),
        }
        let mut rejection = Rejection::new(kind, self.key, error);
        rejection.grpc = self.grpc;
        rejection.retry_after = self.settings.retry_after;
        self.settings.respond(&rejection).map(LockBody::rejected)
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn unlocked(future: F) -> Self {
        ResponseFuture {
            state: State::Unlocked { future },
        }
    }

    pub(crate) fn locked(settings: Arc<Settings>, key: String, grpc: bool, call: Call<F>) -> Self {
        let acquire = Box::pin(acquire(
            settings.manager.clone(),
            key.clone(),
            settings.options.clone(),
            settings.wait,
        ));
        ResponseFuture {
            state: State::Acquiring {
                acquire,
                call: Some(call),
                ctx: Some(Ctx {
                    settings,
                    key,
                    grpc,
                }),
            },
        }
    }
}

/// Takes the lock `key` with a handle of its own, waiting at most `wait`
/// (a zero wait tries once).
async fn acquire(
    manager: LockManager,
    key: String,
    options: LockOptions,
    wait: std::time::Duration,
) -> distlock::Result<LockGuard> {
    manager.new_lock(key, options)?.lock_timeout(wait).await
}

/// How an acquisition failure is answered.
fn kind_of(err: &LockError) -> RejectionKind {
    match err.code() {
        ErrorCode::Timeout => RejectionKind::Timeout,
        ErrorCode::InvalidKey => RejectionKind::InvalidKey,
        _ => RejectionKind::Unavailable,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<LockBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Unlocked { future } => {
                    let result = ready!(future.poll(cx));
                    return Poll::Ready(result.map(|response| response.map(LockBody::unlocked)));
                }
                StateProj::Acquiring { acquire, call, ctx } => {
                    let acquired = ready!(acquire.as_mut().poll(cx));
                    let ctx = ctx.take().expect("ResponseFuture polled after completion");
                    match acquired {
                        Err(err) => {
                            state.set(State::Done);
                            return Poll::Ready(Ok(ctx.reject(kind_of(&err), err)));
                        }
                        Ok(guard) => {
                            let call = call.take().expect("ResponseFuture polled after completion");
                            let held = HeldLock::new(ctx.key.clone(), guard.fencing_token());
                            let lost: BoxFuture<()> = Box::pin(guard.lost());
                            // Work done for the request runs as its owner:
                            // locking its key in there (a #[distributed_lock]
                            // call, a second layer) runs under this hold.
                            let scope = guard.scope();
                            let future = scope.enter(|| call(held));
                            state.set(State::Running {
                                future,
                                guard: Some(guard),
                                lost: Some(lost),
                                ctx: Some(ctx),
                                scope,
                            });
                        }
                    }
                }
                StateProj::Running {
                    future,
                    guard,
                    lost,
                    ctx,
                    scope,
                } => {
                    // A response ready in the poll that notices the loss is
                    // returned: the handler's work is done.
                    let polled = scope.enter(|| future.poll(cx));
                    let is_lost = lost
                        .as_mut()
                        .is_some_and(|lost| lost.as_mut().poll(cx).is_ready());
                    if is_lost && polled.is_pending() {
                        let ctx = ctx.take().expect("ResponseFuture polled after completion");
                        // Drops the inner future: cancelled at its await point.
                        state.set(State::Done);
                        let err = LockError::new(
                            ErrorCode::Expired,
                            format!("lock `{}` was lost while the request ran", ctx.key),
                        );
                        return Poll::Ready(Ok(ctx.reject(RejectionKind::Lost, err)));
                    }
                    let result = ready!(polled);
                    let (Some(guard), Some(mut lost), Some(ctx)) =
                        (guard.take(), lost.take(), ctx.take())
                    else {
                        panic!("ResponseFuture polled after completion");
                    };
                    if is_lost {
                        // The handler's work is done: its response goes out
                        // as is (a loss noticed later still stops the body).
                        warn!(key = %ctx.key, "lock lost as the request completed; returning its response");
                        lost = Box::pin(std::future::pending());
                    }
                    state.set(State::Done);
                    // An error drops the guard: the lock is released.
                    let response = result?;
                    return Poll::Ready(Ok(
                        response.map(|body| LockBody::locked(body, guard, lost, ctx.key, ctx.grpc))
                    ));
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Unlocked { .. } => "unlocked",
            State::Acquiring { .. } => "acquiring",
            State::Running { .. } => "running",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
