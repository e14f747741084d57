//! Layer 6, what [`#[distributed_lock]`](crate::distributed_lock)'s expansion
//! calls, split by what it does: which manager (`default_manager`), the
//! call's settings (`spec`), the key's rendering (`template`), the names it
//! locks (`names`), taking them as the settings say (`take`), what the call
//! holds while its body runs (`held`), the locked call (`locked`), the
//! scheduled-job call that skips a busy lock (`scheduled`), and the current
//! lock as the body sees it (`current`).
//!
//! Uses the API layer and the holds layer's owner scopes.

mod current;
mod default_manager;
mod held;
mod locked;
mod names;
mod scheduled;
mod spec;
mod take;
mod template;

pub use current::{current_fencing_token, current_lock, CurrentLock};
pub use default_manager::{
    default_manager, manager, set_default_manager, use_default_manager, with_default_manager,
    ManagerRef,
};
pub use locked::{locked, LockedResult};
pub use scheduled::{locked_or_skip, SkipResult};
pub use spec::{Spec, DEFAULT_WAIT};
pub use template::Key;
