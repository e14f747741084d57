//! Layer 2, leases: a session (one lease, its keeper task, the client-side
//! decision that it is lost), the sessions of a manager, the retry policy and
//! what the backend last said ([`Health`]), and the options they follow.
//!
//! Uses only the storage layer ([`backend`](crate::backend)) and the base
//! modules (`error`, `key`, `metrics`); nothing above it.

mod options;
mod retry;
mod session;
mod sessions;

#[doc(hidden)]
pub use options::check_durations;
pub(crate) use options::DEFAULT_RETRY_INTERVAL;
pub use options::{LockOptions, MAX_DURATION};
pub(crate) use retry::{one_shot, Health, Retry};
pub(crate) use session::Session;
pub(crate) use sessions::{OnLost, Sessions};
