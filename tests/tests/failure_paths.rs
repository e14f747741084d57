//! Failure paths of the core, driven by injected faults: a fault-injecting
//! backend (`LockManager::with_faults`) over real etcd and over memory, and a
//! blackholing TCP proxy in front of real etcd. Each test states the defect it
//! guards against (issue #8) and checks the outcome another process sees.

mod support;

use std::future::Future;
use std::time::Duration;

use distlock::testing::{Fault, Faults, Op};
use distlock::{ErrorCode, EtcdConfig, LockManager, LockOptions};
use distlock_tests::{Etcd, TcpProxy};
use support::{
    connect, init_tracing, on_both_backends, raw_client, raw_keys, short_ttl, still_holds, Fixture,
};
use tokio::time::{sleep, sleep_until, timeout, Instant};

/// A manager of `fx` whose backend calls go through `faults`, with a short
/// request timeout so that stalls are quick.
async fn faulty(fx: &Fixture, faults: &Faults) -> LockManager {
    faults.request_timeout(Duration::from_millis(800));
    fx.another().await.with_faults(faults)
}

/// Keys left under the namespace (memory: held locks, as `list_locks` sees them).
async fn keys_left(fx: &Fixture, observer: &LockManager) -> usize {
    match fx.raw_keys().await {
        Some(keys) => keys.len(),
        None => observer.list_locks("").await.unwrap().len(),
    }
}

/// Waits until no key is left under the namespace (as `observer` sees it in
/// memory), failing with `what` after `within`.
async fn no_keys_left_within(fx: &Fixture, observer: &LockManager, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while keys_left(fx, observer).await > 0 {
        assert!(Instant::now() < deadline, "{what}");
        sleep(Duration::from_millis(100)).await;
    }
}

/// #8.1/#8.2: a release whose deletes fail for longer than the lock's retry
/// budget (`max_retries(2)`, a try-mode acquisition held past its TTL) keeps
/// deleting until it succeeds: another process gets the lock.
async fn a_release_that_keeps_failing_still_frees_the_lock(fx: &Fixture) {
    let faults = Faults::new();
    let holder = faulty(fx, &faults).await;
    let other = fx.another().await;
    let opts = short_ttl(2).max_retries(2);
    let lock = holder.new_lock("r", opts.clone()).unwrap();
    let guard = lock.try_lock().await.unwrap().expect("free lock");
    sleep(Duration::from_millis(2300)).await; // held past its TTL
    faults.inject(Op::Delete, Fault::Fail, 8); // ~0.8 s of failures
    timeout(Duration::from_secs(5), guard.unlock())
        .await
        .expect("unlock bounded")
        .expect("unlock succeeds once the deletes get through");
    let taken = other.new_lock("r", opts).unwrap();
    let g = taken
        .lock_timeout(Duration::from_secs(3))
        .await
        .expect("the lock was freed");
    g.unlock().await.unwrap();
    assert_eq!(keys_left(fx, &other).await, 0);
}

/// #8.3: a release that cannot delete its key must not leave it to be adopted
/// by the next acquisition: fencing tokens of one manager for one name
/// strictly increase.
async fn tokens_never_repeat_after_a_failed_release(fx: &Fixture) {
    let faults = Faults::new();
    let manager = faulty(fx, &faults).await;
    let lock = manager.new_lock("t", short_ttl(2).max_retries(3)).unwrap();
    let first = lock.lock().await.unwrap();
    let t1 = first.fencing_token();
    faults.always(Op::Delete, Fault::Fail);
    let started = Instant::now();
    let err = timeout(Duration::from_secs(6), first.unlock())
        .await
        .expect("a failing release ends within about a TTL")
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Backend, "{err}");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "gave up early"
    );
    faults.heal();
    let second = lock
        .lock_timeout(Duration::from_secs(6))
        .await
        .expect("the name is usable again");
    let t2 = second.fencing_token();
    assert!(t2 > t1, "token repeated or went back: {t1} then {t2}");
    second.unlock().await.unwrap();
    // The retired session's lease is revoked, and the old key with it.
    no_keys_left_within(
        fx,
        &fx.manager(),
        Duration::from_secs(5),
        "a key was left behind",
    )
    .await;
}

