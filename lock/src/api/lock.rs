//! [`Lock`]: a handle on one named lock, and how it is acquired.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{ErrorCode, LockError, Result};
use crate::hold::{Holds, LockGuard};
use crate::lease::LockOptions;
use crate::metrics::{Labels, Source};
use crate::queue::{Kind, Mode};
use crate::shared::Shared;

/// A handle on one named lock, made by [`LockManager::new_lock`](crate::LockManager::new_lock).
///
/// The *owner* of a hold is the **task** that locked (DESIGN §7), not the
/// handle: a handle can be shared (an `Arc<Lock>` in an axum `State`) and
/// every task that locks through it is an owner of its own, waiting (FIFO)
/// for the others like any process across the fleet. Within one task,
/// locking the same name through the same manager again — through this
/// handle or another — is reentrant (unless [`LockOptions::reentrant`] is
/// off: then it fails with `AlreadyHeld`), and each acquisition has its own
/// guard; the lock is released with the last one. Branches of one task
/// (`join!`, `select!`) are that one owner; to make them exclude each other,
/// spawn them as tasks, or run them as locked calls (the
/// [macro](crate::distributed_lock)), which take turns. A guard moved to
/// another task still releases the lock there; re-entry stays with the task
/// that locked, so hand a guard to another task only when this task will
/// not lock the name again while that task holds it.
///
/// # Example
///
/// ```
/// use distlock::{LockManager, LockOptions};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
/// let manager = LockManager::in_memory();
/// let lock = Arc::new(manager.new_lock("order:42", LockOptions::default())?);
///
/// let guard = lock.lock().await?;          // waits as long as needed
/// let again = lock.lock().await?;          // reentrant: the same task
/// assert_eq!(lock.hold_count(), 2);
///
/// // Another task is another owner, even through the same handle: busy.
/// let shared = Arc::clone(&lock);
/// let busy = tokio::spawn(async move { shared.try_lock().await.map(|g| g.is_none()) });
/// assert!(busy.await.unwrap()?);
/// let shared = Arc::clone(&lock);
/// let waited = tokio::spawn(async move { shared.lock_timeout(Duration::from_millis(50)).await });
/// assert_eq!(waited.await.unwrap().unwrap_err().code(), distlock::ErrorCode::Timeout);
///
/// again.unlock().await?;
/// guard.unlock().await?;                   // the last guard releases
/// let shared = Arc::clone(&lock);
/// let free = tokio::spawn(async move { shared.try_lock().await.map(|g| g.is_some()) });
/// assert!(free.await.unwrap()?);
/// # Ok(()) }
/// ```
pub struct Lock {
    pub(super) name: String,
    /// The queue its entries go into: the lock's, or a semaphore's.
    pub(super) queue: String,
    /// What its entries are: exclusive (a lock, a write lock), shared (a
    /// read lock), a permit (a semaphore's).
    pub(super) kind: Kind,
    pub(super) opts: LockOptions,
    /// Identifies this handle in lock metadata: host, process and handle.
    pub(super) owner: String,
    pub(super) shared: Arc<Shared>,
    /// The manager's registry of holds (where this task's hold is found).
    pub(super) holds: Arc<Holds>,
    /// The API this handle serves: the metrics' `source` label.
    source: Source,
    /// Each acquisition is an owner scope of its own (a locked call, a
    /// request): its hold is not re-entered by its task outside that scope,
    /// and in a task that holds the name it is a child section.
    pub(super) scoped: bool,
}

impl Lock {
    /// A handle whose entries are of `kind`, in `queue`.
    pub(crate) fn of_kind(
        shared: Arc<Shared>,
        holds: Arc<Holds>,
        name: String,
        queue: String,
        kind: Kind,
        opts: LockOptions,
    ) -> Self {
        Lock {
            queue,
            kind,
            owner: shared.owner_id(),
            name,
            opts,
            shared,
            holds,
            source: Source::Lock,
            scoped: false,
        }
    }

    /// Makes each acquisition of this handle an owner scope of its own, as
    /// the macro's locked calls and the layer's requests are: its hold is
    /// re-entered only by code running inside that scope (not by its task
    /// outside it), and in a task that holds the name through a plain guard
    /// it is a child section of that hold (so concurrent ones take turns).
    /// Not a public API.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # fn main() -> distlock::Result<()> {
    /// let lock = LockManager::in_memory().new_lock("a", LockOptions::default())?.owned_by_scope();
    /// # let _ = lock; Ok(()) }
    /// ```
    #[doc(hidden)]
    pub fn owned_by_scope(mut self) -> Self {
        self.scoped = true;
        self
    }

    /// Tags this handle's metrics with `source` (the macro and the layer do).
    /// Not a public API.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # fn main() -> distlock::Result<()> {
    /// let lock = LockManager::in_memory().new_lock("a", LockOptions::default())?;
    /// let lock = lock.with_metrics_source(distlock::metrics::Source::Layer);
    /// # let _ = lock; Ok(()) }
    /// ```
    #[doc(hidden)]
    pub fn with_metrics_source(mut self, source: Source) -> Self {
        self.source = source;
        self
    }

    pub(super) fn labels(&self) -> Labels {
        Labels::new(
            self.source,
            self.shared.metric_names().then_some(&*self.name),
        )
    }

