//! Owners and scopes: who counts as "the same holder" of a lock (DESIGN §7);
//! the model is described on [`OwnerScope`].
//!
//! A scope is a chain of [`Frame`]s in a task-local: each level records the
//! hold it owns (manager, name, a weak reference to the hold) and a FIFO
//! mutex that the child sections entered directly at that level take turns
//! on. `Lock::acquire` asks [`acquire_in_scope`] first; when an enclosing
//! level holds the name through the same manager, the acquisition becomes a
//! guard on that hold carrying a [`Section`] instead of going to the backend.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Mutex as FairMutex, OwnedMutexGuard};
use tokio_util::sync::CancellationToken;

use crate::error::{ErrorCode, LockError, Result};
use crate::hold::{Hold, LockGuard};
use crate::queue::Mode;
use crate::shared::Shared;

/// The task that owns a hold made outside any owner scope: re-entry is by
/// task (DESIGN §7), not by handle. Code that runs in no task (the future
/// given to `block_on`, e.g. `#[tokio::main]`'s body) is owned by its thread,
/// which it never leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskOwner {
    Task(tokio::task::Id),
    Thread(std::thread::ThreadId),
}

impl TaskOwner {
    /// The owner of the code running now.
    pub(crate) fn current() -> Self {
        match tokio::task::try_id() {
            Some(id) => TaskOwner::Task(id),
            None => TaskOwner::Thread(std::thread::current().id()),
        }
    }
}

tokio::task_local! {
    /// The innermost owner scope around the code running now, in this task.
    static SCOPE: Arc<Frame>;
}

/// One level of owner scope: a hold (or a child section of one) that the work
/// running inside it owns.
pub(crate) struct Frame {
    parent: Option<Arc<Frame>>,
    /// The manager, by identity (clones of one manager are one manager; peers
    /// are not).
    shared: Weak<Shared>,
    name: String,
    /// The queue of the hold: what locking "the same name" means here (a
    /// lock and a semaphore of one name are different things).
    queue: String,
    token: u64,
    /// Weak, so that a scope (or a `CurrentLock`) kept past its guard cannot
    /// keep the lock held.
    hold: Weak<Hold>,
    /// For a level that is a child section: the section, which may end
    /// before the hold does.
    section: Option<Weak<Section>>,
    /// Cancelled when that section ends (never for a level on a whole hold).
    section_ended: CancellationToken,
    /// Taken by each child section entered directly inside this level.
    children: Arc<FairMutex<()>>,
    /// The live child section of each `Lock` handle at this level, by handle
    /// owner id: locking such a handle again reenters its section.
    sections: Mutex<HashMap<String, Weak<Section>>>,
}

/// A child section: the right to run on an enclosing scope's hold. It ends
/// when the last guard that carries it is gone.
pub(crate) struct Section {
    _turn: OwnedMutexGuard<()>,
    ended: CancellationToken,
}

impl Drop for Section {
    fn drop(&mut self) {
        self.ended.cancel();
    }
}

impl Frame {
    fn of(guard: &LockGuard, parent: Option<Arc<Frame>>) -> Frame {
        let section = guard.section();
        Frame {
            parent,
            section: section.map(Arc::downgrade),
            section_ended: section.map_or_else(CancellationToken::new, |s| s.ended.clone()),
            ..Frame::for_hold(guard.hold_ref())
        }
    }

    /// A level on a whole hold, outside any scope: where locked calls and
    /// requests of the task that owns a plain hold enter their sections.
    pub(crate) fn for_hold(hold: &Arc<Hold>) -> Frame {
        Frame {
            parent: None,
            section: None,
            section_ended: CancellationToken::new(),
            shared: Arc::downgrade(hold.shared()),
            name: hold.name.to_string(),
            queue: hold.queue().to_owned(),
            token: hold.token(),
            hold: Arc::downgrade(hold),
            children: Arc::new(FairMutex::new(())),
            sections: Mutex::new(HashMap::new()),
        }
    }

    /// The nearest level, this one or an outer one, holding a key in
    /// `queue` through the manager `shared`.
    fn find(self: &Arc<Self>, shared: &Arc<Shared>, queue: &str) -> Option<Arc<Frame>> {
        let mut frame = Some(self);
        while let Some(f) = frame {
            if f.queue == queue && std::ptr::eq(f.shared.as_ptr(), Arc::as_ptr(shared)) {
                return Some(Arc::clone(f));
            }
            frame = f.parent.as_ref();
        }
        None
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn token(&self) -> u64 {
        self.token
    }

    /// The hold is held, and so is the section this level is, if any.
    pub(crate) fn is_held(&self) -> bool {
        let section_lives = self.section.as_ref().is_none_or(|s| s.strong_count() > 0);
        section_lives
            && self
                .hold
                .upgrade()
                .is_some_and(|h| h.count() > 0 && h.is_held())
    }

    /// Resolves when the hold is lost or released, or the section this level
    /// is ends (at once if either is gone).
    pub(crate) fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let lost = self.hold.upgrade().map(|h| h.until_lost());
        let ended = self.section_ended.clone();
        async move {
            if let Some(lost) = lost {
                tokio::select! {
                    _ = lost => {}
                    _ = ended.cancelled_owned() => {}
                }
            }
        }
    }