/// #8.6: transient failures of a lease grant are retried, for locks without
/// auto-renew (a lease each) as for the shared session.
async fn lease_grants_are_retried(fx: &Fixture) {
    let faults = Faults::new();
    let manager = faulty(fx, &faults).await;
    faults.inject(Op::Grant, Fault::Fail, 2);
    let own = manager
        .new_lock("g1", LockOptions::default().auto_renew(false))
        .unwrap();
    own.lock()
        .await
        .expect("grant retried")
        .unlock()
        .await
        .unwrap();
    faults.inject(Op::Grant, Fault::Stall, 1);
    let shared = manager.new_lock("g2", LockOptions::default()).unwrap();
    shared
        .lock()
        .await
        .expect("grant retried")
        .unlock()
        .await
        .unwrap();
    assert_eq!(faults.calls(Op::Grant), 5);
}

/// #9.3: "try once" is one attempt bounded by the request timeout, backend
/// retries included; a finite wait bounds the whole call.
async fn a_try_is_bounded_while_the_backend_stalls(fx: &Fixture) {
    let faults = Faults::new();
    let manager = faulty(fx, &faults).await;
    // Separate names: an abandoned attempt's cleanup keeps its name's slot
    // until the stalled request is over.
    let (z1, z2) = (
        manager.new_lock("z1", LockOptions::default()).unwrap(),
        manager.new_lock("z2", LockOptions::default()).unwrap(),
    );
    faults.always(Op::Enqueue, Fault::Stall);
    for (what, call) in [
        (
            "try_lock",
            Box::pin(async { z1.try_lock().await.map(|_| ()) })
                as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>,
        ),
        (
            "lock_timeout(0)",
            Box::pin(async { z2.lock_timeout(Duration::ZERO).await.map(|_| ()) }),
        ),
    ] {
        let started = Instant::now();
        let err = timeout(Duration::from_secs(10), call)
            .await
            .unwrap_or_else(|_| panic!("{what} hung"))
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Backend, "{what}: {err}");
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "{what} took {:?}",
            started.elapsed()
        );
    }
    // A wait that ends while the backend stalls is an outage, not a busy
    // lock (#17.8).
    let lock = manager.new_lock("z3", LockOptions::default()).unwrap();
    let started = Instant::now();
    let err = lock.lock_timeout(Duration::from_secs(2)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Backend, "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    faults.heal();
    manager.close().await;
}

/// #8.8: a lock lost while its guard is still alive (here force-unlocked)
/// frees the name in its own process at once; the lost guard's late release
/// does not touch the new holder's key.
async fn a_lost_lock_frees_its_own_process(fx: &Fixture) {
    let manager = fx.manager();
    let admin = fx.another().await;
    let first = manager.new_lock("lost", LockOptions::default()).unwrap();
    let lost_guard = first.lock().await.unwrap();
    let second = manager.new_lock("lost", LockOptions::default()).unwrap();
    let waiter = tokio::spawn(async move {
        let g = second.lock_timeout(Duration::from_secs(8)).await;
        (second, g)
    });
    sleep(Duration::from_millis(300)).await;
    assert!(admin.force_unlock("lost").await.unwrap());
    let (second, taken) = timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap();
    let taken = taken.expect("the waiter in the holder's own process gets the lock");
    assert!(!lost_guard.is_held());
    assert_eq!(
        lost_guard.unlock().await.unwrap_err().code(),
        ErrorCode::Expired
    );
    assert!(
        taken.is_held(),
        "the lost guard's release deleted the new holder's key"
    );
    let outsider = admin.new_lock("lost", LockOptions::default()).unwrap();
    assert!(outsider.try_lock().await.unwrap().is_none());
    taken.unlock().await.unwrap();
    drop(second);
    assert!(outsider.try_lock().await.unwrap().is_some());
}

