//! Releases under faults: deletes that keep failing, or whose answers are
//! lost or land late; guards dropped; managers closed; a network stall.

use std::time::Duration;

use distlock::testing::{Fault, Faults, Op};
use distlock::{ErrorCode, LockOptions};
use tokio::time::{sleep, timeout, Instant};

use super::support::prim::{for_each_prim, Prim};
use super::support::{faulty, proxied, raw_keys, short_ttl, Fixture};
use super::{anything_left, code_of, nothing_left_within};

/// #8.1/#8.2: a release whose deletes fail for longer than the retry budget
/// (`max_retries(2)`, a try-mode acquisition held past its TTL) keeps
/// deleting until it succeeds: a rival in another process gets in.
pub(crate) async fn a_release_that_keeps_failing_still_frees_the_name(fx: &Fixture) {
    let other = &fx.another().await;
    for_each_prim(|prim| async move {
        let name = &prim.name("r");
        let faults = Faults::new();
        let holder = faulty(fx, &faults).await;
        let opts = short_ttl(2).max_retries(2);
        let held = prim.handle(&holder, name, opts.clone());
        let held = held.try_acquire().await.unwrap().expect("free");
        sleep(Duration::from_millis(2300)).await; // held past its TTL
        faults.inject(Op::Delete, Fault::Fail, 8); // ~0.8 s of failures
        timeout(Duration::from_secs(5), held.release())
            .await
            .unwrap_or_else(|_| panic!("{prim:?}: the release hung"))
            .unwrap_or_else(|e| panic!("{prim:?}: the release failed: {e}"));
        let rival = prim.rival().handle(other, name, opts);
        let taken = rival.acquire_timeout(Duration::from_secs(3)).await;
        let taken = taken.unwrap_or_else(|e| panic!("{prim:?}: not freed: {e}"));
        taken.release().await.unwrap();
        nothing_left_within(fx, other, prim, name, Duration::from_secs(3)).await;
    })
    .await;
}

/// #8.3: a release that cannot delete its key says so after about one TTL
/// (a multi-lock's too, however many names it has), and never leaves that
/// key to be adopted by the next acquisition: tokens of one handle strictly
/// increase, and the retired lease takes the key along.
pub(crate) async fn tokens_never_repeat_after_a_failed_release(fx: &Fixture) {
    let observer = &fx.manager();
    for_each_prim(|prim| async move {
        let name = &prim.name("t");
        let faults = Faults::new();
        let manager = faulty(fx, &faults).await;
        let handle = prim.handle(&manager, name, short_ttl(2).max_retries(3));
        let first = handle.acquire().await.unwrap();
        let t1 = first.token();
        faults.always(Op::Delete, Fault::Fail);
        let started = Instant::now();
        let err = timeout(Duration::from_secs(10), first.release())
            .await
            .unwrap_or_else(|_| panic!("{prim:?}: a failing release never ended"))
            .expect_err("the deletes all failed");
        assert_eq!(err.code(), ErrorCode::Backend, "{prim:?}: {err}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1500),
            "{prim:?}: gave up early"
        );
        assert!(
            took < Duration::from_millis(3500),
            "{prim:?}: took {took:?}"
        );
        faults.heal();
        let second = handle.acquire_timeout(Duration::from_secs(6)).await;
        let second = second.unwrap_or_else(|e| panic!("{prim:?}: not usable again: {e}"));
        let t2 = second.token();
        assert!(t2 > t1, "{prim:?}: token repeated or went back: {t1}, {t2}");
        second.release().await.unwrap();
        nothing_left_within(fx, observer, prim, name, Duration::from_secs(5)).await;
    })
    .await;
}

/// A release (a resignation) whose delete applied but whose answer was lost
/// reports success, not `Expired`, and leaves nothing.
pub(crate) async fn a_release_whose_answer_was_lost_succeeds(fx: &Fixture) {
    let observer = &fx.manager();
    for_each_prim(|prim| async move {
        let name = &prim.name("lose");
        let faults = Faults::new();
        let manager = faulty(fx, &faults).await;
        let held = prim.handle(&manager, name, LockOptions::default());
        let held = held.acquire().await.unwrap();
        faults.inject(Op::Delete, Fault::Lose, 1);
        held.release()
            .await
            .unwrap_or_else(|e| panic!("{prim:?}: the release applied, yet: {e}"));
        assert!(
            !anything_left(fx, observer, prim, name).await,
            "{prim:?}: left a key"
        );
    })
    .await;
}

