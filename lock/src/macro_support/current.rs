//! The lock of the innermost locked call (or request, or scope) around the
//! running code: [`current_lock`] and [`current_fencing_token`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::hold::{self, Frame};

/// The lock held by the innermost [`#[distributed_lock]`](crate::distributed_lock)
/// call around the code running now, as [`current_lock`] returns it.
///
/// It does not keep the lock: once the call returns, [`is_held`](CurrentLock::is_held)
/// is false and [`lost`](CurrentLock::lost) resolves at once.
///
/// ```
/// use distlock::{distributed_lock, LockError, LockManager};
///
/// #[distributed_lock(key = "invoice:{id}", manager = manager)]
/// async fn issue(manager: &LockManager, id: u64) -> Result<u64, LockError> {
///     let lock = distlock::current_lock().expect("inside a locked call");
///     assert_eq!(lock.name(), format!("invoice:{id}"));
///     assert!(lock.is_held());
///     Ok(lock.fencing_token())
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), LockError> {
/// let manager = LockManager::in_memory();
/// let token = issue(&manager, 9).await?;
/// assert!(token > 0);
/// assert!(distlock::current_lock().is_none()); // not inside a locked call
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct CurrentLock {
    frame: Arc<Frame>,
}

impl CurrentLock {
    /// The lock's name: the rendered `key`.
    ///
    /// ```
    /// # use distlock::{distributed_lock, LockError, LockManager};
    /// #[distributed_lock(key = "user:{user}", manager = LockManager::in_memory())]
    /// async fn rename(user: &str) -> Result<String, LockError> {
    ///     Ok(distlock::current_lock().unwrap().name().to_owned())
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), LockError> {
    /// assert_eq!(rename("ada").await?, "user:ada");
    /// # Ok(()) }
    /// ```
    pub fn name(&self) -> &str {
        self.frame.name()
    }

    /// The fencing token of the acquisition (see
    /// [`LockGuard::fencing_token`](crate::LockGuard::fencing_token)): pass it with every write the lock
    /// protects, so that storage can refuse a stale holder's writes.
    ///
    /// ```
    /// # use distlock::{distributed_lock, LockError, LockManager};
    /// #[distributed_lock(key = "stock:{sku}", manager = LockManager::in_memory())]
    /// async fn restock(sku: &str) -> Result<u64, LockError> {
    ///     let token = distlock::current_lock().unwrap().fencing_token();
    ///     // storage.write_if_token_at_least(sku, 10, token).await?;
    ///     Ok(token)
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), LockError> {
    /// assert!(restock("A-1").await? > 0);
    /// # Ok(()) }
    /// ```
    pub fn fencing_token(&self) -> u64 {
        self.frame.token()
    }

    /// Whether the lock is still held: false once it was lost, or once the
    /// call that took it has returned.
    ///
    /// ```
    /// # use distlock::{distributed_lock, LockError, LockManager};
    /// #[distributed_lock(key = "k", manager = LockManager::in_memory())]
    /// async fn work() -> Result<distlock::CurrentLock, LockError> {
    ///     let lock = distlock::current_lock().unwrap();
    ///     assert!(lock.is_held());
    ///     Ok(lock)
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), LockError> {
    /// let lock = work().await?;
    /// assert!(!lock.is_held()); // released when `work` returned
    /// # Ok(()) }
    /// ```
    pub fn is_held(&self) -> bool {
        self.frame.is_held()
    }

    /// Resolves when the lock is lost (or released). With
    /// `on_lost = "continue"` the body uses it to stop on its own terms; with
    /// the default `on_lost = "cancel"` the macro already stops the body.
    ///
    /// ```
    /// # use distlock::{distributed_lock, LockError, LockManager};
    /// # async fn copy_next_chunk() -> bool { false }
    /// #[distributed_lock(key = "migration", on_lost = "continue", manager = LockManager::in_memory())]
    /// async fn migrate() -> Result<&'static str, LockError> {
    ///     let lost = distlock::current_lock().unwrap().lost();
    ///     tokio::pin!(lost);
    ///     loop {
    ///         tokio::select! {
    ///             _ = &mut lost => return Ok("paused: lock lost, progress saved"),
    ///             more = copy_next_chunk() => if !more { return Ok("done") },
    ///         }
    ///     }
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), LockError> {
    /// assert_eq!(migrate().await?, "done");
    /// # Ok(()) }
    /// ```
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        self.frame.lost()
    }
}

impl fmt::Debug for CurrentLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurrentLock")
            .field("name", &self.frame.name())
            .field("fencing_token", &self.frame.token())
            .field("held", &self.is_held())
            .finish()
    }
}

/// The lock held by the innermost [`#[distributed_lock]`](crate::distributed_lock)
/// call around the code running now in this task; `None` outside such calls
/// (and in tasks they spawn: the record is per task).
///
/// ```
/// # use distlock::{distributed_lock, LockError, LockManager};
/// #[distributed_lock(key = "order:{id}", manager = LockManager::in_memory())]
/// async fn settle(id: u64) -> Result<(), LockError> {
///     let lock = distlock::current_lock().unwrap();
///     println!("settling under `{}` with token {}", lock.name(), lock.fencing_token());
///     Ok(())
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), LockError> {
/// settle(1).await?;
/// assert!(distlock::current_lock().is_none());
/// # Ok(()) }
/// ```
pub fn current_lock() -> Option<CurrentLock> {
    hold::current().map(|frame| CurrentLock { frame })
}

/// The fencing token of [`current_lock`] while its lock is held: `None`
/// outside locked calls, and once the lock is lost (checked on this
/// thread's clock, as [`CurrentLock::is_held`] does), so the token is never
/// handed out as proof of a lock that is gone.
///
/// ```
/// # use distlock::{distributed_lock, LockError, LockManager};
/// #[distributed_lock(key = "ledger", manager = LockManager::in_memory())]
/// async fn append() -> Result<u64, LockError> {
///     let token = distlock::current_fencing_token().expect("inside a locked call");
///     Ok(token)
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), LockError> {
/// assert!(append().await? > 0);
/// assert_eq!(distlock::current_fencing_token(), None);
/// # Ok(()) }
/// ```
pub fn current_fencing_token() -> Option<u64> {
    hold::current()
        .filter(|frame| frame.is_held())
        .map(|frame| frame.token())
}
