//! Runtime support of [`#[distributed_lock]`](crate::distributed_lock): the
//! process-wide default manager, the locks the current task holds through the
//! macro (for nested calls and [`current_lock`]), and the locked call itself.

use std::fmt::{self, Display, Write as _};
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::{Arc, RwLock};
use std::task::Poll;
use std::time::Duration;

use tokio::time::{timeout_at, Instant};
use tracing::{debug, warn, Instrument};

use crate::error::{ErrorCode, LockError};
use crate::guard::LockGuard;
use crate::lock::Lock;
use crate::manager::LockManager;
use crate::options::{LockOptions, DEFAULT_RETRY_INTERVAL};
use crate::owner::{self, Frame};

static DEFAULT_MANAGER: RwLock<Option<LockManager>> = RwLock::new(None);

/// Sets the manager that [`#[distributed_lock]`](crate::distributed_lock)
/// functions without `manager = ...` lock with, and returns the one it
/// replaces. Call it once at startup, before the first locked call; until
/// then such calls fail with an [`ErrorCode::InvalidOptions`] error that
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
    /// [`LockGuard::fencing_token`]): pass it with every write the lock
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
    owner::current().map(|frame| CurrentLock { frame })
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
    owner::current()
        .filter(|frame| frame.is_held())
        .map(|frame| frame.token())
}

// ---------------------------------------------------------------------------
// What the generated code calls (re-exported through `distlock::__private`).

/// How long a [`#[distributed_lock]`](crate::distributed_lock) call waits
/// for a busy lock unless told otherwise (`wait = "..."`), and what
/// `distlock_tower::LockLayer` waits by default: 10 seconds, then
/// [`ErrorCode::Timeout`]. Waiting without limit must be asked for
/// (`wait = "forever"`, or [`Lock::lock`](crate::Lock::lock)).
///
/// ```
/// assert_eq!(distlock::DEFAULT_WAIT, std::time::Duration::from_secs(10));
/// ```
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// What to do when the lock is lost while the body runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnLost {
    Cancel,
    Continue,
}

/// A locked function's settings, built by the generated code from the
/// attribute's (already checked) arguments.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    function: &'static str,
    ttl: Duration,
    auto_renew: bool,
    renew_interval: Duration,
    /// `None`: without limit.
    wait: Option<Duration>,
    retry_interval: Option<Duration>,
    max_retries: Option<u32>,
    on_lost: OnLost,
    skip_if_busy: bool,
    hold_at_least: Option<Duration>,
    hold_at_most: Option<Duration>,
}

impl Spec {
    /// Settings of `function` with lease `ttl`, renewed every `ttl / 3`,
    /// waiting at most [`DEFAULT_WAIT`], cancelled when lost.
    pub const fn new(function: &'static str, ttl: Duration) -> Self {
        Spec {
            function,
            ttl,
            auto_renew: true,
            renew_interval: Duration::from_nanos((ttl.as_nanos() / 3) as u64),
            wait: Some(DEFAULT_WAIT),
            retry_interval: None,
            max_retries: None,
            on_lost: OnLost::Cancel,
            skip_if_busy: false,
            hold_at_least: None,
            hold_at_most: None,
        }
    }

    /// Renews the lease every `every`.
    pub const fn renew_every(mut self, every: Duration) -> Self {
        self.auto_renew = true;
        self.renew_interval = every;
        self
    }

    /// No background renewal: the lock expires `ttl` after it was taken.
    pub const fn no_auto_renew(mut self) -> Self {
        self.auto_renew = false;
        self
    }

    /// Waits at most `wait` for the lock; zero tries once.
    pub const fn wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// Waits for the lock without limit.
    pub const fn wait_forever(mut self) -> Self {
        self.wait = None;
        self
    }

    /// Tries once; a busy lock skips the body.
    pub const fn skip_if_busy(mut self) -> Self {
        self.skip_if_busy = true;
        self
    }

    /// Keeps the lock at least `at_least` after the call started.
    pub const fn hold_at_least(mut self, at_least: Duration) -> Self {
        self.hold_at_least = Some(at_least);
        self
    }

    /// Cancels the body `at_most` after the call started.
    pub const fn hold_at_most(mut self, at_most: Duration) -> Self {
        self.hold_at_most = Some(at_most);
        self
    }

    /// The pause between retries of transient backend failures.
    pub const fn retry_interval(mut self, pause: Duration) -> Self {
        self.retry_interval = Some(pause);
        self
    }

