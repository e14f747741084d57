//! [`MultiLock`]: several names, all or none, acquired atomically.
//!
//! Its keys — one exclusive entry in each name's queue — are put by one etcd
//! transaction, so they share one create revision: every queue orders two
//! multi-locks the same way, and two that take the same names in opposite
//! orders cannot deadlock. In one process, the names' local slots are taken
//! in name order, for the same reason. It holds when it is at the head of
//! every queue; its loss is the loss of any name.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use super::lock::Lock;
use crate::error::{ErrorCode, LockError, Result};
use crate::hold::LockGuard;
use crate::lease::{Health, Retry};
use crate::metrics::Attempt;
use crate::queue::{enqueue_all, Contender, Kind, Mode, Outcome};
use crate::shared::Slot;

/// The most names one multi-lock may take: etcd's default `--max-txn-ops`
/// (128) allows 64 at two operations each.
pub const MAX_NAMES: usize = 64;

/// Several names, all or none, acquired atomically. Made by
/// [`LockManager::new_multi_lock`](crate::LockManager::new_multi_lock).
///
/// Each name is taken as a [`Lock`](crate::Lock) of that name would be (an
/// exclusive entry in its queue: a multi-lock excludes every lock, write
/// lock and multi-lock of any of its names), but all at once. Its holds are
/// not re-entered by the task (each acquisition is its own).
///
/// # Example
///
/// ```
/// use distlock::{LockManager, LockOptions};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
/// let manager = LockManager::in_memory();
/// let transfer = manager.new_multi_lock(["acct:1", "acct:2"], LockOptions::default())?;
/// let g = transfer.lock().await?;
/// assert!(g.fencing_token("acct:1").is_some());
/// assert_eq!(g.fencing_token("acct:3"), None);
/// // Any one of its names is busy meanwhile:
/// let one = manager.peer().new_lock("acct:2", LockOptions::default())?;
/// assert!(one.try_lock().await?.is_none());
/// g.release().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MultiLock {
    /// One handle per name, in name order.
    locks: Vec<Lock>,
}

impl MultiLock {
    pub(crate) fn new(locks: Vec<Lock>) -> Result<Self> {
        if locks.is_empty() || locks.len() > MAX_NAMES {
            return Err(LockError::new(
                ErrorCode::InvalidOptions,
                format!(
                    "a multi-lock takes 1 to {MAX_NAMES} distinct names, not {}",
                    locks.len()
                ),
            ));
        }
        Ok(MultiLock { locks })
    }

    /// Applies `f` to the handle of each name: a `#[distributed_lock(keys
    /// = [..])]` call makes each an owner scope of its own, as its locks
    /// are, and tags its metrics (`macro_support`).
    pub(crate) fn map_locks(mut self, f: impl FnMut(Lock) -> Lock) -> Self {
        self.locks = self.locks.into_iter().map(f).collect();
        self
    }

