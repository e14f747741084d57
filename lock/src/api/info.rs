//! Lock metadata: what a holder writes into its key, and [`LockInfo`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The value of a contender key, written in the same transaction as the key.
/// Keys written by other clients (etcdctl, Go's `concurrency.Mutex`) have an
/// empty value; they decode to the default. Kept short: it is most of the
/// enqueue request (see `EtcdBackend::enqueue`); the lease's TTL is not in
/// it (readers ask etcd), though older versions wrote a `ttl_ms`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Metadata {
    #[serde(default)]
    pub(crate) owner: String,
    #[serde(default)]
    pub(crate) created_ms: u64,
    /// Unique per acquisition: tells a retry of our own enqueue, which finds
    /// the key it created, from a leftover key of an earlier acquisition.
    #[serde(default)]
    pub(crate) acquisition: String,
}

/// A fresh acquisition id. It only has to tell this process's acquisitions
/// of one key apart: a key names its lease, and a lease belongs to one
/// process. A counter does that without a random draw (a syscall) per lock.
fn next_acquisition() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

impl Metadata {
    pub(crate) fn new(owner: &str) -> Self {
        Metadata {
            owner: owner.to_owned(),
            created_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            acquisition: next_acquisition(),
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub(crate) fn decode(value: &[u8]) -> Self {
        serde_json::from_slice(value).unwrap_or_default()
    }

    pub(crate) fn create_time(&self) -> Option<SystemTime> {
        // Read from a key anyone may have written: checked, never a panic.
        let created = UNIX_EPOCH.checked_add(Duration::from_millis(self.created_ms));
        created.filter(|_| self.created_ms > 0)
    }
}

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
    /// How many contenders wait behind the holder in the backend queue (each
    /// process counts once per lock: local waiters queue in process).
    pub waiters: usize,
}
