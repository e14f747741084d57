//! Leader-only routes: [`LeaderOnly`] runs requests only on the server that
//! leads an election, and [`Candidacy`] keeps this server in that election.
//!
//! # How a server knows whether it leads
//!
//! Each server starts one [`Candidacy`] per election at startup, with a value
//! that names it (its address): a background task campaigns, and campaigns
//! again after a loss; a second task follows the election's shared watch
//! ([`Election::observe`](distlock::Election::observe)), so every server
//! knows the current leader's value. The layer reads both locally on every
//! request — no etcd round trip — and decides:
//!
//! | this server | answer | gRPC |
//! |---|---|---|
//! | leads (its leadership [held](distlock::Leadership::is_held) on this process's clock) | the inner service runs, under the leadership | — |
//! | follows | 421, `x-distlock-leader: <leader's value>` ([`NotLeader`](crate::RejectionKind::NotLeader)) | `UNAVAILABLE`, the value in the metadata |
//! | knows no leader | 503 + `Retry-After` ([`NoLeader`](crate::RejectionKind::NoLeader)) | `UNAVAILABLE` + `grpc-retry-pushback-ms` |
//! | its manager is closed | 503 + `Retry-After` ([`Unavailable`](crate::RejectionKind::Unavailable)) | `UNAVAILABLE` |
//!
//! A follower forwards nothing: the inner service is never called, and the
//! client (or a proxy that reads `x-distlock-leader`) sends the request to
//! the leader. The value is the one the leader proclaimed, as this server
//! last observed it; observation lags a change by one watch event, so a
//! client can be sent to a server that has just stopped leading, which then
//! sends it on.
//!
//! # Guarantees
//!
//! - **Never served as leader after the loss deadline.** A request is
//!   admitted only while [`Leadership::is_held`](distlock::Leadership::is_held)
//!   says so, which checks the lease's deadline on this process's clock:
//!   the core declares leadership lost before etcd can let another
//!   candidate lead. A request admitted in time and still running when the
//!   leadership is lost is cancelled at its next await (503
//!   [`Lost`](crate::RejectionKind::Lost), gRPC `ABORTED`), and a streaming
//!   body stops, as behind a [`LockLayer`](crate::LockLayer) (see
//!   [`lock`](crate::lock#when-the-lock-is-lost), including why work that
//!   completes in the poll that sees the loss is still answered). Work that
//!   reaches other systems should carry the
//!   [fencing token](crate::HeldLock::fencing_token): it grows from one
//!   leader to the next.
//! - **Never forwarded on a follower**, and never on a server that knows no
//!   leader, or whose own leadership is lost on its clock while etcd still
//!   lists its key (it answers 503: sending the client to itself would
//!   loop).
//! - **Leadership outlives its requests.** A request holds a share of the
//!   leadership until its response body ends; a [resigning](Candidacy::resign)
//!   leader stops admitting requests at once but deletes its key only after
//!   the last one, so the next leader never runs beside the previous one's
//!   requests (unless the leadership is lost, which cancels them).
//!
//! In the handler, [`HeldLock`](crate::HeldLock) (an axum extractor) is the
//! leadership: [`kind`](crate::HeldLock::kind) is
//! [`HoldKind::Leader`](crate::HoldKind::Leader), the key is the election's
//! name, and `is_held`/`lost` follow the leadership. The handler runs in the
//! leadership's [owner scope](distlock::Leadership::scope):
//! `distlock::current_fencing_token()` is its token.
//!
//! See [`LeaderOnly`] for an example, and [`Candidacy`] for the election side.

mod candidacy;
mod layer;
mod service;
mod tasks;
#[cfg(test)]
mod tests;

pub use candidacy::{Candidacy, Role};
pub use layer::LeaderOnly;
pub use service::LeaderOnlyService;

/// The header (and gRPC metadata key) in which a follower names the leader:
/// the value the leader's [`Candidacy`] campaigns with, as proclaimed.
///
/// ```
/// assert_eq!(distlock_tower::LEADER_HEADER, "x-distlock-leader");
/// ```
pub const LEADER_HEADER: &str = "x-distlock-leader";
