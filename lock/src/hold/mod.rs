//! Layer 4, holds: a held lock's shared state ([`Hold`]) and its guards
//! ([`LockGuard`]), the per-manager registry of holds and its deletion
//! watch ([`Holds`]), and owners — tasks and owner scopes ([`OwnerScope`]).
//!
//! Uses the queue layer (for `Mode`), the shared state, the lease and
//! storage layers and the base modules.

mod guard;
mod lost;
mod owner;
mod owner_key;
mod registry;
mod release;
mod state;

pub use guard::LockGuard;
pub use owner::OwnerScope;
pub(crate) use owner::{acquire_in_scope, current, Frame, TaskOwner};
pub(crate) use registry::Holds;
pub(crate) use state::{Hold, HoldParts};
