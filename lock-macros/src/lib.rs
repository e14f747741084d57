//! The `#[distributed_lock]` attribute macro of the `distlock` crate; use it
//! through `distlock::distributed_lock`, whose generated code it names.
//!
//! The crate is laid out like `tracing-attributes`: `attr` parses and checks
//! the arguments (collecting every error, each spanned), `template` parses
//! the key template, `expand` generates the function.

mod attr;
mod expand;
mod template;

use proc_macro::TokenStream;

/// Runs an `async fn` under a distributed lock: one call at a time per key,
/// across every process whose [`LockManager`] shares the etcd namespace.
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
/// | `key = "order:{order_id}"` | required | The lock's name: text with `{...}` placeholders, each an argument of the function (or `self`) with optional field accesses (`{req.user.id}`, `{self.shard}`), rendered with `Display`. `{{` and `}}` are literal braces. The rendered key is the lock name as is, so [`LockManager::new_lock`] with the same name contends with the function. |
/// | `ttl = "30s"` | `"30s"` | The lease TTL: how long the lock outlives a crashed or cut-off holder. Whole seconds, at least `"1s"`. |
/// | `wait = "10s"` | without limit | How long to wait for a busy lock before failing with [`ErrorCode::Timeout`]; `"0s"` tries once. |
/// | `manager = <expr>` | the default manager | The [`LockManager`] to lock with: an expression evaluated at each call, before the body, that may use the arguments and `self` (`self.locks`, `state.locks`, `&*MANAGER`); a `LockManager` or a reference, `Box` or `Arc` of one. Without it, the manager set by [`set_default_manager`]; if none is set, the call fails with an [`ErrorCode::InvalidOptions`] error saying so (no panic). |
/// | `auto_renew = false` | `true` | Renew the lease in the background while the body runs. Without renewal the lock expires `ttl` after it was taken. |
/// | `renew_interval = "5s"` | `ttl / 3` | How often to renew; shorter than `ttl`. |
/// | `retry_interval = "100ms"` | `"100ms"` | Pause between retries of transient backend failures (no leader, lost connection). |
/// | `max_retries = 5` | `0` (without limit) | How many times a transient backend failure is retried. |
/// | `on_lost = "continue"` | `"cancel"` | When the lock is lost while the body runs (its lease could not be renewed in time, or it was force-unlocked): `"cancel"` drops the body at the await it is suspended at and returns [`ErrorCode::Expired`]; `"continue"` lets it run on and return its own result, checking [`current_lock`] if it cares. |
///
/// Durations are [humantime] strings (`"500ms"`, `"30s"`, `"5m"`, `"1h 30m"`)
/// checked at compile time.
///
/// [humantime]: https://docs.rs/humantime
///
/// # Errors
///
/// The function must return `Result<T, E>` (or an alias such as
/// `anyhow::Result<T>`) with `E: From<LockError>`; lock failures come back as
/// `Err(E::from(lock_error))`:
///
/// - [`ErrorCode::Timeout`]: the lock stayed busy past `wait`;
/// - [`ErrorCode::Expired`]: the lock was lost while the body ran (`on_lost = "cancel"`);
/// - [`ErrorCode::InvalidOptions`]: no `manager = ...` and no default manager;
/// - [`ErrorCode::InvalidKey`]: the rendered key is not a valid lock name;
/// - [`ErrorCode::Backend`], [`ErrorCode::Closed`]: as for [`Lock::lock`].
///
/// The body's own result is returned as it is, even if the release afterwards
/// fails (the lock then goes with its lease).
///
/// # Nested calls
///
/// A locked call made, in the same task, inside another locked call that
/// holds the same key (same manager namespace) runs under the outer call's
/// lock instead of waiting for itself. Tasks spawned inside the body are
/// other tasks: they wait like any other caller.
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
/// Every problem in one go, each pointing at its cause: a missing `key`, an
/// unknown name in the key template, an unknown or repeated argument, an
/// unparsable duration, a `ttl` under one second or with a fraction of a
/// second, a `renew_interval` not shorter than `ttl`, a function that is not
/// `async`, a return type that is not a `Result`.
///
/// [`LockManager`]: struct.LockManager.html
/// [`LockManager::new_lock`]: struct.LockManager.html#method.new_lock
/// [`Lock::lock`]: struct.Lock.html#method.lock
/// [`set_default_manager`]: fn.set_default_manager.html
/// [`current_lock`]: fn.current_lock.html
/// [`current_fencing_token`]: fn.current_fencing_token.html
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
