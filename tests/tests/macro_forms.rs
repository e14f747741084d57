//! `#[distributed_lock]` on every kind of function it supports: free
//! functions, `self` / `&self` / `&mut self` / `Arc<Self>` methods, generics
//! with `where` clauses, trait impls (native and `#[async_trait]`), argument
//! patterns, lifetimes, `impl Trait` and aliased `Result`s. Each test checks
//! the rendered key and that the lock is really held while the body runs.

use std::fmt::Display;
use std::sync::Arc;

use distlock::{distributed_lock, ErrorCode, LockError, LockManager};

#[derive(Debug)]
enum AppError {
    Lock(LockError),
    App(&'static str),
}

impl From<LockError> for AppError {
    fn from(err: LockError) -> Self {
        AppError::Lock(err)
    }
}

type AppResult<T> = Result<T, AppError>;

/// What a body saw: the lock's name, and whether its manager listed it held.
async fn seen(manager: &LockManager) -> (String, bool) {
    let lock = distlock::current_lock().expect("inside a locked call");
    assert!(lock.is_held());
    let info = manager.lock_info(lock.name()).await.expect("lock_info");
    let held = info.is_some_and(|i| i.fencing_token == lock.fencing_token());
    (lock.name().to_owned(), held)
}

/// A free function; doc comments and other attributes stay.
#[distributed_lock(key = "free:{id}", manager = manager, ttl = "5s")]
#[allow(clippy::needless_return)]
async fn free(manager: &LockManager, id: u32) -> Result<(String, bool), AppError> {
    return Ok(seen(manager).await);
}

#[tokio::test]
async fn free_function() {
    let manager = LockManager::in_memory();
    let (key, held) = free(&manager, 7).await.unwrap();
    assert_eq!(key, "free:7");
    assert!(held);
    assert!(
        manager.lock_info("free:7").await.unwrap().is_none(),
        "released"
    );
}

struct User {
    id: u64,
}

struct Request {
    user: User,
    item: (u32, &'static str),
}

struct Service {
    locks: LockManager,
    shard: String,
    handled: u32,
}

impl Service {
    /// `&self`, with fields of `self` and of an argument in the key.
    #[distributed_lock(key = "{self.shard}/user:{req.user.id}/{req.item.1}", manager = self.locks)]
    async fn by_ref(&self, req: &Request) -> AppResult<(String, bool)> {
        Ok(seen(&self.locks).await)
    }

    /// `&mut self`: the body mutates the service.
    #[distributed_lock(key = "{self.shard}/count", manager = self.locks, wait = "1s")]
    async fn by_mut(&mut self) -> AppResult<u32> {
        self.handled += 1;
        tokio::task::yield_now().await;
        Ok(self.handled)
    }

    /// `self` by value.
    #[distributed_lock(key = "{self.shard}/consume", manager = self.locks.clone())]
    async fn consume(self) -> AppResult<String> {
        Ok(seen(&self.locks).await.0)
    }

    /// `self: Arc<Self>`, as spawned services often are.
    #[distributed_lock(key = "{self.shard}/arc", manager = self.locks)]
    async fn shared(self: Arc<Self>) -> AppResult<String> {
        Ok(seen(&self.locks).await.0)
    }
}

fn service() -> Service {
    Service {
        locks: LockManager::in_memory(),
        shard: "eu".into(),
        handled: 0,
    }
}

#[tokio::test]
async fn methods_on_self_ref_mut_value_and_arc() {
    let mut svc = service();
    let req = Request {
        user: User { id: 42 },
        item: (1, "book"),
    };
    assert_eq!(
        svc.by_ref(&req).await.unwrap(),
        ("eu/user:42/book".to_owned(), true)
    );
    assert_eq!(svc.by_mut().await.unwrap(), 1);
    assert_eq!(svc.by_mut().await.unwrap(), 2);
    assert_eq!(Arc::new(service()).shared().await.unwrap(), "eu/arc");
    assert_eq!(svc.consume().await.unwrap(), "eu/consume");
}

/// Generics with a `where` clause, and a key from a generic argument.
#[distributed_lock(key = "cache:{name}", manager = manager, ttl = "2s")]
async fn generic<K, V>(manager: &LockManager, name: K, value: V) -> Result<(String, V), AppError>
where
    K: Display + Send,
    V: Clone + Send,
{
    let (key, held) = seen(manager).await;
    assert!(held);
    Ok((key, value.clone()))
}

#[tokio::test]
async fn generic_function_with_where_clause() {
    let manager = LockManager::in_memory();
    let (key, v) = generic(&manager, "users", vec![1, 2]).await.unwrap();
    assert_eq!((key.as_str(), v), ("cache:users", vec![1, 2]));
    let (key, v) = generic(&manager, 5u8, 'x').await.unwrap();
    assert_eq!((key.as_str(), v), ("cache:5", 'x'));
}

/// Lifetimes in arguments and return type; a pattern argument.
#[distributed_lock(key = "pair:{a}-{b}", manager = manager)]
async fn borrowed<'a>(
    manager: &LockManager,
    (a, b): (u32, u32),
    text: &'a str,
) -> AppResult<&'a str> {
    let (key, held) = seen(manager).await;
    assert_eq!(key, format!("pair:{a}-{b}"));
    assert!(held);
    Ok(&text[1..])
}

/// `impl Trait` in the return type.
#[distributed_lock(key = "label", manager = manager)]
async fn opaque(manager: &LockManager) -> Result<impl Display, AppError> {
    Ok(seen(manager).await.0)
}

#[tokio::test]
async fn lifetimes_patterns_and_impl_trait() {
    let manager = LockManager::in_memory();
    assert_eq!(borrowed(&manager, (3, 4), "xyz").await.unwrap(), "yz");
    assert_eq!(opaque(&manager).await.unwrap().to_string(), "label");
}

