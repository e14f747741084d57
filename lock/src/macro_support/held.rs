//! What a locked call holds while its body runs ([`Held`]): the guard of a
//! lock, a permit or a side of a read-write lock, or one guard per name of
//! a multi-lock; the owner scope the body runs in, the hold's loss, its
//! release.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;

use tokio::time::Instant;
use tracing::{debug, warn};

use super::current;
use crate::error::ErrorCode;
use crate::hold::{self, LockGuard, OwnerScope};

/// The guards of one call, in name order.
pub(super) struct Held {
    first: LockGuard,
    /// A multi-lock's other names'.
    rest: Vec<LockGuard>,
}

impl Held {
    /// The hold of one name.
    pub(super) fn one(guard: LockGuard) -> Self {
        Held {
            first: guard,
            rest: Vec::new(),
        }
    }

    /// The holds of a multi-lock's names, in name order; `None` if empty.
    pub(super) fn all(guards: Vec<LockGuard>) -> Option<Self> {
        let mut guards = guards.into_iter();
        let first = guards.next()?;
        Some(Held {
            first,
            rest: guards.collect(),
        })
    }

    fn guards(&self) -> impl Iterator<Item = &LockGuard> {
        std::iter::once(&self.first).chain(&self.rest)
    }

    /// Whether the call runs as a child section of an enclosing owner's
    /// hold instead of a hold of its own.
    pub(super) fn is_section(&self) -> bool {
        self.guards().any(LockGuard::is_section)
    }

    fn is_held(&self) -> bool {
        self.guards().all(LockGuard::is_held)
    }

    /// Runs `body` in an owner scope of every guard, nested in order (each
    /// name's level inside the previous one's), so that the body locking
    /// one of the names again through the same manager runs under this hold
    /// ([`OwnerScope`]); and tells [`current_lock`](super::current_lock)
    /// which levels are this call's.
    pub(super) fn run<F: Future>(&self, body: F) -> impl Future<Output = F::Output> {
        let mut innermost: OwnerScope = self.first.scope();
        let mut levels = Vec::with_capacity(1 + self.rest.len());
        levels.extend(innermost.enter(hold::current));
        for guard in &self.rest {
            innermost = innermost.enter(|| guard.scope());
            levels.extend(innermost.enter(hold::current));
        }
        current::in_call(levels.into(), innermost.run(body))
    }

    /// Resolves when any guard is lost (or released).
    pub(super) fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        any_of(self.guards().map(LockGuard::lost).collect())
    }

    /// Unlocks, waiting for the release so that the key is free when the
    /// function returns; or, before `hold_until`, keeps the hold until then
    /// and releases it in the background. The body's result stands
    /// whatever the release says.
    pub(super) async fn release(self, hold_until: Option<Instant>) {
        // A child section ends with its guard; the enclosing owner holds on.
        let keep = hold_until.filter(|until| *until > Instant::now() && !self.is_section());
        if let (Some(until), Ok(runtime)) = (keep, tokio::runtime::Handle::try_current()) {
            if self.is_held() {
                debug!("keeping the hold until hold_at_least has passed");
                let lost = self.lost();
                runtime.spawn(async move {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => {}
                        _ = lost => {}
                    }
                    self.unlock().await;
                });
                return;
            }
        }
        self.unlock().await;
    }

    /// A multi-lock's names are released together, their keys deleted in
    /// one transaction, as `MultiLockGuard::release` does.
    async fn unlock(self) {
        let guards = std::iter::once(self.first).chain(self.rest).collect();
        for err in LockGuard::unlock_all(guards)
            .await
            .into_iter()
            .filter_map(Result::err)
        {
            match err.code() {
                ErrorCode::Expired => debug!(%err, "released a lost lock"),
                _ => warn!(%err, "release failed; the key goes with its lease"),
            }
        }
    }
}

/// Resolves when the first of `each` does.
pub(super) fn any_of<F>(each: Vec<F>) -> impl Future<Output = ()> + Send + 'static
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut each: Vec<Pin<Box<F>>> = each.into_iter().map(Box::pin).collect();
    poll_fn(move |cx| {
        for one in each.iter_mut() {
            if one.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
}
