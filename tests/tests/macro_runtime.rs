//! What `#[distributed_lock]` functions do at run time, on a real etcd
//! (`etcd::`) and in memory (`memory::`): exclusion per key across managers,
//! concurrency across keys, `wait`, nested calls, lost locks, fencing tokens.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use distlock::EtcdConfig;
use distlock::{distributed_lock, ErrorCode, LockError, LockManager, LockOptions};
use distlock_tests::{Etcd, TcpProxy};
use support::{on_both_backends, Fixture, OverlapDetector};
use tokio::sync::{Barrier, Notify};
use tokio::time::{sleep, timeout, Instant};

on_both_backends!(
    one_call_at_a_time_per_key_across_two_managers,
    different_keys_run_concurrently,
    busy_lock_past_wait_is_a_timeout,
    nested_calls_with_the_same_key_do_not_deadlock,
    lost_lock_cancels_the_body_with_expired,
    on_lost_continue_lets_the_body_finish,
    body_reads_its_fencing_token,
    dropped_and_panicking_calls_release_the_lock,
    the_default_wait_is_bounded,
);

#[derive(Debug)]
enum AppError {
    Lock(LockError),
    #[allow(dead_code)] // shown by `Debug` when a test fails
    App(&'static str),
}

impl From<LockError> for AppError {
    fn from(err: LockError) -> Self {
        AppError::Lock(err)
    }
}

impl AppError {
    fn lock_code(&self) -> Option<ErrorCode> {
        match self {
            AppError::Lock(e) => Some(e.code()),
            AppError::App(_) => None,
        }
    }
}

/// The critical section under test: counts who is inside while it sleeps.
#[distributed_lock(key = "order:{order_id}", ttl = "3s", manager = manager)]
async fn settle(
    manager: &LockManager,
    order_id: u64,
    detector: &OverlapDetector,
) -> Result<u64, AppError> {
    let _inside = detector.enter();
    sleep(Duration::from_millis(15)).await;
    tokio::task::yield_now().await;
    sleep(Duration::from_millis(5)).await;
    Ok(distlock::current_fencing_token().expect("inside a locked call"))
}

/// The same body without the lock: the detector's control.
async fn settle_unlocked(detector: &OverlapDetector) {
    let _inside = detector.enter();
    sleep(Duration::from_millis(15)).await;
    tokio::task::yield_now().await;
    sleep(Duration::from_millis(5)).await;
}

/// Two managers (two "processes"), 4 tasks each, 3 calls per task, one key.
async fn one_call_at_a_time_per_key_across_two_managers(fx: &Fixture) {
    // The control: without the lock the same calls overlap, so the detector
    // can see an overlap.
    let control = OverlapDetector::default();
    let unlocked: Vec<_> = (0..8)
        .map(|_| {
            let control = control.clone();
            tokio::spawn(async move { settle_unlocked(&control).await })
        })
        .collect();
    for task in unlocked {
        task.await.unwrap();
    }
    assert!(control.most_at_once() > 1, "the detector saw no overlap");

    let managers = [fx.manager(), fx.another().await];
    let detector = OverlapDetector::default();
    let mut tasks = Vec::new();
    for manager in &managers {
        for _ in 0..4 {
            let (manager, detector) = (manager.clone(), detector.clone());
            tasks.push(tokio::spawn(async move {
                let mut tokens = Vec::new();
                for _ in 0..3 {
                    tokens.push(settle(&manager, 1, &detector).await.unwrap());
                }
                tokens
            }));
        }
    }
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.extend(task.await.unwrap());
    }
    assert_eq!(detector.entries(), 24);
    assert_eq!(detector.most_at_once(), 1, "two calls ran at once");
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), 24, "every call had its own fencing token");
}

/// Waits in the body until `n` callers are inside at once: only possible
/// when calls with different keys do not exclude each other.
#[distributed_lock(key = "room:{room}", ttl = "3s", manager = manager)]
async fn meet(manager: &LockManager, room: u32, barrier: &Barrier) -> Result<(), AppError> {
    timeout(Duration::from_secs(3), barrier.wait())
        .await
        .map_err(|_| AppError::App("calls with different keys did not overlap"))?;
    Ok(())
}