    /// What this handle takes, for messages: ``lock `order:42` ``,
    /// ``read lock `doc` ``, ``semaphore `crawl` ``, ``election `leader` ``.
    pub(super) fn described(&self) -> String {
        let what = match (self.source, self.kind) {
            (Source::Election, _) => "election",
            (_, Kind::Permit(_)) => "semaphore",
            (_, Kind::Shared) => "read lock",
            (_, Kind::Exclusive) => "lock",
        };
        format!("{what} `{}`", self.name)
    }

    /// The lock's name.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let lock = LockManager::in_memory().new_lock("a/b", LockOptions::default())?;
    /// assert_eq!(lock.name(), "a/b");
    /// # Ok(()) }
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The options the lock was made with.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let lock = LockManager::in_memory().new_lock("a", LockOptions::default())?;
    /// assert!(lock.options().auto_renew);
    /// # Ok(()) }
    /// ```
    pub fn options(&self) -> &LockOptions {
        &self.opts
    }

    /// The owner id written into the lock's metadata: host, process id and a
    /// per-handle id.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let lock = LockManager::in_memory().new_lock("a", LockOptions::default())?;
    /// assert!(lock.owner().contains(&std::process::id().to_string()));
    /// # Ok(()) }
    /// ```
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// How many guards of the calling task's hold of this name (through
    /// this manager) are alive: 0 when the task does not hold it.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let lock = LockManager::in_memory().new_lock("a", LockOptions::default())?;
    /// let g = lock.lock().await?;
    /// assert_eq!(lock.hold_count(), 1);
    /// g.unlock().await?;
    /// assert_eq!(lock.hold_count(), 0);
    /// # Ok(()) }
    /// ```
    pub fn hold_count(&self) -> usize {
        self.holds
            .owned_by_caller(&self.queue)
            .map_or(0, |h| h.count())
    }

    /// Acquires the lock, waiting as long as it takes. Cancel by dropping the
    /// future: the place in the queue is given up at once.
    ///
    /// Fails with `AlreadyHeld` when the calling task holds the name and the
    /// lock is not reentrant,
    /// `Expired` when the wait was cut short by a lost lease or a deleted key,
    /// `Closed` after [`close`](crate::LockManager::close), `Backend` when the
    /// backend keeps failing past the retry policy.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let lock = LockManager::in_memory().new_lock("a", LockOptions::default())?;
    /// let guard = lock.lock().await?;
    /// // ... critical section ...
    /// guard.unlock().await?;
    /// # Ok(()) }
    /// ```
    pub async fn lock(&self) -> Result<LockGuard> {
        self.attempt(Mode::Wait, None)
            .await?
            .ok_or_else(|| LockError::new(ErrorCode::Backend, "acquisition ended without the lock"))
    }

    /// Acquires the lock if it is free now; `None` when another owner holds or
    /// waits for it.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let lock = LockManager::in_memory().new_lock("a", LockOptions::default())?;
    /// match lock.try_lock().await? {
    ///     Some(guard) => guard.unlock().await?,
    ///     None => println!("busy, try later"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn try_lock(&self) -> Result<Option<LockGuard>> {
        self.attempt(Mode::Try, None).await
    }

    /// Acquires the lock, waiting at most `wait`; then fails with
    /// [`ErrorCode::Timeout`] and leaves the queue. A zero `wait` tries once,
    /// like [`try_lock`](Lock::try_lock), and reports a busy lock as `Timeout`.
    ///
    /// ```
    /// # use distlock::{ErrorCode, LockManager, LockOptions};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let lock = LockManager::in_memory().new_lock("a", LockOptions::default())?;
    /// match lock.lock_timeout(Duration::from_secs(10)).await {
    ///     Ok(guard) => guard.unlock().await?,
    ///     Err(e) if e.code() == ErrorCode::Timeout => println!("gave up"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn lock_timeout(&self, wait: Duration) -> Result<LockGuard> {
        if wait.is_zero() {
            return self.try_lock().await?.ok_or_else(|| {
                LockError::new(ErrorCode::Timeout, format!("lock `{}` is busy", self.name))
            });
        }
        self.attempt(Mode::Wait, Some(wait))
            .await?
            .ok_or_else(|| LockError::new(ErrorCode::Backend, "acquisition ended without the lock"))
    }

    /// Whether anyone holds the lock now — a task of this process or
    /// another process — in one read of the lock's queue, without taking a
    /// place in it. The answer can be out of date as soon as it returns: use
    /// it to report (health pages, dashboards), and [`try_lock`](Lock::try_lock)
    /// to act. Fails with `Closed` after [`close`](crate::LockManager::close),
    /// `Backend` when etcd fails.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let lock = LockManager::in_memory().new_lock("report", LockOptions::default())?;
    /// assert!(!lock.is_locked().await?);
    /// let guard = lock.lock().await?;
    /// assert!(lock.is_locked().await?);
    /// guard.unlock().await?;
    /// assert!(!lock.is_locked().await?);
    /// # Ok(()) }
    /// ```
    pub async fn is_locked(&self) -> Result<bool> {
        let queue = super::inspect::read_queue(&self.shared, &self.queue).await?;
        Ok(!queue.is_empty())
    }
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock")
            .field("name", &self.name)
            .field("owner", &self.owner)
            .field("hold_count", &self.hold_count())
            .finish()
    }
}
