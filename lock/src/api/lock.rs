//! [`Lock`]: a handle on one named lock, and how it is acquired.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, Instrument};

use super::info::Metadata;
use crate::error::{ErrorCode, LockError, Result};
use crate::hold::{acquire_in_scope, Hold, HoldParts, Holds, LockGuard, TaskOwner};
use crate::lease::{Health, LockOptions, Retry, Session};
use crate::metrics::{Attempt, Labels, Source};
use crate::queue::{Contender, Mode, Outcome, Won};
use crate::shared::{Shared, Slot};

/// A handle on one named lock, made by [`LockManager::new_lock`](crate::LockManager::new_lock).
///
/// The *owner* of a hold is the **task** that locked (DESIGN §7), not the
/// handle: a handle can be shared (an `Arc<Lock>` in an axum `State`) and
/// every task that locks through it is an owner of its own, waiting (FIFO)
/// for the others like any process across the fleet. Within one task,
/// locking the same name through the same manager again — through this
/// handle or another — is reentrant (unless [`LockOptions::reentrant`] is
/// off: then it fails with `AlreadyHeld`), and each acquisition has its own
/// guard; the lock is released with the last one. Branches of one task
/// (`join!`, `select!`) are that one owner; to make them exclude each other,
/// spawn them as tasks, or run them as locked calls (the
/// [macro](crate::distributed_lock)), which take turns. A guard moved to
/// another task still releases the lock there; re-entry stays with the task
/// that locked, so hand a guard to another task only when this task will
/// not lock the name again while that task holds it.
///
/// # Example
///
/// ```
/// use distlock::{LockManager, LockOptions};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
/// let manager = LockManager::in_memory();
/// let lock = Arc::new(manager.new_lock("order:42", LockOptions::default())?);
///
/// let guard = lock.lock().await?;          // waits as long as needed
/// let again = lock.lock().await?;          // reentrant: the same task
/// assert_eq!(lock.hold_count(), 2);
///
/// // Another task is another owner, even through the same handle: busy.
/// let shared = Arc::clone(&lock);
/// let busy = tokio::spawn(async move { shared.try_lock().await.map(|g| g.is_none()) });
/// assert!(busy.await.unwrap()?);
/// let shared = Arc::clone(&lock);
/// let waited = tokio::spawn(async move { shared.lock_timeout(Duration::from_millis(50)).await });
/// assert_eq!(waited.await.unwrap().unwrap_err().code(), distlock::ErrorCode::Timeout);
///
/// again.unlock().await?;
/// guard.unlock().await?;                   // the last guard releases
/// let shared = Arc::clone(&lock);
/// let free = tokio::spawn(async move { shared.try_lock().await.map(|g| g.is_some()) });
/// assert!(free.await.unwrap()?);
/// # Ok(()) }
/// ```
pub struct Lock {
    name: String,
    queue: String,
    opts: LockOptions,
    /// Identifies this handle in lock metadata: host, process and handle.
    owner: String,
    shared: Arc<Shared>,
    /// The manager's registry of holds (where this task's hold is found).
    holds: Arc<Holds>,
    /// The API this handle serves: the metrics' `source` label.
    source: Source,
    /// Each acquisition is an owner scope of its own (a locked call, a
    /// request): its hold is not re-entered by its task outside that scope,
    /// and in a task that holds the name it is a child section.
    scoped: bool,
}

impl Lock {
    pub(crate) fn new(
        shared: Arc<Shared>,
        holds: Arc<Holds>,
        name: String,
        opts: LockOptions,
    ) -> Self {
        Lock {
            queue: shared.keys.queue(&name),
            owner: shared.owner_id(),
            name,
            opts,
            shared,
            holds,
            source: Source::Lock,
            scoped: false,
        }
    }

    /// Makes each acquisition of this handle an owner scope of its own, as
    /// the macro's locked calls and the layer's requests are: its hold is
    /// re-entered only by code running inside that scope (not by its task
    /// outside it), and in a task that holds the name through a plain guard
    /// it is a child section of that hold (so concurrent ones take turns).
    /// Not a public API.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # fn main() -> distlock::Result<()> {
    /// let lock = LockManager::in_memory().new_lock("a", LockOptions::default())?.owned_by_scope();
    /// # let _ = lock; Ok(()) }
    /// ```
    #[doc(hidden)]
    pub fn owned_by_scope(mut self) -> Self {
        self.scoped = true;
        self
    }