async fn different_keys_run_concurrently(fx: &Fixture) {
    let (a, b) = (fx.manager(), fx.another().await);
    let barrier = Barrier::new(3);
    let (x, y, z) = tokio::join!(
        meet(&a, 1, &barrier),
        meet(&b, 2, &barrier),
        meet(&a, 3, &barrier)
    );
    x.unwrap();
    y.unwrap();
    z.unwrap();
}

#[distributed_lock(key = "order:{order_id}", wait = "300ms", ttl = "3s", manager = manager)]
async fn settle_or_give_up(
    manager: &LockManager,
    order_id: u64,
    ran: &AtomicBool,
) -> Result<(), AppError> {
    ran.store(true, Ordering::SeqCst);
    Ok(())
}

#[distributed_lock(key = "order:{order_id}", wait = "0s", ttl = "3s", manager = manager)]
async fn settle_if_free(
    manager: &LockManager,
    order_id: u64,
    ran: &AtomicBool,
) -> Result<(), AppError> {
    ran.store(true, Ordering::SeqCst);
    Ok(())
}

/// Another process holds the key (locked by name, without the macro): the
/// call gives up after `wait` with `Timeout`, and the body never runs.
async fn busy_lock_past_wait_is_a_timeout(fx: &Fixture) {
    let (ours, theirs) = (fx.manager(), fx.another().await);
    let held = theirs
        .new_lock("order:7", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let ran = AtomicBool::new(false);

    let started = Instant::now();
    let err = settle_or_give_up(&ours, 7, &ran).await.unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.lock_code(), Some(ErrorCode::Timeout), "{err:?}");
    assert!(
        waited >= Duration::from_millis(300),
        "gave up after {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");

    let started = Instant::now();
    let err = settle_if_free(&ours, 7, &ran).await.unwrap_err();
    assert_eq!(err.lock_code(), Some(ErrorCode::Timeout), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(!ran.load(Ordering::SeqCst), "the body ran without the lock");

    // Other keys are free meanwhile, and so is this one once released.
    settle_if_free(&ours, 8, &ran).await.unwrap();
    held.unlock().await.unwrap();
    ran.store(false, Ordering::SeqCst);
    settle_or_give_up(&ours, 7, &ran).await.unwrap();
    assert!(ran.load(Ordering::SeqCst));
}

#[distributed_lock(key = "account:{id}", ttl = "3s", manager = manager)]
async fn transfer(
    manager: &LockManager,
    peer: &LockManager,
    id: u32,
    other: u32,
) -> Result<(u64, u64, u64), AppError> {
    let outer = distlock::current_fencing_token().unwrap();
    // The same key again, in this task: runs under our lock.
    let inner = timeout(Duration::from_secs(3), audit(manager, id))
        .await
        .map_err(|_| AppError::App("nested call with the same key deadlocked"))??;
    // A different key is locked for real, and both are held now.
    let other_token = audit(manager, other).await?;
    // Another task is another caller: it must find the key busy.
    let spawned = tokio::spawn({
        let manager = manager.clone();
        async move { audit_if_free(&manager, id).await }
    });
    let busy = spawned.await.unwrap().unwrap_err();
    assert_eq!(busy.lock_code(), Some(ErrorCode::Timeout), "{busy:?}");
    // So is a nested call through another manager (another process), even
    // one on the same namespace.
    let elsewhere = audit_if_free(peer, id).await.unwrap_err();
    assert_eq!(
        elsewhere.lock_code(),
        Some(ErrorCode::Timeout),
        "{elsewhere:?}"
    );
    Ok((outer, inner, other_token))
}

#[distributed_lock(key = "account:{id}", ttl = "3s", manager = manager)]
async fn audit(manager: &LockManager, id: u32) -> Result<u64, AppError> {
    let lock = distlock::current_lock().unwrap();
    assert_eq!(lock.name(), format!("account:{id}"));
    assert!(manager.lock_info(lock.name()).await?.is_some());
    Ok(lock.fencing_token())
}

#[distributed_lock(key = "account:{id}", ttl = "3s", wait = "0s", manager = manager)]
async fn audit_if_free(manager: &LockManager, id: u32) -> Result<(), AppError> {
    Ok(())
}

async fn nested_calls_with_the_same_key_do_not_deadlock(fx: &Fixture) {
    let manager = fx.manager();
    let peer = fx.another().await;
    let (outer, inner, other) = timeout(Duration::from_secs(10), transfer(&manager, &peer, 1, 2))
        .await
        .expect("deadlocked")
        .unwrap();
    assert_eq!(inner, outer, "the nested call runs under the outer lock");
    assert_ne!(other, outer, "the other key is a lock of its own");
    assert!(manager.list_locks("account:").await.unwrap().is_empty());
}

/// Sleeps far longer than the test waits; `reached` tells whether the code
/// after the await ran.
#[distributed_lock(key = "report:{id}", ttl = "3s", manager = manager)]
async fn long_report(
    manager: &LockManager,
    id: u32,
    started: &Notify,
    reached: &AtomicBool,
) -> Result<(), AppError> {
    started.notify_one();
    sleep(Duration::from_secs(30)).await;
    reached.store(true, Ordering::SeqCst);
    Ok(())
}

/// The lock is taken away mid-body (an administrator's force-unlock from
/// another manager): the body stops at its await, the call says `Expired`.
async fn lost_lock_cancels_the_body_with_expired(fx: &Fixture) {
    let (ours, admin) = (fx.manager(), fx.another().await);
    let (started, reached) = (Notify::new(), AtomicBool::new(false));
    let call = long_report(&ours, 5, &started, &reached);
    let force = async {
        started.notified().await;
        assert!(admin.force_unlock("report:5").await.unwrap());
        Instant::now()
    };
    let (result, forced_at) = timeout(Duration::from_secs(10), async { tokio::join!(call, force) })
        .await
        .expect("the body was not cancelled");
    let err = result.unwrap_err();
    assert_eq!(err.lock_code(), Some(ErrorCode::Expired), "{err:?}");
    assert!(forced_at.elapsed() < Duration::from_secs(3));
    assert!(
        !reached.load(Ordering::SeqCst),
        "the body ran past its await"
    );
    // The name is free for the next caller.
    let again = admin.new_lock("report:5", LockOptions::default()).unwrap();
    assert!(again.try_lock().await.unwrap().is_some());
}

#[distributed_lock(key = "export:{id}", ttl = "3s", on_lost = "continue", manager = manager)]
async fn careful_export(
    manager: &LockManager,
    id: u32,
    started: &Notify,
) -> Result<&'static str, AppError> {
    let lock = distlock::current_lock().unwrap();
    started.notify_one();
    timeout(Duration::from_secs(5), lock.lost())
        .await
        .map_err(|_| AppError::App("never heard of the loss"))?;
    assert!(!lock.is_held());
    sleep(Duration::from_millis(20)).await; // still running after the loss
    Ok("saved progress and stopped")
}

