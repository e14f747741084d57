//! [`RwLock`]: many readers or one writer, on the lock's own queue.
//!
//! A writer is an exclusive entry, the very kind a [`Lock`](crate::Lock) (and
//! `etcdctl lock`, and Go's `concurrency.Mutex`) puts: a write lock and a
//! lock of one name exclude each other. A reader is a shared entry: it waits
//! only for exclusive entries queued before it, so readers never starve a
//! writer queued before them, and the readers queued behind a writer are
//! admitted together when it releases. A write lock downgrades in place
//! ([`WriteGuard::downgrade`]): its key keeps its place and says it is
//! shared now, so no writer gets in between.

use std::time::Duration;

use super::lock::Lock;
use crate::error::{ErrorCode, LockError, Result};
use crate::hold::{LockGuard, OwnerScope};
use crate::queue::Mode;

/// Many readers or one writer of a name, across the fleet. Made by
/// [`LockManager::new_rw_lock`](crate::LockManager::new_rw_lock).
///
/// Owners are tasks, as for [`Lock`](crate::Lock): a task that holds the
/// write lock may also read (a second guard on its write hold), a task that
/// holds a read lock re-enters it, and a task that holds a read lock and
/// asks for the write lock gets `AlreadyHeld` (it would wait for itself).
///
/// # Example
///
/// ```
/// use distlock::{LockManager, LockOptions};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
/// let manager = LockManager::in_memory();
/// // Three processes, as far as the lock is concerned.
/// let [a, b, c] = [manager.clone(), manager.peer(), manager.peer()]
///     .map(|m| m.new_rw_lock("doc:7", LockOptions::default()).unwrap());
///
/// let r1 = a.read().await?;
/// let r2 = b.read().await?;                      // readers share
/// assert!(c.try_write().await?.is_none());        // a writer waits for them
/// r1.release().await?;
/// r2.release().await?;
///
/// let w = a.write().await?;
/// assert!(c.try_read().await?.is_none());         // a writer excludes readers
/// let r = w.downgrade().await?;                   // atomically: no writer gets in between
/// assert!(c.try_read().await?.is_some());         // readers go ahead again
/// # drop(r); Ok(()) }
/// ```
#[derive(Debug)]
pub struct RwLock {
    read: Lock,
    write: Lock,
}

impl RwLock {
    pub(crate) fn new(read: Lock, write: Lock) -> Self {
        RwLock { read, write }
    }

    /// Its read and write handles: a `#[distributed_lock(read)]` or
    /// `(write)` call takes its side through one of them, as it takes a
    /// lock, in an owner scope of its own (`macro_support`).
    pub(crate) fn into_sides(self) -> (Lock, Lock) {
        (self.read, self.write)
    }

    /// The lock's name.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # fn main() -> distlock::Result<()> {
    /// let rw = LockManager::in_memory().new_rw_lock("doc:7", LockOptions::default())?;
    /// assert_eq!(rw.name(), "doc:7");
    /// # Ok(()) }
    /// ```
    pub fn name(&self) -> &str {
        self.write.name()
    }

