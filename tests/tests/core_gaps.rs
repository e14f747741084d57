//! Small API gaps of the core (issue #21): `Lock::is_locked`,
//! `LockError::is_retryable` on real failures, and a short TTL whose renew
//! interval follows it — on etcd, and with injected faults.

use std::time::Duration;

use distlock::testing::{Fault, Faults, Op};
use distlock::{ErrorCode, EtcdConfig, LockManager, LockOptions};
use distlock_tests::Etcd;

async fn managers(etcd: &Etcd) -> (LockManager, LockManager) {
    let ns = etcd.namespace();
    let connect = || LockManager::connect(EtcdConfig::new(etcd.endpoints()), &ns);
    (connect().await.unwrap(), connect().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn is_locked_sees_holders_of_any_process_and_takes_no_place() {
    let etcd = Etcd::start().await;
    let (a, b) = managers(&etcd).await;
    let mine = a.new_lock("order:1", LockOptions::default()).unwrap();
    let theirs = b.new_lock("order:1", LockOptions::default()).unwrap();
    assert!(!mine.is_locked().await.unwrap());
    assert!(!theirs.is_locked().await.unwrap());

    let guard = mine.lock().await.unwrap();
    assert!(mine.is_locked().await.unwrap());
    assert!(
        theirs.is_locked().await.unwrap(),
        "another manager's holder"
    );
    // Another name with a common prefix is not this lock.
    let other = b.new_lock("order:10", LockOptions::default()).unwrap();
    assert!(!other.is_locked().await.unwrap());
    // Asking queued nothing: the holder's queue is the holder alone.
    assert_eq!(a.lock_info("order:1").await.unwrap().unwrap().waiters, 0);

    guard.unlock().await.unwrap();
    assert!(!theirs.is_locked().await.unwrap());
    // A holder gone by force: free again.
    let guard = theirs.lock().await.unwrap();
    assert!(mine.is_locked().await.unwrap());
    assert!(a.force_unlock("order:1").await.unwrap());
    guard.lost().await;
    assert!(!mine.is_locked().await.unwrap());

    a.close().await;
    assert_eq!(
        mine.is_locked().await.unwrap_err().code(),
        ErrorCode::Closed
    );
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_ttl_alone_is_renewed_past_it() {
    let etcd = Etcd::start().await;
    let (a, b) = managers(&etcd).await;
    // 2 s TTL, no renew interval: it follows the TTL (2s / 3), so the lock
    // outlives its TTL while held. With the old default (10 s) it was refused.
    let opts = LockOptions::default().ttl(Duration::from_secs(2));
    let from_json: LockOptions = serde_json::from_str(r#"{"ttl": "2s"}"#).unwrap();
    assert_eq!(opts, from_json);
    let guard = a.new_lock("short", opts).unwrap().lock().await.unwrap();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert!(guard.is_held());
    let theirs = b.new_lock("short", from_json).unwrap();
    assert!(theirs.try_lock().await.unwrap().is_none(), "still held");
    guard.unlock().await.unwrap();
    assert!(theirs.try_lock().await.unwrap().is_some());
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_errors_are_busy_locks_and_outages() {
    let store = LockManager::in_memory();
    let holder = store.peer();
    let guard = holder
        .new_lock("busy", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();

    // Busy past the wait: Timeout, retryable.
    let busy = store.new_lock("busy", LockOptions::default()).unwrap();
    let err = busy
        .lock_timeout(Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout);
    assert!(err.is_retryable(), "{err}");
    drop(guard);

    // An outage past the retry policy: Backend, retryable.
    let faults = Faults::new();
    faults.always(Op::Enqueue, Fault::Fail);
    let failing = store.with_faults(&faults);
    let opts = LockOptions::default()
        .max_retries(2)
        .retry_interval(Duration::from_millis(5));
    let err = failing
        .new_lock("free", opts.clone())
        .unwrap()
        .lock()
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Backend, "{err}");
    assert!(err.is_retryable(), "{err}");
    // A wait that ran out while etcd was failing: Backend, retryable.
    let err = failing
        .new_lock("free", LockOptions::default())
        .unwrap()
        .lock_timeout(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Backend, "{err}");
    assert!(err.is_retryable(), "{err}");

    // Refused for good: Backend, not retryable.
    let refusing = Faults::new();
    refusing.always(Op::Enqueue, Fault::Refuse);
    let err = store
        .with_faults(&refusing)
        .new_lock("free", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Backend, "{err}");
    assert!(!err.is_retryable(), "{err}");

    // A lock lost: not retryable as the same call.
    let guard = store
        .new_lock("lost", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    assert!(holder.force_unlock("lost").await.unwrap());
    guard.lost().await;
    let err = guard.unlock().await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Expired);
    assert!(!err.is_retryable());

    // A read during an outage: is_locked says Backend.
    let reads = Faults::new();
    reads.always(Op::List, Fault::Fail);
    let err = store
        .with_faults(&reads)
        .new_lock("free", LockOptions::default())
        .unwrap()
        .is_locked()
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Backend);
    assert!(err.is_retryable());
}