async fn on_lost_continue_lets_the_body_finish(fx: &Fixture) {
    let (ours, admin) = (fx.manager(), fx.another().await);
    let started = Notify::new();
    let force = async {
        started.notified().await;
        assert!(admin.force_unlock("export:1").await.unwrap());
    };
    let (result, ()) = tokio::join!(careful_export(&ours, 1, &started), force);
    assert_eq!(result.unwrap(), "saved progress and stopped");
}

#[distributed_lock(key = "ledger:{id}", ttl = "3s", manager = manager)]
async fn append(manager: &LockManager, id: u32) -> Result<(u64, u64), AppError> {
    let token = distlock::current_fencing_token().unwrap();
    let info = manager.lock_info(&format!("ledger:{id}")).await?.unwrap();
    Ok((token, info.fencing_token))
}

async fn body_reads_its_fencing_token(fx: &Fixture) {
    let (a, b) = (fx.manager(), fx.another().await);
    assert_eq!(distlock::current_fencing_token(), None);
    let mut last = 0;
    for manager in [&a, &b, &a] {
        let (token, holders) = append(manager, 1).await.unwrap();
        assert_eq!(token, holders, "the token is the holder's, as etcd says");
        assert!(token > last, "tokens grow: {token} after {last}");
        last = token;
    }
    assert!(distlock::current_lock().is_none());
}