    /// How many retries a transient backend failure gets (0 = unlimited).
    pub const fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = Some(retries);
        self
    }

    /// Lets the body run on when the lock is lost.
    pub const fn continue_when_lost(mut self) -> Self {
        self.on_lost = OnLost::Continue;
        self
    }

    /// The same settings, checked against the rules that
    /// [`LockOptions::validate`] applies at run time
    /// ([`check_durations`](crate::options::check_durations)). The macro
    /// evaluates this in a `const`, so settings the runtime would refuse
    /// are a compile error.
    pub const fn checked(self) -> Self {
        let retry = match self.retry_interval {
            Some(pause) => pause,
            None => DEFAULT_RETRY_INTERVAL,
        };
        if let Err(rule) =
            crate::options::check_durations(self.ttl, self.auto_renew, self.renew_interval, retry)
        {
            panic!("{}", rule);
        }
        if over_a_year(self.wait)
            || over_a_year(self.hold_at_least)
            || over_a_year(self.hold_at_most)
        {
            panic!("wait, hold_at_least and hold_at_most must be at most a year (or `wait = \"forever\"`)");
        }
        self
    }

    fn options(&self) -> LockOptions {
        let mut opts = LockOptions::default()
            .ttl(self.ttl)
            .auto_renew(self.auto_renew)
            .renew_interval(self.renew_interval);
        if let Some(pause) = self.retry_interval {
            opts = opts.retry_interval(pause);
        }
        if let Some(retries) = self.max_retries {
            opts = opts.max_retries(retries);
        }
        opts
    }
}

/// Whether an optional setting is longer than [`MAX_DURATION`](crate::MAX_DURATION).
const fn over_a_year(setting: Option<Duration>) -> bool {
    match setting {
        Some(d) => d.as_nanos() > crate::options::MAX_DURATION.as_nanos(),
        None => false,
    }
}

/// Builds a lock name from a key template's pieces.
#[derive(Debug, Default)]
pub struct Key(String);

impl Key {
    /// An empty key.
    pub fn new() -> Self {
        Key(String::new())
    }

    /// Appends literal text.
    pub fn text(mut self, text: &str) -> Self {
        self.0.push_str(text);
        self
    }

    /// Appends a placeholder's value, rendered with `Display`.
    pub fn value<T: Display + ?Sized>(mut self, value: &T) -> Self {
        let _ = write!(self.0, "{value}");
        self
    }

    /// The lock name.
    pub fn finish(self) -> String {
        self.0
    }
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

/// The return type of a locked function: `Result<T, E>` whose `E` can hold a
/// [`LockError`].
#[diagnostic::on_unimplemented(
    message = "a #[distributed_lock] function must return `Result<T, E>` with `E: From<distlock::LockError>`; `{Self}` is not such a type"
)]
pub trait LockedResult {
    /// The error result for a lock that could not be taken or was lost.
    fn from_lock_error(err: LockError) -> Self;
}

impl<T, E: From<LockError>> LockedResult for Result<T, E> {
    fn from_lock_error(err: LockError) -> Self {
        Err(E::from(err))
    }
}

/// The return type of a `skip_if_busy` function: one with a value that
/// means "skipped, nothing to report".
#[diagnostic::on_unimplemented(
    message = "a #[distributed_lock(skip_if_busy)] function must return `()`, `Option<T>`, `Result<(), E>` or `Result<Option<T>, E>` with `E: From<distlock::LockError>`, so that a skipped call has a value; `{Self}` is none of them"
)]
pub trait SkipResult {
    /// The result of a call skipped because the lock was busy.
    fn skipped() -> Self;
    /// The result for a lock that could not be taken or was lost; `()` and
    /// `Option` log it.
    fn from_lock_error(err: LockError) -> Self;
}

impl SkipResult for () {
    fn skipped() -> Self {}
    fn from_lock_error(err: LockError) -> Self {
        warn!(%err, code = ?err.code(), "locked call failed; its `()` result cannot say so");
    }
}

impl<T> SkipResult for Option<T> {
    fn skipped() -> Self {
        None
    }
    fn from_lock_error(err: LockError) -> Self {
        warn!(%err, code = ?err.code(), "locked call failed; returning `None`");
        None
    }
}

impl<E: From<LockError>> SkipResult for Result<(), E> {
    fn skipped() -> Self {
        Ok(())
    }
    fn from_lock_error(err: LockError) -> Self {
        Err(E::from(err))
    }
}