/// #9 (smaller): a release whose delete applied but whose answer was lost
/// reports success, not `Expired`.
async fn a_release_whose_answer_was_lost_succeeds(fx: &Fixture) {
    let faults = Faults::new();
    let manager = faulty(fx, &faults).await;
    let guard = manager
        .new_lock("lose", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    faults.inject(Op::Delete, Fault::Lose, 1);
    guard.unlock().await.expect("the release applied");
    assert_eq!(keys_left(fx, &fx.manager()).await, 0);
}

/// An enqueue that applied but whose answer was lost is retried; the retry
/// finds the key it made and keeps its place: at the head of a free lock
/// (the fencing token is the key's create revision), behind the holder of a
/// busy one (it waits, then takes the lock in turn). Nothing is left.
async fn an_enqueue_whose_answer_was_lost_keeps_its_place(fx: &Fixture) {
    let faults = Faults::new();
    let manager = faulty(fx, &faults).await;
    let observer = fx.another().await;

    faults.inject(Op::Enqueue, Fault::Lose, 1);
    let free = manager.new_lock("free", LockOptions::default()).unwrap();
    let guard = free.lock_timeout(Duration::from_secs(5)).await.unwrap();
    let info = observer.lock_info("free").await.unwrap().unwrap();
    assert_eq!(info.fencing_token, guard.fencing_token());
    assert_eq!(info.waiters, 0, "the retry made a second key");
    guard.unlock().await.unwrap();

    let holder = observer.new_lock("busy", LockOptions::default()).unwrap();
    let held = holder.lock().await.unwrap();
    faults.inject(Op::Enqueue, Fault::Lose, 1);
    let busy = manager.new_lock("busy", LockOptions::default()).unwrap();
    let waiting = tokio::spawn(async move {
        let guard = busy.lock_timeout(Duration::from_secs(10)).await;
        (busy, guard)
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while observer.lock_info("busy").await.unwrap().unwrap().waiters != 1 {
        assert!(Instant::now() < deadline, "the waiter never queued");
        sleep(Duration::from_millis(20)).await;
    }
    // The first enqueue applied; its retry comes a retry interval later.
    sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "took a held lock");
    let token = held.fencing_token();
    held.unlock().await.unwrap();
    let (_busy, guard) = waiting.await.unwrap();
    let guard = guard.expect("the waiter takes the lock in turn");
    assert!(guard.fencing_token() > token);
    guard.unlock().await.unwrap();
    assert_eq!(keys_left(fx, &observer).await, 0);
}

/// etcd issue 22082's stale retry: a release's delete gets no answer and is
/// retried, the retry deletes the key, and the first delete reaches the
/// store later, after the same process locked the name again. It must not
/// take the new holder's key (which, on the same session lease, would have
/// the same name).
async fn a_stale_release_delete_spares_the_next_holder(fx: &Fixture) {
    let faults = Faults::new();
    let manager = faulty(fx, &faults).await;
    let observer = fx.another().await;
    let lock = manager.new_lock("stale", LockOptions::default()).unwrap();
    let first = lock.lock().await.unwrap();
    faults.inject(Op::Delete, Fault::Late(Duration::from_millis(600)), 1);
    first.unlock().await.expect("the retried delete applied");
    let second = lock.lock_timeout(Duration::from_secs(5)).await.unwrap();
    sleep(Duration::from_millis(900)).await; // the stale delete has landed
    still_holds(&observer, "stale", second).await;
    assert_eq!(keys_left(fx, &observer).await, 0);
}

/// #9 (smaller): `lock()` never hands out a guard whose session was lost while
/// it waited; it fails with `Expired` instead.
async fn no_guard_on_a_session_lost_while_acquiring(fx: &Fixture) {
    let faults = Faults::new();
    let waiter_manager = faulty(fx, &faults).await;
    let holder = fx.another().await;
    let opts = short_ttl(2);
    let held = holder
        .new_lock("s", opts.clone())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let lock = waiter_manager.new_lock("s", opts).unwrap();
    let waiting = tokio::spawn(async move { lock.lock().await.map(|g| (g.is_held(), g)) });
    sleep(Duration::from_millis(500)).await; // queued and watching
                                             // The keep-alives reach etcd but their answers are lost: the client gives
                                             // the session up (at ~1.8 s) while etcd keeps the lease, and the key,
                                             // alive a while longer; the read that confirms the win comes in between.
    faults.always(Op::KeepAlive, Fault::Lose);
    faults.always(Op::Revoke, Fault::Fail);
    faults.always(Op::Position, Fault::Delay(Duration::from_millis(2500)));
    held.unlock().await.unwrap();
    let outcome = timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap();
    match outcome {
        Err(err) => assert_eq!(err.code(), ErrorCode::Expired, "{err}"),
        Ok((held, _guard)) => assert!(held, "lock() returned a guard that is not held"),
    }
    faults.heal();
}

/// #9 (smaller): a reentrant `lock()` racing the drop of the last guard
/// acquires (anew) instead of failing with `NotHeld`.
async fn a_reentrant_lock_racing_the_last_drop_acquires(fx: &Fixture) {
    let manager = fx.manager();
    let lock = std::sync::Arc::new(manager.new_lock("race", LockOptions::default()).unwrap());
    for round in 0..150 {
        let guard = lock.lock().await.unwrap();
        let dropper = std::thread::spawn(move || drop(guard));
        let again = lock.lock().await;
        dropper.join().unwrap();
        let again = again.unwrap_or_else(|e| panic!("round {round}: {e}"));
        again.unlock().await.unwrap();
    }
}

/// #9 (smaller): background cleanups stop when the manager closes.
async fn cleanups_end_with_close(fx: &Fixture) {
    let faults = Faults::new();
    let manager = faulty(fx, &faults).await;
    let holder = fx.another().await;
    let held = holder
        .new_lock("c", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    faults.always(Op::Delete, Fault::Fail);
    let lock = manager.new_lock("c", LockOptions::default()).unwrap();
    let err = lock
        .lock_timeout(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout);
    sleep(Duration::from_millis(300)).await; // the cleanup is retrying
    assert!(faults.calls(Op::Delete) > 0);
    manager.close().await;
    let after_close = faults.calls(Op::Delete);
    sleep(Duration::from_millis(800)).await;
    assert_eq!(
        faults.calls(Op::Delete),
        after_close,
        "a cleanup outlived close()"
    );
    held.unlock().await.unwrap();
}

/// #9 (smaller): `close()` revokes its sessions concurrently, so it takes one
/// slow revoke, not one per session.
async fn close_revokes_sessions_at_once(fx: &Fixture) {
    let faults = Faults::new();
    let manager = faulty(fx, &faults).await;
    let mut guards = Vec::new();
    for ttl in [5, 6, 7] {
        let lock = manager
            .new_lock(format!("close-{ttl}"), short_ttl(ttl))
            .unwrap();
        guards.push(lock.lock().await.unwrap());
    }
    faults.always(Op::Revoke, Fault::Delay(Duration::from_millis(1500)));
    let started = Instant::now();
    manager.close().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(3000),
        "close took {took:?} for 3 sessions"
    );
    assert!(guards.iter().all(|g| !g.is_held()));
    faults.heal();
    no_keys_left_within(fx, &fx.manager(), Duration::from_secs(3), "close left keys").await;
}

/// #8.5: options under which every lock would be lost are refused.
async fn options_that_lose_every_lock_are_refused(fx: &Fixture) {
    let opts = LockOptions::default()
        .ttl(Duration::from_secs(10))
        .renew_interval(Duration::from_millis(9500));
    let err = fx.manager().new_lock("o", opts).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidOptions);
}

/// #17.2: the first enqueue attempt gets no answer and lands late, after its
/// retry won, the lock was released and its key deleted: it must not leave a
/// key that the session's lease keeps alive (here a bystander lock keeps that
/// lease in use), so a peer finds the name free.
async fn a_late_first_enqueue_leaves_no_key(fx: &Fixture) {
    let faults = Faults::new();
    let manager = faulty(fx, &faults).await;
    let peer = fx.another().await;
    let bystander = manager
        .new_lock("bystander", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    faults.inject(Op::Enqueue, Fault::Late(Duration::from_millis(600)), 1);
    let lock = manager.new_lock("late", LockOptions::default()).unwrap();
    let guard = lock.lock().await.unwrap();
    guard.unlock().await.unwrap();
    sleep(Duration::from_millis(600 + 2000)).await; // landed, and swept
    let other = peer.new_lock("late", LockOptions::default()).unwrap();
    let taken = other
        .try_lock()
        .await
        .unwrap()
        .expect("the late enqueue left a key that holds the name");
    taken.unlock().await.unwrap();
    assert!(bystander.is_held(), "the sweep hurt another lock");
    bystander.unlock().await.unwrap();
    no_keys_left_within(fx, &peer, Duration::from_secs(5), "a key was left behind").await;
}

/// #17.4: `unlock()` dropped while its delete is on the wire (the macro's
/// call dropped while releasing, `timeout(d, guard.unlock())`). The same
/// process locks the name again at once; when the old delete lands, the new
/// holder's key must survive it.
async fn a_dropped_unlock_never_deletes_the_next_holders_key(fx: &Fixture) {
    let faults = Faults::new();
    let manager = faulty(fx, &faults).await;
    let observer = fx.another().await;
    let lock = manager.new_lock("dropped", LockOptions::default()).unwrap();
    let first = lock.lock().await.unwrap();
    faults.inject(Op::Delete, Fault::Slow(Duration::from_millis(500)), 1);
    let cut = timeout(Duration::from_millis(50), first.unlock()).await;
    assert!(cut.is_err(), "the unlock was not cut off");
    let second = lock.lock_timeout(Duration::from_secs(5)).await.unwrap();
    sleep(Duration::from_millis(800)).await; // the slow delete has landed
    still_holds(&observer, "dropped", second).await;
    no_keys_left_within(
        fx,
        &observer,
        Duration::from_secs(5),
        "a key was left behind",
    )
    .await;
}

/// #17.7: a lock without auto-renew has a lease of its own, which its
/// release revokes: when the revoke keeps failing, `unlock()` says so (it
/// used to return `Ok`), after retrying until the lease would have run out.
async fn a_failed_revoke_of_a_locks_own_lease_is_reported(fx: &Fixture) {
    let faults = Faults::new();
    let manager = faulty(fx, &faults).await;
    let opts = LockOptions::default()
        .auto_renew(false)
        .ttl(Duration::from_secs(2));
    let guard = manager
        .new_lock("own", opts.clone())
        .unwrap()
        .lock()
        .await
        .unwrap();
    faults.always(Op::Revoke, Fault::Fail);
    let err = timeout(Duration::from_secs(5), guard.unlock())
        .await
        .expect("the release is bounded by the lease's TTL")
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Backend, "{err}");
    assert!(faults.calls(Op::Revoke) > 1, "the revoke was not retried");
    faults.heal();
    // The lease was not renewed: the lock frees at its TTL.
    let other = fx.another().await.new_lock("own", opts).unwrap();
    other
        .lock_timeout(Duration::from_secs(5))
        .await
        .expect("freed at its TTL")
        .unlock()
        .await
        .unwrap();
}

/// #17.7: `try_lock` right after this process's own `lock_timeout` on the
/// name ran out (its cleanup still deleting the waiter key) is not "busy":
/// nobody else holds or waits, so it waits for our cleanup and takes it.
async fn a_try_after_our_own_timeout_is_not_busy(fx: &Fixture) {
    let faults = Faults::new();
    let ours = faulty(fx, &faults).await;
    let holder = fx.another().await;
    let lock = ours
        .new_lock("after-timeout", LockOptions::default())
        .unwrap();
    for round in 0..4 {
        let held = holder
            .new_lock("after-timeout", LockOptions::default())
            .unwrap()
            .lock()
            .await
            .unwrap();
        assert!(lock.try_lock().await.unwrap().is_none(), "round {round}");
        // The timed-out waiter's cleanup delete takes a while.
        faults.inject(Op::Delete, Fault::Slow(Duration::from_millis(300)), 1);
        let err = lock
            .lock_timeout(Duration::from_millis(300))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Timeout, "round {round}: {err}");
        held.unlock().await.unwrap();
        let taken = lock.try_lock().await.unwrap();
        let taken = taken.unwrap_or_else(|| panic!("round {round}: our own cleanup read as busy"));
        taken.unlock().await.unwrap();
    }
}

