//! Layer 5, the API: [`LockManager`] (connecting, making locks, closing;
//! reading and repairing them in `inspect`), [`Lock`] and how it is
//! acquired (`acquire`), the primitives built on the same acquisition —
//! [`Semaphore`], [`RwLock`], [`MultiLock`] — [`LockInfo`], and
//! [`EtcdConfig`].
//!
//! Uses every layer below: holds, queues, the shared state, leases, storage.

mod acquire;
mod config;
mod info;
mod inspect;
mod lock;
mod manager;
mod multi_lock;
mod rwlock;
mod semaphore;

pub use config::EtcdConfig;
pub use info::{LockInfo, PermitInfo, SemaphoreInfo};
pub use lock::Lock;
pub use manager::LockManager;
pub use multi_lock::{MultiLock, MultiLockGuard, MAX_NAMES};
pub use rwlock::{ReadGuard, RwLock, WriteGuard};
pub use semaphore::{Permit, Semaphore, MAX_PERMITS};
