//! The locked call itself: [`locked`] takes what the [`Spec`] says of the
//! call's [`Names`] (`take.rs`), runs the body in the hold's owner scope,
//! cancels it when the hold is lost (or past `hold_at_most`), and releases
//! (`held.rs`).

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use tokio::time::{timeout_at, Instant};
use tracing::{debug, warn, Instrument};

use super::default_manager::default_manager;
use super::names::Names;
use super::spec::{OnLost, Spec};
use super::take::{take, what};
use crate::api::LockManager;
use crate::error::{ErrorCode, LockError};

/// The return type of a locked function: `Result<T, E>` whose `E` can hold a
/// [`LockError`].
#[diagnostic::on_unimplemented(
    message = "a #[distributed_lock] function must return `Result<T, E>` with `E: From<distlock::LockError>`; `{Self}` is not such a type"
)]
pub trait LockedResult {
    /// The error result for a lock that could not be taken or was lost.
    fn from_lock_error(err: LockError) -> Self;
}

impl<T, E: From<LockError>> LockedResult for Result<T, E> {
    fn from_lock_error(err: LockError) -> Self {
        Err(E::from(err))
    }
}

/// How a call reports what is not the body's own result.
pub(super) struct Outcomes<R> {
    pub(super) error: fn(LockError) -> R,
    pub(super) skipped: Option<fn() -> R>,
}

/// Runs `body` holding what `spec` says of `key` (one rendered key, or
/// the keys of a multi-lock) through `manager` (or the default manager):
/// the expansion of every `#[distributed_lock]` function.
pub async fn locked<R, F>(
    spec: Spec,
    manager: Option<LockManager>,
    key: impl Into<Names>,
    body: F,
) -> R
where
    R: LockedResult,
    F: Future<Output = R>,
{
    let outcomes = Outcomes {
        error: R::from_lock_error,
        skipped: None,
    };
    let key = key.into();
    let span = tracing::debug_span!("distlock.locked", function = spec.function, key = %key);
    run(spec, manager, key, body, outcomes)
        .instrument(span)
        .await
}

/// How the body ended.
enum Ended<R> {
    Finished(R),
    Lost,
    TooLong(Duration),
}

pub(super) async fn run<R, F>(
    spec: Spec,
    manager: Option<LockManager>,
    key: Names,
    body: F,
    outcomes: Outcomes<R>,
) -> R
where
    F: Future<Output = R>,
{
    let started = Instant::now();
    let Some(manager) = manager.or_else(default_manager) else {
        return (outcomes.error)(LockError::new(
            ErrorCode::InvalidOptions,
            format!(
                "no lock manager for #[distributed_lock] function `{}`: call \
                 `distlock::set_default_manager(...)` at startup, or pass `manager = ...`",
                spec.function
            ),
        ));
    };

    // Inside an owner scope that holds the key (an outer locked call, a
    // request under `LockLayer`), this is a child section of that hold: see
    // `owner.rs`.
    // Boxed, as the lock's acquisition is: nested locked calls poll one
    // inside another, and this future is large.
    let held = match Box::pin(take(&manager, &spec, &key)).await {
        Ok(Some(held)) => held,
        Ok(None) => match outcomes.skipped {
            Some(skipped) => {
                debug!("busy; skipped the call (skip_if_busy)");
                return skipped();
            }
            None => {
                return (outcomes.error)(LockError::new(
                    ErrorCode::Timeout,
                    format!("{} is busy", what(&spec, &key)),
                ))
            }
        },
        Err(err) => return (outcomes.error)(err),
    };
    if held.is_section() {
        debug!("runs as a child section of an enclosing owner's hold");
    }
    let body = held.run(body);
    let ended = match spec.hold_at_most {
        None => match watch(body, held.lost(), spec.on_lost).await {
            Some(result) => Ended::Finished(result),
            None => Ended::Lost,
        },
        Some(limit) => {
            let deadline = started + limit;
            match watch(timeout_at(deadline, body), held.lost(), spec.on_lost).await {
                Some(Ok(result)) => Ended::Finished(result),
                Some(Err(_)) => Ended::TooLong(limit),
                None => Ended::Lost,
            }
        }
    };
    held.release(spec.hold_at_least.map(|d| started + d)).await;
    match ended {
        Ended::Finished(result) => result,
        Ended::Lost => {
            warn!(function = spec.function, key = %key, "lost while the function ran; cancelled it");
            (outcomes.error)(LockError::new(
                ErrorCode::Expired,
                format!(
                    "{} was lost while `{}` ran; the function was cancelled",
                    what(&spec, &key),
                    spec.function
                ),
            ))
        }
        Ended::TooLong(limit) => {
            warn!(function = spec.function, key = %key, ?limit, "ran past hold_at_most; cancelled it");
            (outcomes.error)(LockError::new(
                ErrorCode::Timeout,
                format!(
                    "`{}` ran past hold_at_most ({limit:?}) under {}; it was cancelled and \
                     released",
                    spec.function,
                    what(&spec, &key),
                ),
            ))
        }
    }
}

/// Polls `body` until it finishes; `None` when `lost` resolved first and the
/// policy is to cancel (the body is then dropped at the await it was at). A
/// body that finishes in the poll in which the loss is noticed returns its
/// result: its work is done (the loss is logged).
async fn watch<R>(
    body: impl Future<Output = R>,
    lost: impl Future<Output = ()>,
    on_lost: OnLost,
) -> Option<R> {
    let mut body = pin!(body);
    let mut lost = pin!(lost);
    let mut lost_seen = false;
    poll_fn(|cx| {
        if let Poll::Ready(result) = body.as_mut().poll(cx) {
            if !lost_seen && lost.as_mut().poll(cx).is_ready() {
                warn!("lock lost as the function completed; returning its result");
            }
            return Poll::Ready(Some(result));
        }
        if !lost_seen && lost.as_mut().poll(cx).is_ready() {
            if on_lost == OnLost::Cancel {
                return Poll::Ready(None);
            }
            warn!("lock lost while the function runs; it continues (on_lost = \"continue\")");
            lost_seen = true;
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watch_cancels_or_continues() {
        let never = std::future::pending::<()>;
        let ready = || std::future::ready(());
        assert_eq!(watch(async { 1 }, never(), OnLost::Cancel).await, Some(1));
        // Lost in the poll in which the body completes: the result stands.
        assert_eq!(watch(async { 1 }, ready(), OnLost::Cancel).await, Some(1));
        // Lost while the body waits: cancelled at its await.
        let pending = std::future::pending::<u32>;
        assert_eq!(watch(pending(), ready(), OnLost::Cancel).await, None);
        assert_eq!(watch(async { 1 }, ready(), OnLost::Continue).await, Some(1));
    }
}
