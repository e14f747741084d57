//! How a held lock hears that its key was deleted behind its back: each
//! manager keeps one watch of the deletions in its namespace while it has
//! holds older than 100 ms, not one watch (and one confirming read) per hold.
//! The failure paths of that watch: it cannot open, it is refused for good,
//! it stalls and breaks while a key is deleted, it falls behind a compaction.
//! In each, a deletion that happened during the gap must still be noticed.

mod support;

use std::sync::Arc;
use std::time::Duration;

use distlock::testing::{Fault, Faults, Op};
use distlock::{ErrorCode, LockGuard, LockManager, LockOptions};
use distlock_tests::{Etcd, TcpProxy};
use support::{on_both_backends, proxied, raw_client, short_ttl, still_holds, Fixture, Proxied};
use tokio::time::{sleep, timeout};

/// Long enough for a hold to be watched (the watch starts at 100 ms).
const OLD: Duration = Duration::from_millis(400);

async fn lock(manager: &LockManager, name: &str) -> LockGuard {
    manager
        .new_lock(name, LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap()
}

/// Asserts that `guard` hears of its loss within `within`.
async fn lost_within(guard: &LockGuard, within: Duration) {
    timeout(within, guard.lost())
        .await
        .unwrap_or_else(|_| panic!("{} did not hear of its loss", guard.name()));
    assert!(!guard.is_held());
}

/// A long hold hears of a force-unlock; the manager's other holds do not
/// notice anything, and the freed name is usable again in its own process.
async fn a_long_hold_hears_its_key_deleted(fx: &Fixture) {
    let manager = fx.manager();
    let admin = fx.another().await;
    let victim = lock(&manager, "victim").await;
    let bystanders = [lock(&manager, "b1").await, lock(&manager, "b2").await];
    sleep(OLD).await;
    assert!(admin.force_unlock("victim").await.unwrap());
    lost_within(&victim, Duration::from_secs(3)).await;
    for b in &bystanders {
        assert!(
            b.is_held(),
            "{} was hurt by another key's deletion",
            b.name()
        );
    }
    let again = manager.new_lock("victim", LockOptions::default()).unwrap();
    let g = timeout(Duration::from_secs(3), again.lock())
        .await
        .expect("the lost lock freed its local slot")
        .unwrap();
    assert_eq!(
        victim.unlock().await.unwrap_err().code(),
        ErrorCode::Expired
    );
    assert!(g.is_held(), "the lost guard's release took the new key");
    // The new key has the old one's name (same name, same session lease):
    // only the release's fence keeps it from deleting it.
    still_holds(&admin, "victim", g).await;
    for b in bystanders {
        b.unlock().await.unwrap();
    }
}

/// Many long holds cost one deletion watch and no per-hold read.
async fn many_holds_cost_one_watch(fx: &Fixture) {
    let faults = Faults::new();
    let manager = fx.another().await.with_faults(&faults);
    let mut guards = Vec::new();
    for i in 0..50 {
        guards.push(lock(&manager, &format!("many-{i}")).await);
    }
    let reads = faults.calls(Op::Position);
    sleep(OLD).await;
    assert_eq!(faults.calls(Op::WatchDeletes), 1, "one watch for all holds");
    assert_eq!(faults.calls(Op::Position), reads, "no read per hold");
    for g in guards {
        g.unlock().await.unwrap();
    }
}

/// While the deletion watch cannot be opened (transient failures), a key is
/// deleted; once the watch opens, it starts early enough to report it.
async fn a_deletion_while_the_watch_cannot_open_is_noticed(fx: &Fixture) {
    let faults = Faults::new();
    let manager = fx.another().await.with_faults(&faults);
    let admin = fx.another().await;
    faults.always(Op::WatchDeletes, Fault::Fail);
    let victim = lock(&manager, "gap").await;
    let bystander = lock(&manager, "gap-b").await;
    sleep(OLD).await;
    assert!(admin.force_unlock("gap").await.unwrap());
    sleep(OLD).await;
    assert!(faults.calls(Op::WatchDeletes) > 1, "the watch is retried");
    faults.heal();
    lost_within(&victim, Duration::from_secs(3)).await;
    assert!(bystander.is_held());
    bystander.unlock().await.unwrap();
}

/// A deletion watch refused for good: the lock is reported lost (nobody can
/// tell any more whether it is held), but its key may still exist, so the
/// name's local slot stays taken until the release has deleted it.
async fn a_refused_watch_reports_the_lock_lost_and_keeps_its_slot(fx: &Fixture) {
    let faults = Faults::new();
    let manager = fx.another().await.with_faults(&faults);
    faults.always(Op::WatchDeletes, Fault::Refuse);
    let guard = lock(&manager, "refused").await;
    lost_within(&guard, Duration::from_secs(3)).await;
    let same_process = Arc::new(manager.new_lock("refused", LockOptions::default()).unwrap());
    let other_task = Arc::clone(&same_process);
    let tried = tokio::spawn(async move { other_task.try_lock().await.unwrap().is_none() });
    assert!(
        tried.await.unwrap(),
        "the slot was freed while the key may exist"
    );
    // The task that holds the lost guard is told, rather than waiting for itself.
    assert_eq!(
        same_process.try_lock().await.unwrap_err().code(),
        ErrorCode::Expired
    );
    assert_eq!(guard.unlock().await.unwrap_err().code(), ErrorCode::Expired);
    faults.heal();
    let g = same_process
        .lock_timeout(Duration::from_secs(3))
        .await
        .expect("the release deleted the key and freed the slot");
    g.unlock().await.unwrap();
}

/// A session lost (keep-alives failing past the deadline) loses all of its
/// holds at once, with no task per hold: each guard hears it, and each
/// name's local slot passes to the waiter behind it in its process.
async fn a_lost_session_frees_all_its_holds_at_once(fx: &Fixture) {
    let faults = Faults::new();
    let manager = fx.another().await.with_faults(&faults);
    let opts = short_ttl(2);
    let mut held = Vec::new();
    for name in ["a", "b", "c"] {
        held.push(
            manager
                .new_lock(name, opts.clone())
                .unwrap()
                .lock()
                .await
                .unwrap(),
        );
    }
    faults.always(Op::KeepAlive, Fault::Fail);
    let waiters: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|name| {
            // Other settings: another session, which stays alive.
            let lock = manager.new_lock(name, LockOptions::default()).unwrap();
            tokio::spawn(async move { lock.lock_timeout(Duration::from_secs(5)).await })
        })
        .collect();
    // The session is given up ~1.8 s after its last keep-alive.
    lost_within(&held[0], Duration::from_secs(3)).await;
    for guard in &held[1..] {
        lost_within(guard, Duration::from_millis(100)).await;
    }
    faults.heal();
    for waiter in waiters {
        let g = waiter.await.unwrap().expect("the slot was freed");
        g.unlock().await.unwrap();
    }
}