/// #17.3: a task that blocks its thread past the TTL on a `current_thread`
/// runtime (where the keeper task cannot run) sees its lock lost on its own
/// clock: `is_held()` is false, `lost()` is ready at once, the current-lock
/// view hands out no token — while a peer has taken the lock.
async fn a_blocked_thread_sees_its_lock_lost_on_its_own_clock(fx: &Fixture) {
    let victim = fx.another().await;
    let peer = fx.another().await;
    let opts = short_ttl(2);
    let (taken_tx, taken_rx) = std::sync::mpsc::channel::<u64>();
    let blocked = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let lock = victim.new_lock("blocked", short_ttl(2)).unwrap();
            let guard = lock.lock().await.unwrap();
            let scope = guard.scope();
            assert_eq!(
                scope.enter(distlock::current_fencing_token),
                Some(guard.fencing_token())
            );
            // CPU work or a blocking call: nothing else runs on this thread.
            let peer_token = taken_rx.recv_timeout(Duration::from_secs(10)).unwrap();
            assert!(peer_token > guard.fencing_token());
            assert!(!guard.is_held(), "held after a peer took the lock");
            let mut lost = std::pin::pin!(guard.lost());
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(lost.as_mut().poll(&mut cx).is_ready(), "lost() not ready");
            assert_eq!(scope.enter(distlock::current_fencing_token), None);
            assert_eq!(guard.unlock().await.unwrap_err().code(), ErrorCode::Expired);
        });
    });
    sleep(Duration::from_millis(300)).await;
    let taken = peer
        .new_lock("blocked", opts)
        .unwrap()
        .lock_timeout(Duration::from_secs(8))
        .await
        .expect("the blocked holder's lease ran out");
    taken_tx.send(taken.fencing_token()).unwrap();
    tokio::task::spawn_blocking(move || blocked.join())
        .await
        .unwrap()
        .unwrap();
    taken.unlock().await.unwrap();
}

