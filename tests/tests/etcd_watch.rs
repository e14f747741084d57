//! The shared watch stream when it stalls without breaking: a waiter whose
//! connection to etcd is blackholed (a loopback proxy that holds every byte)
//! must not sleep until HTTP/2 keep-alive gives up on the connection
//! (10 s + 5 s). The watch hub asks a silent stream for progress and drops it
//! when no answer comes, so the waiter re-checks: it fails within its retry
//! budget while the stall lasts, and takes the lock promptly once it ends.

mod support;

use std::time::Duration;

use distlock::{ErrorCode, LockGuard, LockManager, LockOptions};
use distlock_tests::{Etcd, TcpProxy};
use support::{proxied, Proxied};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

/// The waiter's request timeout: the hub asks for progress after this much
/// silence and gives up after as much again.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// A holder connected directly, and a waiter connected through a proxy,
/// queued behind it.
struct Setup {
    _etcd: Etcd,
    proxy: TcpProxy,
    direct: LockManager,
    held: LockGuard,
    waiter: JoinHandle<distlock::Result<LockGuard>>,
}

async fn setup(waiter_options: LockOptions) -> Setup {
    let Proxied {
        etcd,
        proxy,
        direct,
        behind: behind_proxy,
    } = proxied(REQUEST_TIMEOUT).await;
    let held = direct
        .new_lock("job", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let lock = behind_proxy.new_lock("job", waiter_options).unwrap();
    let waiter = tokio::spawn(async move { lock.lock().await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while direct.lock_info("job").await.unwrap().unwrap().waiters == 0 {
        assert!(Instant::now() < deadline, "the waiter never queued");
        sleep(Duration::from_millis(20)).await;
    }
    // Let the waiter's watches reach etcd.
    sleep(Duration::from_millis(200)).await;
    Setup {
        _etcd: etcd,
        proxy,
        direct,
        held,
        waiter,
    }
}

/// The lease outlives the test, so only the watch stream can end the wait.
fn waiter_options() -> LockOptions {
    LockOptions::default()
        .ttl(Duration::from_secs(120))
        .renew_interval(Duration::from_secs(40))
        .retry_interval(Duration::from_millis(200))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_on_a_stalled_stream_fails_within_its_retry_budget() {
    let s = setup(waiter_options().max_retries(2)).await;
    let stalled = Instant::now();
    s.proxy.blackhole();
    // Progress asked after 1 s of silence, stream dropped 1 s later, then 3
    // queue reads of at most 1 s + 200 ms each: ~6 s. HTTP/2 keep-alive alone
    // would take 10-15 s to notice, plus the same retries.
    let result = timeout(Duration::from_secs(30), s.waiter)
        .await
        .expect("the waiter hung on a stalled stream")
        .unwrap();
    let took = stalled.elapsed();
    let err = result
        .map(drop)
        .expect_err("the waiter got the lock through a blackhole");
    assert_eq!(err.code(), ErrorCode::Backend, "{err:?}");
    assert!(
        took < Duration::from_secs(9),
        "the waiter noticed the stall only after {took:?}"
    );
    assert!(s.held.is_held());
    s.held.unlock().await.unwrap();
    s.direct.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_takes_the_lock_promptly_when_a_stall_ends() {
    let s = setup(waiter_options()).await;
    s.proxy.blackhole();
    // Released during the stall: the waiter cannot hear it yet.
    s.held.unlock().await.unwrap();
    sleep(Duration::from_secs(4)).await;
    assert!(
        !s.waiter.is_finished(),
        "the waiter finished during the stall"
    );
    s.proxy.restore();
    let restored = Instant::now();
    let guard = timeout(Duration::from_secs(10), s.waiter)
        .await
        .expect("the waiter did not take the lock after the stall")
        .unwrap()
        .unwrap();
    assert!(guard.is_held());
    assert!(
        restored.elapsed() < Duration::from_secs(4),
        "took {:?} after the stall ended",
        restored.elapsed()
    );
    let info = s.direct.lock_info("job").await.unwrap().unwrap();
    assert_eq!(info.fencing_token, guard.fencing_token());
    guard.unlock().await.unwrap();
    s.direct.close().await;
}