    /// Tags this handle's metrics with `source` (the macro and the layer do).
    /// Not a public API.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # fn main() -> distlock::Result<()> {
    /// let lock = LockManager::in_memory().new_lock("a", LockOptions::default())?;
    /// let lock = lock.with_metrics_source(distlock::metrics::Source::Layer);
    /// # let _ = lock; Ok(()) }
    /// ```
    #[doc(hidden)]
    pub fn with_metrics_source(mut self, source: Source) -> Self {
        self.source = source;
        self
    }

    fn labels(&self) -> Labels {
        Labels::new(
            self.source,
            self.shared.metric_names().then_some(&*self.name),
        )
    }

    /// The lock's name.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let lock = LockManager::in_memory().new_lock("a/b", LockOptions::default())?;
    /// assert_eq!(lock.name(), "a/b");
    /// # Ok(()) }
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The options the lock was made with.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let lock = LockManager::in_memory().new_lock("a", LockOptions::default())?;
    /// assert!(lock.options().auto_renew);
    /// # Ok(()) }
    /// ```
    pub fn options(&self) -> &LockOptions {
        &self.opts
    }

    /// The owner id written into the lock's metadata: host, process id and a
    /// per-handle id.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let lock = LockManager::in_memory().new_lock("a", LockOptions::default())?;
    /// assert!(lock.owner().contains(&std::process::id().to_string()));
    /// # Ok(()) }
    /// ```
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// How many guards of the calling task's hold of this name (through
    /// this manager) are alive: 0 when the task does not hold it.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let lock = LockManager::in_memory().new_lock("a", LockOptions::default())?;
    /// let g = lock.lock().await?;
    /// assert_eq!(lock.hold_count(), 1);
    /// g.unlock().await?;
    /// assert_eq!(lock.hold_count(), 0);
    /// # Ok(()) }
    /// ```
    pub fn hold_count(&self) -> usize {
        self.holds
            .owned_by_caller(&self.name)
            .map_or(0, |h| h.count())
    }

    /// Acquires the lock, waiting as long as it takes. Cancel by dropping the
    /// future: the place in the queue is given up at once.
    ///
    /// Fails with `AlreadyHeld` when the calling task holds the name and the
    /// lock is not reentrant,
    /// `Expired` when the wait was cut short by a lost lease or a deleted key,
    /// `Closed` after [`close`](crate::LockManager::close), `Backend` when the
    /// backend keeps failing past the retry policy.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let lock = LockManager::in_memory().new_lock("a", LockOptions::default())?;
    /// let guard = lock.lock().await?;
    /// // ... critical section ...
    /// guard.unlock().await?;
    /// # Ok(()) }
    /// ```
    pub async fn lock(&self) -> Result<LockGuard> {
        self.attempt(Mode::Wait, None)
            .await?
            .ok_or_else(|| LockError::new(ErrorCode::Backend, "acquisition ended without the lock"))
    }