on_both_backends!(
    a_late_first_enqueue_leaves_no_key,
    a_dropped_unlock_never_deletes_the_next_holders_key,
    a_failed_revoke_of_a_locks_own_lease_is_reported,
    a_try_after_our_own_timeout_is_not_busy,
    a_blocked_thread_sees_its_lock_lost_on_its_own_clock,
    a_release_that_keeps_failing_still_frees_the_lock,
    tokens_never_repeat_after_a_failed_release,
    lease_grants_are_retried,
    a_try_is_bounded_while_the_backend_stalls,
    a_lost_lock_frees_its_own_process,
    a_release_whose_answer_was_lost_succeeds,
    an_enqueue_whose_answer_was_lost_keeps_its_place,
    a_stale_release_delete_spares_the_next_holder,
    no_guard_on_a_session_lost_while_acquiring,
    a_reentrant_lock_racing_the_last_drop_acquires,
    cleanups_end_with_close,
    close_revokes_sessions_at_once,
    options_that_lose_every_lock_are_refused,
    an_inspection_read_is_tried_again_after_a_transient_failure,
);

/// An inspection read (`lock_info`, `list_locks`, a lease's expiry) that
/// fails transiently once — a connection reset, as CI once saw on etcd 3.5 —
/// is tried again, as a lock call's reads are; one that keeps failing says
/// `Backend`, retryable.
async fn an_inspection_read_is_tried_again_after_a_transient_failure(fx: &Fixture) {
    let faults = Faults::new();
    let manager = faulty(fx, &faults).await;
    let lock = manager.new_lock("inspected", LockOptions::default());
    let held = lock.unwrap().lock().await.unwrap();
    faults.inject(Op::List, Fault::Fail, 1);
    let info = manager.lock_info("inspected").await.unwrap();
    assert_eq!(info.map(|i| i.fencing_token), Some(held.fencing_token()));
    faults.inject(Op::List, Fault::Fail, 1);
    assert_eq!(manager.list_locks("").await.unwrap().len(), 1);
    faults.inject(Op::TimeToLive, Fault::Fail, 1);
    let info = manager.lock_info("inspected").await.unwrap().unwrap();
    assert!(info.expire_time.is_some(), "the lease's expiry was read");
    faults.always(Op::List, Fault::Fail);
    let err = manager.lock_info("inspected").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Backend);
    assert!(err.is_retryable(), "{err}");
    faults.heal();
    held.unlock().await.unwrap();
}