#[distributed_lock(key = "batch:{id}", ttl = "3s", manager = manager)]
async fn explode(manager: &LockManager, id: u32, started: &Notify) -> Result<(), AppError> {
    started.notify_one();
    sleep(Duration::from_millis(20)).await;
    panic!("intentional panic in a locked body (test)");
}

/// Waits until `name` can be taken by `manager`, at most `within`.
async fn free_within(manager: &LockManager, name: &str, within: Duration) -> bool {
    let lock = manager.new_lock(name, LockOptions::default()).unwrap();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(guard) = lock.try_lock().await.unwrap() {
            guard.unlock().await.unwrap();
            return true;
        }
        sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A caller that gives up on a running call (drops its future), and a body
/// that panics, both leave the lock free well before its TTL.
async fn dropped_and_panicking_calls_release_the_lock(fx: &Fixture) {
    let (ours, theirs) = (fx.manager(), fx.another().await);
    let (started, reached) = (Notify::new(), AtomicBool::new(false));
    let call = long_report(&ours, 3, &started, &reached);
    let gave_up = timeout(Duration::from_millis(300), call).await;
    assert!(gave_up.is_err(), "the call should still have been running");
    assert!(
        free_within(&theirs, "report:3", Duration::from_secs(2)).await,
        "a dropped call kept its lock"
    );

    let spawned = tokio::spawn({
        let ours = ours.clone();
        async move { explode(&ours, 1, &Notify::new()).await }
    });
    assert!(spawned.await.unwrap_err().is_panic());
    assert!(
        free_within(&theirs, "batch:1", Duration::from_secs(2)).await,
        "a panicking call kept its lock"
    );
}

#[tokio::test]
async fn closing_the_manager_mid_body_cancels_with_expired() {
    let manager = LockManager::in_memory();
    let (started, reached) = (Notify::new(), AtomicBool::new(false));
    let close = async {
        started.notified().await;
        manager.close().await;
    };
    let (result, ()) = tokio::join!(long_report(&manager, 1, &started, &reached), close);
    assert_eq!(result.unwrap_err().lock_code(), Some(ErrorCode::Expired));
    assert!(!reached.load(Ordering::SeqCst));
    // A closed manager refuses further calls.
    let err = long_report(&manager, 2, &started, &reached)
        .await
        .unwrap_err();
    assert_eq!(err.lock_code(), Some(ErrorCode::Closed), "{err:?}");
}

#[distributed_lock(key = "nightly", ttl = "2s", renew_interval = "500ms", manager = manager)]
async fn nightly(
    manager: &LockManager,
    started: &Notify,
    reached: &AtomicBool,
) -> Result<(), AppError> {
    started.notify_one();
    sleep(Duration::from_secs(30)).await;
    reached.store(true, Ordering::SeqCst);
    Ok(())
}

/// The holder's connection to etcd is cut: its manager decides the lock is
/// lost before etcd can hand it on, so the body is cancelled (and the call
/// returns `Expired`) before a manager connected directly takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_partitioned_holder_is_cancelled_before_the_takeover() {
    support::init_tracing();
    let etcd = Etcd::start().await;
    let ns = etcd.namespace();
    let proxy = TcpProxy::start_for(&etcd.endpoints()[0]).await;
    let config = EtcdConfig::new([proxy.endpoint()]).request_timeout(Duration::from_millis(500));
    let partitioned = LockManager::connect(config, &ns).await.unwrap();
    let direct = support::connect(&etcd, &ns).await;
    let (started, reached) = (Notify::new(), AtomicBool::new(false));

    let call = async {
        let result = nightly(&partitioned, &started, &reached).await;
        (result, Instant::now())
    };
    let cut_and_take_over = async {
        started.notified().await;
        proxy.blackhole();
        let cut = Instant::now();
        let lock = direct.new_lock("nightly", support::short_ttl(2)).unwrap();
        let guard = lock.lock_timeout(Duration::from_secs(15)).await.unwrap();
        (cut, Instant::now(), guard)
    };
    let ((result, returned_at), (cut, taken_at, guard)) = timeout(Duration::from_secs(20), async {
        tokio::join!(call, cut_and_take_over)
    })
    .await
    .expect("neither cancelled nor taken over");
    let err = result.unwrap_err();
    assert_eq!(err.lock_code(), Some(ErrorCode::Expired), "{err:?}");
    assert!(
        !reached.load(Ordering::SeqCst),
        "the body ran past its await"
    );
    assert!(
        returned_at <= taken_at,
        "the lock was taken over {:?} before the partitioned call stopped",
        returned_at - taken_at
    );
    assert!(
        taken_at - cut >= Duration::from_secs(1),
        "taken over too early"
    );
    guard.unlock().await.unwrap();
}

