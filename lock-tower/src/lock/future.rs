//! [`ResponseFuture`]: wait for the lock, run the inner service under it,
//! hand the guard to the body.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use distlock::{ErrorCode, LockError, OwnerScope};
use http::Response;
use pin_project_lite::pin_project;
use tokio_util::sync::CancellationToken;

use super::acquire::{acquire, Take};
use super::guard::Guard;
use super::layer::{Settings, WaiterSlot};
use super::{HeldLock, LockBody};
use crate::rejection::{Rejection, RejectionKind};

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The inner service and the request, not yet called. The service is made
/// ready only when the request may run (its lock held), so a request waiting
/// for its key never holds capacity that the inner service reserves in
/// `poll_ready` (tower's `ConcurrencyLimit`, `Buffer`, ...).
pub(crate) trait Pending<F: Future>: Send {
    /// The inner service's `poll_ready`; its error comes back as the
    /// request's output.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), F::Output>>;

    /// Calls the (ready) inner service, with `held` in the request's
    /// extensions if given.
    fn call(self: Box<Self>, held: Option<HeldLock>) -> F;
}

/// A boxed [`Pending`] call.
pub(crate) type Call<F> = Box<dyn Pending<F>>;

pin_project! {
    /// The response future of [`LockService`](super::LockService): it waits for
    /// the request's lock (if it has a key), makes the inner service ready and
    /// runs its future under the lock, and returns its response with the lock
    /// handed on to the [`LockBody`], or a rejection response.
    ///
    /// Dropping it gives up the wait or the lock at once.
    ///
    /// [`LeaderOnlyService`](crate::LeaderOnlyService) answers with it too:
    /// there the hold is a share of this server's leadership, taken when the
    /// request is called (no wait), and a refused request never reaches the
    /// inner service.
    ///
    /// # Example
    ///
    /// ```
    /// use distlock_tower::{Header, LockLayer, ResponseFuture};
    /// use tower::{service_fn, Layer, Service};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut service = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key").prefix("k:"))
    ///     .layer(service_fn(|_req: http::Request<String>| async {
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(String::from("hi")))
    ///     }));
    /// let req = http::Request::get("/").header("x-key", "k").body(String::new()).unwrap();
    /// let future: ResponseFuture<_> = service.call(req);
    /// assert_eq!(future.await.unwrap().status(), 200);
    /// # }
    /// ```
    pub struct ResponseFuture<F: Future> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F: Future> {
        /// No key: waiting for the inner service to be ready.
        Preparing {
            call: Option<Call<F>>,
        },
        /// No key: the inner future as it is.
        Unlocked {
            #[pin]
            future: F,
        },
        /// Waiting for the lock.
        Acquiring {
            acquire: BoxFuture<Result<Guard, Refusal>>,
            call: Option<Call<F>>,
            ctx: Option<Ctx>,
            // Counts this request among the key's waiters until it leaves this state.
            waiter: Option<WaiterSlot>,
        },
        /// The lock is held; waiting for the inner service to be ready.
        Readying {
            call: Option<Call<F>>,
            held: Option<Held>,
            ctx: Option<Ctx>,
        },
        /// The inner future runs under the lock.
        Running {
            #[pin]
            future: F,
            held: Option<Held>,
            ctx: Option<Ctx>,
        },
        Done,
    }
}

/// What a keyed request needs besides its lock.
pub(crate) struct Ctx {
    pub(crate) settings: Arc<Settings>,
    pub(crate) key: String,
    pub(crate) grpc: bool,
}

impl Ctx {
    /// The rejection response for `refusal`.
    fn reject<B>(self, refusal: Refusal) -> Response<LockBody<B>> {
        let Refusal {
            kind,
            error,
            leader,
        } = refusal;
        self.settings.reporter.rejected(kind, &self.key, &error);
        let mut rejection = Rejection::new(kind, self.key, error);
        rejection.leader = leader;
        rejection.grpc = self.grpc;
        rejection.retry_after = self.settings.retry_after;
        rejection.status = self.settings.status(kind);
        rejection.grpc_code = self.settings.grpc_code(kind);
        self.settings.respond(&rejection).map(LockBody::rejected)
    }
}

