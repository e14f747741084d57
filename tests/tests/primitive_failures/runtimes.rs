//! Managers whose runtime shut down.

use std::time::Duration;

use distlock::{ErrorCode, LockManager, LockOptions};
use distlock_tests::Etcd;
use tokio::time::{sleep, timeout};

use super::support::prim::Prim;
use super::support::{connect, init_tracing, raw_keys, short_ttl};

/// #17.5 for every primitive: a memory manager whose tasks were started on
/// a runtime that has shut down since keeps working on the next one — it
/// acquires each primitive, and holds it past a TTL (its lease renewed).
#[test]
fn a_memory_manager_outlives_the_runtime_that_started_its_tasks() {
    init_tracing();
    let manager = LockManager::in_memory();
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    first.block_on(acquire_each(&manager, "warm"));
    drop(first);
    let second = tokio::runtime::Runtime::new().unwrap();
    second.block_on(async {
        let mut holds = Vec::new();
        for prim in Prim::ALL {
            let handle = prim.handle(&manager, &prim.name("after"), short_ttl(2));
            let held = timeout(Duration::from_secs(5), handle.acquire())
                .await
                .unwrap_or_else(|_| panic!("{prim:?}: hung on the new runtime"))
                .unwrap_or_else(|e| panic!("{prim:?}: failed on the new runtime: {e}"));
            holds.push((prim, held));
        }
        sleep(Duration::from_millis(2500)).await; // over a TTL
        for (prim, held) in holds {
            assert!(
                held.is_held(),
                "{prim:?}: nobody renewed on the new runtime"
            );
            held.release().await.unwrap();
        }
    });
}

/// Acquires and releases every primitive (names `{base}-{prim}`) through
/// `manager`, holding each long enough for its deletion watch to start.
async fn acquire_each(manager: &LockManager, base: &str) {
    for prim in Prim::ALL {
        let held = prim
            .handle(manager, &prim.name(base), short_ttl(2))
            .acquire()
            .await
            .unwrap();
        sleep(Duration::from_millis(150)).await;
        held.release().await.unwrap();
    }
}

/// #17.5 on etcd for every primitive: a manager made on a runtime that has
/// shut down since (its connection died with it) fails each acquisition at
/// once with a clear, non-retryable `Backend` error — never a hang, never
/// "busy" — and a manager made on the new runtime works.
#[test]
fn an_etcd_manager_on_a_runtime_that_shut_down_fails_clearly() {
    init_tracing();
    let harness = tokio::runtime::Runtime::new().unwrap();
    let etcd = harness.block_on(Etcd::start());
    let ns = etcd.namespace();
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stale = first.block_on(async {
        let manager = connect(&etcd, &ns).await;
        acquire_each(&manager, "warm").await;
        manager
    });
    drop(first);
    let second = tokio::runtime::Runtime::new().unwrap();
    second.block_on(async {
        for prim in Prim::ALL {
            let handle = prim.handle(&stale, &prim.name("after"), LockOptions::default());
            let tried = timeout(Duration::from_secs(5), handle.try_acquire())
                .await
                .unwrap_or_else(|_| panic!("{prim:?}: a call on a dead connection hung"));
            let err = tried.expect_err("the connection is dead");
            assert_eq!(err.code(), ErrorCode::Backend, "{prim:?}: {err}");
            assert!(err.to_string().contains("runtime"), "{prim:?}: {err}");
            assert!(!err.is_retryable(), "{prim:?}: {err}");
        }
        let fresh = connect(&etcd, &ns).await;
        acquire_each(&fresh, "fresh").await;
        assert!(raw_keys(&etcd, &ns).await.is_empty());
    });
    drop(second);
    drop(harness);
}
