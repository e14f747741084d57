//! The behavioural suite of DESIGN §2, run against both backends: every test
//! function below runs once on a real etcd (`etcd::`) and once in memory
//! (`memory::`).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use distlock::{ErrorCode, LockOptions};
use support::{on_both_backends, short_ttl, Fixture, OverlapDetector};
use tokio::time::{sleep, timeout, Instant};

on_both_backends!(
    mutual_exclusion_across_managers_and_tasks,
    fencing_tokens_grow_in_acquisition_order,
    waiters_are_served_first_come_first_served,
    try_lock_and_timeout,
    abandoned_waiters_leave_no_keys,
    reentrancy_and_hold_count,
    non_reentrant_lock_refuses_a_second_hold,
    two_handles_in_one_process_exclude_each_other,
    tasks_sharing_one_handle_exclude_each_other,
    one_task_reenters_through_any_handle_of_its_manager,
    a_guard_moved_to_another_task_releases_there,
    names_are_independent_and_slashes_are_fine,
    bad_input_gets_typed_errors,
    a_lock_without_auto_renew_expires_after_its_ttl,
    auto_renew_keeps_a_lock_past_its_ttl,
    force_unlock_takes_exactly_the_holders_key,
    force_unlock_by_token_spares_a_new_holder,
    info_and_list_describe_held_locks,
    close_releases_and_refuses_further_calls,
    an_unlock_dropped_halfway_still_releases,
);

/// 3 managers × 4 tasks × 5 rounds under one lock; the detector sees every
/// critical section and would count two at once.
async fn mutual_exclusion_across_managers_and_tasks(fx: &Fixture) {
    let mut managers = Vec::new();
    for _ in 0..3 {
        managers.push(fx.another().await);
    }
    let detector = hammer(&managers, "shared", 4, 5).await;
    assert_eq!(detector.entries(), 60);
    assert_eq!(detector.most_at_once(), 1, "two holders at once");
}

/// `tasks` tasks per manager, each with its own handle on lock `name`, take it
/// `rounds` times; every critical section goes through the detector.
async fn hammer(
    managers: &[distlock::LockManager],
    name: &'static str,
    tasks: usize,
    rounds: usize,
) -> OverlapDetector {
    let detector = OverlapDetector::default();
    let mut running = Vec::new();
    for manager in managers {
        for _ in 0..tasks {
            let (manager, detector) = (manager.clone(), detector.clone());
            running.push(tokio::spawn(async move {
                let lock = manager.new_lock(name, LockOptions::default()).unwrap();
                for _ in 0..rounds {
                    let guard = lock.lock().await.unwrap();
                    {
                        let _inside = detector.enter();
                        sleep(Duration::from_millis(2)).await;
                    }
                    guard.unlock().await.unwrap();
                }
            }));
        }
    }
    for t in running {
        t.await.unwrap();
    }
    detector
}

/// Tokens recorded inside the critical section, in the order the holders got
/// in, strictly increase — across managers.
async fn fencing_tokens_grow_in_acquisition_order(fx: &Fixture) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let manager = fx.another().await;
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            let lock = manager.new_lock("fenced", LockOptions::default()).unwrap();
            for _ in 0..5 {
                let guard = lock.lock().await.unwrap();
                seen.lock().unwrap().push(guard.fencing_token());
                guard.unlock().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 15);
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "tokens not increasing: {seen:?}"
    );
}

/// Waiters from different managers get the lock in the order they asked.
async fn waiters_are_served_first_come_first_served(fx: &Fixture) {
    let holder = fx
        .manager()
        .new_lock("fifo", LockOptions::default())
        .unwrap();
    let guard = holder.lock().await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let manager = fx.another().await;
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let lock = manager.new_lock("fifo", LockOptions::default()).unwrap();
            let g = lock.lock().await.unwrap();
            order.lock().unwrap().push(i);
            g.unlock().await.unwrap();
        }));
        // Let waiter i reach the queue before waiter i + 1 starts.
        let want = i + 1;
        let deadline = Instant::now() + Duration::from_secs(5);
        while fx
            .manager()
            .lock_info("fifo")
            .await
            .unwrap()
            .unwrap()
            .waiters
            < want
        {
            assert!(Instant::now() < deadline, "waiter {i} never queued");
            sleep(Duration::from_millis(5)).await;
        }
    }
    guard.unlock().await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
}

