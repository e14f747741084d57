//! Which manager a locked call uses: the one `manager = ...` names
//! ([`ManagerRef`]), else the default — the scoped one of the running task
//! ([`with_default_manager`]), else the process-wide one
//! ([`set_default_manager`]).

use std::future::Future;
use std::sync::{Arc, RwLock};

use crate::api::LockManager;

static DEFAULT_MANAGER: RwLock<Option<LockManager>> = RwLock::new(None);

tokio::task_local! {
    /// The default manager of the code inside [`with_default_manager`].
    static SCOPED_MANAGER: LockManager;
}

/// Runs `fut` with `manager` as the default manager of
/// [`#[distributed_lock]`](crate::distributed_lock) functions without
/// `manager = ...`: inside `fut`, such calls lock with `manager`, whatever
/// [`set_default_manager`] set. The scope is task-local, so tests running in
/// parallel in one process can each have their own default without
/// overwriting a global; scopes nest (the innermost wins).
///
/// It covers `fut` and what `fut` awaits, not tasks `fut` spawns (a spawned
/// task has its own task-locals): wrap their futures too.
///
/// ```
/// use distlock::{distributed_lock, LockError, LockManager};
///
/// #[distributed_lock(key = "report:{day}")]
/// async fn build_report(day: u32) -> Result<bool, LockError> {
///     // Under the lock: is it held in the scope's manager?
///     let manager = distlock::default_manager().expect("the scope's");
///     Ok(manager.lock_info(&format!("report:{day}")).await?.is_some())
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), LockError> {
/// let manager = LockManager::in_memory();
/// let held = distlock::with_default_manager(manager.clone(), build_report(7)).await?;
/// assert!(held);
/// assert!(manager.lock_info("report:7").await?.is_none()); // released
/// # Ok(()) }
/// ```
pub async fn with_default_manager<F: Future>(manager: LockManager, fut: F) -> F::Output {
    SCOPED_MANAGER.scope(manager, fut).await
}

/// Sets the manager that [`#[distributed_lock]`](crate::distributed_lock)
/// functions without `manager = ...` lock with, and returns the one it
/// replaces. Call it once at startup, before the first locked call (tests
/// that run in parallel use [`with_default_manager`] instead); until
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

/// The manager that [`#[distributed_lock]`](crate::distributed_lock)
/// functions without `manager = ...` lock with, if any: the one of the
/// innermost [`with_default_manager`] scope the caller runs in, else the one
/// set by [`set_default_manager`].
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
    if let Ok(scoped) = SCOPED_MANAGER.try_with(LockManager::clone) {
        return Some(scoped);
    }
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
