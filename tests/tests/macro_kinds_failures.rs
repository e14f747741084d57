//! `#[distributed_lock]`'s kinds when things go wrong, on a real etcd
//! (`etcd::`) and in memory (`memory::`): a permit, a write lock or a name
//! of a multi-lock lost while the body runs cancels it with `Expired` (or,
//! with `on_lost = "continue"`, tells the body); a rendered key that is no
//! valid lock name, and a run-time number of permits out of range or
//! different from the other holders', are typed errors and the body does
//! not run.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use distlock::testing::{Fault, Faults, Op};
use distlock::{distributed_lock, ErrorCode, LockError, LockManager, LockOptions};
use support::{faulty, on_both_backends, Fixture};
use tokio::sync::Notify;
use tokio::time::{sleep, timeout, Instant};

on_both_backends!(
    a_lost_permit_cancels_the_body,
    a_lost_write_lock_cancels_the_body,
    a_lost_name_cancels_a_transfer,
    on_lost_continue_hears_of_any_name_lost,
    invalid_rendered_keys_are_typed_errors,
    run_time_permits_are_checked_at_each_call,
    a_keys_call_inside_a_hold_of_one_of_its_names_is_bounded,
    a_keys_call_releases_its_names_in_one_transaction,
);

#[derive(Debug)]
enum AppError {
    Lock(LockError),
}

impl From<LockError> for AppError {
    fn from(err: LockError) -> Self {
        AppError::Lock(err)
    }
}

impl AppError {
    fn lock(&self) -> &LockError {
        let AppError::Lock(err) = self;
        err
    }
}

/// Runs `call` while `cut` takes its hold away once the body has started;
/// the call must end within 15 s. What the call returned.
async fn cut_short<T>(
    started: &Notify,
    call: impl std::future::Future<Output = T>,
    cut: impl std::future::Future<Output = ()>,
) -> T {
    let cut = async {
        started.notified().await;
        cut.await;
    };
    let (result, ()) = timeout(Duration::from_secs(15), async { tokio::join!(call, cut) })
        .await
        .expect("the body was not cancelled");
    result
}

/// Waits until `free` says so, at most 15 s.
async fn eventually(what: &str, free: impl AsyncFn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !free().await {
        assert!(Instant::now() < deadline, "{what}");
        sleep(Duration::from_millis(50)).await;
    }
}

#[distributed_lock(key = "crawl:{host}", permits = 2, ttl = "2s", manager = manager)]
async fn slow_crawl(
    manager: &LockManager,
    host: &str,
    started: &Notify,
    reached: &AtomicBool,
) -> Result<(), AppError> {
    started.notify_one();
    sleep(Duration::from_secs(30)).await;
    reached.store(true, Ordering::SeqCst);
    Ok(())
}

/// The holder's keep-alives fail (injected): its manager gives the lease,
/// and the permit on it, up within the TTL; the body is cancelled.
async fn a_lost_permit_cancels_the_body(fx: &Fixture) {
    let faults = Faults::new();
    faults.request_timeout(Duration::from_millis(800));
    let ours = fx.another().await.with_faults(&faults);
    let (started, reached) = (Notify::new(), AtomicBool::new(false));
    let result = cut_short(
        &started,
        slow_crawl(&ours, "lost", &started, &reached),
        async {
            faults.always(Op::KeepAlive, Fault::Fail);
        },
    )
    .await;
    faults.heal();
    let err = result.unwrap_err();
    assert_eq!(err.lock().code(), ErrorCode::Expired, "{err:?}");
    assert!(
        err.lock()
            .to_string()
            .contains("a permit of semaphore `crawl:lost`"),
        "{err:?}"
    );
    assert!(
        !reached.load(Ordering::SeqCst),
        "the body ran past its await"
    );
    // Both permits come back (the lost one with its lease).
    let theirs = fx.another().await;
    let semaphore = theirs
        .new_semaphore("crawl:lost", 2, LockOptions::default())
        .unwrap();
    eventually("the lost permit never came back", async || {
        semaphore_is_free(&theirs, "crawl:lost").await
    })
    .await;
    let both = (
        semaphore.try_acquire().await.unwrap(),
        semaphore.try_acquire().await.unwrap(),
    );
    assert!(both.0.is_some() && both.1.is_some());
}

async fn semaphore_is_free(manager: &LockManager, name: &str) -> bool {
    manager.semaphore_info(name).await.unwrap().is_none()
}