/// #8.1, as observed: a `try_lock`ed lock held past its TTL, unlocked during
/// a one-second network stall, is free for others soon after the network
/// heals (not 12 s later, not never).
#[tokio::test]
async fn an_unlock_during_a_network_stall_frees_the_lock_after_the_heal() {
    init_tracing();
    let etcd = Etcd::start().await;
    let ns = etcd.namespace();
    let proxy = TcpProxy::start_for(&etcd.endpoints()[0]).await;
    let config = EtcdConfig::new([proxy.endpoint()]).request_timeout(Duration::from_millis(400));
    let stalled = LockManager::connect(config, &ns).await.unwrap();
    let other = connect(&etcd, &ns).await;
    let opts = short_ttl(3);
    let guard = stalled
        .new_lock("stall", opts.clone())
        .unwrap()
        .try_lock()
        .await
        .unwrap()
        .expect("free");
    sleep(Duration::from_millis(3300)).await;
    proxy.blackhole();
    let unlock = tokio::spawn(guard.unlock());
    sleep(Duration::from_secs(1)).await;
    proxy.restore();
    let healed = Instant::now();
    let taken = other
        .new_lock("stall", opts)
        .unwrap()
        .lock_timeout(Duration::from_secs(4))
        .await
        .expect("free within a TTL of the heal");
    assert!(healed.elapsed() < Duration::from_secs(3));
    // Whether the holder's unlock saw its delete land or its lease go, it ended.
    timeout(Duration::from_secs(5), unlock)
        .await
        .unwrap()
        .unwrap()
        .ok();
    taken.unlock().await.unwrap();
    assert!(raw_keys(&etcd, &ns).await.is_empty());
}