/// Why a request did not get its lock (or leadership).
pub(crate) struct Refusal {
    kind: RejectionKind,
    error: LockError,
    /// The value the current leader proclaimed, for a follower's answer.
    leader: Option<Vec<u8>>,
}

impl Refusal {
    pub(crate) fn new(kind: RejectionKind, error: LockError) -> Self {
        Refusal {
            kind,
            error,
            leader: None,
        }
    }

    /// A follower's refusal, naming the leader by its proclaimed `value`.
    pub(crate) fn not_leader(error: LockError, value: Vec<u8>) -> Self {
        Refusal {
            kind: RejectionKind::NotLeader,
            error,
            leader: Some(value),
        }
    }
}

impl From<LockError> for Refusal {
    /// How an acquisition failure is answered: a wait that ran out while
    /// another owner held the key is a busy key; a key that is no lock name
    /// is the client's fault; etcd refusing the credentials' access, and
    /// options that cannot work (invalid, or non-reentrant where the request
    /// already runs under its key), are the server's configuration; anything
    /// else (the backend failed, the manager closed, the waiter's lease
    /// expired) is an outage.
    fn from(error: LockError) -> Self {
        let kind = match error.code() {
            ErrorCode::Timeout => RejectionKind::Timeout,
            ErrorCode::InvalidKey => RejectionKind::InvalidKey,
            ErrorCode::PermissionDenied | ErrorCode::InvalidOptions | ErrorCode::AlreadyHeld => {
                RejectionKind::Misconfigured
            }
            _ => RejectionKind::Unavailable,
        };
        Refusal::new(kind, error)
    }
}

/// A request's hold: the guard, what ends the hold (lost, or `max_hold`
/// reached), and the handler's [`HeldLock`] view, whose `lost()` resolves
/// when this is dropped or the hold ends.
pub(crate) struct Held {
    /// Released when this is dropped.
    _guard: Guard,
    /// Resolves with `Lost` or `MaxHold`; `None` once it has.
    end: Option<BoxFuture<RejectionKind>>,
    ended: Option<RejectionKind>,
    view: HeldLock,
    token: CancellationToken,
    /// The request's owner scope: the inner service runs in it, so locking
    /// the request's key in there (a `#[distributed_lock]` call, a second
    /// layer, `manager.new_lock(key)`) runs under this hold. `None` for a
    /// permit, which no code re-enters: the inner service then runs in the
    /// scope around the request, if any.
    scope: Option<OwnerScope>,
}

impl Held {
    fn new(key: String, guard: Guard, max_hold: Option<Duration>) -> Self {
        let (view, token) = HeldLock::new(key, &guard);
        let scope = guard.scope();
        let lost = guard.lost();
        let end: BoxFuture<RejectionKind> = match max_hold {
            None => Box::pin(async move {
                lost.await;
                RejectionKind::Lost
            }),
            Some(limit) => Box::pin(async move {
                match tokio::time::timeout(limit, lost).await {
                    Ok(()) => RejectionKind::Lost,
                    Err(_) => RejectionKind::MaxHold,
                }
            }),
        };
        Held {
            _guard: guard,
            end: Some(end),
            ended: None,
            view,
            token,
            scope,
        }
    }

    /// Runs `f` in the request's owner scope, if it has one.
    fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.scope {
            Some(scope) => scope.enter(f),
            None => f(),
        }
    }

    /// Whether the hold has ended (`Lost` or `MaxHold`); on the first poll
    /// that sees it, the handler's [`HeldLock`] learns it too.
    pub(crate) fn poll_end(&mut self, cx: &mut Context<'_>) -> Option<RejectionKind> {
        if self.ended.is_none() {
            if let Some(end) = &mut self.end {
                if let Poll::Ready(kind) = end.as_mut().poll(cx) {
                    self.end = None;
                    self.ended = Some(kind);
                    self.token.cancel();
                }
            }
        }
        self.ended
    }
}