#[distributed_lock(key = "doc:{id}", write, ttl = "3s", manager = manager)]
async fn slow_edit(
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

/// An administrator force-unlocks the write lock's key from another
/// manager: the body stops at its await.
async fn a_lost_write_lock_cancels_the_body(fx: &Fixture) {
    let (ours, admin) = (fx.manager(), fx.another().await);
    let (started, reached) = (Notify::new(), AtomicBool::new(false));
    let result = cut_short(&started, slow_edit(&ours, 5, &started, &reached), async {
        assert!(admin.force_unlock("doc:5").await.unwrap());
    })
    .await;
    let err = result.unwrap_err();
    assert_eq!(err.lock().code(), ErrorCode::Expired, "{err:?}");
    assert!(
        err.lock().to_string().contains("the write lock of `doc:5`"),
        "{err:?}"
    );
    assert!(
        !reached.load(Ordering::SeqCst),
        "the body ran past its await"
    );
    let rw = admin.new_rw_lock("doc:5", LockOptions::default()).unwrap();
    assert!(rw.try_write().await.unwrap().is_some());
}

#[distributed_lock(keys = ["acct:{from}", "acct:{to}"], ttl = "3s", manager = manager)]
async fn slow_transfer(
    manager: &LockManager,
    from: u32,
    to: u32,
    started: &Notify,
    reached: &AtomicBool,
) -> Result<(), AppError> {
    started.notify_one();
    sleep(Duration::from_secs(30)).await;
    reached.store(true, Ordering::SeqCst);
    Ok(())
}

/// One name of two is force-unlocked: the transfer is cancelled, and the
/// other name is released with it.
async fn a_lost_name_cancels_a_transfer(fx: &Fixture) {
    let (ours, admin) = (fx.manager(), fx.another().await);
    let (started, reached) = (Notify::new(), AtomicBool::new(false));
    let result = cut_short(
        &started,
        slow_transfer(&ours, 1, 2, &started, &reached),
        async {
            assert!(admin.force_unlock("acct:2").await.unwrap());
        },
    )
    .await;
    let err = result.unwrap_err();
    assert_eq!(err.lock().code(), ErrorCode::Expired, "{err:?}");
    assert!(
        err.lock()
            .to_string()
            .contains("the multi-lock of `acct:1`, `acct:2`"),
        "{err:?}"
    );
    assert!(
        !reached.load(Ordering::SeqCst),
        "the body ran past its await"
    );
    assert!(
        admin.lock_info("acct:1").await.unwrap().is_none(),
        "acct:1 kept"
    );
    let both = admin
        .new_multi_lock(["acct:1", "acct:2"], LockOptions::default())
        .unwrap();
    assert!(both.try_lock().await.unwrap().is_some());
}

#[distributed_lock(keys = ["acct:{from}", "acct:{to}"], ttl = "3s", on_lost = "continue", manager = manager)]
async fn careful_transfer(
    manager: &LockManager,
    from: u32,
    to: u32,
    started: &Notify,
) -> Result<&'static str, AppError> {
    let lock = distlock::current_lock().unwrap();
    started.notify_one();
    timeout(Duration::from_secs(10), lock.lost())
        .await
        .expect("never heard of the loss");
    assert!(!lock.is_held());
    assert_eq!(
        distlock::current_fencing_token(),
        None,
        "no token once lost"
    );
    sleep(Duration::from_millis(20)).await; // still running after the loss
    Ok("stopped on its own terms")
}

/// The first name of the transfer is lost (the body's innermost scope is
/// the other's): `current_lock()` covers both.
async fn on_lost_continue_hears_of_any_name_lost(fx: &Fixture) {
    let (ours, admin) = (fx.manager(), fx.another().await);
    let started = Notify::new();
    let result = cut_short(&started, careful_transfer(&ours, 3, 4, &started), async {
        assert!(admin.force_unlock("acct:3").await.unwrap());
    })
    .await;
    assert_eq!(result.unwrap(), "stopped on its own terms");
    assert!(admin.lock_info("acct:4").await.unwrap().is_none());
}

