//! The lock of the innermost locked call (or request, or scope) around the
//! running code: [`current_lock`] and [`current_fencing_token`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use super::held::any_of;
use crate::hold::{self, Frame};

/// Scope levels, outermost first.
type Levels = Arc<[Arc<Frame>]>;

tokio::task_local! {
    /// The scope levels of the innermost locked call around the running
    /// code: its one name's, or each name's of a `keys = [..]` call, in name
    /// order (the innermost last).
    static CALL: Levels;
}

/// Runs `body`, a locked call's, whose scope levels are `levels`.
pub(super) fn in_call<F: Future>(levels: Levels, body: F) -> impl Future<Output = F::Output> {
    CALL.scope(levels, body)
}

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
///
/// In a `keys = [..]` call it is the multi-lock, every name of it.
#[derive(Clone)]
pub struct CurrentLock {
    /// One level, or each name's of a multi-lock (never empty).
    levels: Levels,
}

impl CurrentLock {
    /// The lock's name: the rendered `key`; in a `keys = [..]` call the
    /// first of its names in name order ([`names`](CurrentLock::names)
    /// lists them all).
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
        self.outermost().name()
    }

    /// Every name held: the rendered `key`, or each of a `keys = [..]`
    /// call's names, in name order (duplicates once).
    ///
    /// ```
    /// # use distlock::{distributed_lock, LockError, LockManager};
    /// #[distributed_lock(keys = ["acct:{to}", "acct:{from}"], manager = LockManager::in_memory())]
    /// async fn transfer(from: u32, to: u32) -> Result<Vec<String>, LockError> {
    ///     let lock = distlock::current_lock().unwrap();
    ///     Ok(lock.names().map(str::to_owned).collect())
    /// }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), LockError> {
    /// assert_eq!(transfer(2, 1).await?, ["acct:1", "acct:2"]);
    /// # Ok(()) }
    /// ```
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.levels.iter().map(|level| level.name())
    }

    fn outermost(&self) -> &Frame {
        &self.levels[0]
    }

    fn innermost(&self) -> &Frame {
        &self.levels[self.levels.len() - 1]
    }

    /// The fencing token of the acquisition (see
    /// [`LockGuard::fencing_token`](crate::LockGuard::fencing_token)): pass it with every write the lock
    /// protects, so that storage can refuse a stale holder's writes. A
    /// `permits = n` call's is its permit's
    /// ([`Permit::fencing_token`](crate::Permit::fencing_token)); the names
    /// of a `keys = [..]` call share one token, their keys being put by one
    /// transaction.
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
        self.innermost().token()
    }

    /// Whether the lock is still held (in a `keys = [..]` call, every name):
    /// false once it was lost, or once the call that took it has returned.
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
        self.levels.iter().all(|level| level.is_held())
    }

    /// Resolves when the lock (in a `keys = [..]` call, any of its names)
    /// is lost, or released. With
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
        any_of(self.levels.iter().map(|level| level.lost()).collect())
    }
}

impl fmt::Debug for CurrentLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CurrentLock")
            .field("names", &self.names().collect::<Vec<_>>())
            .field("fencing_token", &self.fencing_token())
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
    let frame = hold::current()?;
    // The innermost call's levels, if the innermost scope is its own (not
    // one opened inside its body by a guard's `scope()`).
    let call = CALL
        .try_with(|levels| {
            let innermost = levels.last()?;
            Arc::ptr_eq(innermost, &frame).then(|| Arc::clone(levels))
        })
        .ok()
        .flatten();
    let levels = call.unwrap_or_else(|| Arc::new([frame]));
    Some(CurrentLock { levels })
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
    current_lock()
        .filter(CurrentLock::is_held)
        .map(|lock| lock.fencing_token())
}
