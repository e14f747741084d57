//! Which manager a locked call uses: the process-wide default
//! ([`set_default_manager`]), or the one `manager = ...` names
//! ([`ManagerRef`]).

use std::sync::{Arc, RwLock};

use crate::api::LockManager;

static DEFAULT_MANAGER: RwLock<Option<LockManager>> = RwLock::new(None);

/// Sets the manager that [`#[distributed_lock]`](crate::distributed_lock)
/// functions without `manager = ...` lock with, and returns the one it
/// replaces. Call it once at startup, before the first locked call; until
/// then such calls fail with an [`ErrorCode::InvalidOptions`](crate::ErrorCode::InvalidOptions) error that
/// says so.
///
/// ```
/// use distlock::{distributed_lock, LockError, LockManager};
///
/// #[distributed_lock(key = "report:{day}")]
/// async fn build_report(day: u32) -> Result<String, LockError> {
///     Ok(format!("report for day {day}"))
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), LockError> {
/// // On etcd: LockManager::connect(EtcdConfig::new([...]), "/myapp").await?
/// distlock::set_default_manager(LockManager::in_memory());
/// assert_eq!(build_report(7).await?, "report for day 7");
/// # Ok(()) }
/// ```
pub fn set_default_manager(manager: LockManager) -> Option<LockManager> {
    DEFAULT_MANAGER
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .replace(manager)
}

/// The manager set by [`set_default_manager`], if any.
///
/// ```
/// use distlock::LockManager;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// distlock::set_default_manager(LockManager::in_memory());
/// assert_eq!(distlock::default_manager().unwrap().namespace(), "/memory");
/// # }
/// ```
pub fn default_manager() -> Option<LockManager> {
    DEFAULT_MANAGER
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// What `manager = ...` may name: a [`LockManager`], or a reference, `Box` or
/// `Arc` of one.
#[diagnostic::on_unimplemented(
    message = "`manager = ...` of #[distributed_lock] must be a `distlock::LockManager` (or a reference, `Box` or `Arc` of one), not `{Self}`",
    label = "not a `distlock::LockManager`"
)]
pub trait ManagerRef {
    /// The manager.
    fn lock_manager(&self) -> &LockManager;
}

impl ManagerRef for LockManager {
    fn lock_manager(&self) -> &LockManager {
        self
    }
}

impl<T: ManagerRef + ?Sized> ManagerRef for &T {
    fn lock_manager(&self) -> &LockManager {
        (**self).lock_manager()
    }
}

impl<T: ManagerRef + ?Sized> ManagerRef for &mut T {
    fn lock_manager(&self) -> &LockManager {
        (**self).lock_manager()
    }
}

impl<T: ManagerRef + ?Sized> ManagerRef for Box<T> {
    fn lock_manager(&self) -> &LockManager {
        (**self).lock_manager()
    }
}

impl<T: ManagerRef + ?Sized> ManagerRef for Arc<T> {
    fn lock_manager(&self) -> &LockManager {
        (**self).lock_manager()
    }
}

/// The manager named by `manager = ...`.
pub fn manager<M: ManagerRef + ?Sized>(manager: &M) -> Option<LockManager> {
    Some(manager.lock_manager().clone())
}

/// No `manager = ...`: the default manager, looked up at call time.
pub fn use_default_manager() -> Option<LockManager> {
    None
}
