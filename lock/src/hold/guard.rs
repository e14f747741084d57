//! [`LockGuard`]: proof of holding a lock.

use std::future::Future;
use std::sync::Arc;

use super::state::Hold;
use crate::error::{ErrorCode, LockError, Result};

/// Proof that a lock is held. Unlock it with [`unlock`](LockGuard::unlock) to
/// see errors; dropping it releases the lock in the background.
///
/// Reentrant acquisitions of the same [`Lock`](crate::Lock) hand out several
/// guards; the lock is released with the last one.
///
/// # Example
///
/// ```
/// use distlock::{LockManager, LockOptions};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
/// let manager = LockManager::in_memory();
/// let lock = manager.new_lock("order:42", LockOptions::default())?;
/// let guard = lock.lock().await?;
/// assert!(guard.is_held());
/// println!("writing with fencing token {}", guard.fencing_token());
/// guard.unlock().await?;
/// # Ok(()) }
/// ```
#[must_use = "dropping the guard releases the lock"]
pub struct LockGuard {
    hold: Option<Arc<Hold>>,
    // --- owner scopes (owner.rs): additive hook ---
    /// Set when this guard is a child section of an owner scope's hold: the
    /// section ends when its last guard is gone.
    section: Option<Arc<super::owner::Section>>,
}

impl LockGuard {
    pub(crate) fn first(hold: Arc<Hold>) -> Self {
        LockGuard {
            hold: Some(hold),
            section: None,
        }
    }

    // --- owner scopes (owner.rs): additive hook ---
    /// The hold, for owner scopes.
    pub(crate) fn hold_ref(&self) -> &Arc<Hold> {
        self.hold
            .as_ref()
            .expect("a guard holds until unlock or drop")
    }

    /// This guard, carrying a child section.
    pub(crate) fn in_section(mut self, section: Arc<super::owner::Section>) -> Self {
        self.section = Some(section);
        self
    }

    /// The child section this guard carries, if any.
    pub(crate) fn section(&self) -> Option<&Arc<super::owner::Section>> {
        self.section.as_ref()
    }

    /// Whether this guard is a child section of an owner scope's hold.
    pub(crate) fn is_section(&self) -> bool {
        self.section.is_some()
    }
    // --- end of owner-scope hook ---

    fn hold(&self) -> &Hold {
        self.hold
            .as_deref()
            .expect("a guard holds until unlock or drop")
    }

    /// The lock's name.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// # let manager = LockManager::in_memory();
    /// let guard = manager.new_lock("jobs/nightly", LockOptions::default())?.lock().await?;
    /// assert_eq!(guard.name(), "jobs/nightly");
    /// # Ok(()) }
    /// ```
    pub fn name(&self) -> &str {
        &self.hold().name
    }

    /// The fencing token of this acquisition: the create revision of the lock's
    /// key. It grows strictly from one holder to the next, cluster-wide.
    ///
    /// Pass it along with every write the lock protects; the storage accepts a
    /// write only if its token is at least the highest it has seen for that
    /// resource, and remembers it. A holder that was paused past its lease and
    /// lost the lock then cannot overwrite the work of its successor.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// # let manager = LockManager::in_memory();
    /// let lock = manager.new_lock("account:7", LockOptions::default())?;
    /// let first = lock.lock().await?.fencing_token();
    /// # tokio::task::yield_now().await;
    /// let second = lock.lock().await?.fencing_token();
    /// assert!(second > first);
    /// # Ok(()) }
    /// ```
    pub fn fencing_token(&self) -> u64 {
        self.hold().token
    }

    /// Whether the lock is still held: false once it is lost.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// # let manager = LockManager::in_memory();
    /// let guard = manager.new_lock("a", LockOptions::default())?.lock().await?;
    /// assert!(guard.is_held());
    /// # Ok(()) }
    /// ```
    pub fn is_held(&self) -> bool {
        self.hold().is_held()
    }