impl<T, E: From<LockError>> SkipResult for Result<Option<T>, E> {
    fn skipped() -> Self {
        Ok(None)
    }
    fn from_lock_error(err: LockError) -> Self {
        Err(E::from(err))
    }
}

/// How a call reports what is not the body's own result.
struct Outcomes<R> {
    error: fn(LockError) -> R,
    skipped: Option<fn() -> R>,
}

/// Runs `body` holding the lock `key` of `manager` (or of the default
/// manager): the expansion of every `#[distributed_lock]` function.
pub async fn locked<R, F>(spec: Spec, manager: Option<LockManager>, key: String, body: F) -> R
where
    R: LockedResult,
    F: Future<Output = R>,
{
    let outcomes = Outcomes {
        error: R::from_lock_error,
        skipped: None,
    };
    let span = tracing::debug_span!("distlock.locked", function = spec.function, key = %key);
    run(spec, manager, key, body, outcomes)
        .instrument(span)
        .await
}

/// [`locked`] for `skip_if_busy` functions: a busy lock returns
/// [`SkipResult::skipped`] at once.
pub async fn locked_or_skip<R, F>(
    spec: Spec,
    manager: Option<LockManager>,
    key: String,
    body: F,
) -> R
where
    R: SkipResult,
    F: Future<Output = R>,
{
    let outcomes = Outcomes {
        error: R::from_lock_error,
        skipped: Some(R::skipped),
    };
    let span = tracing::debug_span!("distlock.locked", function = spec.function, key = %key);
    run(spec.skip_if_busy(), manager, key, body, outcomes)
        .instrument(span)
        .await
}

/// How the body ended.
enum Ended<R> {
    Finished(R),
    Lost,
    TooLong(Duration),
}

async fn run<R, F>(
    spec: Spec,
    manager: Option<LockManager>,
    key: String,
    body: F,
    outcomes: Outcomes<R>,
) -> R
where
    F: Future<Output = R>,
{
    let started = Instant::now();
    let Some(manager) = manager.or_else(default_manager) else {
        return (outcomes.error)(LockError::new(
            ErrorCode::InvalidOptions,
            format!(
                "no lock manager for #[distributed_lock] function `{}`: call \
                 `distlock::set_default_manager(...)` at startup, or pass `manager = ...`",
                spec.function
            ),
        ));
    };

    // Inside an owner scope that holds the key (an outer locked call, a
    // request under `LockLayer`), this is a child section of that hold: see
    // `owner.rs`.
    let lock = match manager.new_lock(key.clone(), spec.options()) {
        Ok(lock) => lock
            .with_metrics_source(crate::metrics::Source::Macro)
            .owned_by_scope(),
        Err(err) => return (outcomes.error)(err),
    };
    let guard = match acquire(&lock, &spec).await {
        Ok(Some(guard)) => guard,
        Ok(None) => match outcomes.skipped {
            Some(skipped) => {
                debug!("lock busy; skipped the call (skip_if_busy)");
                return skipped();
            }
            None => {
                return (outcomes.error)(LockError::new(
                    ErrorCode::Timeout,
                    format!("lock `{key}` is busy"),
                ))
            }
        },
        Err(err) => return (outcomes.error)(err),
    };
    if guard.is_section() {
        debug!("runs as a child section of an enclosing owner's hold");
    }
    let scope = guard.scope();
    let body = scope.run(body);
    let ended = match spec.hold_at_most {
        None => match watch(body, guard.lost(), spec.on_lost).await {
            Some(result) => Ended::Finished(result),
            None => Ended::Lost,
        },
        Some(limit) => {
            let deadline = started + limit;
            match watch(timeout_at(deadline, body), guard.lost(), spec.on_lost).await {
                Some(Ok(result)) => Ended::Finished(result),
                Some(Err(_)) => Ended::TooLong(limit),
                None => Ended::Lost,
            }
        }
    };
    release(guard, spec.hold_at_least.map(|d| started + d)).await;
    match ended {
        Ended::Finished(result) => result,
        Ended::Lost => {
            warn!(function = spec.function, key = %key, "lock lost while the function ran; cancelled it");
            (outcomes.error)(lost_error(&spec, &key))
        }
        Ended::TooLong(limit) => {
            warn!(function = spec.function, key = %key, ?limit, "ran past hold_at_most; cancelled it");
            (outcomes.error)(LockError::new(
                ErrorCode::Timeout,
                format!(
                    "`{}` ran past hold_at_most ({limit:?}) under lock `{key}`; it was \
                     cancelled and the lock released",
                    spec.function
                ),
            ))
        }
    }
}

