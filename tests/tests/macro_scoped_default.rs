//! `distlock::with_default_manager`: a default manager per task scope, so
//! tests running in parallel in one process do not overwrite each other's
//! global default (issue #21).

use std::sync::Arc;
use std::time::Duration;

use distlock::{distributed_lock, LockError, LockManager};
use tokio::sync::Barrier;

/// Holds `job` until both callers are inside; `manager` is told in which
/// store the call's lock is held.
#[distributed_lock(key = "job", wait = "2s")]
async fn meet(barrier: Arc<Barrier>) -> Result<bool, LockError> {
    let manager = distlock::default_manager().expect("a default in scope");
    let held_here = manager.lock_info("job").await?.is_some();
    // Both calls are in their bodies at once only if they locked in
    // different stores: with one default, the second would wait for the
    // first, which waits here for it.
    tokio::time::timeout(Duration::from_secs(3), barrier.wait())
        .await
        .map_err(|_| LockError::new(distlock::ErrorCode::Timeout, "the other call never came"))?;
    Ok(held_here)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tasks_have_their_own_default() {
    let (east, west) = (LockManager::in_memory(), LockManager::in_memory());
    let barrier = Arc::new(Barrier::new(2));
    let a = tokio::spawn(distlock::with_default_manager(
        east.clone(),
        meet(Arc::clone(&barrier)),
    ));
    let b = tokio::spawn(distlock::with_default_manager(west.clone(), meet(barrier)));
    assert!(a.await.unwrap().unwrap(), "held in east's store");
    assert!(b.await.unwrap().unwrap(), "held in west's store");
    assert!(east.lock_info("job").await.unwrap().is_none());
    assert!(west.lock_info("job").await.unwrap().is_none());
}

#[distributed_lock(key = "k:{n}")]
async fn held_in(n: u32, store: &LockManager) -> Result<bool, LockError> {
    Ok(store.lock_info(&format!("k:{n}")).await?.is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_nest_and_fall_back_to_the_global_default() {
    let (global, outer, inner) = (
        LockManager::in_memory(),
        LockManager::in_memory(),
        LockManager::in_memory(),
    );
    // The only test of this binary that sets the global default.
    distlock::set_default_manager(global.clone());
    assert!(held_in(1, &global).await.unwrap());

    distlock::with_default_manager(outer.clone(), async {
        assert!(held_in(2, &outer).await.unwrap());
        assert!(!held_in(2, &global).await.unwrap());
        distlock::with_default_manager(inner.clone(), async {
            assert!(held_in(3, &inner).await.unwrap());
            assert!(!held_in(3, &outer).await.unwrap());
        })
        .await;
        assert!(held_in(4, &outer).await.unwrap(), "the inner scope ended");
        // A task spawned in the scope has its own task-locals: the global.
        let global = global.clone();
        let spawned = tokio::spawn(async move { held_in(5, &global).await });
        assert!(spawned.await.unwrap().unwrap());
    })
    .await;
    assert!(held_in(6, &global).await.unwrap(), "back to the global");
}
