//! [`Semaphore`]: at most N holders of a name at once, across the fleet.
//!
//! Its queue is a key space of its own, `{ns}/semaphores/{name}/` (a
//! semaphore and a lock of one name are unrelated). Each acquisition puts a
//! key of its own under the manager's lease; a contender holds when fewer
//! than N keys are older than its own, FIFO by create revision. A release
//! wakes one waiter (the first), and a waiter that becomes a holder touches
//! its key, which wakes the next one (see `queue/kind.rs`).

use std::time::Duration;

use super::lock::Lock;
use crate::error::{ErrorCode, LockError, Result};
use crate::hold::LockGuard;
use crate::queue::Mode;

/// The most permits a semaphore may have: a contender reads up to this many
/// keys ahead of it.
pub const MAX_PERMITS: u32 = 1024;

/// At most `permits` holders of a name at once, across every process on the
/// namespace. Made by [`LockManager::new_semaphore`](crate::LockManager::new_semaphore).
///
/// Each [`Permit`] is a key bound to its holder's lease, so a crashed
/// holder's permit comes back within one TTL. Waiting is FIFO and wakes one
/// waiter per release. Every process must give one name the same number of
/// permits: one that disagrees gets `InvalidOptions` naming both counts.
/// A permit is not re-entrant: each acquisition, even in one task, takes a
/// permit of its own.
///
/// # Example
///
/// ```
/// use distlock::{LockManager, LockOptions};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
/// let manager = LockManager::in_memory();
/// let crawl = manager.new_semaphore("crawl:example.com", 2, LockOptions::default())?;
/// let a = crawl.acquire().await?;
/// let b = crawl.acquire().await?;
/// assert!(crawl.try_acquire().await?.is_none()); // both permits taken
/// a.release().await?;
/// let c = crawl.try_acquire().await?.expect("a permit came back");
/// assert!(c.fencing_token() > b.fencing_token());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Semaphore {
    lock: Lock,
    permits: u32,
}

impl Semaphore {
    pub(crate) fn new(lock: Lock, permits: u32) -> Self {
        Semaphore { lock, permits }
    }

    /// Its handle, whose acquisitions are permits of this semaphore: a
    /// `#[distributed_lock(permits = n)]` call takes its permit through it,
    /// as it takes a lock (`macro_support`).
    pub(crate) fn into_lock(self) -> Lock {
        self.lock
    }

    /// Checks a number of permits.
    pub(crate) fn validate(permits: u32) -> Result<()> {
        if permits == 0 || permits > MAX_PERMITS {
            return Err(LockError::new(
                ErrorCode::InvalidOptions,
                format!("a semaphore has 1 to {MAX_PERMITS} permits, not {permits}"),
            ));
        }
        Ok(())
    }

    /// The semaphore's name.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # fn main() -> distlock::Result<()> {
    /// let sem = LockManager::in_memory().new_semaphore("pool", 3, LockOptions::default())?;
    /// assert_eq!(sem.name(), "pool");
    /// # Ok(()) }
    /// ```
    pub fn name(&self) -> &str {
        self.lock.name()
    }

    /// How many holders it admits at once.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # fn main() -> distlock::Result<()> {
    /// let sem = LockManager::in_memory().new_semaphore("pool", 3, LockOptions::default())?;
    /// assert_eq!(sem.permits(), 3);
    /// # Ok(()) }
    /// ```
    pub fn permits(&self) -> u32 {
        self.permits
    }

