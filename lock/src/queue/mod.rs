//! Layer 3, queues: the contender algorithm on one name — enqueue, position,
//! wait for the one ahead, win, withdraw — and who deletes a key of ours,
//! how persistently (`cleanup`).
//!
//! Uses the shared state, the lease and storage layers and the base modules.

mod cleanup;
mod contender;

pub(crate) use cleanup::{log_removal, remove_key, Removal};
pub(crate) use contender::{Contender, Mode, Outcome, Won};