    /// A child section of this level's hold for the handle `handle`; an
    /// `exclusive` one (a lock, a write lock) only of an exclusive hold: in
    /// a read hold it would run beside the other readers.
    pub(crate) async fn enter_section(
        &self,
        handle: &str,
        reentrant: bool,
        exclusive: bool,
        mode: Mode,
    ) -> Result<Option<LockGuard>> {
        let hold = self
            .hold
            .upgrade()
            .filter(|h| h.count() > 0)
            .ok_or_else(|| {
                LockError::new(
                    ErrorCode::NotHeld,
                    format!(
                        "lock `{}` of the enclosing owner scope was released",
                        self.name
                    ),
                )
            })?;
        if exclusive && hold.is_shared() {
            return Err(LockError::new(
                ErrorCode::AlreadyHeld,
                format!(
                    "this owner holds `{}` for reading: an exclusive lock of it would wait for \
                     itself; release the read lock first",
                    self.name
                ),
            ));
        }
        let live = self.sections().get(handle).and_then(Weak::upgrade);
        if let Some(section) = live {
            if !reentrant {
                return Err(LockError::new(
                    ErrorCode::AlreadyHeld,
                    format!("lock `{}` is already held by this handle", self.name),
                ));
            }
            return hold.reenter().map(|g| Some(g.in_section(section)));
        }
        let children = Arc::clone(&self.children);
        let turn = match mode {
            Mode::Try => match children.try_lock_owned() {
                Ok(turn) => turn,
                Err(_) => return Ok(None), // a sibling section runs now
            },
            Mode::Wait => {
                let lost = hold.until_lost();
                tokio::select! {
                    turn = children.lock_owned() => turn,
                    _ = lost => return Err(lost_error(&self.name)),
                }
            }
        };
        let guard = hold.reenter()?; // `Expired` if lost meanwhile
        let section = Arc::new(Section {
            _turn: turn,
            ended: CancellationToken::new(),
        });
        let mut sections = self.sections();
        sections.retain(|_, s| s.strong_count() > 0);
        sections.insert(handle.to_owned(), Arc::downgrade(&section));
        Ok(Some(guard.in_section(section)))
    }

    fn sections(&self) -> std::sync::MutexGuard<'_, HashMap<String, Weak<Section>>> {
        self.sections.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn lost_error(name: &str) -> LockError {
    LockError::new(
        ErrorCode::Expired,
        format!("lock `{name}` of the enclosing owner scope was lost"),
    )
}

/// The innermost scope around the code running now, if any.
pub(crate) fn current() -> Option<Arc<Frame>> {
    SCOPE.try_with(Arc::clone).ok()
}

/// The hook at the top of `Lock::acquire`: when an owner scope around the
/// caller holds a key in `queue` through the manager `shared`, the
/// acquisition is a child section of that hold (`Some`); otherwise `None` and
/// the handle competes for the lock as usual.
pub(crate) async fn acquire_in_scope(
    shared: &Arc<Shared>,
    queue: &str,
    handle: &str,
    reentrant: bool,
    exclusive: bool,
    mode: Mode,
) -> Option<Result<Option<LockGuard>>> {
    let frame = current()?.find(shared, queue)?;
    Some(
        frame
            .enter_section(handle, reentrant, exclusive, mode)
            .await,
    )
}

/// An owner scope: work run inside it, in this task, owns a hold (see
/// DESIGN §7). The [`#[distributed_lock]`](crate::distributed_lock) macro runs
/// every body in one, `distlock_tower::LockLayer` runs each keyed request's
/// handler in one, and [`LockGuard::scope`] makes one for any guard.
/// [`current_lock`](crate::current_lock) reads the innermost.
///
/// - **Who is the same owner:** the code running inside the scope, in this
///   task. A task spawned from it, and another [`LockManager`] (even a peer
///   on the same namespace), are other owners and wait like anyone else.
/// - **Nesting:** locking the scope's name through the same manager inside it
///   (a locked call, a second layer, a [`Lock`] handle that does not hold)
///   does not wait for the backend: it enters a *child section* of the hold,
///   which is a scope level of its own. Chains of nested calls never
///   deadlock, and each keeps its own `wait`, `skip_if_busy` and `on_lost`.
/// - **Concurrency inside an owner:** child sections entered concurrently at
///   one level (`tokio::join!`) take turns on that level's FIFO mutex, each
///   within its own wait: two same-key critical sections never overlap.
/// - **Loss:** a section is a guard on the outer hold, so the outer lock's
///   loss is every section's loss.
/// - **Settings:** a section runs on the outer hold as it is: the nested
///   call's `ttl`, renewal and `hold_at_least` do not apply to it (its
///   `wait`, `skip_if_busy`, `on_lost` and `hold_at_most` do).
/// - **Tasks:** outside any scope the owner is the task (DESIGN §7): a task
///   that holds a name through a plain [`Lock::lock`] re-enters it when it
///   locks the name again through the same manager, through any handle (or
///   gets `AlreadyHeld` with [`reentrant(false)`](crate::LockOptions::reentrant)),
///   and a locked call or a request in that task enters a child section of
///   that hold. A locked call's own hold is re-entered only from inside its
///   scope, not by another branch of its task. [`Lock::hold_count`] counts
///   the calling task's guards of its hold. Work that should run under a
///   guard in another task runs under [`guard.scope()`](LockGuard::scope).
///
/// [`Lock`]: crate::Lock
/// [`Lock::lock`]: crate::Lock::lock
/// [`Lock::hold_count`]: crate::Lock::hold_count
/// [`LockManager`]: crate::LockManager
///
/// ```
/// use distlock::{distributed_lock, LockError, LockManager, LockOptions};
///
/// #[distributed_lock(key = "order:{id}", manager = manager, wait = "1s")]
/// async fn settle(manager: &LockManager, id: u64) -> Result<u64, LockError> {
///     Ok(distlock::current_fencing_token().unwrap())
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), LockError> {
/// let manager = LockManager::in_memory();
/// let guard = manager.new_lock("order:7", LockOptions::default())?.lock().await?;
/// // Without the scope, `settle(7)` would wait for `guard` (and time out).
/// let token = guard.scope().run(settle(&manager, 7)).await?;
/// assert_eq!(token, guard.fencing_token());
/// guard.unlock().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct OwnerScope {
    frame: Arc<Frame>,
}

