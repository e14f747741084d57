//! The `#[distributed_lock]` attribute macro of the `distlock` crate; use it
//! through `distlock::distributed_lock`, whose generated code it names.
//!
//! The crate is laid out like `tracing-attributes`: `attr` parses and checks
//! the arguments (collecting every error, each spanned), `template` parses
//! the key template, `expand` generates the function.

// Modules bottom up; each uses only the ones before it.
mod attr; // the attribute's arguments, checked
mod diagnostics; // compile errors: collected, with "did you mean" hints
mod expand; // the generated function
mod shape; // how the function is asynchronous; its return type
mod template; // the key template and its placeholders
mod values; // argument values: strings, durations, booleans, numbers

use proc_macro::TokenStream;

/// Runs an `async fn` under a distributed lock: one call at a time per key,
/// across every process whose [`LockManager`] shares the etcd namespace —
/// or, as its arguments say, at most N at a time (`permits = N`), readers
/// together and writers alone (`read`, `write`), or under several locks
/// taken at once (`keys = [..]`); see [Kinds](#kinds).
///
/// ```
/// use distlock::{distributed_lock, LockError, LockManager};
///
/// #[derive(Debug)]
/// enum AppError {
///     Lock(LockError),
/// }
///
/// impl From<LockError> for AppError {
///     fn from(err: LockError) -> Self {
///         AppError::Lock(err)
///     }
/// }
///
/// #[distributed_lock(key = "order:{order_id}", ttl = "30s")]
/// async fn settle(order_id: u64) -> Result<String, AppError> {
///     // Only one caller in the fleet settles this order at a time.
///     Ok(format!("settled {order_id}"))
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), AppError> {
/// // On etcd: LockManager::connect(EtcdConfig::new([...]), "/myapp").await?
/// distlock::set_default_manager(LockManager::in_memory());
/// assert_eq!(settle(42).await?, "settled 42");
/// # Ok(()) }
/// ```
///
/// The call renders the key, takes the lock (waiting as `wait` says), runs
/// the body, and unlocks before it returns — also when the body fails. If the
/// caller drops the call's future, the lock is released in the background.
///
/// # Arguments
///
/// | argument | default | meaning |
/// |---|---|---|
/// | `key = "order:{order_id}"` | required (or `keys`) | The lock's name: text with `{...}` placeholders, each a Rust expression over the arguments (and `self`): `{order_id}`, `{req.get_ref().id}`, `{ids[0]}`, `{name.to_lowercase()}`, rendered with `Display`; a name that is neither an argument nor bound inside the placeholder is a compile error. `{{` and `}}` are literal braces. The rendered key is the lock name as is, so [`LockManager::new_lock`] with the same name contends with the function. |
/// | `permits = 3` | off: the key's lock | With `key`: the body holds one of that many permits of the semaphore named by the key ([`LockManager::new_semaphore`]), so at most that many calls run at once across the fleet. A literal from 1 to [`MAX_PERMITS`], or a `u32` expression evaluated at each call, before the body, that may use the arguments and `self` (a count out of range then fails the call with [`ErrorCode::InvalidOptions`]). Every holder of a semaphore must give it the same count. Not with `read`, `write` or `keys`. |
/// | `read` / `write` | off: the key's lock | With `key`: the body holds the read or the write side of the read-write lock named by the key ([`LockManager::new_rw_lock`]): read calls run together, a write call alone. The key's queue is its lock's: a write call and a lock call on one key exclude each other. One of the two; not with `permits` or `keys`. |
/// | `keys = ["acct:{from}", "acct:{to}"]` | — | Instead of `key`: 1 to [`MAX_NAMES`] names, each a template as `key` is, all locked at once ([`LockManager::new_multi_lock`]): the body holds every name's lock; calls naming the same accounts in any order never deadlock. A name rendered twice is locked once. Not with `permits`, `read` or `write`. |
/// | `ttl = "30s"` | `"30s"` | The lease TTL: how long the lock outlives a crashed or cut-off holder. Whole seconds, at least `"1s"`. |
/// | `wait = "2s"` | `"10s"` ([`DEFAULT_WAIT`], as `LockLayer`) | How long to wait for a busy lock before failing with [`ErrorCode::Timeout`]; `"0s"` tries once; `"forever"` waits without limit (ask for it: an outage then shows as a hang). |
/// | `manager = <expr>` | the default manager | The [`LockManager`] to lock with: an expression evaluated at each call, before the body, that may use the arguments and `self` (`self.locks`, `state.locks`, `&*MANAGER`); a `LockManager` or a reference, `Box` or `Arc` of one. Without it, the manager set by [`set_default_manager`]; if none is set, the call fails with an [`ErrorCode::InvalidOptions`] error saying so (no panic). |
/// | `auto_renew = false` | `true` | Renew the lease in the background while the body runs. Without renewal the lock expires `ttl` after it was taken. |
/// | `renew_interval = "5s"` | `ttl / 3` | How often to renew; shorter than `ttl`. |
/// | `retry_interval = "100ms"` | `"100ms"` | Pause between retries of transient backend failures (no leader, lost connection). |
/// | `max_retries = 5` | `0` (without limit) | How many times a transient backend failure is retried. |
/// | `on_lost = "continue"` | `"cancel"` | When the lock is lost while the body runs (its lease could not be renewed in time, or it was force-unlocked): `"cancel"` drops the body at the await it is suspended at and returns [`ErrorCode::Expired`]; `"continue"` lets it run on and return its own result, checking [`current_lock`] if it cares. A body that completes in the poll in which the loss is noticed returns its own result (the loss is logged). |
/// | `skip_if_busy` | off | For scheduled jobs: try once; when the lock is taken, return at once without running the body and without an error. The function returns `()`, `Option<T>` (`None` when skipped), `Result<(), E>` or `Result<Option<T>, E>` (`Ok(None)`); anything else is a compile error. Lock errors come back as `Err` (logged for `()` and `Option`). Not with `wait`. |
/// | `hold_at_least = "30s"` | off | Keep the lock at least this long after the call started, even if the body finished sooner (then released in the background), so a replica whose schedule fires a little late skips instead of running the same period again. Closing the manager still releases at once. |
/// | `hold_at_most = "10m"` | off | Cancel the body this long after the call started and free the lock; the call fails with [`ErrorCode::Timeout`] (logged for `()` / `Option`). Not shorter than `hold_at_least`. |
/// | `crate = "kit::distlock"` | `"::distlock"` | The path the generated code names the `distlock` crate by: for a renamed dependency or a crate that re-exports it. |
///
/// Durations are [humantime] strings (`"500ms"`, `"30s"`, `"5m"`, `"1h 30m"`)
/// checked at compile time.
///
/// [humantime]: https://docs.rs/humantime
///
/// Every other argument means the same for every kind: `wait` bounds the
/// wait for a permit, a side or every name; `skip_if_busy` skips when all
/// permits are taken, a writer holds or waits ahead of a reader (anyone,
/// ahead of a writer), or any name of `keys` is held; `ttl`, renewal,
/// `on_lost`, `hold_at_least` and `hold_at_most` apply to the permit, the
/// side, or every name (a `keys` call is lost when any of its names is).
///
/// # Kinds
///
/// ```
/// use distlock::{distributed_lock, LockError, LockManager};
///
/// /// At most 2 crawls of one host at a time, fleet-wide.
/// #[distributed_lock(key = "crawl:{host}", permits = 2, manager = manager)]
/// async fn crawl(manager: &LockManager, host: &str) -> Result<u64, LockError> {
///     Ok(distlock::current_fencing_token().unwrap()) // the permit's token
/// }
///
/// /// Readers of a document together; its editor alone.
/// #[distributed_lock(key = "doc:{id}", read, manager = manager)]
/// async fn show(manager: &LockManager, id: u64) -> Result<(), LockError> {
///     Ok(())
/// }
///
/// #[distributed_lock(key = "doc:{id}", write, manager = manager)]
/// async fn edit(manager: &LockManager, id: u64) -> Result<(), LockError> {
///     show(manager, id).await // a read inside the write runs under it
/// }
///
/// /// Both accounts at once; opposite transfers never deadlock.
/// #[distributed_lock(keys = ["acct:{from}", "acct:{to}"], manager = manager)]
/// async fn transfer(manager: &LockManager, from: u64, to: u64) -> Result<Vec<String>, LockError> {
///     let lock = distlock::current_lock().unwrap();
///     Ok(lock.names().map(str::to_owned).collect())
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), LockError> {
/// let manager = LockManager::in_memory();
/// crawl(&manager, "example.com").await?;
/// edit(&manager, 7).await?;
/// assert_eq!(transfer(&manager, 2, 1).await?, ["acct:1", "acct:2"]);
/// # Ok(()) }
/// ```
///
/// [`current_lock`] in a body is what the call holds: the permit (its
/// token), the side of the read-write lock, or the whole multi-lock (every
/// name; their keys, put in one transaction, share one fencing token).
/// Nested calls follow the [owners](#owners-nested-and-concurrent-calls)
/// rules for the key's queue: inside a write call, a read or lock call on
/// the key runs under it; inside a read call, a write or lock call on the
/// key fails at once with [`ErrorCode::AlreadyHeld`] (it would wait for
/// itself); inside a `keys` call, a call on one of its names runs under
/// it. A permit is never re-entered: a nested `permits` call takes another
/// permit. A `keys` call nested in a hold of one of its names waits for
/// that hold like any other caller (a multi-lock takes its names all at
/// once, not as sections), so it ends with `Timeout` after its `wait`.
///
/// # Errors
///
/// The function must return `Result<T, E>` (or an alias of any name, such as
/// `anyhow::Result<T>` or `Outcome<T>`) with `E: From<LockError>`; lock
/// failures come back as `Err(E::from(lock_error))`:
///
/// - [`ErrorCode::Timeout`]: the lock stayed busy past `wait`, or the body ran past `hold_at_most`;
/// - [`ErrorCode::Expired`]: the lock was lost while the body ran (`on_lost = "cancel"`);
/// - [`ErrorCode::InvalidOptions`]: no `manager = ...` and no default
///   manager; a `permits` expression out of range, or unlike the count the
///   semaphore's holders gave;
/// - [`ErrorCode::InvalidKey`]: a rendered key is not a valid lock name;
/// - [`ErrorCode::AlreadyHeld`]: a write or lock call nested in a read call on its key;
/// - [`ErrorCode::Backend`], [`ErrorCode::Closed`]: as for [`Lock::lock`].
///
/// The body's own result is returned as it is, even if the release afterwards
/// fails (the lock then goes with its lease).
///
/// # Owners: nested and concurrent calls
///
/// A locked call is an *owner*: the code its body runs, in its task, works
/// under its hold (as does a request under `distlock_tower::LockLayer`, and a
/// [`LockGuard::scope`]). A locked call on the same key through the same
/// manager inside it does not wait for itself: it reenters the hold as a
/// child section, a level of its own, so chains of nested calls never
/// deadlock. Two such calls made *concurrently* inside one owner
/// (`tokio::join!(settle(7), settle(7))`) take turns, FIFO, each within its
/// own `wait`: same-key critical sections never overlap. A nested call keeps
/// its own `wait`, `skip_if_busy`, `on_lost` and `hold_at_most`; its `ttl`,
/// renewal and `hold_at_least` give way to the outer hold's, and the outer
/// lock's loss is every nested call's loss. Tasks spawned inside the body, and other
/// managers, are other owners: they wait like any other caller.
///
/// Owners are tasks, not handles (DESIGN §7): a call made in a task that
/// holds the key through a plain `Lock::lock` runs as a child section of that
/// hold (concurrent ones take turns), while a locked call's own hold is
/// re-entered only from inside its body — two sibling calls of one task
/// (`join!` outside any locked call) each take the lock in turn.
///
/// ```
/// use distlock::{distributed_lock, LockError, LockManager};
///
/// #[distributed_lock(key = "order:{id}", manager = manager, wait = "5s")]
/// async fn settle(manager: &LockManager, id: u64) -> Result<u64, LockError> {
///     Ok(distlock::current_fencing_token().unwrap())
/// }
///
/// #[distributed_lock(key = "order:{id}", manager = manager)]
/// async fn settle_twice(manager: &LockManager, id: u64) -> Result<bool, LockError> {
///     // Both run under this call's hold, one after the other.
///     let (a, b) = tokio::join!(settle(manager, id), settle(manager, id));
///     Ok(a? == b?)
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), LockError> {
/// assert!(settle_twice(&LockManager::in_memory(), 7).await?);
/// # Ok(()) }
/// ```
///
/// # Scheduled jobs
///
/// ```
/// use distlock::{distributed_lock, LockManager};
///
/// /// Every replica fires this every hour; it runs once per hour.
/// #[distributed_lock(key = "job:report", skip_if_busy, hold_at_least = "5m", hold_at_most = "50m", manager = manager)]
/// async fn hourly_report(manager: &LockManager) {
///     // ...
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let manager = LockManager::in_memory();
/// hourly_report(&manager).await; // runs
/// hourly_report(&manager.peer()).await; // within 5 minutes: skipped at once
/// # }
/// ```
///
/// # Fencing token
///
/// The body reads its lock with [`current_lock`] (name, fencing token,
/// whether it is still held, a future that resolves when lost) or just
/// [`current_fencing_token`].
///
/// ```
/// use distlock::{distributed_lock, LockError, LockManager};
///
/// struct Inventory {
///     locks: LockManager,
/// }
///
/// impl Inventory {
///     /// Moves stock; `&mut self` and other attributes are kept.
///     #[distributed_lock(key = "sku:{sku}", manager = self.locks, wait = "5s")]
///     async fn restock(&mut self, sku: &str, qty: u32) -> Result<u64, LockError> {
///         let token = distlock::current_fencing_token().unwrap();
///         // storage.put_if_token_at_least(sku, qty, token).await?;
///         Ok(token)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), LockError> {
/// let mut inventory = Inventory { locks: LockManager::in_memory() };
/// let first = inventory.restock("A-1", 5).await?;
/// let second = inventory.restock("A-1", 5).await?;
/// assert!(second > first);
/// # Ok(()) }
/// ```
///
/// # Where it works
///
/// Free functions, methods taking `self`, `&self` or `&mut self`, generic
/// functions with `where` clauses, functions in `impl` blocks and trait
/// `impl`s (native `async fn` in traits, and `#[async_trait]`). Other
/// attributes and doc comments are kept. The body is moved, unchanged, into
/// an `async move` block inside the function, so `self`, `return` and `?`
/// work as before.
///
/// # Compile-time errors
///
/// Every problem in one go, each pointing at its cause: a missing `key`
/// (and no `keys`), an unknown name in the key template, two kinds at once
/// (`permits` with `read` or `write`, `read` with `write`, `key` with
/// `keys`, `keys` with `permits`, `read` or `write`), `permits = 0` or a
/// literal over [`MAX_PERMITS`], `keys = []`, more than [`MAX_NAMES`] keys
/// or one listed twice, a list given to `key`, an unknown or repeated argument, an
/// unparsable duration, a `ttl` under one second or with a fraction of a
/// second, a `renew_interval` or `ttl` that [`LockOptions::validate`] would
/// refuse at run time (the same rules, evaluated at compile time: a
/// `renew_interval` not shorter than `ttl`, or one that leaves a renewal no
/// time to land; a duration over a year), `wait` with
/// `skip_if_busy`, a `hold_at_most` shorter than `hold_at_least`, a `crate`
/// that is not a path, a function that is not `async`, a return type that is
/// not a `Result` (or, with `skip_if_busy`, none of the four accepted
/// types). Inner attributes atop the body (`#![allow(..)]`) apply to the
/// whole function.
///
/// [`LockManager`]: struct.LockManager.html
/// [`LockOptions::validate`]: struct.LockOptions.html#method.validate
/// [`LockManager::new_lock`]: struct.LockManager.html#method.new_lock
/// [`LockManager::new_semaphore`]: struct.LockManager.html#method.new_semaphore
/// [`LockManager::new_rw_lock`]: struct.LockManager.html#method.new_rw_lock
/// [`LockManager::new_multi_lock`]: struct.LockManager.html#method.new_multi_lock
/// [`MAX_PERMITS`]: constant.MAX_PERMITS.html
/// [`MAX_NAMES`]: constant.MAX_NAMES.html
/// [`ErrorCode::AlreadyHeld`]: enum.ErrorCode.html#variant.AlreadyHeld
/// [`Lock::lock`]: struct.Lock.html#method.lock
/// [`set_default_manager`]: fn.set_default_manager.html
/// [`current_lock`]: fn.current_lock.html
/// [`current_fencing_token`]: fn.current_fencing_token.html
/// [`DEFAULT_WAIT`]: constant.DEFAULT_WAIT.html
/// [`LockGuard::scope`]: struct.LockGuard.html#method.scope
/// [`ErrorCode::Timeout`]: enum.ErrorCode.html#variant.Timeout
/// [`ErrorCode::Expired`]: enum.ErrorCode.html#variant.Expired
/// [`ErrorCode::InvalidOptions`]: enum.ErrorCode.html#variant.InvalidOptions
/// [`ErrorCode::InvalidKey`]: enum.ErrorCode.html#variant.InvalidKey
/// [`ErrorCode::Backend`]: enum.ErrorCode.html#variant.Backend
/// [`ErrorCode::Closed`]: enum.ErrorCode.html#variant.Closed
/// [`LockError`]: struct.LockError.html
#[proc_macro_attribute]
pub fn distributed_lock(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::distributed_lock(args.into(), item.into()).into()
}
