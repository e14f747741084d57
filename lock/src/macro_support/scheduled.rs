//! `skip_if_busy`: a scheduled job's locked call, which returns at once when
//! another instance holds the lock ([`locked_or_skip`], [`SkipResult`]).

use std::future::Future;

use tracing::{warn, Instrument};

use super::locked::{run, Outcomes};
use super::names::Names;
use super::spec::Spec;
use crate::api::LockManager;
use crate::error::LockError;

/// The return type of a `skip_if_busy` function: one with a value that
/// means "skipped, nothing to report".
#[diagnostic::on_unimplemented(
    message = "a #[distributed_lock(skip_if_busy)] function must return `()`, `Option<T>`, `Result<(), E>` or `Result<Option<T>, E>` with `E: From<distlock::LockError>`, so that a skipped call has a value; `{Self}` is none of them"
)]
pub trait SkipResult {
    /// The result of a call skipped because the lock was busy.
    fn skipped() -> Self;
    /// The result for a lock that could not be taken or was lost; `()` and
    /// `Option` log it.
    fn from_lock_error(err: LockError) -> Self;
}

impl SkipResult for () {
    fn skipped() -> Self {}
    fn from_lock_error(err: LockError) -> Self {
        warn!(%err, code = ?err.code(), "locked call failed; its `()` result cannot say so");
    }
}

impl<T> SkipResult for Option<T> {
    fn skipped() -> Self {
        None
    }
    fn from_lock_error(err: LockError) -> Self {
        warn!(%err, code = ?err.code(), "locked call failed; returning `None`");
        None
    }
}

impl<E: From<LockError>> SkipResult for Result<(), E> {
    fn skipped() -> Self {
        Ok(())
    }
    fn from_lock_error(err: LockError) -> Self {
        Err(E::from(err))
    }
}

impl<T, E: From<LockError>> SkipResult for Result<Option<T>, E> {
    fn skipped() -> Self {
        Ok(None)
    }
    fn from_lock_error(err: LockError) -> Self {
        Err(E::from(err))
    }
}

/// [`locked`](super::locked::locked) for `skip_if_busy` functions: a busy
/// lock (all permits taken, a writer ahead of a reader, any name of a
/// multi-lock held) returns [`SkipResult::skipped`] at once.
pub async fn locked_or_skip<R, F>(
    spec: Spec,
    manager: Option<LockManager>,
    key: impl Into<Names>,
    body: F,
) -> R
where
    R: SkipResult,
    F: Future<Output = R>,
{
    let outcomes = Outcomes {
        error: R::from_lock_error,
        skipped: Some(R::skipped),
    };
    let key = key.into();
    let span = tracing::debug_span!("distlock.locked", function = spec.function, key = %key);
    run(spec.skip_if_busy(), manager, key, body, outcomes)
        .instrument(span)
        .await
}