/// A trait with native `async fn`, implemented with the macro.
trait Job {
    async fn run(&self, id: u32) -> AppResult<String>;
}

impl Job for Service {
    #[distributed_lock(key = "job:{id}", manager = self.locks)]
    async fn run(&self, id: u32) -> AppResult<String> {
        Ok(seen(&self.locks).await.0)
    }
}

/// The same with `#[async_trait]`, which rewrites the method before us.
#[async_trait::async_trait]
trait Worker {
    async fn work(&self, id: u32) -> AppResult<(String, bool)>;
}

#[async_trait::async_trait]
impl Worker for Service {
    /// Works on one item at a time.
    #[distributed_lock(key = "{self.shard}/work:{id}", manager = self.locks, ttl = "3s")]
    async fn work(&self, id: u32) -> AppResult<(String, bool)> {
        if id == 0 {
            return Err(AppError::App("id 0"));
        }
        Ok(seen(&self.locks).await)
    }
}

#[tokio::test]
async fn trait_impls_native_and_async_trait() {
    let svc = Arc::new(service());
    assert_eq!(svc.run(3).await.unwrap(), "job:3");
    // `#[async_trait]` futures are Send: spawn one.
    let spawned = tokio::spawn({
        let svc = Arc::clone(&svc);
        async move { svc.work(9).await }
    });
    assert_eq!(
        spawned.await.unwrap().unwrap(),
        ("eu/work:9".to_owned(), true)
    );
    assert!(matches!(svc.work(0).await, Err(AppError::App("id 0"))));
}

/// A manager reached through an `Arc` in shared state.
struct AppState {
    locks: Arc<LockManager>,
}

#[distributed_lock(key = "tenant:{tenant}", manager = state.locks, wait = "0s")]
async fn via_state(state: Arc<AppState>, tenant: &str, fail: bool) -> AppResult<()> {
    let (_, held) = seen(&state.locks).await;
    assert!(held);
    if fail {
        Err(AppError::App("body failed"))?;
    }
    Ok(())
}

#[tokio::test]
async fn body_errors_pass_through_and_release() {
    let state = Arc::new(AppState {
        locks: Arc::new(LockManager::in_memory()),
    });
    let err = via_state(Arc::clone(&state), "acme", true)
        .await
        .unwrap_err();
    assert!(matches!(err, AppError::App("body failed")), "{err:?}");
    // Released: a try-once call gets it at once.
    via_state(Arc::clone(&state), "acme", false).await.unwrap();
    assert!(state.locks.list_locks("").await.unwrap().is_empty());
}

#[tokio::test]
async fn invalid_rendered_key_is_a_lock_error() {
    let manager = LockManager::in_memory();
    // A NUL in the rendered name is refused by the core, returned as `E`.
    #[distributed_lock(key = "{name}", manager = manager)]
    async fn named(manager: &LockManager, name: &str) -> AppResult<()> {
        Ok(())
    }
    match named(&manager, "a\0b").await {
        Err(AppError::Lock(e)) => assert_eq!(e.code(), ErrorCode::InvalidKey),
        other => panic!("expected InvalidKey, got {other:?}"),
    }
}

fn assert_send<T: Send>(_: &T) {}

#[test]
fn locked_futures_are_send() {
    let manager = LockManager::in_memory();
    let svc = service();
    let mut svc2 = service();
    let req = Request {
        user: User { id: 1 },
        item: (1, "x"),
    };
    assert_send(&free(&manager, 1));
    assert_send(&svc.by_ref(&req));
    assert_send(&svc2.by_mut());
    assert_send(&generic(&manager, "k", 1u8));
}

/// A result alias whose name does not end in `Result` (issue #9, defect 6).
type Outcome<T> = Result<T, AppError>;

#[distributed_lock(key = "alias:{id}", manager = manager)]
async fn aliased_outcome(manager: &LockManager, id: u32) -> Outcome<(String, bool)> {
    Ok(seen(manager).await)
}

#[tokio::test]
async fn result_alias_with_any_name() {
    let manager = LockManager::in_memory();
    let (key, held) = aliased_outcome(&manager, 3).await.unwrap();
    assert_eq!(key, "alias:3");
    assert!(held);
}

/// Inner attributes atop a locked body (defect 6) apply to the function.
#[distributed_lock(key = "inner:{id}", manager = manager)]
async fn inner_attributes(manager: &LockManager, id: u32) -> Result<(String, bool), AppError> {
    #![allow(unused_mut)]
    #![deny(unused_variables)]
    let mut seen_now = seen(manager).await;
    seen_now.0.push('!');
    Ok(seen_now)
}

#[tokio::test]
async fn inner_attributes_atop_the_body() {
    let manager = LockManager::in_memory();
    let (key, held) = inner_attributes(&manager, 4).await.unwrap();
    assert_eq!(key, "inner:4!");
    assert!(held);
}

/// The `distlock` crate re-exported by another (a "kit" crate, or a renamed
/// dependency): `crate = "..."` names the path the generated code uses.
mod kit {
    pub use distlock as locks;
}

#[distributed_lock(key = "kit:{id}", manager = manager, crate = "kit::locks")]
async fn through_a_reexport(manager: &LockManager, id: u32) -> Result<(String, bool), AppError> {
    Ok(seen(manager).await)
}

#[tokio::test]
async fn crate_path_for_a_reexported_distlock() {
    let manager = LockManager::in_memory();
    let (key, held) = through_a_reexport(&manager, 5).await.unwrap();
    assert_eq!(key, "kit:5");
    assert!(held);
}