    /// Its names, in order, without duplicates.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # fn main() -> distlock::Result<()> {
    /// let ml = LockManager::in_memory().new_multi_lock(["b", "a", "b"], LockOptions::default())?;
    /// assert_eq!(ml.names().collect::<Vec<_>>(), ["a", "b"]);
    /// # Ok(()) }
    /// ```
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.locks.iter().map(Lock::name)
    }

    /// Takes every name, waiting as long as it takes (cancel by dropping the
    /// future: every key goes).
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let ml = LockManager::in_memory().new_multi_lock(["a", "b"], LockOptions::default())?;
    /// ml.lock().await?.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn lock(&self) -> Result<MultiLockGuard> {
        self.attempt(Mode::Wait, None)
            .await?
            .ok_or_else(|| LockError::new(ErrorCode::Backend, "acquisition ended without the lock"))
    }

    /// Takes every name if all are free now; `None` when any is held or
    /// waited for (and then none is taken).
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = LockManager::in_memory();
    /// let held = manager.new_lock("b", LockOptions::default())?.lock().await?;
    /// let ml = manager.peer().new_multi_lock(["a", "b"], LockOptions::default())?;
    /// assert!(ml.try_lock().await?.is_none());
    /// # drop(held); Ok(()) }
    /// ```
    pub async fn try_lock(&self) -> Result<Option<MultiLockGuard>> {
        self.attempt(Mode::Try, None).await
    }

    /// Takes every name, waiting at most `wait`; then fails with
    /// [`ErrorCode::Timeout`] (`Backend` during an outage) and takes none.
    ///
    /// ```
    /// # use distlock::{ErrorCode, LockManager, LockOptions};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = LockManager::in_memory();
    /// let held = manager.new_lock("a", LockOptions::default())?.lock().await?;
    /// let ml = manager.peer().new_multi_lock(["a", "b"], LockOptions::default())?;
    /// let err = ml.lock_timeout(Duration::from_millis(50)).await.unwrap_err();
    /// assert_eq!(err.code(), ErrorCode::Timeout);
    /// # drop(held); Ok(()) }
    /// ```
    pub async fn lock_timeout(&self, wait: Duration) -> Result<MultiLockGuard> {
        if wait.is_zero() {
            return self.try_lock().await?.ok_or_else(|| {
                LockError::new(ErrorCode::Timeout, "a name of the multi-lock is busy")
            });
        }
        self.attempt(Mode::Wait, Some(wait))
            .await?
            .ok_or_else(|| LockError::new(ErrorCode::Backend, "acquisition ended without the lock"))
    }

    /// One acquisition, bounded by `wait`: its span, metrics and verdict.
    async fn attempt(&self, mode: Mode, wait: Option<Duration>) -> Result<Option<MultiLockGuard>> {
        let first = &self.locks[0];
        let span = tracing::debug_span!(
            "distlock.acquire",
            name = %first.name(),
            names = self.locks.len(),
            ?mode,
            token = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let attempt = Attempt::start(first.labels(), mode == Mode::Wait);
        let health = Health::child(&first.shared.health);
        let acquire = Box::pin(self.acquire(mode, &health).instrument(span.clone()));
        let result = match wait {
            None => acquire.await,
            Some(wait) => tokio::time::timeout(wait, acquire)
                .await
                .unwrap_or_else(|_| {
                    let names: Vec<String> = self.names().map(|n| format!("`{n}`")).collect();
                    Err(health.verdict(&format!("multi-lock {}", names.join(", ")), wait))
                }),
        };
        let token = result
            .as_ref()
            .map(|g| g.as_ref().map(|g| g.guards[0].1.fencing_token()));
        attempt.finish(&span, token);
        result
    }

    async fn acquire(&self, mode: Mode, health: &Arc<Health>) -> Result<Option<MultiLockGuard>> {
        let first = &self.locks[0];
        first.shared.ensure_open()?;
        let timeout = first.shared.backend.request_timeout();
        let mut retry = Retry::new(&first.opts).reporting(Arc::clone(health));
        if mode == Mode::Try {
            retry = retry.within(timeout);
        }
        // A shared session can vanish unnoticed between keep-alives; then
        // etcd refuses the enqueue and we retry once on a fresh one.
        for _ in 0..2 {
            let Some(slots) = self.take_slots(mode).await else {
                return Ok(None);
            };
            let contend = self.contend(slots, mode, &retry);
            let contended = match mode {
                Mode::Wait => contend.await,
                Mode::Try => tokio::time::timeout(timeout, contend)
                    .await
                    .unwrap_or_else(|_| {
                        Err(LockError::new(
                            ErrorCode::Backend,
                            format!("no answer from the backend within {timeout:?}"),
                        ))
                    }),
            };
            match contended? {
                Some(outcome) => return Ok(outcome),
                None => continue, // the lease was gone
            }
        }
        Err(LockError::new(
            ErrorCode::Expired,
            "the session lease vanished while enqueueing",
        ))
    }

    /// The local slots of every name, in name order (a try takes them if no
    /// other owner of this process holds or waits for any).
    async fn take_slots(&self, mode: Mode) -> Option<Vec<Slot>> {
        let mut slots = Vec::with_capacity(self.locks.len());
        for lock in &self.locks {
            let local = &lock.shared.local;
            let slot = match mode {
                Mode::Wait => local.acquire(lock.name()).await,
                Mode::Try => {
                    let bound = lock.shared.backend.request_timeout();
                    let slot = local.try_acquire_after_cleanup(lock.name(), bound).await?;
                    // Nor are our own deletes of readers' keys in its queue.
                    local.after_cleanups(&lock.queue, bound).await;
                    slot
                }
            };
            slots.push(slot);
        }
        Some(slots)
    }

    /// Enqueues every key in one transaction, then waits for each queue in
    /// turn. `None` when the lease was gone; `Some(None)` when a try found a
    /// name busy.
    async fn contend(
        &self,
        slots: Vec<Slot>,
        mode: Mode,
        retry: &Retry,
    ) -> Result<Option<Option<MultiLockGuard>>> {
        let first = &self.locks[0];
        let (session, dedicated) = first
            .shared
            .sessions
            .session_for(&first.opts, retry)
            .await?;
        let value = first.value();
        let mut contenders: Vec<Contender> = self
            .locks
            .iter()
            .zip(slots)
            .map(|(lock, slot)| {
                Contender::new(
                    Arc::clone(&lock.shared),
                    Arc::clone(&session),
                    Kind::Exclusive,
                    lock.queue.clone(),
                    value.clone(),
                    Some(slot),
                    retry.clone(),
                )
            })
            .collect();
        let Some(enqueued) = enqueue_all(&first.shared.backend, &mut contenders, retry).await?
        else {
            session.expire("the server no longer knows the lease");
            return Ok(None);
        };
        if mode == Mode::Try {
            let mut busy = false;
            for (c, e) in contenders.iter().zip(&enqueued) {
                busy |= !c.holds_at_enqueue(e)?;
            }
            if busy {
                // Every key leaves its queue before the try answers.
                for c in contenders {
                    c.leave().await;
                }
                return Ok(Some(None));
            }
        }
        let mut guards = Vec::with_capacity(contenders.len());
        for ((contender, enqueued), lock) in contenders.into_iter().zip(enqueued).zip(&self.locks) {
            let key = contender.key().to_owned();
            let won = match contender.settle(enqueued, Mode::Wait).await? {
                Outcome::Won(won) => won,
                Outcome::Busy | Outcome::LeaseGone { .. } => {
                    return Err(LockError::new(
                        ErrorCode::Expired,
                        "the session lease vanished while waiting",
                    ))
                }
            };
            let guard = lock.hold(
                key,
                value.clone(),
                won,
                Arc::clone(&session),
                dedicated,
                retry.clone(),
            );
            guards.push((lock.name().to_owned(), guard));
        }
        Ok(Some(Some(MultiLockGuard { guards })))
    }
}