async fn try_lock_and_timeout(fx: &Fixture) {
    let a = fx
        .manager()
        .new_lock("busy", LockOptions::default())
        .unwrap();
    let other = fx.another().await;
    let b = other.new_lock("busy", LockOptions::default()).unwrap();

    let held = a.try_lock().await.unwrap().expect("free lock");
    assert!(b.try_lock().await.unwrap().is_none());
    let zero = b.lock_timeout(Duration::ZERO).await.unwrap_err();
    assert_eq!(zero.code(), ErrorCode::Timeout, "a zero wait tries once");
    let started = Instant::now();
    let err = b
        .lock_timeout(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout);
    assert!(started.elapsed() >= Duration::from_millis(300));

    // The losers left the queue: only the holder is there.
    eventually_no_waiters(fx, "busy").await;
    held.unlock().await.unwrap();
    let g = b.lock_timeout(Duration::from_secs(5)).await.unwrap();
    g.unlock().await.unwrap();
}

async fn eventually_no_waiters(fx: &Fixture, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let waiters = fx
            .manager()
            .lock_info(name)
            .await
            .unwrap()
            .map_or(0, |i| i.waiters);
        if waiters == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{waiters} waiters left behind on {name}"
        );
        sleep(Duration::from_millis(20)).await;
    }
}