/// Takes the lock as `spec` says; `None` when a zero-wait try found it busy.
async fn acquire(lock: &Lock, spec: &Spec) -> Result<Option<LockGuard>, LockError> {
    if spec.skip_if_busy {
        return lock.try_lock().await;
    }
    match spec.wait {
        None => lock.lock().await.map(Some),
        // A zero wait tries once.
        Some(wait) => lock.lock_timeout(wait).await.map(Some),
    }
}

/// Polls `body` until it finishes; `None` when `lost` resolved first and the
/// policy is to cancel (the body is then dropped at the await it was at). A
/// body that finishes in the poll in which the loss is noticed returns its
/// result: its work is done (the loss is logged).
async fn watch<R>(
    body: impl Future<Output = R>,
    lost: impl Future<Output = ()>,
    on_lost: OnLost,
) -> Option<R> {
    let mut body = pin!(body);
    let mut lost = pin!(lost);
    let mut lost_seen = false;
    poll_fn(|cx| {
        if let Poll::Ready(result) = body.as_mut().poll(cx) {
            if !lost_seen && lost.as_mut().poll(cx).is_ready() {
                warn!("lock lost as the function completed; returning its result");
            }
            return Poll::Ready(Some(result));
        }
        if !lost_seen && lost.as_mut().poll(cx).is_ready() {
            if on_lost == OnLost::Cancel {
                return Poll::Ready(None);
            }
            warn!("lock lost while the function runs; it continues (on_lost = \"continue\")");
            lost_seen = true;
        }
        Poll::Pending
    })
    .await
}

/// Unlocks, waiting for the release so that the lock is free when the
/// function returns; or, before `hold_until`, keeps it until then and
/// releases it in the background. The body's result stands whatever the
/// release says.
async fn release(guard: LockGuard, hold_until: Option<Instant>) {
    // A child section ends with its guard; the enclosing owner holds on.
    let keep = hold_until.filter(|until| *until > Instant::now() && !guard.is_section());
    if let (Some(until), Ok(runtime)) = (keep, tokio::runtime::Handle::try_current()) {
        if guard.is_held() {
            debug!("keeping the lock until hold_at_least has passed");
            let lost = guard.lost();
            runtime.spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = lost => {}
                }
                unlock(guard).await;
            });
            return;
        }
    }
    unlock(guard).await;
}

async fn unlock(guard: LockGuard) {
    if let Err(err) = guard.unlock().await {
        match err.code() {
            ErrorCode::Expired => debug!(%err, "released a lost lock"),
            _ => warn!(%err, "release failed; the lock goes with its lease"),
        }
    }
}

fn lost_error(spec: &Spec, key: &str) -> LockError {
    LockError::new(
        ErrorCode::Expired,
        format!(
            "lock `{key}` was lost while `{}` ran; the function was cancelled",
            spec.function
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_renders_text_and_values() {
        let key = Key::new()
            .text("order:")
            .value(&42)
            .text("/")
            .value("x")
            .finish();
        assert_eq!(key, "order:42/x");
    }

    #[test]
    fn spec_builds_valid_options() {
        let spec = Spec::new("f", Duration::from_secs(5))
            .retry_interval(Duration::from_millis(20))
            .max_retries(3);
        let opts = spec.options();
        assert_eq!(opts.ttl, Duration::from_secs(5));
        assert!(opts.renew_interval < opts.ttl);
        assert_eq!(opts.retry_interval, Duration::from_millis(20));
        assert_eq!(opts.max_retries, 3);
        assert!(opts.validate().is_ok());
        assert!(
            !Spec::new("f", Duration::from_secs(1))
                .no_auto_renew()
                .options()
                .auto_renew
        );
    }

    #[tokio::test]
    async fn watch_cancels_or_continues() {
        let never = std::future::pending::<()>;
        let ready = || std::future::ready(());
        assert_eq!(watch(async { 1 }, never(), OnLost::Cancel).await, Some(1));
        // Lost in the poll in which the body completes: the result stands.
        assert_eq!(watch(async { 1 }, ready(), OnLost::Cancel).await, Some(1));
        // Lost while the body waits: cancelled at its await.
        let pending = std::future::pending::<u32>;
        assert_eq!(watch(pending(), ready(), OnLost::Cancel).await, None);
        assert_eq!(watch(async { 1 }, ready(), OnLost::Continue).await, Some(1));
    }
}