/// Puts `key` (a queue key `{queue}{lease hex}`) by hand, under the lease its
/// name gives, as a stale enqueue of ours landing late would leave it; returns
/// its create revision.
async fn put_leftover(etcd: &Etcd, key: &str) -> i64 {
    let lease = i64::from_str_radix(key.rsplit('/').next().unwrap(), 16).unwrap();
    let put = raw_client(etcd)
        .await
        .put(
            key,
            r#"{"owner":"stale"}"#,
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )
        .await
        .unwrap();
    put.header().unwrap().revision()
}

/// A leftover key of ours *ahead* of us (on another session of this manager)
/// is deleted at its own create revision only: should that delete land late
/// (etcd issue 22082's stale retry), the session's next key of the name, made
/// meanwhile, survives it. (The leftover is put by hand: the library retires
/// a session whose request may apply unheard, so this guards the fence
/// itself.)
#[tokio::test]
async fn a_stale_delete_of_a_leftover_ahead_spares_the_next_key() {
    let fx = Fixture::etcd().await;
    let etcd = fx.etcd.as_ref().unwrap();
    let faults = Faults::new();
    let manager = faulty(&fx, &faults).await;
    let observer = fx.another().await;
    // Two sessions of one manager: option sets with different TTLs.
    let on_b = manager.new_lock("ahead", short_ttl(20)).unwrap();
    let on_a = manager.new_lock("ahead", LockOptions::default()).unwrap();
    let first_b = on_b.lock().await.unwrap();
    let key_b = observer.lock_info("ahead").await.unwrap().unwrap().key;
    first_b.unlock().await.unwrap();
    put_leftover(etcd, &key_b).await;
    faults.inject(Op::Delete, Fault::Late(Duration::from_millis(1500)), 1);
    let stale_lands = Instant::now() + Duration::from_millis(1500);
    let a = on_a.lock_timeout(Duration::from_secs(5)).await.unwrap();
    a.unlock().await.unwrap();
    let b = on_b.lock_timeout(Duration::from_secs(5)).await.unwrap();
    let key = observer.lock_info("ahead").await.unwrap().unwrap().key;
    assert_eq!(key, key_b, "the next key of the name is on the same lease");
    assert!(Instant::now() < stale_lands, "too slow to test the race");
    sleep_until(stale_lands + Duration::from_millis(300)).await;
    still_holds(&observer, "ahead", b).await;
    assert!(raw_keys(etcd, &fx.namespace).await.is_empty());
}