    /// Takes the read lock, waiting as long as it takes for the writers
    /// queued before this call.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let rw = LockManager::in_memory().new_rw_lock("doc", LockOptions::default())?;
    /// rw.read().await?.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn read(&self) -> Result<ReadGuard> {
        self.read.lock().await.map(ReadGuard::new)
    }

    /// Takes the write lock, waiting as long as it takes.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let rw = LockManager::in_memory().new_rw_lock("doc", LockOptions::default())?;
    /// rw.write().await?.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn write(&self) -> Result<WriteGuard> {
        self.write.lock().await.map(WriteGuard::new)
    }

    /// The read lock if no writer holds or waits ahead now; `None` otherwise.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let rw = LockManager::in_memory().new_rw_lock("doc", LockOptions::default())?;
    /// assert!(rw.try_read().await?.is_some());
    /// # Ok(()) }
    /// ```
    pub async fn try_read(&self) -> Result<Option<ReadGuard>> {
        Ok(self
            .read
            .attempt(Mode::Try, None)
            .await?
            .map(ReadGuard::new))
    }

    /// The write lock if nobody holds or waits now; `None` otherwise.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let rw = LockManager::in_memory().new_rw_lock("doc", LockOptions::default())?;
    /// assert!(rw.try_write().await?.is_some());
    /// # Ok(()) }
    /// ```
    pub async fn try_write(&self) -> Result<Option<WriteGuard>> {
        Ok(self
            .write
            .attempt(Mode::Try, None)
            .await?
            .map(WriteGuard::new))
    }

    /// The read lock, waiting at most `wait`; then [`ErrorCode::Timeout`].
    ///
    /// ```
    /// # use distlock::{ErrorCode, LockManager, LockOptions};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = LockManager::in_memory();
    /// let w = manager.new_rw_lock("doc", LockOptions::default())?.write().await?;
    /// let other = manager.peer().new_rw_lock("doc", LockOptions::default())?;
    /// let err = other.read_timeout(Duration::from_millis(50)).await.unwrap_err();
    /// assert_eq!(err.code(), ErrorCode::Timeout);
    /// # drop(w); Ok(()) }
    /// ```
    pub async fn read_timeout(&self, wait: Duration) -> Result<ReadGuard> {
        self.read.lock_timeout(wait).await.map(ReadGuard::new)
    }

    /// The write lock, waiting at most `wait`; then [`ErrorCode::Timeout`].
    ///
    /// ```
    /// # use distlock::{ErrorCode, LockManager, LockOptions};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = LockManager::in_memory();
    /// let r = manager.new_rw_lock("doc", LockOptions::default())?.read().await?;
    /// let other = manager.peer().new_rw_lock("doc", LockOptions::default())?;
    /// let err = other.write_timeout(Duration::from_millis(50)).await.unwrap_err();
    /// assert_eq!(err.code(), ErrorCode::Timeout);
    /// # drop(r); Ok(()) }
    /// ```
    pub async fn write_timeout(&self, wait: Duration) -> Result<WriteGuard> {
        self.write.lock_timeout(wait).await.map(WriteGuard::new)
    }
}

/// Proof of holding a read lock (or of a write lock downgraded to one).
/// Release it with [`release`](ReadGuard::release) to see errors; dropping
/// it releases it in the background.
///
/// ```
/// # use distlock::{LockManager, LockOptions};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
/// let rw = LockManager::in_memory().new_rw_lock("doc", LockOptions::default())?;
/// let r = rw.read().await?;
/// assert!(r.is_held());
/// println!("reading under token {}", r.fencing_token());
/// r.release().await?;
/// # Ok(()) }
/// ```
#[must_use = "dropping the guard releases the read lock"]
#[derive(Debug)]
pub struct ReadGuard {
    guard: LockGuard,
}

/// Proof of holding a write lock: no other writer, no reader, and no
/// [`Lock`](crate::Lock) of the name holds. Dropping it releases it in the
/// background.
///
/// ```
/// # use distlock::{LockManager, LockOptions};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
/// let rw = LockManager::in_memory().new_rw_lock("doc", LockOptions::default())?;
/// let w = rw.write().await?;
/// println!("writing under token {}", w.fencing_token());
/// w.release().await?;
/// # Ok(()) }
/// ```
#[must_use = "dropping the guard releases the write lock"]
#[derive(Debug)]
pub struct WriteGuard {
    guard: LockGuard,
}