    /// Acquires the lock if it is free now; `None` when another owner holds or
    /// waits for it.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let lock = LockManager::in_memory().new_lock("a", LockOptions::default())?;
    /// match lock.try_lock().await? {
    ///     Some(guard) => guard.unlock().await?,
    ///     None => println!("busy, try later"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn try_lock(&self) -> Result<Option<LockGuard>> {
        self.attempt(Mode::Try, None).await
    }

    /// Acquires the lock, waiting at most `wait`; then fails with
    /// [`ErrorCode::Timeout`] and leaves the queue. A zero `wait` tries once,
    /// like [`try_lock`](Lock::try_lock), and reports a busy lock as `Timeout`.
    ///
    /// ```
    /// # use distlock::{ErrorCode, LockManager, LockOptions};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let lock = LockManager::in_memory().new_lock("a", LockOptions::default())?;
    /// match lock.lock_timeout(Duration::from_secs(10)).await {
    ///     Ok(guard) => guard.unlock().await?,
    ///     Err(e) if e.code() == ErrorCode::Timeout => println!("gave up"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn lock_timeout(&self, wait: Duration) -> Result<LockGuard> {
        if wait.is_zero() {
            return self.try_lock().await?.ok_or_else(|| {
                LockError::new(ErrorCode::Timeout, format!("lock `{}` is busy", self.name))
            });
        }
        self.attempt(Mode::Wait, Some(wait))
            .await?
            .ok_or_else(|| LockError::new(ErrorCode::Backend, "acquisition ended without the lock"))
    }

    /// One acquisition call, bounded by `wait` if given: its span and metrics.
    async fn attempt(&self, mode: Mode, wait: Option<Duration>) -> Result<Option<LockGuard>> {
        let span = tracing::debug_span!(
            "distlock.acquire",
            name = %self.name,
            ?mode,
            source = self.labels().source(),
            token = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let attempt = Attempt::start(self.labels(), mode == Mode::Wait);
        // What the backend said to this acquisition: a wait that runs out
        // while it was failing is an outage (`Backend`), not a busy lock.
        let health = Health::child(&self.shared.health);
        // Boxed: the acquisition's future is large, and nested locked calls
        // (owner scopes, the macro, the layer) poll one inside another.
        let acquire = Box::pin(self.acquire(mode, &health).instrument(span.clone()));
        let result = match wait {
            None => acquire.await,
            Some(wait) => tokio::time::timeout(wait, acquire)
                .await
                .unwrap_or_else(|_| Err(health.verdict(&self.name, wait))),
        };
        attempt.finish(&span, &result);
        result
    }

    async fn acquire(&self, mode: Mode, health: &Arc<Health>) -> Result<Option<LockGuard>> {
        self.shared.ensure_open()?;
        // Inside an owner scope that holds this name through this manager
        // (owner.rs): a child section of its hold.
        let in_scope = acquire_in_scope(
            &self.shared,
            &self.name,
            &self.owner,
            self.opts.reentrant,
            mode,
        );
        if let Some(section) = in_scope.await {
            return section;
        }
        // The calling task holds this name through this manager already.
        if let Some(hold) = self.holds.owned_by_caller(&self.name) {
            if let Some(reentered) = self.reenter(&hold, mode).await {
                return reentered;
            }
            // Its last guard went meanwhile: acquire anew, behind its release.
        }
        tokio::select! {
            won = self.contend(mode, health) => won,
            _ = self.shared.closed.cancelled() => Err(LockError::closed()),
        }
    }

    /// Re-enters `hold`, which the calling task owns: a second guard, or for
    /// a scoped handle a child section of it; `None` when the hold was
    /// released meanwhile.
    async fn reenter(&self, hold: &Arc<Hold>, mode: Mode) -> Option<Result<Option<LockGuard>>> {
        let reentered = if self.scoped {
            let frame = hold.task_frame();
            frame
                .enter_section(&self.owner, self.opts.reentrant, mode)
                .await
        } else if !self.opts.reentrant {
            Err(LockError::new(
                ErrorCode::AlreadyHeld,
                format!("lock `{}` is already held by this task", self.name),
            ))
        } else {
            hold.reenter().map(Some)
        };
        match reentered {
            Err(err) if err.code() == ErrorCode::NotHeld => None,
            // Lost, and its slot freed: acquire anew (the lost guards only
            // report the loss). A lost hold that keeps its slot (its key may
            // still exist) is reported: acquiring would wait for ourselves.
            Err(err) if err.code() == ErrorCode::Expired && !hold.keeps_slot() => None,
            other => Some(other),
        }
    }

    /// Takes the name's local slot, then competes in the backend's queue.
    ///
    /// A try is one attempt, bounded by the backend's request timeout from
    /// when it has the slot (lease grant and backend retries included); a
    /// wait is bounded by its caller.
    async fn contend(&self, mode: Mode, health: &Arc<Health>) -> Result<Option<LockGuard>> {
        let timeout = self.shared.backend.request_timeout();
        let mut retry = Retry::new(&self.opts).reporting(Arc::clone(health));
        let mut deadline = None;
        // A shared session can vanish unnoticed between keep-alives (its lease
        // revoked); then etcd refuses the enqueue and we retry once on a fresh one.
        for attempt in 0..2 {
            let Some((slot, slot_woke)) = self.take_slot(mode).await else {
                return Ok(None);
            };
            if mode == Mode::Try && deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + timeout);
                retry = retry.within(timeout);
            }
            let compete = self.compete(slot, mode, &retry);
            let (outcome, key, session, dedicated) = match deadline {
                None => compete.await?,
                Some(at) => tokio::time::timeout_at(at, compete)
                    .await
                    .unwrap_or_else(|_| {
                        Err(LockError::new(
                            ErrorCode::Backend,
                            format!(
                                "no answer from the backend within {timeout:?} for lock `{}`",
                                self.name
                            ),
                        ))
                    })?,
            };
            let won = match outcome {
                Outcome::Won(won) => won,
                Outcome::Busy => return Ok(None),
                Outcome::LeaseGone => {
                    session.expire("the server no longer knows the lease");
                    if attempt == 0 {
                        continue;
                    }
                    return Err(lease_gone());
                }
            };
            crate::metrics::handoff(&self.labels(), won.woke.or(slot_woke));
            return Ok(Some(self.hold(key, won, session, dedicated, retry)));
        }
        Err(lease_gone())
    }

    /// One round in the backend's queue with the name's `slot`: a session,
    /// then a contender; the contender's key, its session, and whether the
    /// session is the lock's own. A lease of its own that did not win is
    /// revoked at once, so a storm of busy tries leaves no leases behind.
    async fn compete(
        &self,
        slot: Slot,
        mode: Mode,
        retry: &Retry,
    ) -> Result<(Outcome, String, Arc<Session>, bool)> {
        let (session, dedicated) = self.shared.sessions.session_for(&self.opts, retry).await?;
        let value = Metadata::new(&self.owner).encode();
        let contender = Contender::new(
            Arc::clone(&self.shared),
            Arc::clone(&session),
            self.queue.clone(),
            value,
            slot,
            retry.clone(),
        );
        let key = contender.key().to_owned();
        let outcome = contender.acquire(mode).await;
        if dedicated && !matches!(outcome, Ok(Outcome::Won(_))) {
            let unused = Arc::clone(&session);
            self.shared.spawn_background(async move {
                let _ = unused.close().await;
            });
        }
        Ok((outcome?, key, session, dedicated))
    }

    /// The name's local slot, and when it was handed to us if we had to
    /// wait for it (a local hand-off). A try takes it if no other owner of
    /// this process holds or waits for it (a cleanup of ours is waited for).
    async fn take_slot(&self, mode: Mode) -> Option<(Slot, Option<std::time::Instant>)> {
        let local = &self.shared.local;
        match mode {
            Mode::Try => {
                let bound = self.shared.backend.request_timeout();
                let slot = local.try_acquire_after_cleanup(&self.name, bound).await?;
                Some((slot, None))
            }
            Mode::Wait => match local.try_acquire(&self.name) {
                Some(slot) => Some((slot, None)),
                None => {
                    let slot = local.acquire(&self.name).await;
                    Some((slot, Some(std::time::Instant::now())))
                }
            },
        }
    }

    fn hold(
        &self,
        key: String,
        won: Won,
        session: Arc<Session>,
        dedicated: bool,
        retry: Retry,
    ) -> LockGuard {
        debug!(%key, token = won.rev, "acquired");
        let hold = Hold::new(HoldParts {
            name: self.name.clone(),
            key,
            rev: won.rev,
            confirmed: won.confirmed,
            slot: won.slot,
            session,
            dedicated,
            retry,
            shared: Arc::clone(&self.shared),
            holds: Arc::clone(&self.holds),
            metrics: self.labels(),
            owner: (!self.scoped).then(TaskOwner::current),
            unanswered: won.unanswered,
        });
        LockGuard::first(hold)
    }

    /// Whether anyone holds the lock now — a task of this process or
    /// another process — in one read of the lock's queue, without taking a
    /// place in it. The answer can be out of date as soon as it returns: use
    /// it to report (health pages, dashboards), and [`try_lock`](Lock::try_lock)
    /// to act. Fails with `Closed` after [`close`](crate::LockManager::close),
    /// `Backend` when etcd fails.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let lock = LockManager::in_memory().new_lock("report", LockOptions::default())?;
    /// assert!(!lock.is_locked().await?);
    /// let guard = lock.lock().await?;
    /// assert!(lock.is_locked().await?);
    /// guard.unlock().await?;
    /// assert!(!lock.is_locked().await?);
    /// # Ok(()) }
    /// ```
    pub async fn is_locked(&self) -> Result<bool> {
        let queue = super::inspect::read_queue(&self.shared, &self.name).await?;
        Ok(!queue.is_empty())
    }
}

fn lease_gone() -> LockError {
    LockError::new(
        ErrorCode::Expired,
        "the session lease vanished while enqueueing",
    )
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock")
            .field("name", &self.name)
            .field("owner", &self.owner)
            .field("hold_count", &self.hold_count())
            .finish()
    }
}