    /// Takes a permit, waiting as long as it takes (cancel by dropping the
    /// future). Fails as [`Lock::lock`] does.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let sem = LockManager::in_memory().new_semaphore("pool", 1, LockOptions::default())?;
    /// let permit = sem.acquire().await?;
    /// permit.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn acquire(&self) -> Result<Permit> {
        let permit = self.lock.attempt(Mode::Wait, None).await?;
        permit
            .map(Permit::new)
            .ok_or_else(|| LockError::new(ErrorCode::Backend, "acquisition ended without a permit"))
    }

    /// Takes a permit if one is free now; `None` when all are held (or
    /// waited for).
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let sem = LockManager::in_memory().new_semaphore("pool", 1, LockOptions::default())?;
    /// let held = sem.try_acquire().await?.expect("free");
    /// assert!(sem.try_acquire().await?.is_none());
    /// # drop(held); Ok(()) }
    /// ```
    pub async fn try_acquire(&self) -> Result<Option<Permit>> {
        Ok(self.lock.attempt(Mode::Try, None).await?.map(Permit::new))
    }

    /// Takes a permit, waiting at most `wait`; then fails with
    /// [`ErrorCode::Timeout`] (or `Backend` if the backend was failing).
    ///
    /// ```
    /// # use distlock::{ErrorCode, LockManager, LockOptions};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let sem = LockManager::in_memory().new_semaphore("pool", 1, LockOptions::default())?;
    /// let held = sem.acquire().await?;
    /// let err = sem.acquire_timeout(Duration::from_millis(50)).await.unwrap_err();
    /// assert_eq!(err.code(), ErrorCode::Timeout);
    /// # drop(held); Ok(()) }
    /// ```
    pub async fn acquire_timeout(&self, wait: Duration) -> Result<Permit> {
        self.lock.lock_timeout(wait).await.map(Permit::new)
    }
}

/// One permit of a [`Semaphore`]: proof that its holder is one of at most N.
/// Release it with [`release`](Permit::release) to see errors; dropping it
/// releases it in the background.
///
/// ```
/// # use distlock::{LockManager, LockOptions};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
/// let sem = LockManager::in_memory().new_semaphore("pool", 2, LockOptions::default())?;
/// let permit = sem.acquire().await?;
/// assert!(permit.is_held());
/// println!("calling the upstream with fencing token {}", permit.fencing_token());
/// permit.release().await?;
/// # Ok(()) }
/// ```
#[must_use = "dropping the permit releases it"]
#[derive(Debug)]
pub struct Permit {
    guard: LockGuard,
}

impl Permit {
    fn new(guard: LockGuard) -> Self {
        Permit { guard }
    }

    /// The permit's fencing token: its key's create revision, which grows
    /// strictly from one acquisition of the semaphore to the next. Up to N
    /// permits are held at once, so a store fences their writes per permit
    /// slot, or accepts the highest N tokens (see "Fencing with several holders"
    /// in the guide, `docs/primitives.md`).
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let sem = LockManager::in_memory().new_semaphore("pool", 2, LockOptions::default())?;
    /// let (a, b) = (sem.acquire().await?, sem.acquire().await?);
    /// assert!(b.fencing_token() > a.fencing_token());
    /// # Ok(()) }
    /// ```
    pub fn fencing_token(&self) -> u64 {
        self.guard.fencing_token()
    }

    /// Whether the permit is still held: false once it is lost (its lease
    /// not renewed in time, its key deleted).
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let sem = LockManager::in_memory().new_semaphore("pool", 2, LockOptions::default())?;
    /// assert!(sem.acquire().await?.is_held());
    /// # Ok(()) }
    /// ```
    pub fn is_held(&self) -> bool {
        self.guard.is_held()
    }

    /// Resolves when the permit is lost (or released), as
    /// [`LockGuard::lost`] does.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # async fn call_upstream() {}
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let sem = LockManager::in_memory().new_semaphore("pool", 2, LockOptions::default())?;
    /// let permit = sem.acquire().await?;
    /// tokio::select! {
    ///     _ = permit.lost() => eprintln!("permit lost; stopping"),
    ///     _ = call_upstream() => {}
    /// }
    /// # Ok(()) }
    /// ```
    pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.guard.lost()
    }

    /// Releases the permit: its key is deleted (retrying as
    /// [`LockGuard::unlock`] does). `Expired` if it had been lost.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let sem = LockManager::in_memory().new_semaphore("pool", 1, LockOptions::default())?;
    /// sem.acquire().await?.release().await?;
    /// assert!(sem.try_acquire().await?.is_some());
    /// # Ok(()) }
    /// ```
    pub async fn release(self) -> Result<()> {
        self.guard.unlock().await
    }
}