/// Proof of holding every name of a [`MultiLock`]. Release it with
/// [`release`](MultiLockGuard::release) to see errors; dropping it releases
/// every name in the background.
///
/// ```
/// # use distlock::{LockManager, LockOptions};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
/// let ml = LockManager::in_memory().new_multi_lock(["acct:1", "acct:2"], LockOptions::default())?;
/// let g = ml.lock().await?;
/// assert!(g.is_held());
/// g.release().await?;
/// # Ok(()) }
/// ```
#[must_use = "dropping the guard releases every name"]
#[derive(Debug)]
pub struct MultiLockGuard {
    /// `(name, guard)` in name order.
    guards: Vec<(String, LockGuard)>,
}

impl MultiLockGuard {
    /// Its guards, one per name, in name order: a `#[distributed_lock(keys
    /// = [..])]` call runs its body in the owner scope of each
    /// (`macro_support`).
    pub(crate) fn into_guards(mut self) -> Vec<LockGuard> {
        self.take_guards()
    }

    /// The fencing token of `name` (its key's create revision, strictly
    /// increasing per name from one holder to the next); `None` for a name
    /// this guard does not hold.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let ml = LockManager::in_memory().new_multi_lock(["a", "b"], LockOptions::default())?;
    /// let g = ml.lock().await?;
    /// assert!(g.fencing_token("a").is_some());
    /// assert!(g.fencing_token("c").is_none());
    /// # Ok(()) }
    /// ```
    pub fn fencing_token(&self, name: &str) -> Option<u64> {
        self.guards
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, g)| g.fencing_token())
    }

    /// Every name's fencing token, in name order.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let ml = LockManager::in_memory().new_multi_lock(["a", "b"], LockOptions::default())?;
    /// let g = ml.lock().await?;
    /// assert_eq!(g.fencing_tokens().len(), 2);
    /// # Ok(()) }
    /// ```
    pub fn fencing_tokens(&self) -> BTreeMap<&str, u64> {
        self.guards
            .iter()
            .map(|(n, g)| (n.as_str(), g.fencing_token()))
            .collect()
    }

    /// Whether every name is still held: false once any is lost.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let ml = LockManager::in_memory().new_multi_lock(["a", "b"], LockOptions::default())?;
    /// assert!(ml.lock().await?.is_held());
    /// # Ok(()) }
    /// ```
    pub fn is_held(&self) -> bool {
        self.guards.iter().all(|(_, g)| g.is_held())
    }

    /// Resolves when any name is lost (or released).
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = LockManager::in_memory();
    /// let g = manager.new_multi_lock(["a", "b"], LockOptions::default())?.lock().await?;
    /// let lost = g.lost();
    /// manager.force_unlock("b").await?;
    /// lost.await;
    /// assert!(!g.is_held());
    /// # Ok(()) }
    /// ```
    pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut each: Vec<_> = self
            .guards
            .iter()
            .map(|(_, g)| Box::pin(g.lost()))
            .collect();
        std::future::poll_fn(move |cx| {
            for lost in each.iter_mut() {
                if lost.as_mut().poll(cx).is_ready() {
                    return std::task::Poll::Ready(());
                }
            }
            std::task::Poll::Pending
        })
    }

    /// Releases every name: one transaction deletes every key (each only if
    /// it is still ours, as [`LockGuard::unlock`] deletes one), retrying
    /// transient failures until it applied or the lease is lost, so the
    /// whole release is bounded as one name's is (about one TTL; then the
    /// lease is retired, and the keys go with it). The first error in name
    /// order. Dropped halfway, the release finishes in the background.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let ml = LockManager::in_memory().new_multi_lock(["a", "b"], LockOptions::default())?;
    /// ml.lock().await?.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn release(mut self) -> Result<()> {
        LockGuard::unlock_all(self.take_guards())
            .await
            .into_iter()
            .find_map(Result::err)
            .map_or(Ok(()), Err)
    }

    /// Its guards, in name order, leaving it empty.
    fn take_guards(&mut self) -> Vec<LockGuard> {
        std::mem::take(&mut self.guards)
            .into_iter()
            .map(|(_, guard)| guard)
            .collect()
    }
}

impl Drop for MultiLockGuard {
    /// Releases every name in the background, as one transaction.
    fn drop(&mut self) {
        LockGuard::drop_all(self.take_guards());
    }
}