/// The error behind a hold that ended (`kind`: `Lost` or `MaxHold`) `when`.
pub(crate) fn ended_error(kind: RejectionKind, held: &Held, key: &str, when: &str) -> LockError {
    let what = held.view.kind().what();
    let message = match kind {
        RejectionKind::MaxHold => format!("{what} `{key}` was held for max_hold {when}"),
        _ => format!("{what} `{key}` was lost {when}"),
    };
    LockError::new(ErrorCode::Expired, message)
}

impl Drop for Held {
    fn drop(&mut self) {
        // The guard is released right after this: the hold is over.
        self.token.cancel();
    }
}

impl<F: Future> ResponseFuture<F> {
    pub(crate) fn unlocked(call: Call<F>) -> Self {
        ResponseFuture {
            state: State::Preparing { call: Some(call) },
        }
    }

    pub(crate) fn locked(
        settings: Arc<Settings>,
        key: String,
        take: Take,
        grpc: bool,
        call: Call<F>,
    ) -> Self {
        let (acquire, waiter): (BoxFuture<_>, _) = match settings.waiters.enter(&key) {
            Ok(waiter) => (
                Box::pin(acquire(
                    settings.manager.clone(),
                    key.clone(),
                    settings.options.clone(),
                    settings.wait,
                    take,
                )),
                waiter,
            ),
            Err(refusal) => (Box::pin(std::future::ready(Err(refusal))), None),
        };
        ResponseFuture {
            state: State::Acquiring {
                acquire,
                call: Some(call),
                ctx: Some(Ctx {
                    settings,
                    key,
                    grpc,
                }),
                waiter,
            },
        }
    }

    /// A future that answers `refusal` for `key` without calling the inner
    /// service.
    pub(crate) fn rejected(
        settings: Arc<Settings>,
        key: String,
        grpc: bool,
        refusal: Refusal,
    ) -> Self {
        ResponseFuture {
            state: State::Acquiring {
                acquire: Box::pin(std::future::ready(Err(refusal))),
                call: None,
                ctx: Some(Ctx {
                    settings,
                    key,
                    grpc,
                }),
                waiter: None,
            },
        }
    }

