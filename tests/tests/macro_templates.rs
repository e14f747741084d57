//! Key templates whose placeholders are expressions (issue #21), as
//! `tracing`'s `fields(..)` take them: method calls, indexing, closures,
//! `format!`. Each call reports the lock name it ran under.

use std::sync::Arc;

use distlock::{distributed_lock, LockError, LockManager};

/// The name of the lock the body runs under.
fn current() -> String {
    distlock::current_lock()
        .expect("runs under a lock")
        .name()
        .to_owned()
}

/// A request wrapper with an accessor, as `tonic::Request::get_ref`.
struct Request<T>(T);

impl<T> Request<T> {
    fn get_ref(&self) -> &T {
        &self.0
    }
}

struct Order {
    order_id: u64,
    region: Option<&'static str>,
}

struct Shop {
    locks: LockManager,
    name: String,
}

impl Shop {
    #[distributed_lock(key = "order:{req.get_ref().order_id}", manager = self.locks)]
    async fn settle(&self, req: Request<Order>) -> Result<String, LockError> {
        Ok(current())
    }

    #[distributed_lock(key = "{self.name.to_uppercase()}/{req.get_ref().region.unwrap_or(\"eu\")}", manager = self.locks)]
    async fn region(&self, req: &Request<Order>) -> Result<String, LockError> {
        Ok(current())
    }

    #[distributed_lock(key = "batch:{ids[0]}-{ids[ids.len() - 1]}:{ids.len()}", manager = &self.locks)]
    async fn batch(&self, ids: Vec<u32>) -> Result<String, LockError> {
        Ok(current())
    }

    #[distributed_lock(key = "user:{name.to_lowercase()}", manager = Arc::new(self.locks.clone()))]
    async fn user(&self, name: &str) -> Result<String, LockError> {
        Ok(current())
    }

    #[distributed_lock(key = "sum:{ids.iter().map(|i| { i * 2 }).sum::<u32>()}", manager = self.locks)]
    async fn doubled(&self, ids: &[u32]) -> Result<String, LockError> {
        Ok(current())
    }

    #[distributed_lock(key = r#"padded:{format!("{:05}", n)}:{{literal}}:{n > 40}"#, manager = self.locks)]
    async fn padded(&self, n: u32) -> Result<String, LockError> {
        Ok(current())
    }

    #[distributed_lock(key = r#"pid:{std::cmp::max(n, MIN)}:{label(n)}"#, manager = self.locks)]
    async fn paths(&self, n: u32) -> Result<String, LockError> {
        Ok(current())
    }
}

const MIN: u32 = 10;

fn label(n: u32) -> &'static str {
    if n > 1 {
        "many"
    } else {
        "one"
    }
}

#[tokio::test]
async fn placeholders_are_expressions() {
    let shop = Shop {
        locks: LockManager::in_memory(),
        name: "Berlin".into(),
    };
    let order = |order_id, region| Request(Order { order_id, region });
    assert_eq!(shop.settle(order(42, None)).await.unwrap(), "order:42");
    assert_eq!(
        shop.region(&order(1, Some("us"))).await.unwrap(),
        "BERLIN/us"
    );
    assert_eq!(shop.region(&order(1, None)).await.unwrap(), "BERLIN/eu");
    assert_eq!(shop.batch(vec![7, 8, 9]).await.unwrap(), "batch:7-9:3");
    assert_eq!(shop.user("ALICE").await.unwrap(), "user:alice");
    assert_eq!(shop.doubled(&[1, 2, 3]).await.unwrap(), "sum:12");
    assert_eq!(
        shop.padded(42).await.unwrap(),
        "padded:00042:{literal}:true"
    );
    assert_eq!(shop.paths(3).await.unwrap(), "pid:10:many");
    // The arguments are still usable by the body after the key borrowed them.
    assert!(shop.locks.lock_info("order:42").await.unwrap().is_none());
}

/// A key that renders the same for two calls is one lock: they exclude
/// each other, whatever expression produced it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_renderings_are_one_lock() {
    let shop = Arc::new(Shop {
        locks: LockManager::in_memory(),
        name: "x".into(),
    });
    let guard = shop
        .locks
        .new_lock("user:alice", distlock::LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let s = Arc::clone(&shop);
    let call = tokio::spawn(async move { s.user("Alice").await });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!call.is_finished(), "waits for the holder of user:alice");
    guard.unlock().await.unwrap();
    assert_eq!(call.await.unwrap().unwrap(), "user:alice");
}
