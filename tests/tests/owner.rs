//! The owner model (DESIGN §7, issue #9) on a real etcd (`etcd::`) and in
//! memory (`memory::`): inside a locked call, same-key work runs under the
//! call's hold; nested calls reenter at every level; *concurrent* same-key
//! sections inside one owner never overlap; a nested call keeps its own
//! `wait` and `on_lost`; a loss at the outer level is every child's loss; a
//! body that completes as the loss is noticed returns its result; `Lock`
//! handles inside a scope.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use distlock::{distributed_lock, ErrorCode, LockError, LockManager, LockOptions};
use support::{on_both_backends, Fixture, OverlapDetector};
use tokio::sync::Notify;
use tokio::time::{sleep, timeout, Instant};

on_both_backends!(
    concurrent_same_key_calls_inside_a_locked_call_never_overlap,
    nested_calls_reenter_at_every_level,
    a_nested_call_keeps_its_own_wait,
    a_loss_at_the_outer_level_is_every_childs_loss,
    a_body_that_completes_as_the_loss_is_noticed_returns_its_result,
    lock_handles_inside_a_scope,
    a_guard_scope_lets_locked_calls_run_under_the_guard,
    a_nested_calls_current_lock_ends_with_the_call,
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

/// A same-key critical section that counts who is inside while it waits.
#[distributed_lock(key = "order:{id}", ttl = "3s", wait = "5s", manager = manager)]
async fn settle(
    manager: &LockManager,
    id: u64,
    detector: &OverlapDetector,
) -> Result<u64, AppError> {
    let _inside = detector.enter();
    sleep(Duration::from_millis(30)).await;
    tokio::task::yield_now().await;
    sleep(Duration::from_millis(10)).await;
    Ok(distlock::current_fencing_token().unwrap())
}

/// The same sections without the lock: the detector's control.
async fn settle_unlocked(detector: &OverlapDetector) {
    let _inside = detector.enter();
    sleep(Duration::from_millis(30)).await;
    tokio::task::yield_now().await;
    sleep(Duration::from_millis(10)).await;
}

/// Issue #9, defect 2: `join!(settle(7), settle(7), settle(7))` inside a
/// locked call on `order:7`.
#[distributed_lock(key = "order:{id}", ttl = "3s", manager = manager)]
async fn settle_batch(
    manager: &LockManager,
    id: u64,
    detector: &OverlapDetector,
) -> Result<(u64, [u64; 3]), AppError> {
    let outer = distlock::current_fencing_token().unwrap();
    let (a, b, c) = tokio::join!(
        settle(manager, id, detector),
        settle(manager, id, detector),
        settle(manager, id, detector)
    );
    Ok((outer, [a?, b?, c?]))
}

async fn concurrent_same_key_calls_inside_a_locked_call_never_overlap(fx: &Fixture) {
    // The control: the same join without locks overlaps.
    let control = OverlapDetector::default();
    tokio::join!(
        settle_unlocked(&control),
        settle_unlocked(&control),
        settle_unlocked(&control)
    );
    assert_eq!(control.most_at_once(), 3, "the detector saw no overlap");

    let manager = fx.manager();
    let detector = OverlapDetector::default();
    let (outer, inner) = timeout(
        Duration::from_secs(10),
        settle_batch(&manager, 7, &detector),
    )
    .await
    .expect("deadlocked")
    .unwrap();
    assert_eq!(detector.entries(), 3);
    assert_eq!(
        detector.most_at_once(),
        1,
        "two same-key sections ran at once"
    );
    assert_eq!(inner, [outer; 3], "the sections ran under the outer hold");
    assert!(manager.list_locks("order:").await.unwrap().is_empty());
}

/// Calls itself `depth` times on one key, then runs two concurrent sections
/// at the innermost level.
#[distributed_lock(key = "tree:{id}", ttl = "3s", wait = "2s", manager = manager)]
async fn descend(
    manager: &LockManager,
    id: u64,
    depth: u32,
    detector: &OverlapDetector,
) -> Result<Vec<u64>, AppError> {
    let token = distlock::current_fencing_token().unwrap();
    if depth == 0 {
        let (a, b) = tokio::join!(leaf(manager, id, detector), leaf(manager, id, detector));
        return Ok(vec![token, a?, b?]);
    }
    let mut below = Box::pin(descend(manager, id, depth - 1, detector)).await?;
    below.push(token);
    Ok(below)
}

#[distributed_lock(key = "tree:{id}", ttl = "3s", wait = "2s", manager = manager)]
async fn leaf(manager: &LockManager, id: u64, detector: &OverlapDetector) -> Result<u64, AppError> {
    settle_unlocked(detector).await;
    Ok(distlock::current_fencing_token().unwrap())
}

async fn nested_calls_reenter_at_every_level(fx: &Fixture) {
    let manager = fx.manager();
    let detector = OverlapDetector::default();
    let tokens = timeout(Duration::from_secs(10), descend(&manager, 1, 4, &detector))
        .await
        .expect("a nested call deadlocked")
        .unwrap();
    assert_eq!(tokens.len(), 7);
    assert!(tokens.iter().all(|t| *t == tokens[0]), "{tokens:?}");
    assert_eq!(detector.entries(), 2);
    assert_eq!(detector.most_at_once(), 1, "two leaves overlapped");
    // Another owner meanwhile would have waited: the key is free only now.
    let other = fx.another().await;
    assert!(other
        .new_lock("tree:1", LockOptions::default())
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .is_some());
}

/// Holds its section until `release` is notified.
#[distributed_lock(key = "doc:{id}", ttl = "3s", manager = manager)]
async fn hold_section(
    manager: &LockManager,
    id: u64,
    entered: &Notify,
    release: &Notify,
) -> Result<(), AppError> {
    entered.notify_one();
    release.notified().await;
    Ok(())
}

#[distributed_lock(key = "doc:{id}", ttl = "3s", wait = "300ms", manager = manager)]
async fn edit_patiently(manager: &LockManager, id: u64, ran: &AtomicBool) -> Result<(), AppError> {
    ran.store(true, Ordering::SeqCst);
    Ok(())
}

#[distributed_lock(key = "doc:{id}", ttl = "3s", skip_if_busy, manager = manager)]
async fn edit_if_free(manager: &LockManager, id: u64, ran: &AtomicBool) -> Option<()> {
    ran.store(true, Ordering::SeqCst);
    Some(())
}

/// Outer call on `doc:{id}`: one section holds the key while two siblings
/// try it with their own `wait` (300 ms) and `skip_if_busy`.
#[distributed_lock(key = "doc:{id}", ttl = "3s", manager = manager)]
async fn review(manager: &LockManager, id: u64) -> Result<(Duration, bool, bool), AppError> {
    let (entered, release) = (Notify::new(), Notify::new());
    let ran = AtomicBool::new(false);
    let skipped_ran = AtomicBool::new(false);
    let holder = hold_section(manager, id, &entered, &release);
    let siblings = async {
        entered.notified().await;
        let started = Instant::now();
        let err = edit_patiently(manager, id, &ran).await.unwrap_err();
        assert_eq!(err.lock_code(), Some(ErrorCode::Timeout), "{err:?}");
        let waited = started.elapsed();
        assert_eq!(edit_if_free(manager, id, &skipped_ran).await, None);
        release.notify_one();
        waited
    };
    let (held, waited) = tokio::join!(holder, siblings);
    held?;
    // The section is free again: the patient sibling gets in now.
    edit_patiently(manager, id, &ran).await?;
    Ok((
        waited,
        skipped_ran.load(Ordering::SeqCst),
        ran.load(Ordering::SeqCst),
    ))
}

async fn a_nested_call_keeps_its_own_wait(fx: &Fixture) {
    let manager = fx.manager();
    let (waited, skipped_ran, ran_later) = timeout(Duration::from_secs(10), review(&manager, 3))
        .await
        .expect("a sibling section waited past its own wait")
        .unwrap();
    assert!(
        waited >= Duration::from_millis(300),
        "gave up after {waited:?}"
    );
    assert!(waited < Duration::from_secs(2), "waited {waited:?}");
    assert!(
        !skipped_ran,
        "skip_if_busy ran its body while a sibling held the key"
    );
    assert!(ran_later);
}

#[distributed_lock(key = "export:{id}", ttl = "3s", manager = manager)]
async fn export_part(
    manager: &LockManager,
    id: u64,
    started: &Notify,
    reached: &AtomicBool,
) -> Result<(), AppError> {
    started.notify_one();
    sleep(Duration::from_secs(30)).await;
    reached.store(true, Ordering::SeqCst);
    Ok(())
}

/// The outer call continues when lost; its child (cancel, the default) is
/// cancelled, and a child started after the loss fails at once.
#[distributed_lock(key = "export:{id}", ttl = "3s", on_lost = "continue", manager = manager)]
async fn export(
    manager: &LockManager,
    id: u64,
    started: &Notify,
    reached: &AtomicBool,
) -> Result<(Option<ErrorCode>, Option<ErrorCode>), AppError> {
    let first = export_part(manager, id, started, reached).await;
    let second = timeout(
        Duration::from_secs(2),
        export_part(manager, id, &Notify::new(), reached),
    )
    .await
    .map_err(|_| AppError::App("a child of a lost hold waited"))?;
    Ok((
        first.err().and_then(|e| e.lock_code()),
        second.err().and_then(|e| e.lock_code()),
    ))
}

async fn a_loss_at_the_outer_level_is_every_childs_loss(fx: &Fixture) {
    let (ours, admin) = (fx.manager(), fx.another().await);
    let (started, reached) = (Notify::new(), AtomicBool::new(false));
    let force = async {
        started.notified().await;
        assert!(admin.force_unlock("export:5").await.unwrap());
    };
    let (result, ()) = timeout(Duration::from_secs(10), async {
        tokio::join!(export(&ours, 5, &started, &reached), force)
    })
    .await
    .expect("the child was not cancelled");
    let (first, second) = result.unwrap();
    assert_eq!(first, Some(ErrorCode::Expired), "the running child");
    assert_eq!(second, Some(ErrorCode::Expired), "a child after the loss");
    assert!(
        !reached.load(Ordering::SeqCst),
        "a child ran past its await"
    );
}

/// Returns as soon as the loss is heard: the loss is noticed in the very poll
/// in which the body completes.
#[distributed_lock(key = "invoice:{id}", ttl = "3s", manager = manager)]
async fn finish_on_loss(manager: &LockManager, id: u64, started: &Notify) -> Result<u32, AppError> {
    let lost = distlock::current_lock().unwrap().lost();
    started.notify_one();
    lost.await;
    Ok(42)
}

/// Issue #9, defect 5.
async fn a_body_that_completes_as_the_loss_is_noticed_returns_its_result(fx: &Fixture) {
    let (ours, admin) = (fx.manager(), fx.another().await);
    let started = Notify::new();
    let force = async {
        started.notified().await;
        assert!(admin.force_unlock("invoice:9").await.unwrap());
    };
    let (result, ()) = timeout(Duration::from_secs(10), async {
        tokio::join!(finish_on_loss(&ours, 9, &started), force)
    })
    .await
    .expect("the loss was never heard");
    assert_eq!(result.unwrap(), 42, "completed work reported as lost");
}

/// Inside a locked call: handles on the key.
#[distributed_lock(key = "stock:{id}", ttl = "3s", manager = manager)]
async fn restock(manager: &LockManager, peer: &LockManager, id: u64) -> Result<(), AppError> {
    let name = format!("stock:{id}");
    let outer = distlock::current_fencing_token().unwrap();
    let within = Duration::from_secs(2);

    // A fresh handle enters a child section: no deadlock, the outer token.
    let handle = manager.new_lock(&name, LockOptions::default())?;
    let first = timeout(within, handle.lock())
        .await
        .map_err(|_| AppError::App("handle deadlocked"))??;
    assert_eq!(first.fencing_token(), outer);
    // The same handle again: reentrant, not a second section (no deadlock).
    let second = timeout(within, handle.lock())
        .await
        .map_err(|_| AppError::App("handle not reentrant"))??;
    // Another handle's section waits for this one: it is busy now.
    let other = manager.new_lock(&name, LockOptions::default())?;
    assert!(other.try_lock().await?.is_none(), "two sections at once");
    second.unlock().await?;
    assert!(
        other.try_lock().await?.is_none(),
        "the first section ended early"
    );
    first.unlock().await?;
    let third = other.try_lock().await?.expect("the section was not freed");
    assert_eq!(third.fencing_token(), outer);
    drop(third);
    // A non-reentrant handle refuses a second acquisition, as outside scopes.
    let strict = manager.new_lock(&name, LockOptions::default().reentrant(false))?;
    let strict_guard = strict.lock_timeout(within).await?;
    let again = strict.lock_timeout(within).await.unwrap_err();
    assert_eq!(again.code(), ErrorCode::AlreadyHeld, "{again:?}");
    drop(strict_guard);

    // Two handles in `join!` take turns.
    let detector = OverlapDetector::default();
    let section = |detector: OverlapDetector| {
        let name = name.clone();
        async move {
            let guard = manager
                .new_lock(name, LockOptions::default())?
                .lock_timeout(within)
                .await?;
            settle_unlocked(&detector).await;
            guard.unlock().await
        }
    };
    let (a, b) = tokio::join!(section(detector.clone()), section(detector.clone()));
    a?;
    b?;
    assert_eq!(
        detector.most_at_once(),
        1,
        "two handles' sections overlapped"
    );

    // Another task, and another manager, are other owners: busy.
    let spawned = tokio::spawn({
        let (manager, name) = (manager.clone(), name.clone());
        async move {
            manager
                .new_lock(name, LockOptions::default())?
                .try_lock()
                .await
                .map(|g| g.is_none())
        }
    });
    assert!(spawned.await.unwrap()?, "a spawned task ran under our hold");
    assert!(peer
        .new_lock(&name, LockOptions::default())?
        .try_lock()
        .await?
        .is_none());
    Ok(())
}

async fn lock_handles_inside_a_scope(fx: &Fixture) {
    let (manager, peer) = (fx.manager(), fx.another().await);
    timeout(Duration::from_secs(15), restock(&manager, &peer, 1))
        .await
        .expect("deadlocked")
        .unwrap();
    assert!(manager.list_locks("stock:").await.unwrap().is_empty());
}

async fn a_guard_scope_lets_locked_calls_run_under_the_guard(fx: &Fixture) {
    let manager = fx.manager();
    let guard = manager
        .new_lock("order:11", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let detector = OverlapDetector::default();
    let scope = guard.scope();
    let (a, b) = timeout(
        Duration::from_secs(10),
        scope.run(async {
            tokio::join!(
                settle(&manager, 11, &detector),
                settle(&manager, 11, &detector)
            )
        }),
    )
    .await
    .expect("a call waited for the guard it runs under");
    assert_eq!(a.unwrap(), guard.fencing_token());
    assert_eq!(b.unwrap(), guard.fencing_token());
    assert_eq!(detector.most_at_once(), 1);
    // Outside the scope but in the task that holds the guard: the task is
    // the owner (#17.1), so the call runs as a child section of the hold.
    settle_if_free(&manager, 11).await.unwrap();
    // In another task, the same call is another owner: it times out.
    let other = manager.clone();
    let busy = tokio::spawn(async move { settle_if_free(&other, 11).await.unwrap_err() });
    assert_eq!(busy.await.unwrap().lock_code(), Some(ErrorCode::Timeout));
    guard.unlock().await.unwrap();
    settle_if_free(&manager, 11).await.unwrap();
}

#[distributed_lock(key = "order:{id}", ttl = "3s", wait = "0s", manager = manager)]
async fn settle_if_free(manager: &LockManager, id: u64) -> Result<(), AppError> {
    Ok(())
}

#[distributed_lock(key = "page:{id}", ttl = "3s", manager = manager)]
async fn page_section(manager: &LockManager, id: u64) -> Result<distlock::CurrentLock, AppError> {
    let lock = distlock::current_lock().unwrap();
    assert!(lock.is_held());
    Ok(lock)
}

#[distributed_lock(key = "page:{id}", ttl = "3s", manager = manager)]
async fn page(manager: &LockManager, id: u64) -> Result<(), AppError> {
    let inner = page_section(manager, id).await?;
    // The section ended with the nested call, though the hold lives on.
    assert!(!inner.is_held(), "a finished section still reads as held");
    timeout(Duration::from_secs(1), inner.lost())
        .await
        .map_err(|_| AppError::App("a finished section's lost() never resolved"))?;
    let outer = distlock::current_lock().unwrap();
    assert!(outer.is_held());
    assert_eq!(outer.fencing_token(), inner.fencing_token());
    Ok(())
}

async fn a_nested_calls_current_lock_ends_with_the_call(fx: &Fixture) {
    page(&fx.manager(), 1).await.unwrap();
}
