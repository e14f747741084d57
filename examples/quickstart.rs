//! Quickstart: a lock manager, one lock taken by two contenders in turn.
//!
//! `cargo run -p distlock-examples --example quickstart` (on the etcd of
//! `DISTLOCK_ENDPOINTS`, else on a throwaway local one)

mod support;

use std::time::Duration;

use distlock::{ErrorCode, EtcdConfig, LockManager, LockOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // DISTLOCK_ENDPOINTS, or a throwaway etcd (examples/support), removed on exit.
    let etcd = support::etcd().await?;
    let config = EtcdConfig::new(etcd.endpoints());
    let alice = LockManager::connect(config.clone(), "/quickstart").await?;
    let bob = LockManager::connect(config, "/quickstart").await?;

    let lock = alice.new_lock("order:42", LockOptions::default())?;
    let guard = lock.lock().await?;
    println!(
        "alice holds order:42 with fencing token {}",
        guard.fencing_token()
    );

    let bobs = bob.new_lock("order:42", LockOptions::default())?;
    assert!(bobs.try_lock().await?.is_none());
    println!("bob's try_lock: busy");
    match bobs.lock_timeout(Duration::from_millis(200)).await {
        Err(e) if e.code() == ErrorCode::Timeout => println!("bob's lock_timeout: {e}"),
        other => panic!("unexpected: {other:?}"),
    }

    let info = alice.lock_info("order:42").await?.expect("held");
    println!(
        "lock_info: owner {} token {}",
        info.owner, info.fencing_token
    );

    let waiting = tokio::spawn(async move { bobs.lock().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    guard.unlock().await?;
    let bob_guard = waiting.await.expect("task")?;
    println!(
        "bob holds order:42 with fencing token {}",
        bob_guard.fencing_token()
    );
    bob_guard.unlock().await?;

    alice.close().await;
    bob.close().await;
    Ok(())
}