    /// A future that runs the inner service under `guard`, held already
    /// (for `key`): as [`locked`](Self::locked) from the moment the lock is
    /// taken, so a loss before or while the service runs is answered and
    /// its body cut off the same way.
    pub(crate) fn held(
        settings: Arc<Settings>,
        key: String,
        guard: Guard,
        grpc: bool,
        call: Call<F>,
    ) -> Self {
        ResponseFuture {
            state: State::Acquiring {
                acquire: Box::pin(std::future::ready(Ok(guard))),
                call: Some(call),
                ctx: Some(Ctx {
                    settings,
                    key,
                    grpc,
                }),
                waiter: None,
            },
        }
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
                StateProj::Preparing { call } => {
                    let pending = call
                        .as_mut()
                        .expect("ResponseFuture polled after completion");
                    if let Err(err) = ready!(pending.poll_ready(cx)) {
                        state.set(State::Done);
                        return Poll::Ready(err.map(|r| r.map(LockBody::unlocked)));
                    }
                    let future = call.take().expect("checked above").call(None);
                    state.set(State::Unlocked { future });
                }
                StateProj::Unlocked { future } => {
                    let result = ready!(future.poll(cx));
                    state.set(State::Done);
                    return Poll::Ready(result.map(|response| response.map(LockBody::unlocked)));
                }
                StateProj::Acquiring {
                    acquire, call, ctx, ..
                } => {
                    let acquired = ready!(acquire.as_mut().poll(cx));
                    let ctx = ctx.take().expect("ResponseFuture polled after completion");
                    match acquired {
                        Err(refusal) => {
                            state.set(State::Done);
                            return Poll::Ready(Ok(ctx.reject(refusal)));
                        }
                        Ok(guard) => {
                            ctx.settings.reporter.recovered();
                            let call = call.take().expect("ResponseFuture polled after completion");
                            let held = Held::new(ctx.key.clone(), guard, ctx.settings.max_hold);
                            // Leaving `Acquiring` frees the waiter slot.
                            state.set(State::Readying {
                                call: Some(call),
                                held: Some(held),
                                ctx: Some(ctx),
                            });
                        }
                    }
                }
                StateProj::Readying { call, held, ctx } => {
                    let end = held.as_mut().and_then(|h| h.poll_end(cx));
                    if let Some(kind) = end {
                        let (held, ctx) = (held.take(), ctx.take());
                        let (Some(held), Some(ctx)) = (held, ctx) else {
                            panic!("ResponseFuture polled after completion");
                        };
                        state.set(State::Done);
                        let err =
                            ended_error(kind, &held, &ctx.key, "before the service was ready");
                        drop(held);
                        return Poll::Ready(Ok(ctx.reject(Refusal::new(kind, err))));
                    }
                    let pending = call
                        .as_mut()
                        .expect("ResponseFuture polled after completion");
                    if let Err(err) = ready!(pending.poll_ready(cx)) {
                        // Releases the lock (dropping `held`).
                        state.set(State::Done);
                        return Poll::Ready(err.map(|r| r.map(LockBody::unlocked)));
                    }
                    let (Some(call), Some(held), Some(ctx)) =
                        (call.take(), held.take(), ctx.take())
                    else {
                        panic!("ResponseFuture polled after completion");
                    };
                    let future = held.enter(|| call.call(Some(held.view.clone())));
                    state.set(State::Running {
                        future,
                        held: Some(held),
                        ctx: Some(ctx),
                    });
                }
                StateProj::Running { future, held, ctx } => {
                    // The end of the hold is seen first, so that the handler's
                    // `HeldLock` knows it in the poll below.
                    let end = held.as_mut().and_then(|h| h.poll_end(cx));
                    // Work that completes in the poll in which the lock ends
                    // returns its result: its side effects are done, and a
                    // rejection would invite the client to do them again.
                    let polled = match held.as_ref() {
                        Some(h) => h.enter(|| future.poll(cx)),
                        None => future.poll(cx),
                    };
                    let result = match (polled, end) {
                        (Poll::Pending, None) => return Poll::Pending,
                        (Poll::Ready(result), end) => (result, end),
                        (Poll::Pending, Some(kind)) => {
                            let (Some(held), Some(ctx)) = (held.take(), ctx.take()) else {
                                panic!("ResponseFuture polled after completion");
                            };
                            // Drops the inner future: cancelled at its await point.
                            state.set(State::Done);
                            let err = ended_error(kind, &held, &ctx.key, "while the request ran");
                            drop(held);
                            return Poll::Ready(Ok(ctx.reject(Refusal::new(kind, err))));
                        }
                    };
                    let (Some(held), Some(ctx)) = (held.take(), ctx.take()) else {
                        panic!("ResponseFuture polled after completion");
                    };
                    state.set(State::Done);
                    let (result, end) = result;
                    if let Some(kind) = end {
                        ctx.settings.reporter.completed_anyway(kind, &ctx.key);
                    }
                    // An error drops the guard: the lock is released.
                    let response = result?;
                    return Poll::Ready(Ok(response.map(|body| LockBody::locked(body, held, ctx))));
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

impl<F: Future> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Preparing { .. } => "preparing",
            State::Unlocked { .. } => "unlocked",
            State::Acquiring { .. } => "acquiring",
            State::Readying { .. } => "readying",
            State::Running { .. } => "running",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
