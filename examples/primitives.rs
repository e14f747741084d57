//! Semaphores, read-write locks and multi-locks, between three managers
//! (three processes, as far as etcd is concerned). Owners are tasks, per
//! manager: one task plays all three processes here, so each check that
//! "the others are refused" asks through a manager whose holds it does not
//! own (in one manager, the task holding a read lock that asks for the
//! write lock gets `AlreadyHeld`: it would wait for itself).
//!
//! `cargo run -p distlock-examples --example primitives` (on the etcd of
//! `DISTLOCK_ENDPOINTS`, else on a throwaway local one)

mod support;

use std::time::Duration;

use distlock::{ErrorCode, EtcdConfig, LockManager, LockOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // DISTLOCK_ENDPOINTS, or a throwaway etcd (examples/support), removed on exit.
    let etcd = support::etcd().await?;
    let config = EtcdConfig::new(etcd.endpoints());
    let a = LockManager::connect(config.clone(), "/primitives").await?;
    let b = LockManager::connect(config.clone(), "/primitives").await?;
    let c = LockManager::connect(config, "/primitives").await?;
    let opts = LockOptions::default;

    println!("-- semaphore: at most 2 crawlers of example.com at once");
    let [sem_a, sem_b, sem_c] =
        [&a, &b, &c].map(|m| m.new_semaphore("crawl:example.com", 2, opts()).unwrap());
    let first = sem_a.acquire().await?;
    let second = sem_b.acquire().await?;
    println!(
        "two permits held (tokens {} and {})",
        first.fencing_token(),
        second.fencing_token()
    );
    assert!(sem_c.try_acquire().await?.is_none());
    match sem_c.acquire_timeout(Duration::from_millis(200)).await {
        Err(e) if e.code() == ErrorCode::Timeout => println!("a third waits: {e}"),
        other => panic!("unexpected: {other:?}"),
    }
    let info = a
        .semaphore_info("crawl:example.com")
        .await?
        .expect("in use");
    println!(
        "semaphore_info: {}/{} in use",
        info.holders.len(),
        info.permits
    );
    let waiting = tokio::spawn(async move { sem_c.acquire().await });
    first.release().await?;
    let third = waiting.await??; // a release admits exactly one waiter
    println!(
        "after a release, the third got token {}",
        third.fencing_token()
    );
    second.release().await?;
    third.release().await?;

    println!("\n-- read-write lock: many readers or one writer");
    let [doc_a, doc_b, doc_c] = [&a, &b, &c].map(|m| m.new_rw_lock("doc:7", opts()).unwrap());
    let r1 = doc_a.read().await?;
    let r2 = doc_b.read().await?;
    println!(
        "two readers share doc:7 (tokens {} and {})",
        r1.fencing_token(),
        r2.fencing_token()
    );
    assert!(doc_c.try_write().await?.is_none());
    println!("a writer is refused while they read");
    r1.release().await?;
    r2.release().await?;
    let w = doc_a.write().await?;
    println!("the writer holds doc:7 (token {})", w.fencing_token());
    assert!(doc_b.try_read().await?.is_none());
    let r = w.downgrade().await?; // no writer gets in between
    assert!(doc_c.try_write().await?.is_none());
    let other = doc_b.try_read().await?.expect("readers share again");
    println!(
        "downgraded to a read lock (token {}); another reader joins (token {})",
        r.fencing_token(),
        other.fencing_token()
    );
    r.release().await?;
    other.release().await?;

    println!("\n-- multi-lock: both accounts or neither, atomically");
    let transfer = a.new_multi_lock(["acct:1", "acct:2"], opts())?;
    let reverse = b.new_multi_lock(["acct:2", "acct:1"], opts())?;
    let g = transfer.lock().await?;
    println!("transfer holds {:?}", g.fencing_tokens());
    assert!(reverse.try_lock().await?.is_none());
    assert!(c.new_lock("acct:2", opts())?.try_lock().await?.is_none());
    println!("the opposite transfer and a plain lock of acct:2 are refused meanwhile");
    let waiting = tokio::spawn(async move { reverse.lock().await });
    g.release().await?;
    let g = waiting.await??; // opposite orders never deadlock
    println!("the opposite transfer then holds {:?}", g.fencing_tokens());
    g.release().await?;

    for m in [a, b, c] {
        m.close().await;
    }
    Ok(())
}
