//! [`Lock`]: a handle on one named lock, and how it is acquired.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tracing::{debug, Instrument};

use crate::error::{ErrorCode, LockError, Result};
use crate::guard::{Hold, HoldParts, LockGuard};
use crate::info::Metadata;
use crate::local::Slot;
use crate::manager::Shared;
use crate::metrics::{Attempt, Labels, Source};
use crate::options::LockOptions;
use crate::queue::{Contender, Mode, Outcome, Won};
use crate::retry::Retry;
use crate::session::Session;

/// A handle on one named lock, made by [`LockManager::new_lock`](crate::LockManager::new_lock).
///
/// The handle is the lock's *owner*: locking it again while it holds is
/// reentrant (unless [`LockOptions::reentrant`] is off), and each acquisition
/// has its own guard. Two handles for the same name exclude each other, in one
/// process as across machines.
///
/// # Example
///
/// ```
/// use distlock::{LockManager, LockOptions};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
/// let manager = LockManager::in_memory();
/// let lock = manager.new_lock("order:42", LockOptions::default())?;
///
/// let guard = lock.lock().await?;          // waits as long as needed
/// let again = lock.lock().await?;          // reentrant: same owner
/// assert_eq!(lock.hold_count(), 2);
///
/// let other = manager.new_lock("order:42", LockOptions::default())?;
/// assert!(other.try_lock().await?.is_none()); // another owner: busy
/// let err = other.lock_timeout(Duration::from_millis(50)).await.unwrap_err();
/// assert_eq!(err.code(), distlock::ErrorCode::Timeout);
///
/// again.unlock().await?;
/// guard.unlock().await?;                   // the last guard releases
/// assert!(other.try_lock().await?.is_some());
/// # Ok(()) }
/// ```
pub struct Lock {
    name: String,
    queue: String,
    opts: LockOptions,
    /// Identifies this handle in lock metadata: host, process and handle.
    owner: String,
    shared: Arc<Shared>,
    /// Serializes acquisitions through this handle.
    gate: tokio::sync::Mutex<()>,
    /// The current hold, if any.
    hold: Mutex<Weak<Hold>>,
    /// The API this handle serves: the metrics' `source` label.
    source: Source,
}

impl Lock {
    pub(crate) fn new(shared: Arc<Shared>, name: String, opts: LockOptions) -> Self {
        Lock {
            queue: shared.keys.queue(&name),
            owner: shared.owner_id(),
            name,
            opts,
            shared,
            gate: tokio::sync::Mutex::new(()),
            hold: Mutex::new(Weak::new()),
            source: Source::Lock,
        }
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

    /// How many guards of this handle are alive (0 when not held).
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
        self.current().map_or(0, |h| h.count())
    }

    fn current(&self) -> Option<Arc<Hold>> {
        self.hold
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .upgrade()
    }

    /// Acquires the lock, waiting as long as it takes. Cancel by dropping the
    /// future: the place in the queue is given up at once.
    ///
    /// Fails with `AlreadyHeld` when this handle holds and is not reentrant,
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
        // Boxed: the acquisition's future is large, and nested locked calls
        // (owner scopes, the macro, the layer) poll one inside another.
        let acquire = Box::pin(self.acquire(mode).instrument(span.clone()));
        let result = match wait {
            None => acquire.await,
            Some(wait) => tokio::time::timeout(wait, acquire)
                .await
                .unwrap_or_else(|_| {
                    Err(LockError::new(
                        ErrorCode::Timeout,
                        format!("lock `{}` not acquired within {wait:?}", self.name),
                    ))
                }),
        };
        attempt.finish(&span, &result);
        result
    }

    async fn acquire(&self, mode: Mode) -> Result<Option<LockGuard>> {
        {
            self.shared.ensure_open()?;
            let _gate = match mode {
                Mode::Wait => self.gate.lock().await,
                Mode::Try => match self.gate.try_lock() {
                    Ok(gate) => gate,
                    Err(_) => return Ok(None), // this handle is busy acquiring
                },
            };
            if let Some(hold) = self.current().filter(|h| h.count() > 0) {
                if !self.opts.reentrant {
                    return Err(LockError::new(
                        ErrorCode::AlreadyHeld,
                        format!("lock `{}` is already held by this handle", self.name),
                    ));
                }
                match hold.reenter() {
                    Ok(guard) => return Ok(Some(guard)),
                    // Its last guard went meanwhile: acquire anew, behind its release.
                    Err(err) if err.code() == ErrorCode::NotHeld => {}
                    Err(err) => return Err(err),
                }
            }
            // --- owner scopes (owner.rs): inside a scope that holds this name
            // through this manager, a child section of its hold. ---
            let in_scope = crate::owner::acquire_in_scope(
                &self.shared,
                &self.name,
                &self.owner,
                self.opts.reentrant,
                mode,
            );
            if let Some(section) = in_scope.await {
                return section;
            }
            // A try is one attempt, bounded by the backend's request timeout
            // (lease grant and backend retries included).
            // A wait is bounded by its caller: no timer for it.
            let bound = match mode {
                Mode::Try => Some(self.shared.backend.request_timeout()),
                Mode::Wait => None,
            };
            let contend = async {
                let Some(bound) = bound else {
                    return self.contend(mode).await;
                };
                tokio::time::timeout(bound, self.contend(mode))
                    .await
                    .unwrap_or_else(|_| {
                        Err(LockError::new(
                            ErrorCode::Backend,
                            format!(
                                "no answer from the backend within {bound:?} for lock `{}`",
                                self.name
                            ),
                        ))
                    })
            };
            tokio::select! {
                won = contend => won,
                _ = self.shared.closed.cancelled() => Err(LockError::closed()),
            }
        }
    }

    /// Takes the name's local slot, then competes in the backend's queue.
    async fn contend(&self, mode: Mode) -> Result<Option<LockGuard>> {
        let mut retry = Retry::new(&self.opts);
        if mode == Mode::Try {
            retry = retry.within(self.shared.backend.request_timeout());
        }
        // A shared session can vanish unnoticed between keep-alives (its lease
        // revoked); then etcd refuses the enqueue and we retry once on a fresh one.
        for attempt in 0..2 {
            let Some((slot, slot_woke)) = self.take_slot(mode).await else {
                return Ok(None);
            };
            let (session, dedicated) = self.shared.session_for(&self.opts, &retry).await?;
            let value = Metadata::new(&self.owner).encode();
            let contender = Contender::new(
                Arc::clone(&self.shared),
                Arc::clone(&session),
                self.queue.clone(),
                value,
                slot,
                retry,
            );
            let key = contender.key().to_owned();
            let won = match contender.acquire(mode).await? {
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

    /// The name's local slot, and when it was handed to us if we had to
    /// wait for it (a local hand-off).
    async fn take_slot(&self, mode: Mode) -> Option<(Slot, Option<std::time::Instant>)> {
        let free = self.shared.local.try_acquire(&self.name);
        match (mode, free) {
            (_, Some(slot)) => Some((slot, None)),
            (Mode::Try, None) => None,
            (Mode::Wait, None) => {
                let slot = self.shared.local.acquire(&self.name).await;
                Some((slot, Some(std::time::Instant::now())))
            }
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
            metrics: self.labels(),
        });
        *self.hold.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(&hold);
        LockGuard::first(hold)
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