    /// Resolves when the lock is lost: its lease could not be renewed in time,
    /// or its key was deleted (e.g. by [`force_unlock`](crate::LockManager::force_unlock)),
    /// or the manager was closed. It also resolves once the lock is released,
    /// so nothing waits on it forever. The future does not borrow the guard,
    /// so it can race the protected work.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # async fn do_work() {}
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// # let manager = LockManager::in_memory();
    /// let guard = manager.new_lock("report", LockOptions::default())?.lock().await?;
    /// tokio::select! {
    ///     _ = guard.lost() => eprintln!("lock lost; stopping"),
    ///     _ = do_work() => {}
    /// }
    /// guard.unlock().await?;
    /// # Ok(()) }
    /// ```
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        self.hold().until_lost()
    }

    /// Renews the lock's lease now. Needed only for locks without auto-renew,
    /// which otherwise expire one TTL after they were acquired.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// # let manager = LockManager::in_memory();
    /// let lock = manager.new_lock("batch", LockOptions::default().auto_renew(false))?;
    /// let guard = lock.lock().await?;
    /// guard.renew().await?; // another full TTL from now
    /// # Ok(()) }
    /// ```
    pub async fn renew(&self) -> Result<()> {
        let hold = self.hold();
        hold.shared.ensure_open()?;
        if !hold.is_held() {
            return Err(LockError::new(
                ErrorCode::Expired,
                format!("lock `{}` was lost", hold.name),
            ));
        }
        hold.session.renew().await
    }

    /// Releases this guard; the lock itself is released with the last guard
    /// of its [`Lock`](crate::Lock): its key is deleted, retrying transient
    /// failures until the delete succeeds or the lease is lost (at most about
    /// one TTL). Fails with `Expired` when the lock had been lost, and with
    /// `Backend` when the key could not be deleted within a TTL; that key's
    /// lease is then retired (no longer used for new locks, revoked once its
    /// other locks are released), so the key goes with it.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// # let manager = LockManager::in_memory();
    /// let lock = manager.new_lock("a", LockOptions::default())?;
    /// lock.lock().await?.unlock().await?;
    /// assert_eq!(lock.hold_count(), 0);
    /// # Ok(()) }
    /// ```
    pub async fn unlock(self) -> Result<()> {
        let mut unlocked = LockGuard::unlock_all(vec![self]).await;
        unlocked.pop().unwrap_or(Ok(()))
    }

    /// [`unlock`](LockGuard::unlock)s guards whose holds share one session
    /// (a multi-lock's): the keys of the holds they were the last guards of
    /// are deleted in one transaction. Each guard's result, in order.
    pub(crate) async fn unlock_all(mut guards: Vec<LockGuard>) -> Vec<Result<()>> {
        let mut outcomes: Vec<Option<Result<()>>> = Vec::with_capacity(guards.len());
        let mut last = Vec::new();
        for guard in &mut guards {
            outcomes.push(match guard.hold.take() {
                None => Some(Err(LockError::new(
                    ErrorCode::NotHeld,
                    "guard already released",
                ))),
                Some(hold) if hold.leave() => {
                    last.push(hold);
                    None
                }
                Some(_) => Some(Ok(())),
            });
        }
        // Should this future be dropped halfway, the release finishes in the
        // background (every step of it can be repeated safely).
        let mut unfinished = ReleaseOnDrop(last.clone());
        let mut released = Hold::release_all(last).await.into_iter();
        unfinished.0.clear();
        drop(guards); // their sections end with the release
        outcomes
            .into_iter()
            .map(|outcome| outcome.unwrap_or_else(|| released.next().unwrap_or(Ok(()))))
            .collect()
    }

    /// Drops guards whose holds share one session (a multi-lock's): the
    /// holds they were the last guards of are released together in the
    /// background, as [`unlock_all`](LockGuard::unlock_all) would.
    pub(crate) fn drop_all(mut guards: Vec<LockGuard>) {
        let last = guards
            .iter_mut()
            .filter_map(|guard| guard.hold.take())
            .filter(|hold| hold.leave())
            .collect();
        Hold::release_all_in_background(last);
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(hold) = self.hold.take() {
            if hold.leave() {
                hold.release_in_background();
            }
        }
    }
}

/// Releases holds in the background unless disarmed (emptied).
struct ReleaseOnDrop(Vec<Arc<Hold>>);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        Hold::release_all_in_background(std::mem::take(&mut self.0));
    }
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.hold {
            Some(h) => f
                .debug_struct("LockGuard")
                .field("name", &h.name)
                .field("fencing_token", &h.token)
                .field("lost", &h.is_lost())
                .finish(),
            None => f.write_str("LockGuard(released)"),
        }
    }
}
