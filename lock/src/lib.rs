//! Distributed locks on etcd for Rust services: reentrant, FIFO, fenced,
//! auto-renewed, with a signal when a lock is lost.
//!
//! ```
//! use distlock::{LockManager, LockOptions};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
//! // On etcd: LockManager::connect(EtcdConfig::new(["http://127.0.0.1:2379"]), "/myapp").await?
//! let manager = LockManager::in_memory();
//! let lock = manager.new_lock("order:42", LockOptions::default())?;
//!
//! let guard = lock.lock().await?;
//! println!("only we touch order 42 now (fencing token {})", guard.fencing_token());
//! guard.unlock().await?;
//! # Ok(()) }
//! ```
//!
//! # How it works on etcd
//!
//! Each manager keeps one lease alive per TTL; a lock's contenders each put a
//! key `{namespace}/locks/{name}/{lease}` under it, and the oldest key holds
//! the lock. A waiter watches only the key just ahead of it, so a release
//! wakes exactly one waiter. The holder's key's create revision is its
//! fencing token. The manager decides on its own clock, before etcd can, that
//! a lease whose keep-alives no longer get through is lost, and tells every
//! guard on it ([`LockGuard::lost`]). The layout is etcd's own
//! `concurrency.Mutex`'s, so `etcdctl lock {namespace}/locks/{name}` and Go
//! services contend on the same locks.

// The base: errors, lock names and key layout, metrics; every layer uses them.
mod error;
mod key;
pub mod metrics;

// The layers, bottom up; each uses only the ones before it (README "Layout").
// 1. storage: the narrow interface; etcd, memory, batching, watches, faults.
mod backend;

// 2. leases: the session, its keeper, the loss deadline, the retry policy.
mod lease;

// The state of one manager that every layer above needs: the backend
// handle, the namespace, the local queues, the sessions.
mod shared;

// 3. queues: the contender algorithm on one name; cleanup of our keys.
mod queue;

// 4. holds: guards, the registry of holds and its deletion watch, owners.
mod hold;

// 5. the API: `LockManager`, `Lock`, info/list/force-unlock, `EtcdConfig`.
mod api;

// 6. what `#[distributed_lock]`'s expansion calls.
mod macro_support;

pub use api::{
    Election, EtcdConfig, Leader, LeaderChanges, Leadership, Lock, LockInfo, LockManager,
    MultiLock, MultiLockGuard, Permit, PermitInfo, ReadGuard, RwLock, Semaphore, SemaphoreInfo,
    WriteGuard, MAX_NAMES, MAX_PERMITS, MAX_VALUE_LEN,
};
pub use error::{ErrorCode, LockError, Result};
pub use hold::{LockGuard, OwnerScope};
pub use lease::{LockOptions, MAX_DURATION};
pub use macro_support::{
    current_fencing_token, current_lock, default_manager, set_default_manager,
    with_default_manager, CurrentLock, DEFAULT_WAIT,
};

pub use distlock_macros::distributed_lock;

/// The etcd key layout of locks, for tools that read the keys directly:
/// lock `name` in namespace `ns` queues keys `{ns}/locks/{escaped name}/{lease
/// hex}`; the key with the lowest create revision holds, and that revision is
/// its fencing token.
pub mod layout {
    pub use crate::key::{escape, unescape, Keyspace};
}

/// Fault injection for tests of failure paths (feature `fault-injection`):
/// [`LockManager::with_faults`] makes a manager whose backend calls fail,
/// stall, answer late or apply and lose their answer, as [`testing::Faults`]
/// says. Not for production use.
#[cfg(feature = "fault-injection")]
pub mod testing {
    pub use crate::backend::faulty::{Fault, Faults, Op};
}

/// What `#[distributed_lock]`'s expansion names; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::lease::check_durations;
    pub use crate::macro_support::{
        locked, locked_or_skip, manager, use_default_manager, Key, LockedResult, ManagerRef,
        SkipResult, Spec,
    };
    pub use std::fmt::Display;
    pub use std::time::Duration;
}