/// etcd issue 22082's stale retry: a release's delete gets no answer, is
/// retried and applies; the first delete lands later, after the same handle
/// acquired again (on one session an exclusive entry's key has the same
/// name). The new holder must keep what it holds: a rival still finds the
/// name taken.
pub(crate) async fn a_stale_release_delete_spares_the_next_holder(fx: &Fixture) {
    let rivals = &fx.another().await;
    for_each_prim(|prim| async move {
        let name = &prim.name("stale");
        let faults = Faults::new();
        let manager = faulty(fx, &faults).await;
        let handle = prim.handle(&manager, name, LockOptions::default());
        let first = handle.acquire().await.unwrap();
        faults.inject(Op::Delete, Fault::Late(Duration::from_millis(600)), 1);
        first.release().await.expect("the retried delete applied");
        let second = handle
            .acquire_timeout(Duration::from_secs(5))
            .await
            .unwrap();
        sleep(Duration::from_millis(900)).await; // the stale delete has landed
        assert!(
            second.is_held(),
            "{prim:?}: the stale delete took the new key"
        );
        let rival = prim.rival().handle(rivals, name, LockOptions::default());
        let busy = rival.try_acquire().await.unwrap();
        assert!(
            busy.is_none(),
            "{prim:?}: a rival got in: the key was deleted"
        );
        second.release().await.unwrap();
        nothing_left_within(fx, rivals, prim, name, Duration::from_secs(5)).await;
    })
    .await;
}

/// #9: `close()` revokes at once (the TTL is the default 30 s, so only the
/// revoke explains a rival getting in): every hold is lost at once, rivals
/// get in, and the closed manager's calls fail with `Closed`.
pub(crate) async fn close_revokes_at_once(fx: &Fixture) {
    let manager = fx.another().await;
    let rivals = &fx.another().await;
    let mut holds = Vec::new();
    for prim in Prim::ALL {
        let handle = prim.handle(&manager, &prim.name("close"), LockOptions::default());
        let held = handle.acquire().await.unwrap();
        holds.push((prim, handle, held));
    }
    let started = Instant::now();
    manager.close().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "close took long"
    );
    for (prim, _, held) in &holds {
        assert!(
            !held.is_held() && held.lost_now(),
            "{prim:?}: held after close"
        );
    }
    for_each_prim(|prim| async move {
        let rival = prim
            .rival()
            .handle(rivals, &prim.name("close"), LockOptions::default());
        let taken = rival.acquire_timeout(Duration::from_secs(3)).await;
        let taken = taken.unwrap_or_else(|e| panic!("{prim:?}: not freed by close: {e}"));
        taken.release().await.unwrap();
    })
    .await;
    for (prim, handle, held) in holds {
        let err = held.release().await.expect_err("closed");
        assert_eq!(err.code(), ErrorCode::Closed, "{prim:?}: {err}");
        let again = handle.acquire().await;
        assert_eq!(code_of("after close", prim, again), ErrorCode::Closed);
    }
}

/// A guard dropped without a release (even while deletes fail for a while)
/// frees the name in the background, long before its 30 s TTL.
pub(crate) async fn a_dropped_guard_frees_in_the_background(fx: &Fixture) {
    let rivals = &fx.another().await;
    for_each_prim(|prim| async move {
        let name = &prim.name("dropped");
        let faults = Faults::new();
        let manager = faulty(fx, &faults).await;
        let held = prim.handle(&manager, name, LockOptions::default());
        let held = held.acquire().await.unwrap();
        faults.inject(Op::Delete, Fault::Fail, 3);
        drop(held);
        let rival = prim.rival().handle(rivals, name, LockOptions::default());
        let taken = rival.acquire_timeout(Duration::from_secs(3)).await;
        let taken = taken.unwrap_or_else(|e| panic!("{prim:?}: a dropped guard kept it: {e}"));
        taken.release().await.unwrap();
        nothing_left_within(fx, rivals, prim, name, Duration::from_secs(3)).await;
    })
    .await;
}

/// #8.1 for every primitive, as observed: held past its TTL, released
/// during a one-second network stall (a blackholing proxy), the name is
/// free for others soon after the network heals — not a TTL later, not
/// never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_during_a_network_stall_frees_the_name_after_the_heal() {
    let p = proxied(Duration::from_millis(400)).await;
    let (behind, direct) = (&p.behind, &p.direct);
    let mut holds = Vec::new();
    for prim in Prim::ALL {
        let handle = prim.handle(behind, &prim.name("stall"), short_ttl(3));
        let held = handle.try_acquire().await.unwrap().expect("free");
        holds.push(held);
    }
    sleep(Duration::from_millis(3300)).await;
    p.proxy.blackhole();
    let releases: Vec<_> = holds
        .into_iter()
        .map(|h| tokio::spawn(h.release()))
        .collect();
    sleep(Duration::from_secs(1)).await;
    p.proxy.restore();
    let healed = Instant::now();
    for_each_prim(|prim| async move {
        let rival = prim
            .rival()
            .handle(direct, &prim.name("stall"), short_ttl(3));
        let taken = rival.acquire_timeout(Duration::from_secs(4)).await;
        let taken = taken.unwrap_or_else(|e| panic!("{prim:?}: not freed after the heal: {e}"));
        assert!(
            healed.elapsed() < Duration::from_secs(3),
            "{prim:?}: freed late"
        );
        taken.release().await.unwrap();
    })
    .await;
    for release in releases {
        // Whether it saw its delete land or its lease go, it ended.
        let _ = timeout(Duration::from_secs(5), release)
            .await
            .unwrap()
            .unwrap();
    }
    assert!(raw_keys(&p.etcd, direct.namespace()).await.is_empty());
}