/// No `wait`, no `max_retries`: the defaults.
#[distributed_lock(key = "order:{order_id}", ttl = "3s", manager = manager)]
async fn settle_with_defaults(manager: &LockManager, order_id: u64) -> Result<(), AppError> {
    Ok(())
}

/// Issue #9, defect 4: a busy lock and the default wait fail with `Timeout`
/// after `distlock::DEFAULT_WAIT` (10 s, as the layer), instead of hanging.
async fn the_default_wait_is_bounded(fx: &Fixture) {
    let (ours, theirs) = (fx.manager(), fx.another().await);
    let held = theirs
        .new_lock("order:70", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let started = Instant::now();
    let err = timeout(Duration::from_secs(30), settle_with_defaults(&ours, 70))
        .await
        .expect("the default wait hangs")
        .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.lock_code(), Some(ErrorCode::Timeout), "{err:?}");
    assert!(waited >= distlock::DEFAULT_WAIT, "gave up after {waited:?}");
    assert!(
        waited < distlock::DEFAULT_WAIT + Duration::from_secs(5),
        "waited {waited:?}"
    );
    held.unlock().await.unwrap();
}

/// Defect 4 during an outage: our connection to etcd is blackholed while
/// the call waits for a lock another process holds; with the default
/// arguments the call still ends within the default wait. (Here the core
/// ends it first, when the session is lost, about a TTL in; the wait bounds
/// what the session does not, see `the_default_wait_is_bounded`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_outage_with_default_arguments_fails_in_bounded_time() {
    support::init_tracing();
    let etcd = Etcd::start().await;
    let proxy = TcpProxy::start_for(&etcd.endpoints()[0]).await;
    let config = EtcdConfig::new([proxy.endpoint()]).request_timeout(Duration::from_millis(500));
    let ns = etcd.namespace();
    let ours = LockManager::connect(config, &ns).await.unwrap();
    let theirs = support::connect(&etcd, &ns).await;
    // Healthy first: the manager has its lease when the outage starts.
    settle_with_defaults(&ours, 71).await.unwrap();
    let held = theirs
        .new_lock("order:71", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let started = Instant::now();
    let outage = async {
        sleep(Duration::from_millis(500)).await;
        proxy.blackhole();
    };
    let (result, ()) = timeout(Duration::from_secs(60), async {
        tokio::join!(settle_with_defaults(&ours, 71), outage)
    })
    .await
    .expect("the call hangs during the outage");
    let waited = started.elapsed();
    let err = result.unwrap_err();
    assert!(err.lock_code().is_some(), "{err:?}");
    assert!(
        waited < distlock::DEFAULT_WAIT + Duration::from_secs(5),
        "waited {waited:?}"
    );
    held.unlock().await.unwrap();
}
