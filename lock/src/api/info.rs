//! [`LockInfo`]: a held lock as operators see it.

use std::time::SystemTime;

/// A held lock, as [`LockManager::lock_info`](crate::LockManager::lock_info) and
/// [`list_locks`](crate::LockManager::list_locks) report it.
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
/// let info = manager.lock_info("order:42").await?.expect("held");
/// assert_eq!(info.name, "order:42");
/// assert_eq!(info.owner, lock.owner());
/// assert_eq!(info.fencing_token, guard.fencing_token());
/// assert_eq!(info.waiters, 0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockInfo {
    /// The lock's name.
    pub name: String,
    /// The holder's owner id (`host/pid/handle`), or empty when the holder
    /// wrote no metadata (etcdctl, Go clients).
    pub owner: String,
    /// The backend key of the holder.
    pub key: String,
    /// When the holder acquired the lock (its own clock), if it said.
    pub create_time: Option<SystemTime>,
    /// When the holder's lease runs out unless renewed, if it has one.
    pub expire_time: Option<SystemTime>,
    /// The holder's fencing token.
    pub fencing_token: u64,
    /// How many contenders wait behind the holders in the backend queue
    /// (each process counts once per lock for plain locks: local waiters
    /// queue in process).
    pub waiters: usize,
    /// How many read locks hold it together (the holder above is the
    /// oldest); 0 when it is held exclusively (a lock, a write lock).
    pub readers: usize,
}

/// A semaphore, as [`LockManager::semaphore_info`](crate::LockManager::semaphore_info)
/// and [`list_semaphores`](crate::LockManager::list_semaphores) report it.
///
/// ```
/// use distlock::{LockManager, LockOptions};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
/// let manager = LockManager::in_memory();
/// let sem = manager.new_semaphore("pool", 2, LockOptions::default())?;
/// let permit = sem.acquire().await?;
/// let info = manager.semaphore_info("pool").await?.expect("in use");
/// assert_eq!((info.permits, info.holders.len(), info.waiters), (2, 1, 0));
/// assert_eq!(info.holders[0].fencing_token, permit.fencing_token());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SemaphoreInfo {
    /// The semaphore's name.
    pub name: String,
    /// How many holders it admits, as its contenders count them.
    pub permits: u32,
    /// Its holders, oldest first.
    pub holders: Vec<PermitInfo>,
    /// How many contenders wait behind them.
    pub waiters: usize,
}

/// One holder of a semaphore.
///
/// ```
/// # use distlock::{LockManager, LockOptions};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
/// # let manager = LockManager::in_memory();
/// # let _p = manager.new_semaphore("pool", 2, LockOptions::default())?.acquire().await?;
/// let info = manager.semaphore_info("pool").await?.unwrap();
/// println!("held by {} since {:?}", info.holders[0].owner, info.holders[0].create_time);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PermitInfo {
    /// The holder's owner id (`host/pid/handle`).
    pub owner: String,
    /// The permit's backend key.
    pub key: String,
    /// When it was acquired (the holder's clock).
    pub create_time: Option<SystemTime>,
    /// Its fencing token.
    pub fencing_token: u64,
}
