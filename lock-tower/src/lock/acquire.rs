//! How a request takes its hold ([`Take`]): its key's lock, a permit of the
//! key's semaphore, or a side of the key's read-write lock; every wait
//! bounded.

use std::time::Duration;

use distlock::{ErrorCode, LockError, LockManager, LockOptions};
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use super::future::Refusal;
use super::guard::{Guard, HoldKind};
use crate::rejection::RejectionKind;

/// How long a zero [`wait`](super::LockLayer::wait) (one attempt) may take,
/// backend retries included.
pub(crate) const TRY_ONCE_LIMIT: Duration = Duration::from_secs(1);

/// What one request takes of its key, by the layer's [mode](crate::mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    Lock,
    /// A permit of a semaphore of this many permits.
    Permit(u32),
    Read,
    Write,
}

impl Take {
    fn kind(self) -> HoldKind {
        match self {
            Take::Lock => HoldKind::Lock,
            Take::Permit(_) => HoldKind::Permit,
            Take::Read => HoldKind::Read,
            Take::Write => HoldKind::Write,
        }
    }
}

/// Takes `take` of `key` with a handle of its own, waiting at most `wait`.
/// A zero wait tries once; that attempt, backend retries included, is cut
/// off after [`TRY_ONCE_LIMIT`]: every wait the layer makes is bounded. A
/// longer wait is the core's own (`lock_timeout` and its kin end it, and
/// count it as a timeout in the metrics); the layer's bound, that much
/// later again, is only a backstop: at `wait` itself, it could cut the
/// core's acquisition off first, which the metrics would count as
/// cancelled.
pub(crate) async fn acquire(
    manager: LockManager,
    key: String,
    options: LockOptions,
    wait: Duration,
    take: Take,
) -> Result<Guard, Refusal> {
    let what = take.kind().what();
    let bound = match wait.is_zero() {
        true => TRY_ONCE_LIMIT,
        false => wait.saturating_add(TRY_ONCE_LIMIT),
    };
    let attempt = take_hold(manager, key.clone(), options, wait, take);
    match tokio::time::timeout(bound, attempt).await {
        Ok(acquired) => Ok(acquired?),
        // One attempt that took this long: the backend did not answer.
        Err(_) if wait.is_zero() => Err(Refusal::new(
            RejectionKind::Unavailable,
            LockError::new(
                ErrorCode::Timeout,
                format!("{what} `{key}`: the backend did not answer within {bound:?}"),
            ),
        )),
        Err(_) => Err(Refusal::from(LockError::new(
            ErrorCode::Timeout,
            format!("{what} `{key}` not acquired within {bound:?}"),
        ))),
    }
}

async fn take_hold(
    manager: LockManager,
    key: String,
    options: LockOptions,
    wait: Duration,
    take: Take,
) -> Result<Guard, LockError> {
    match take {
        Take::Lock => {
            // Each request is an owner scope of its own (DESIGN §7).
            let lock = manager
                .new_lock(key, options)?
                .with_metrics_source(distlock::metrics::Source::Layer)
                .owned_by_scope();
            lock.lock_timeout(wait).await.map(Guard::Lock)
        }
        // A permit belongs to no task: every acquisition is one of its own.
        Take::Permit(n) => {
            let semaphore = manager.new_semaphore(key, n, options)?;
            semaphore.acquire_timeout(wait).await.map(Guard::Permit)
        }
        Take::Read | Take::Write => {
            if nests_here(&manager, &key, &options) {
                return read_or_write(manager, key, options, wait, take).await;
            }
            let own_task = read_or_write(manager, key, options, wait, take)
                .instrument(tracing::Span::current());
            // Dropped (the client went away, the wait ran out): aborted, and a
            // guard it had taken already is released.
            match AbortOnDropHandle::new(tokio::spawn(own_task)).await {
                Ok(taken) => taken,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => Err(LockError::with_source(
                    ErrorCode::Backend,
                    "the acquisition's task was cancelled",
                    e,
                )),
            }
        }
    }
}

/// Whether a read-write acquisition runs in the calling task.
///
/// The core makes a read-write hold its task's (a later `read()` or
/// `write()` of that task re-enters it), but one task may serve several
/// requests at once (`join!`, tower's `CallAll`), and each request is an
/// owner of its own: so a request takes its read or write lock in a task of
/// its own, whose hold nobody else re-enters, and then runs under the
/// guard's scope like any request.
///
/// Except where the request is nested in a hold of this task: inside an owner
/// scope (a locked call, a request) that may hold the key, the acquisition
/// must see that scope to become a child section of its hold instead of
/// waiting for it; and a task that holds the key through a plain
/// `Lock::lock` re-enters that hold. Both run here.
fn nests_here(manager: &LockManager, key: &str, options: &LockOptions) -> bool {
    distlock::current_lock().is_some()
        || manager
            .new_lock(key, options.clone())
            .is_ok_and(|lock| lock.hold_count() > 0)
}

async fn read_or_write(
    manager: LockManager,
    key: String,
    options: LockOptions,
    wait: Duration,
    take: Take,
) -> Result<Guard, LockError> {
    let rw = manager.new_rw_lock(key, options)?;
    if take == Take::Read {
        rw.read_timeout(wait).await.map(Guard::Read)
    } else {
        rw.write_timeout(wait).await.map(Guard::Write)
    }
}
