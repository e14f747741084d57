//! Layer 5, the API: [`LockManager`] (connecting, making locks, closing;
//! reading and repairing them in `inspect`), [`Lock`] and how it is
//! acquired, [`LockInfo`] and the metadata in a key's value, and
//! [`EtcdConfig`].
//!
//! Uses every layer below: holds, queues, the shared state, leases, storage.

mod config;
mod info;
mod inspect;
mod lock;
mod manager;

pub use config::EtcdConfig;
pub use info::LockInfo;
pub use lock::Lock;
pub use manager::LockManager;