/// Issue #19: a multi-lock's release deletes all its keys in one
/// transaction — one delete call however many names, whether released,
/// dropped, or retried after failures and a lost answer — and ends with
/// every name free, in its process and for others, and no key left.
pub(crate) async fn a_multi_lock_release_is_one_transaction(fx: &Fixture) {
    let (prim, name) = (Prim::Multi, "one-txn");
    let observer = &fx.another().await;
    let faults = Faults::new();
    let manager = faulty(fx, &faults).await;
    let handle = prim.handle(&manager, name, LockOptions::default());
    let names = Prim::multi_names(name);
    // Every name is free in the multi-lock's own process, and for others.
    let all_free = || async {
        for n in &names {
            let own = manager.new_lock(n, LockOptions::default()).unwrap();
            let own = own.try_lock().await.unwrap().expect("not freed locally");
            own.unlock().await.unwrap();
        }
        nothing_left_within(fx, observer, prim, name, Duration::from_secs(3)).await;
    };
    let deletes = || faults.calls(Op::Delete);

    let held = handle.acquire().await.unwrap();
    let before = deletes();
    held.release().await.unwrap();
    assert_eq!(deletes() - before, 1, "a release of 2 names: one delete");
    all_free().await;

    let held = handle.acquire().await.unwrap();
    let before = deletes();
    drop(held);
    all_free().await;
    // The deletes of `all_free`'s own locks: one each.
    assert_eq!(deletes() - before, 1 + names.len(), "a dropped guard");

    // Three failures, then an attempt that applies but whose answer is lost:
    // the retries are of the one transaction, and the release succeeds.
    let held = handle.acquire().await.unwrap();
    faults.inject(Op::Delete, Fault::Fail, 3);
    faults.inject(Op::Delete, Fault::Lose, 1);
    let before = deletes();
    timeout(Duration::from_secs(5), held.release())
        .await
        .expect("the release hung")
        .expect("the release applied");
    assert_eq!(deletes() - before, 5, "3 failed, 1 lost, 1 found nothing");
    all_free().await;
}

/// A multi-lock's release whose future is dropped while its one delete is
/// on the wire finishes in the background: the names are free again, in
/// its process and for others, and no key is left.
pub(crate) async fn a_dropped_multi_lock_release_finishes(fx: &Fixture) {
    let (prim, name) = (Prim::Multi, "dropped-release");
    let observer = &fx.another().await;
    let faults = Faults::new();
    let manager = faulty(fx, &faults).await;
    let held = prim.handle(&manager, name, LockOptions::default());
    let held = held.acquire().await.unwrap();
    faults.inject(Op::Delete, Fault::Slow(Duration::from_millis(500)), 1);
    faults.inject(Op::Delete, Fault::Fail, 2);
    let cut = timeout(Duration::from_millis(100), held.release()).await;
    assert!(cut.is_err(), "the release ended before its delete landed");
    nothing_left_within(fx, observer, prim, name, Duration::from_secs(5)).await;
    for n in Prim::multi_names(name) {
        let own = manager.new_lock(&n, LockOptions::default()).unwrap();
        let own = timeout(Duration::from_secs(3), own.lock())
            .await
            .expect("the name stayed taken in its process")
            .unwrap();
        own.unlock().await.unwrap();
        let rival = observer.new_lock(&n, LockOptions::default()).unwrap();
        let rival = rival.try_lock().await.unwrap().expect("free for others");
        rival.unlock().await.unwrap();
    }
}

/// A multi-lock without auto-renew has a lease of its own: its release
/// revokes that lease once (which deletes every key) and deletes nothing,
/// and every name is free again, in its process and for others.
pub(crate) async fn a_multi_lock_on_its_own_lease_is_released_by_one_revoke(fx: &Fixture) {
    let (prim, name) = (Prim::Multi, "own-lease");
    let observer = &fx.another().await;
    let faults = Faults::new();
    let manager = faulty(fx, &faults).await;
    let opts = LockOptions::default().auto_renew(false);
    let held = prim.handle(&manager, name, opts).acquire().await.unwrap();
    let (deletes, revokes) = (faults.calls(Op::Delete), faults.calls(Op::Revoke));
    held.release().await.unwrap();
    assert_eq!(faults.calls(Op::Delete), deletes, "a key was deleted");
    assert_eq!(faults.calls(Op::Revoke) - revokes, 1, "one revoke");
    nothing_left_within(fx, observer, prim, name, Duration::from_secs(3)).await;
    for n in Prim::multi_names(name) {
        let own = manager.new_lock(&n, LockOptions::default()).unwrap();
        let own = own.try_lock().await.unwrap().expect("not freed locally");
        own.unlock().await.unwrap();
    }
}