/// #8.3: a key of ours left in a queue (a request that applied after we gave
/// up on it) is deleted, never adopted: the token it would repeat is never
/// handed out, and nothing is left.
#[tokio::test]
async fn a_leftover_key_of_ours_is_never_adopted() {
    init_tracing();
    let etcd = Etcd::start().await;
    let ns = etcd.namespace();
    let manager = connect(&etcd, &ns).await;
    let lock = manager.new_lock("left", LockOptions::default()).unwrap();
    let guard = lock.lock().await.unwrap();
    let key = manager.lock_info("left").await.unwrap().unwrap().key;
    guard.unlock().await.unwrap();
    let leftover_rev = put_leftover(&etcd, &key).await as u64;
    let again = lock.lock_timeout(Duration::from_secs(5)).await.unwrap();
    assert!(
        again.fencing_token() > leftover_rev,
        "adopted the leftover (token {}, leftover {leftover_rev})",
        again.fencing_token()
    );
    again.unlock().await.unwrap();
    assert!(raw_keys(&etcd, &ns).await.is_empty());
}

/// #17.5: a manager whose tasks (the holds' deletion watch, the session
/// keeper, lease expiry in memory) were started on a runtime that has shut
/// down since — a manager made in a temporary runtime, or a default manager
/// shared by per-test runtimes — keeps working on the next runtime: it
/// locks, its holds hear a force-unlock, concurrent locks go through.
#[test]
fn a_memory_manager_outlives_the_runtime_that_started_its_tasks() {
    init_tracing();
    let manager = LockManager::in_memory();
    let admin = manager.peer();
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    first.block_on(async {
        let guard = manager
            .new_lock("warm", short_ttl(2))
            .unwrap()
            .lock()
            .await
            .unwrap();
        sleep(Duration::from_millis(300)).await; // old enough to be watched
        guard.unlock().await.unwrap();
    });
    drop(first);
    let second = tokio::runtime::Runtime::new().unwrap();
    second.block_on(async {
        works_on_a_new_runtime(&manager, &admin).await;
    });
}

/// #17.5 on etcd: the etcd client's connection runs on the runtime it was
/// made on and dies with it, so a manager made in a runtime that has shut
/// down cannot reach etcd any more: every call fails at once with a clear
/// `Backend` error (never retried as if transient, never hanging), and a
/// manager made on the new runtime works.
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
        let guard = manager
            .new_lock("warm", short_ttl(2))
            .unwrap()
            .lock()
            .await
            .unwrap();
        sleep(Duration::from_millis(300)).await;
        guard.unlock().await.unwrap();
        manager
    });
    drop(first);
    let second = tokio::runtime::Runtime::new().unwrap();
    second.block_on(async {
        let lock = stale.new_lock("after", LockOptions::default()).unwrap();
        let err = timeout(Duration::from_secs(5), lock.lock())
            .await
            .expect("a call on a dead connection hung")
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Backend, "{err}");
        assert!(err.to_string().contains("runtime"), "{err}");
        assert!(
            !err.is_retryable(),
            "retrying on a dead connection cannot help: {err}"
        );
        let fresh = connect(&etcd, &ns).await;
        let admin = connect(&etcd, &ns).await;
        works_on_a_new_runtime(&fresh, &admin).await;
    });
    drop(second);
    drop(harness);
}

/// Locks through `manager`, hears a force-unlock by `admin`, and runs
/// concurrent acquisitions on distinct names (the batched write path).
async fn works_on_a_new_runtime(manager: &LockManager, admin: &LockManager) {
    let guard = timeout(
        Duration::from_secs(5),
        manager.new_lock("after", short_ttl(2)).unwrap().lock(),
    )
    .await
    .expect("locking hung on the new runtime")
    .expect("locking failed on the new runtime");
    sleep(Duration::from_millis(300)).await; // old enough to be watched
    assert!(admin.force_unlock("after").await.unwrap());
    timeout(Duration::from_secs(3), guard.lost())
        .await
        .expect("the hold never heard of the force-unlock");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32 {
        let manager = manager.clone();
        tasks.spawn(async move {
            let lock = manager.new_lock(format!("many-{i}"), LockOptions::default())?;
            lock.lock_timeout(Duration::from_secs(5))
                .await?
                .unlock()
                .await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap()
            .expect("a concurrent lock failed on the new runtime");
    }
    // Over a TTL: the session's keeper runs here, or locks would be lost.
    let held = manager
        .new_lock("long", short_ttl(2))
        .unwrap()
        .lock()
        .await
        .unwrap();
    sleep(Duration::from_millis(2500)).await;
    assert!(
        held.is_held(),
        "nobody renewed the lease on the new runtime"
    );
    held.unlock().await.unwrap();
}