#[distributed_lock(key = "{name}", permits = 2, manager = manager)]
async fn permit_of(manager: &LockManager, name: &str, ran: &AtomicUsize) -> Result<(), AppError> {
    ran.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[distributed_lock(key = "{name}", read, manager = manager)]
async fn read_of(manager: &LockManager, name: &str, ran: &AtomicUsize) -> Result<(), AppError> {
    ran.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[distributed_lock(key = "{name}", write, manager = manager)]
async fn write_of(manager: &LockManager, name: &str, ran: &AtomicUsize) -> Result<(), AppError> {
    ran.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[distributed_lock(keys = ["fine", "{name}"], manager = manager)]
async fn all_of(manager: &LockManager, name: &str, ran: &AtomicUsize) -> Result<(), AppError> {
    ran.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[distributed_lock(key = "{name}", permits = 2, skip_if_busy, manager = manager)]
async fn scheduled_of(
    manager: &LockManager,
    name: &str,
    ran: &AtomicUsize,
) -> Result<Option<()>, AppError> {
    ran.fetch_add(1, Ordering::SeqCst);
    Ok(Some(()))
}

/// Keys rendered at run time that are no lock names (empty, a NUL, over
/// 1 KiB): `InvalidKey` for every kind, the body not run; a scheduled job
/// reports it rather than skipping quietly.
async fn invalid_rendered_keys_are_typed_errors(fx: &Fixture) {
    let manager = fx.manager();
    let ran = AtomicUsize::new(0);
    let long = "x".repeat(2000);
    for name in ["", "a\0b", long.as_str()] {
        let results = [
            permit_of(&manager, name, &ran).await,
            read_of(&manager, name, &ran).await,
            write_of(&manager, name, &ran).await,
            all_of(&manager, name, &ran).await,
            scheduled_of(&manager, name, &ran).await.map(|_| ()),
        ];
        for result in results {
            let err = result.unwrap_err();
            assert_eq!(
                err.lock().code(),
                ErrorCode::InvalidKey,
                "{name:?}: {err:?}"
            );
        }
    }
    assert_eq!(ran.load(Ordering::SeqCst), 0, "a body ran");
    assert!(manager.list_locks("").await.unwrap().is_empty());
}

/// `permits` given as an expression, evaluated at each call.
#[distributed_lock(key = "pool:{name}", permits = limit, manager = manager)]
async fn pooled(
    manager: &LockManager,
    name: &str,
    limit: u32,
    ran: &AtomicUsize,
) -> Result<u32, AppError> {
    ran.fetch_add(1, Ordering::SeqCst);
    let info = manager.semaphore_info(&format!("pool:{name}")).await?;
    Ok(info.expect("held").permits)
}

/// Out of range (0, over `MAX_PERMITS`), or unlike the count the holders
/// gave: `InvalidOptions`, the body not run.
async fn run_time_permits_are_checked_at_each_call(fx: &Fixture) {
    let (ours, theirs) = (fx.manager(), fx.another().await);
    let ran = AtomicUsize::new(0);
    for limit in [0, distlock::MAX_PERMITS + 1] {
        let err = pooled(&ours, "a", limit, &ran).await.unwrap_err();
        assert_eq!(
            err.lock().code(),
            ErrorCode::InvalidOptions,
            "{limit}: {err:?}"
        );
    }
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(pooled(&ours, "a", 3, &ran).await.unwrap(), 3);
    assert_eq!(
        pooled(&ours, "a", distlock::MAX_PERMITS, &ran)
            .await
            .unwrap(),
        distlock::MAX_PERMITS
    );

    let held = theirs
        .new_semaphore("pool:b", 3, LockOptions::default())
        .unwrap()
        .acquire()
        .await
        .unwrap();
    let err = pooled(&ours, "b", 2, &ran).await.unwrap_err();
    assert_eq!(err.lock().code(), ErrorCode::InvalidOptions, "{err:?}");
    assert_eq!(
        ran.load(Ordering::SeqCst),
        2,
        "the body ran with another count"
    );
    held.release().await.unwrap();
}

#[distributed_lock(key = "acct:{id}", wait = "5s", manager = manager)]
async fn audit_then_transfer(manager: &LockManager, id: u32) -> Result<ErrorCode, AppError> {
    let started = Instant::now();
    let err = transfer_quickly(manager, id, id + 1).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited past its wait"
    );
    Ok(err.lock().code())
}

#[distributed_lock(keys = ["acct:{from}", "acct:{to}"], wait = "300ms", manager = manager)]
async fn transfer_quickly(manager: &LockManager, from: u32, to: u32) -> Result<(), AppError> {
    Ok(())
}

/// A multi-lock takes every name at once, so it cannot run as a child
/// section of a hold of one of them: nested in a call holding one of its
/// names, it waits for that hold like anyone else, and gives up after its
/// `wait` with `Timeout`, never hanging.
async fn a_keys_call_inside_a_hold_of_one_of_its_names_is_bounded(fx: &Fixture) {
    let manager = fx.manager();
    let code = timeout(Duration::from_secs(10), audit_then_transfer(&manager, 10))
        .await
        .expect("hung")
        .unwrap();
    assert_eq!(code, ErrorCode::Timeout);
    // Nothing of the attempt is left behind (its keys leave in the
    // background: soon, not at once).
    eventually("the transfer's keys were left behind", async || {
        manager.list_locks("acct:").await.unwrap().is_empty()
    })
    .await;
}

#[distributed_lock(keys = ["acct:{from}", "acct:{to}"], manager = manager)]
async fn transfer_once(manager: &LockManager, from: u32, to: u32) -> Result<(), AppError> {
    Ok(())
}

/// A `keys` call's names go as a multi-lock's do: their keys deleted in one
/// transaction (one delete call, also when its first tries fail), and every
/// name free afterwards.
async fn a_keys_call_releases_its_names_in_one_transaction(fx: &Fixture) {
    let faults = Faults::new();
    let manager = faulty(fx, &faults).await;
    let deletes = || faults.calls(Op::Delete);
    let before = deletes();
    transfer_once(&manager, 1, 2).await.unwrap();
    assert_eq!(deletes() - before, 1, "one transaction for both names");
    faults.inject(Op::Delete, Fault::Fail, 2);
    let before = deletes();
    timeout(Duration::from_secs(10), transfer_once(&manager, 1, 2))
        .await
        .expect("the call hung")
        .unwrap();
    assert_eq!(
        deletes() - before,
        3,
        "two failed tries, then one that applied"
    );
    let observer = fx.another().await;
    for name in ["acct:1", "acct:2"] {
        let lock = observer.new_lock(name, LockOptions::default()).unwrap();
        let held = timeout(Duration::from_secs(5), lock.lock()).await;
        held.expect("a name left held")
            .unwrap()
            .unlock()
            .await
            .unwrap();
    }
}
