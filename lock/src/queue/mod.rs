//! Layer 3, queues: the contender algorithm on one name — enqueue, position,
//! wait for the one ahead, win, withdraw — for every kind of entry
//! (exclusive, shared, permit: `kind`); what a key holds (`metadata`); and
//! who deletes a key of ours, how persistently (`cleanup`).
//!
//! Uses the shared state, the lease and storage layers and the base modules.

mod cleanup;
mod contender;
mod kind;
mod metadata;
mod multi;
mod waits;

pub(crate) use cleanup::{log_removal, remove_keys, Removal};
pub(crate) use contender::{Contender, Mode, Outcome, Won};
pub(crate) use kind::Kind;
pub(crate) use metadata::Metadata;
pub(crate) use multi::enqueue_all;