on_both_backends!(
    a_lost_session_frees_all_its_holds_at_once,
    a_long_hold_hears_its_key_deleted,
    many_holds_cost_one_watch,
    a_deletion_while_the_watch_cannot_open_is_noticed,
    a_refused_watch_reports_the_lock_lost_and_keeps_its_slot,
);

/// The request timeout of the manager behind the proxy: its deletion watch
/// asks for progress after this much silence and drops the stream after as
/// much again.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// A manager behind a proxy holding `victim` and `bystander` (watched), and
/// one connected directly.
struct Stalled {
    etcd: Etcd,
    proxy: TcpProxy,
    direct: LockManager,
    victim: LockGuard,
    bystander: LockGuard,
    _behind: LockManager,
}

async fn stalled_setup() -> Stalled {
    let Proxied {
        etcd,
        proxy,
        direct,
        behind,
    } = proxied(REQUEST_TIMEOUT).await;
    // The lease outlives the stall.
    let opts = LockOptions::default()
        .ttl(Duration::from_secs(60))
        .renew_interval(Duration::from_secs(20));
    let victim = behind.new_lock("victim", opts.clone()).unwrap();
    let victim = victim.lock().await.unwrap();
    let bystander = behind.new_lock("bystander", opts).unwrap();
    let bystander = bystander.lock().await.unwrap();
    // Watched, and silent long enough to have reported progress.
    sleep(REQUEST_TIMEOUT + OLD).await;
    Stalled {
        etcd,
        proxy,
        direct,
        victim,
        bystander,
        _behind: behind,
    }
}

/// The watch stream stalls (a blackholed connection) and is dropped; the key
/// is deleted during the stall; the watch resumes from the last revision it
/// reported and hears of the delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_during_a_watch_stall_is_noticed_after_it() {
    let s = stalled_setup().await;
    s.proxy.blackhole();
    assert!(s.direct.force_unlock("victim").await.unwrap());
    // Progress asked after 1 s, the stream dropped 1 s later; reopening
    // fails while the stall lasts.
    sleep(REQUEST_TIMEOUT * 3).await;
    assert!(s.victim.is_held(), "nothing could have told it yet");
    s.proxy.restore();
    lost_within(&s.victim, Duration::from_secs(5)).await;
    assert!(s.bystander.is_held());
}

/// The same, but etcd compacts past the deletion during the stall: the watch
/// cannot resume, so one read confirms every hold again — the deleted one is
/// lost, the other stays held — and a new watch starts after the read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_compacted_during_a_watch_stall_is_found_by_a_read() {
    let s = stalled_setup().await;
    s.proxy.blackhole();
    assert!(s.direct.force_unlock("victim").await.unwrap());
    let mut raw = raw_client(&s.etcd).await;
    let rev = raw.put("/unrelated", "x", None).await.unwrap();
    let rev = rev.header().unwrap().revision();
    raw.compact(rev, None).await.unwrap();
    sleep(REQUEST_TIMEOUT * 3).await;
    s.proxy.restore();
    lost_within(&s.victim, Duration::from_secs(5)).await;
    assert!(s.bystander.is_held(), "a confirmed hold was reported lost");
    // The new watch works: a later deletion is heard too.
    sleep(OLD).await;
    assert!(s.direct.force_unlock("bystander").await.unwrap());
    lost_within(&s.bystander, Duration::from_secs(3)).await;
}
