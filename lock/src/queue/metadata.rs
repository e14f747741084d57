//! What a contender writes into its key: the owner and when, an id of the
//! acquisition, and for some kinds of entry their settings.

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
    /// How many permits the semaphore has, as this contender counts them
    /// (a permit's entry only): contenders that disagree are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) permits: Option<u32>,
    /// An exclusive entry that is shared now: a write lock downgraded to a
    /// read lock in place (readers behind it need not wait for it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) shared: bool,
}

/// A fresh acquisition id. It only has to tell this process's acquisitions
/// of one key apart: a key names its lease, and a lease belongs to one
/// process. A counter does that without a random draw (a syscall) per lock.
fn next_acquisition() -> String {
    format!("{:x}", unique())
}

/// A number no other call in this process gets: acquisition ids, and the
/// suffix that makes a reader's or a permit's key unique.
pub(crate) fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Metadata {
    pub(crate) fn new(owner: &str) -> Self {
        Metadata {
            owner: owner.to_owned(),
            created_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            acquisition: next_acquisition(),
            permits: None,
            shared: false,
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