/// Hundreds of waiters that time out, lose a try_lock or are dropped
/// mid-await leave no key behind.
async fn abandoned_waiters_leave_no_keys(fx: &Fixture) {
    let holder = fx
        .manager()
        .new_lock("crowded", LockOptions::default())
        .unwrap();
    let guard = holder.lock().await.unwrap();
    let managers = [fx.another().await, fx.another().await];
    let mut tasks = Vec::new();
    for i in 0..240usize {
        let manager = managers[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            let lock = manager.new_lock("crowded", LockOptions::default()).unwrap();
            match i % 3 {
                0 => {
                    let err = lock
                        .lock_timeout(Duration::from_millis(5 + (i % 7) as u64 * 10))
                        .await
                        .unwrap_err();
                    assert_eq!(err.code(), ErrorCode::Timeout);
                }
                1 => assert!(lock.try_lock().await.unwrap().is_none()),
                _ => {
                    // Dropped at an arbitrary point of the wait.
                    let dropped =
                        timeout(Duration::from_millis((i % 11) as u64), lock.lock()).await;
                    assert!(dropped.is_err(), "got a held lock");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eventually_no_waiters(fx, "crowded").await;
    guard.unlock().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let held = fx.manager().list_locks("").await.unwrap();
        let raw = fx.raw_keys().await.unwrap_or_default();
        if held.is_empty() && raw.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {held:?} {raw:?}");
        sleep(Duration::from_millis(20)).await;
    }
}

async fn reentrancy_and_hold_count(fx: &Fixture) {
    let lock = fx.manager().new_lock("re", LockOptions::default()).unwrap();
    let other = fx
        .another()
        .await
        .new_lock("re", LockOptions::default())
        .unwrap();
    let first = lock.lock().await.unwrap();
    let second = lock.lock().await.unwrap();
    let third = lock.try_lock().await.unwrap().expect("reentrant try_lock");
    assert_eq!(lock.hold_count(), 3);
    assert_eq!(first.fencing_token(), second.fencing_token());
    second.unlock().await.unwrap();
    drop(third);
    assert_eq!(lock.hold_count(), 1);
    assert!(
        other.try_lock().await.unwrap().is_none(),
        "released too early"
    );
    first.unlock().await.unwrap();
    assert_eq!(lock.hold_count(), 0);
    let g = other.lock_timeout(Duration::from_secs(5)).await.unwrap();
    g.unlock().await.unwrap();
}

async fn non_reentrant_lock_refuses_a_second_hold(fx: &Fixture) {
    let lock = fx
        .manager()
        .new_lock("strict", LockOptions::default().reentrant(false))
        .unwrap();
    let g = lock.lock().await.unwrap();
    assert_eq!(
        lock.lock().await.unwrap_err().code(),
        ErrorCode::AlreadyHeld
    );
    assert_eq!(
        lock.try_lock().await.unwrap_err().code(),
        ErrorCode::AlreadyHeld
    );
    g.unlock().await.unwrap();
    lock.lock().await.unwrap().unlock().await.unwrap();
}

/// Two handles on one name in one manager share its lease; they must still
/// exclude each other (the seed's Go code let both "win").
async fn two_handles_in_one_process_exclude_each_other(fx: &Fixture) {
    let manager = fx.manager();
    let detector = hammer(std::slice::from_ref(&manager), "local", 4, 5).await;
    assert_eq!(detector.entries(), 20);
    assert_eq!(detector.most_at_once(), 1);
    let a = manager.new_lock("local", LockOptions::default()).unwrap();
    let b = manager.new_lock("local", LockOptions::default()).unwrap();
    let _g = a.lock().await.unwrap();
    // Another task (the owner is the task, not the handle).
    let busy = tokio::spawn(async move { b.try_lock().await.unwrap().is_none() });
    assert!(busy.await.unwrap());
}

/// Issue #17.1: one handle in application state (`Arc<Lock>`, as in an
/// axum `State`) used by many request tasks: each task is an owner of its
/// own, so they exclude each other and each section has its own token.
async fn tasks_sharing_one_handle_exclude_each_other(fx: &Fixture) {
    let lock = Arc::new(
        fx.manager()
            .new_lock("state", LockOptions::default())
            .unwrap(),
    );
    let detector = OverlapDetector::default();
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (lock, detector, tokens) = (lock.clone(), detector.clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..4 {
                let guard = lock.lock().await.unwrap();
                {
                    let _inside = detector.enter();
                    tokens.lock().unwrap().push(guard.fencing_token());
                    sleep(Duration::from_millis(3)).await;
                }
                guard.unlock().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(detector.entries(), 24);
    assert_eq!(
        detector.most_at_once(),
        1,
        "two tasks inside through one handle"
    );
    let tokens = tokens.lock().unwrap().clone();
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "a token shared or reused: {tokens:?}"
    );

    // A try from another task through the same handle: busy, not reentrant;
    // a wait: FIFO behind the holder, bounded.
    let guard = lock.lock().await.unwrap();
    let other = lock.clone();
    let tried = tokio::spawn(async move { other.try_lock().await.unwrap().is_none() });
    assert!(
        tried.await.unwrap(),
        "another task re-entered through the handle"
    );
    let other = lock.clone();
    let waited = tokio::spawn(async move { other.lock_timeout(Duration::from_millis(200)).await });
    assert_eq!(
        waited.await.unwrap().unwrap_err().code(),
        ErrorCode::Timeout
    );
    // Non-reentrant: another task waits instead of getting `AlreadyHeld`.
    let strict = Arc::new(
        fx.manager()
            .new_lock("strict-state", LockOptions::default().reentrant(false))
            .unwrap(),
    );
    let held = strict.lock().await.unwrap();
    let other = strict.clone();
    let waiter = tokio::spawn(async move { other.lock().await.map(|g| g.fencing_token()) });
    sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "the other task did not wait");
    let first = held.fencing_token();
    held.unlock().await.unwrap();
    let next = timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(next.unwrap() > first);
    guard.unlock().await.unwrap();
}

/// Issue #17.1: within one task, locking the same name through the same
/// manager again re-enters — through the same handle or another one — with
/// one hold count; `reentrant(false)` makes the second attempt `AlreadyHeld`.
async fn one_task_reenters_through_any_handle_of_its_manager(fx: &Fixture) {
    let manager = fx.manager();
    let (a, b) = (
        manager
            .new_lock("same-task", LockOptions::default())
            .unwrap(),
        manager
            .new_lock("same-task", LockOptions::default())
            .unwrap(),
    );
    let first = a.lock().await.unwrap();
    let second = timeout(Duration::from_secs(2), b.lock())
        .await
        .expect("a second handle in the same task waited for itself")
        .unwrap();
    assert_eq!(first.fencing_token(), second.fencing_token());
    assert_eq!((a.hold_count(), b.hold_count()), (2, 2));
    let third = b.try_lock().await.unwrap().expect("reentrant try");
    assert_eq!(a.hold_count(), 3);
    // Another task sees none of it.
    let a = Arc::new(a);
    let other = a.clone();
    let seen = tokio::spawn(async move { other.hold_count() });
    assert_eq!(seen.await.unwrap(), 0);
    drop(third);
    second.unlock().await.unwrap();
    assert_eq!(a.hold_count(), 1);
    let peer = fx.another().await;
    let outside = peer.new_lock("same-task", LockOptions::default()).unwrap();
    assert!(
        outside.try_lock().await.unwrap().is_none(),
        "released early"
    );
    first.unlock().await.unwrap();
    assert_eq!(a.hold_count(), 0);

    let strict = LockOptions::default().reentrant(false);
    let (s1, s2) = (
        manager.new_lock("strict-task", strict.clone()).unwrap(),
        manager.new_lock("strict-task", strict).unwrap(),
    );
    let held = s1.lock().await.unwrap();
    for err in [
        s2.lock().await.unwrap_err(),
        s2.try_lock().await.unwrap_err(),
        s1.lock_timeout(Duration::from_secs(1)).await.unwrap_err(),
    ] {
        assert_eq!(err.code(), ErrorCode::AlreadyHeld, "{err}");
    }
    held.unlock().await.unwrap();
    s2.lock().await.unwrap().unlock().await.unwrap();
}

/// Issue #17.1: a guard moved to another task releases the lock there
/// (unlock or drop). Re-entry stays with the task that locked: the task it
/// moved to is another owner, and waits.
async fn a_guard_moved_to_another_task_releases_there(fx: &Fixture) {
    let manager = fx.manager();
    let peer = fx.another().await;
    let lock = Arc::new(manager.new_lock("moved", LockOptions::default()).unwrap());
    let guard = lock.lock().await.unwrap();
    let token = guard.fencing_token();
    let other = lock.clone();
    let moved = tokio::spawn(async move {
        // Not this task's hold: locking again here waits like any owner.
        let again = other.lock_timeout(Duration::from_millis(200)).await;
        assert_eq!(again.unwrap_err().code(), ErrorCode::Timeout);
        assert_eq!(other.hold_count(), 0);
        assert!(guard.is_held());
        guard.unlock().await
    });
    moved.await.unwrap().unwrap();
    let next = peer.new_lock("moved", LockOptions::default()).unwrap();
    let taken = timeout(Duration::from_secs(5), next.lock())
        .await
        .expect("the moved guard's unlock freed the lock")
        .unwrap();
    assert!(taken.fencing_token() > token);
    taken.unlock().await.unwrap();

    // Dropped in another task: released in the background there.
    let guard = lock.lock().await.unwrap();
    tokio::spawn(async move { drop(guard) }).await.unwrap();
    let taken = timeout(Duration::from_secs(5), next.lock())
        .await
        .expect("the moved guard's drop freed the lock")
        .unwrap();
    taken.unlock().await.unwrap();
}

async fn names_are_independent_and_slashes_are_fine(fx: &Fixture) {
    let m = fx.manager();
    let other = fx.another().await;
    let names = ["a", "a/b", "a/b/c", "a%2Fb", "%", "ünï/cødé ✓"];
    let mut guards = Vec::new();
    for name in names {
        guards.push(
            m.new_lock(name, LockOptions::default())
                .unwrap()
                .lock()
                .await
                .unwrap(),
        );
    }
    for name in names {
        let busy = other.new_lock(name, LockOptions::default()).unwrap();
        assert!(busy.try_lock().await.unwrap().is_none(), "{name} not held");
        let info = m.lock_info(name).await.unwrap().expect("held");
        assert_eq!(info.name, name);
        assert_eq!(info.waiters, 0, "{name} sees another lock's keys");
    }
    // Releasing `a` frees only `a`.
    guards.remove(0).unlock().await.unwrap();
    let a = other.new_lock("a", LockOptions::default()).unwrap();
    a.lock_timeout(Duration::from_secs(5))
        .await
        .unwrap()
        .unlock()
        .await
        .unwrap();
    assert!(other
        .new_lock("a/b", LockOptions::default())
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .is_none());
}

async fn bad_input_gets_typed_errors(fx: &Fixture) {
    let m = fx.manager();
    let long = "x".repeat(1025);
    for bad in ["", "a\0b", long.as_str()] {
        let err = m.new_lock(bad, LockOptions::default()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidKey, "{bad:?}");
        assert_eq!(
            m.lock_info(bad).await.unwrap_err().code(),
            ErrorCode::InvalidKey
        );
        assert_eq!(
            m.force_unlock(bad).await.unwrap_err().code(),
            ErrorCode::InvalidKey
        );
    }
    let longest = "y".repeat(1024);
    let g = m
        .new_lock(longest.as_str(), LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    assert_eq!(m.lock_info(&longest).await.unwrap().unwrap().name, longest);
    g.unlock().await.unwrap();
    let bad_options = [
        LockOptions::default().ttl(Duration::from_millis(500)),
        LockOptions::default().renew_interval(Duration::from_secs(30)),
        LockOptions::default().retry_interval(Duration::ZERO),
    ];
    for opts in bad_options {
        let err = m.new_lock("fine", opts).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidOptions);
    }
}

async fn a_lock_without_auto_renew_expires_after_its_ttl(fx: &Fixture) {
    let opts = LockOptions::default()
        .ttl(Duration::from_secs(2))
        .auto_renew(false);
    let lock = fx.manager().new_lock("lease", opts).unwrap();
    let guard = lock.lock().await.unwrap();
    let started = Instant::now();
    let waiter = fx
        .another()
        .await
        .new_lock("lease", LockOptions::default())
        .unwrap();
    let holder_lost = guard.lost();
    let waiting = tokio::spawn(async move {
        let g = waiter.lock_timeout(Duration::from_secs(10)).await.unwrap();
        // The old holder must have been told before we got in.
        let told = timeout(Duration::ZERO, holder_lost).await.is_ok();
        g.unlock().await.unwrap();
        told
    });
    timeout(Duration::from_secs(5), guard.lost())
        .await
        .expect("never lost");
    let lost_at = started.elapsed();
    assert!(!guard.is_held());
    assert!(
        lost_at >= Duration::from_millis(1500),
        "lost too early: {lost_at:?}"
    );
    assert!(
        waiting.await.unwrap(),
        "taken over before the holder heard of its loss"
    );
    assert_eq!(guard.unlock().await.unwrap_err().code(), ErrorCode::Expired);
}

async fn auto_renew_keeps_a_lock_past_its_ttl(fx: &Fixture) {
    let lock = fx.manager().new_lock("renewed", short_ttl(2)).unwrap();
    let other = fx
        .another()
        .await
        .new_lock("renewed", short_ttl(2))
        .unwrap();
    let guard = lock.lock().await.unwrap();
    sleep(Duration::from_secs(5)).await;
    assert!(guard.is_held());
    assert!(other.try_lock().await.unwrap().is_none());
    guard.renew().await.unwrap();
    guard.unlock().await.unwrap();
    other
        .lock_timeout(Duration::from_secs(5))
        .await
        .unwrap()
        .unlock()
        .await
        .unwrap();
}

async fn force_unlock_takes_exactly_the_holders_key(fx: &Fixture) {
    let holder = fx.manager();
    let victim = holder.new_lock("victim", LockOptions::default()).unwrap();
    let bystander = holder
        .new_lock("bystander", LockOptions::default())
        .unwrap();
    let g = victim.lock().await.unwrap();
    let kept = bystander.lock().await.unwrap();

    let admin = fx.another().await;
    let waiter = admin.new_lock("victim", LockOptions::default()).unwrap();
    let waiting = tokio::spawn(async move { waiter.lock_timeout(Duration::from_secs(10)).await });
    eventually_waiters(fx, "victim", 1).await;

    assert!(admin.force_unlock("victim").await.unwrap());
    timeout(Duration::from_secs(5), g.lost())
        .await
        .expect("holder not told");
    assert!(!g.is_held());
    let next = waiting.await.unwrap().expect("waiter proceeds");
    assert!(next.fencing_token() > g.fencing_token());
    assert_eq!(g.unlock().await.unwrap_err().code(), ErrorCode::Expired);
    // The holder's other lock is untouched.
    assert!(kept.is_held());
    assert_eq!(
        holder
            .lock_info("bystander")
            .await
            .unwrap()
            .unwrap()
            .fencing_token,
        kept.fencing_token()
    );
    assert!(!admin.force_unlock("nobody-holds-this").await.unwrap());
    next.unlock().await.unwrap();
    kept.unlock().await.unwrap();
}

/// An operator saw token T; by the time they confirm, the lock changed hands.
/// Unlocking by token T must leave the new holder alone.
async fn force_unlock_by_token_spares_a_new_holder(fx: &Fixture) {
    let m = fx.manager();
    let admin = fx.another().await;
    let lock = m.new_lock("handed", LockOptions::default()).unwrap();
    let first = lock.lock().await.unwrap();
    let seen = admin
        .lock_info("handed")
        .await
        .unwrap()
        .unwrap()
        .fencing_token;
    assert_eq!(seen, first.fencing_token());
    first.unlock().await.unwrap();
    let second = lock.lock().await.unwrap();

    assert!(!admin.force_unlock_token("handed", seen).await.unwrap());
    assert!(second.is_held());
    let info = admin.lock_info("handed").await.unwrap().unwrap();
    assert_eq!(info.fencing_token, second.fencing_token());

    assert!(admin
        .force_unlock_token("handed", second.fencing_token())
        .await
        .unwrap());
    timeout(Duration::from_secs(5), second.lost())
        .await
        .expect("holder not told");
    assert!(admin.lock_info("handed").await.unwrap().is_none());
    assert!(!admin.force_unlock_token("handed", seen).await.unwrap());
}

async fn eventually_waiters(fx: &Fixture, name: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while fx
        .manager()
        .lock_info(name)
        .await
        .unwrap()
        .map_or(0, |i| i.waiters)
        < n
    {
        assert!(Instant::now() < deadline, "no {n} waiters on {name}");
        sleep(Duration::from_millis(5)).await;
    }
}

async fn info_and_list_describe_held_locks(fx: &Fixture) {
    let m = fx.manager();
    let user = m.new_lock("user-1", LockOptions::default()).unwrap();
    let g1 = user.lock().await.unwrap();
    let g2 = m
        .new_lock("user-2/x", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let g3 = m
        .new_lock("order-9", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let waiter = fx
        .another()
        .await
        .new_lock("user-1", LockOptions::default())
        .unwrap();
    let waiting = tokio::spawn(async move { waiter.lock_timeout(Duration::from_secs(10)).await });
    eventually_waiters(fx, "user-1", 1).await;

    let info = m.lock_info("user-1").await.unwrap().unwrap();
    assert_eq!(info.owner, user.owner());
    assert_eq!(info.fencing_token, g1.fencing_token());
    assert_eq!(info.waiters, 1);
    let created = info.create_time.expect("create time");
    let expires = info.expire_time.expect("expire time");
    assert!(expires > created);
    assert!(expires <= std::time::SystemTime::now() + Duration::from_secs(31));

    let names = |v: Vec<distlock::LockInfo>| v.into_iter().map(|i| i.name).collect::<Vec<_>>();
    assert_eq!(
        names(m.list_locks("user-").await.unwrap()),
        ["user-1", "user-2/x"]
    );
    assert_eq!(names(m.list_locks("user-2/").await.unwrap()), ["user-2/x"]);
    assert_eq!(
        names(m.list_locks("").await.unwrap()),
        ["order-9", "user-1", "user-2/x"]
    );
    assert!(m.list_locks("nothing").await.unwrap().is_empty());
    assert!(m.lock_info("free").await.unwrap().is_none());

    g1.unlock().await.unwrap();
    waiting.await.unwrap().unwrap().unlock().await.unwrap();
    g2.unlock().await.unwrap();
    g3.unlock().await.unwrap();
}

async fn close_releases_and_refuses_further_calls(fx: &Fixture) {
    let m = fx.another().await;
    let lock = m.new_lock("closing", LockOptions::default()).unwrap();
    let guard = lock.lock().await.unwrap();
    let waiter = fx
        .manager()
        .new_lock("closing", LockOptions::default())
        .unwrap();
    let waiting = tokio::spawn(async move { waiter.lock_timeout(Duration::from_secs(10)).await });
    eventually_waiters(fx, "closing", 1).await;

    m.close().await;
    assert!(!guard.is_held());
    timeout(Duration::from_secs(1), guard.lost())
        .await
        .expect("guard not lost on close");
    waiting
        .await
        .unwrap()
        .expect("released on close")
        .unlock()
        .await
        .unwrap();
    assert_eq!(lock.lock().await.unwrap_err().code(), ErrorCode::Closed);
    assert_eq!(
        m.new_lock("x", LockOptions::default()).unwrap_err().code(),
        ErrorCode::Closed
    );
    assert_eq!(
        m.list_locks("").await.unwrap_err().code(),
        ErrorCode::Closed
    );
    assert_eq!(
        m.lock_info("x").await.unwrap_err().code(),
        ErrorCode::Closed
    );
    assert_eq!(
        m.force_unlock("x").await.unwrap_err().code(),
        ErrorCode::Closed
    );
    assert_eq!(guard.renew().await.unwrap_err().code(), ErrorCode::Closed);
    assert_eq!(guard.unlock().await.unwrap_err().code(), ErrorCode::Closed);
}

/// An `unlock()` future dropped after its first poll
/// still releases the lock, in the background.
async fn an_unlock_dropped_halfway_still_releases(fx: &Fixture) {
    let lock = fx
        .manager()
        .new_lock("halfway", LockOptions::default())
        .unwrap();
    let other = fx
        .another()
        .await
        .new_lock("halfway", LockOptions::default())
        .unwrap();
    for _ in 0..5 {
        let guard = lock.lock().await.unwrap();
        let _ = timeout(Duration::ZERO, guard.unlock()).await;
        let g = other
            .lock_timeout(Duration::from_secs(5))
            .await
            .expect("the half-done unlock never finished");
        g.unlock().await.unwrap();
    }
    assert!(fx.manager().list_locks("").await.unwrap().is_empty());
}