impl OwnerScope {
    /// Runs `work` inside the scope.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = LockManager::in_memory();
    /// let guard = manager.new_lock("k", LockOptions::default())?.lock().await?;
    /// let name = guard.scope().run(async { distlock::current_lock().unwrap().name().to_owned() }).await;
    /// assert_eq!(name, "k");
    /// # Ok(()) }
    /// ```
    pub fn run<F: Future>(&self, work: F) -> impl Future<Output = F::Output> {
        SCOPE.scope(Arc::clone(&self.frame), work)
    }

    /// Runs `f` inside the scope, synchronously: for `poll`-based code such
    /// as a Tower response future, which enters the scope for each poll of
    /// the inner future.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = LockManager::in_memory();
    /// let guard = manager.new_lock("k", LockOptions::default())?.lock().await?;
    /// let scope = guard.scope();
    /// assert_eq!(scope.enter(|| distlock::current_fencing_token()), Some(guard.fencing_token()));
    /// assert_eq!(distlock::current_fencing_token(), None);
    /// # Ok(()) }
    /// ```
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        SCOPE.sync_scope(Arc::clone(&self.frame), f)
    }
}

impl fmt::Debug for OwnerScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnerScope")
            .field("name", &self.frame.name)
            .field("fencing_token", &self.frame.token)
            .field("held", &self.frame.is_held())
            .finish()
    }
}

impl LockGuard {
    /// An [`OwnerScope`] for this guard's hold, nested in the scope around
    /// the caller (if any): work run inside it owns the hold, so locking the
    /// same name through the same manager there enters a child section of
    /// the hold instead of waiting for it.
    ///
    /// Who counts as the same owner: the code running inside the scope, in
    /// this task (a spawned task is another owner). Nesting: a locked call
    /// inside a section is a new level, so nested calls never deadlock.
    /// Concurrency: sections entered concurrently at one level (`join!`)
    /// take turns (FIFO), each within its own `wait`; they never overlap.
    ///
    /// ```
    /// use distlock::{LockManager, LockOptions};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = LockManager::in_memory();
    /// let guard = manager.new_lock("order:7", LockOptions::default())?.lock().await?;
    /// guard.scope().run(async {
    ///     // Another handle on the same name, inside the scope: a child section.
    ///     let inner = manager.new_lock("order:7", LockOptions::default())?;
    ///     let section = inner.lock_timeout(Duration::from_secs(1)).await?;
    ///     assert_eq!(section.fencing_token(), guard.fencing_token());
    ///     section.unlock().await
    /// }).await?;
    /// guard.unlock().await?;
    /// # Ok(()) }
    /// ```
    pub fn scope(&self) -> OwnerScope {
        OwnerScope {
            frame: Arc::new(Frame::of(self, current())),
        }
    }
}