/// The methods every guard of a name's queue shares, delegated to its
/// [`LockGuard`].
macro_rules! guard_methods {
    ($guard:ident, $what:literal) => {
        impl $guard {
            fn new(guard: LockGuard) -> Self {
                $guard { guard }
            }

            #[doc = concat!("The fencing token of this ", $what, ": its key's create revision,")]
            /// strictly increasing from one holder of the name to the next.
            ///
            /// ```
            /// # use distlock::{LockManager, LockOptions};
            /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
            /// let rw = LockManager::in_memory().new_rw_lock("doc", LockOptions::default())?;
            /// assert!(rw.write().await?.fencing_token() > 0);
            /// # Ok(()) }
            /// ```
            pub fn fencing_token(&self) -> u64 {
                self.guard.fencing_token()
            }

            #[doc = concat!("Whether the ", $what, " is still held: false once it is lost.")]
            ///
            /// ```
            /// # use distlock::{LockManager, LockOptions};
            /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
            /// let rw = LockManager::in_memory().new_rw_lock("doc", LockOptions::default())?;
            /// assert!(rw.read().await?.is_held());
            /// # Ok(()) }
            /// ```
            pub fn is_held(&self) -> bool {
                self.guard.is_held()
            }

            #[doc = concat!("Resolves when the ", $what, " is lost (or released), as")]
            /// [`LockGuard::lost`] does.
            ///
            /// ```
            /// # use distlock::{LockManager, LockOptions};
            /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
            /// let rw = LockManager::in_memory().new_rw_lock("doc", LockOptions::default())?;
            /// let r = rw.read().await?;
            /// let lost = r.lost();
            /// r.release().await?;
            /// lost.await; // resolves once released, too
            /// # Ok(()) }
            /// ```
            pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
                self.guard.lost()
            }

            /// An owner scope for this hold (see [`LockGuard::scope`]).
            ///
            /// ```
            /// # use distlock::{LockManager, LockOptions};
            /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
            /// let rw = LockManager::in_memory().new_rw_lock("doc", LockOptions::default())?;
            /// let w = rw.write().await?;
            /// let token = w.scope().run(async { distlock::current_fencing_token() }).await;
            /// assert_eq!(token, Some(w.fencing_token()));
            /// # Ok(()) }
            /// ```
            pub fn scope(&self) -> OwnerScope {
                self.guard.scope()
            }

            #[doc = concat!("Releases the ", $what, ": its key is deleted (retrying as")]
            /// [`LockGuard::unlock`] does). `Expired` if it had been lost.
            ///
            /// ```
            /// # use distlock::{LockManager, LockOptions};
            /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
            /// let rw = LockManager::in_memory().new_rw_lock("doc", LockOptions::default())?;
            /// rw.write().await?.release().await?;
            /// # Ok(()) }
            /// ```
            pub async fn release(self) -> Result<()> {
                self.guard.unlock().await
            }
        }
    };
}

guard_methods!(ReadGuard, "read lock");
guard_methods!(WriteGuard, "write lock");

impl WriteGuard {
    /// Turns the write lock into a read lock, atomically: the key keeps its
    /// place in the queue (no writer queued behind it gets in between) and
    /// says it is shared from now on, so the readers queued behind it are
    /// admitted. The lease, its renewal and the fencing token stay.
    ///
    /// Bounded like a release: transient backend failures are retried until
    /// the update applies, for at most about one TTL. Fails with `Expired`
    /// if the lock was lost, before or while downgrading (a partition ends
    /// the call when the lease would run out, not when it heals), `Backend`
    /// if the update did not get through within a TTL — on both, this guard
    /// is gone and the write lock is released — and `AlreadyHeld` if this
    /// task holds more than this one guard on the write lock (a re-entered
    /// write hold cannot become a read hold under the other guards).
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = LockManager::in_memory();
    /// let rw = manager.new_rw_lock("config", LockOptions::default())?;
    /// let w = rw.write().await?;
    /// let token = w.fencing_token();
    /// let r = w.downgrade().await?;
    /// assert_eq!(r.fencing_token(), token);
    /// assert!(manager.peer().new_rw_lock("config", LockOptions::default())?.try_read().await?.is_some());
    /// # drop(r); Ok(()) }
    /// ```
    pub async fn downgrade(self) -> Result<ReadGuard> {
        let hold = self.guard.hold_ref();
        if hold.count() > 1 {
            return Err(LockError::new(
                ErrorCode::AlreadyHeld,
                format!(
                    "lock `{}` is held by more than this guard; release the others first",
                    hold.name
                ),
            ));
        }
        hold.downgrade().await?;
        Ok(ReadGuard::new(self.guard))
    }
}
