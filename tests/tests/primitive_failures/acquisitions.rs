//! Acquisitions under faults: enqueues whose answers are lost or land late,
//! tries and bounded waits while the backend stalls or fails, our own
//! cleanups, acquisitions dropped at every stage.

use std::time::Duration;

use distlock::testing::{Fault, Faults, Op};
use distlock::{ErrorCode, LockOptions};
use tokio::time::{sleep, timeout, Instant};

use super::support::prim::for_each_prim;
use super::support::{faulty, Fixture};
use super::{code_of, count, nothing_left_within, wait_entries};

/// An enqueue that applied but whose answer was lost is retried; the retry
/// finds the key it made and keeps its place: at the head of a free name
/// (one key, no second), behind the holder of a busy one (it waits, then
/// gets in in turn with a greater token). Nothing is left.
pub(crate) async fn an_enqueue_whose_answer_was_lost_keeps_its_place(fx: &Fixture) {
    let observer = &fx.another().await;
    for_each_prim(|prim| async move {
        let name = &prim.name("free");
        let faults = Faults::new();
        let manager = faulty(fx, &faults).await;
        faults.inject(Op::Enqueue, Fault::Lose, 1);
        let held = prim.handle(&manager, name, LockOptions::default());
        let held = held.acquire_timeout(Duration::from_secs(5)).await.unwrap();
        let keys = count(fx, observer, prim, name).await;
        let one = prim.keys_per_entry();
        assert!(keys.is_none_or(|n| n == one), "{prim:?}: {keys:?} keys");
        held.release().await.unwrap();
        nothing_left_within(fx, observer, prim, name, Duration::from_secs(3)).await;

        let name = &prim.name("busy");
        let rival = prim.rival().handle(observer, name, LockOptions::default());
        let rival = rival.acquire().await.unwrap();
        faults.inject(Op::Enqueue, Fault::Lose, 1);
        let handle = prim.handle(&manager, name, LockOptions::default());
        let waiting = tokio::spawn(async move {
            let held = handle.acquire_timeout(Duration::from_secs(10)).await;
            (handle, held)
        });
        wait_entries(fx, observer, prim, name, 2).await;
        // The first enqueue applied; its retry comes a retry interval later.
        sleep(Duration::from_millis(500)).await;
        assert!(!waiting.is_finished(), "{prim:?}: got in past a holder");
        let keys = count(fx, observer, prim, name).await;
        assert!(
            keys.is_none_or(|n| n == 2 * one),
            "{prim:?}: {keys:?} keys: the retry made a second key"
        );
        let token = rival.token();
        rival.release().await.unwrap();
        let (_handle, held) = timeout(Duration::from_secs(10), waiting)
            .await
            .unwrap()
            .unwrap();
        let held = held.unwrap_or_else(|e| panic!("{prim:?}: not in turn: {e}"));
        assert!(held.token() > token);
        held.release().await.unwrap();
        nothing_left_within(fx, observer, prim, name, Duration::from_secs(3)).await;
    })
    .await;
}

/// #17.2 for every primitive (the election's campaign too): the first
/// enqueue gets no answer and lands late, after its retry won and the hold
/// was released. It must not leave a key that the session's lease keeps
/// alive (a bystander lock keeps that lease in use): a rival finds the name
/// free, and the bystander is unharmed.
pub(crate) async fn a_late_first_enqueue_leaves_no_key(fx: &Fixture) {
    let rivals = &fx.another().await;
    for_each_prim(|prim| async move {
        let name = &prim.name("late");
        let faults = Faults::new();
        let manager = faulty(fx, &faults).await;
        let bystander = manager.new_lock(prim.name("bystander"), LockOptions::default());
        let bystander = bystander.unwrap().lock().await.unwrap();
        faults.inject(Op::Enqueue, Fault::Late(Duration::from_millis(600)), 1);
        let held = prim.handle(&manager, name, LockOptions::default());
        held.acquire().await.unwrap().release().await.unwrap();
        sleep(Duration::from_millis(600 + 2000)).await; // landed, and swept
        let rival = prim.rival().handle(rivals, name, LockOptions::default());
        let taken = rival.try_acquire().await.unwrap();
        let taken = taken.unwrap_or_else(|| panic!("{prim:?}: a late enqueue's key holds it"));
        taken.release().await.unwrap();
        assert!(bystander.is_held(), "{prim:?}: the sweep hurt another lock");
        bystander.unlock().await.unwrap();
        nothing_left_within(fx, rivals, prim, name, Duration::from_secs(3)).await;
    })
    .await;
}

/// #17.7 for every primitive: a try right after this process's own timed-out
/// wait on the name, or right after it dropped its guard (its cleanup or
/// release still deleting the key), is not "busy": nobody else holds or
/// waits, so it waits for our cleanup and gets in.
pub(crate) async fn a_try_after_our_own_timeout_is_not_busy(fx: &Fixture) {
    let rivals = &fx.another().await;
    for_each_prim(|prim| async move {
        let name = &prim.name("after-timeout");
        let faults = Faults::new();
        let manager = faulty(fx, &faults).await;
        let ours = prim.handle(&manager, name, LockOptions::default());
        for round in 0..3 {
            let rival = prim.rival().handle(rivals, name, LockOptions::default());
            let held = rival.acquire().await.unwrap();
            let busy = ours.try_acquire().await.unwrap();
            assert!(
                busy.is_none(),
                "{prim:?} round {round}: got in past a holder"
            );
            // The timed-out waiter's cleanup delete takes a while.
            faults.inject(Op::Delete, Fault::Slow(Duration::from_millis(300)), 1);
            let waited = ours.acquire_timeout(Duration::from_millis(300)).await;
            assert_eq!(
                code_of("busy", prim, waited),
                ErrorCode::Timeout,
                "round {round}"
            );
            held.release().await.unwrap();
            let taken = ours.try_acquire().await.unwrap();
            let taken = taken.unwrap_or_else(|| panic!("{prim:?} round {round}: read as busy"));
            // Dropped: released in the background, slowly.
            faults.inject(Op::Delete, Fault::Slow(Duration::from_millis(300)), 1);
            drop(taken);
            let next = prim.rival().handle(&manager, name, LockOptions::default());
            let next = next.try_acquire().await.unwrap();
            let next = next.unwrap_or_else(|| panic!("{prim:?} round {round}: drop read as busy"));
            next.release().await.unwrap();
        }
    })
    .await;
}

/// #9.3: "try once" is one attempt bounded by the request timeout (backend
/// retries included), and so is a zero wait; a finite wait bounds the call.
/// Each ends in `Backend` (an outage), never in "busy" (`None`, `Timeout`).
/// A try whose enqueue is slow (it lands after the try gave up) leaves no key.
pub(crate) async fn a_try_is_bounded_while_the_backend_stalls(fx: &Fixture) {
    let observer = &fx.another().await;
    for_each_prim(|prim| async move {
        let faults = Faults::new();
        let manager = faulty(fx, &faults).await;
        let opts = LockOptions::default;
        faults.always(Op::Enqueue, Fault::Stall);
        // Names of their own: an abandoned attempt's cleanup keeps its
        // name's local slot until the stalled request is over.
        let started = Instant::now();
        let tried = prim
            .handle(&manager, &prim.name("z1"), opts())
            .try_acquire()
            .await;
        let err = tried.expect_err("a stalled try reads as busy");
        assert_eq!(err.code(), ErrorCode::Backend, "{prim:?} try: {err}");
        let zero = prim.handle(&manager, &prim.name("z2"), opts());
        let zero = zero.acquire_timeout(Duration::ZERO).await;
        assert_eq!(code_of("timeout(0)", prim, zero), ErrorCode::Backend);
        assert!(
            started.elapsed() < Duration::from_millis(5000),
            "{prim:?}: two tries took {:?}",
            started.elapsed()
        );
        let started = Instant::now();
        let waited = prim.handle(&manager, &prim.name("z3"), opts());
        let waited = waited.acquire_timeout(Duration::from_secs(2)).await;
        assert_eq!(code_of("timeout(2 s)", prim, waited), ErrorCode::Backend);
        assert!(started.elapsed() < Duration::from_secs(3), "{prim:?}");
        faults.heal();

        let name = &prim.name("slow");
        faults.inject(Op::Enqueue, Fault::Slow(Duration::from_millis(1500)), 1);
        let started = Instant::now();
        let tried = prim.handle(&manager, name, opts()).try_acquire().await;
        assert_eq!(tried.expect_err("answered").code(), ErrorCode::Backend);
        assert!(started.elapsed() < Duration::from_millis(2500), "{prim:?}");
        sleep(Duration::from_millis(1500)).await; // the slow enqueue landed
        nothing_left_within(fx, observer, prim, name, Duration::from_secs(3)).await;
        let rival = prim.rival().handle(observer, name, opts());
        let taken = rival.try_acquire().await.unwrap();
        taken
            .expect("a slow enqueue's key holds the name")
            .release()
            .await
            .unwrap();
    })
    .await;
}

/// DESIGN §7, outage is not contention: a wait behind a holder that runs
/// out while the backend fails (reads and watches) is `Backend`, not
/// `Timeout`; the abandoned waiter leaves nothing once the backend is back.
pub(crate) async fn an_outage_while_waiting_is_not_a_busy_name(fx: &Fixture) {
    let observer = &fx.another().await;
    for_each_prim(|prim| async move {
        let name = &prim.name("outage");
        let rival = prim.rival().handle(observer, name, LockOptions::default());
        let rival = rival.acquire().await.unwrap();
        let faults = Faults::new();
        let manager = faulty(fx, &faults).await;
        let busy = prim.handle(&manager, name, LockOptions::default());
        let busy = busy.acquire_timeout(Duration::from_millis(500)).await;
        assert_eq!(
            code_of("busy", prim, busy),
            ErrorCode::Timeout,
            "a busy name"
        );
        faults.always(Op::Position, Fault::Fail);
        faults.always(Op::WaitDeleted, Fault::Fail);
        let started = Instant::now();
        let waited = prim.handle(&manager, name, LockOptions::default());
        let waited = waited.acquire_timeout(Duration::from_millis(1500)).await;
        assert_eq!(code_of("outage", prim, waited), ErrorCode::Backend);
        assert!(started.elapsed() < Duration::from_secs(3), "{prim:?}");
        faults.heal();
        rival.release().await.unwrap();
        nothing_left_within(fx, observer, prim, name, Duration::from_secs(5)).await;
    })
    .await;
}

/// Where an acquisition is when its future is dropped.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// Its lease grant is on its way.
    Grant,
    /// Its enqueue is on the wire, and lands after the drop.
    Enqueue,
    /// Queued behind a holder, reading the keys ahead.
    Position,
    /// Queued behind a holder, watching.
    Watching,
}

/// DESIGN §3, cancellation: an acquisition dropped at any point — granting
/// its lease, enqueueing (the request lands after the drop), reading its
/// place, waiting — leaves no key: once the holder (if any) is gone, the
/// name is free for another process.
pub(crate) async fn a_dropped_acquire_leaves_no_key_at_any_point(fx: &Fixture) {
    let rivals = &fx.another().await;
    for_each_prim(|prim| async move {
        for stage in [
            Stage::Grant,
            Stage::Enqueue,
            Stage::Position,
            Stage::Watching,
        ] {
            let name = &prim.name(&format!("cancel-{stage:?}"));
            let opts = LockOptions::default;
            let faults = Faults::new();
            let manager = faulty(fx, &faults).await; // no lease yet
            let busy = matches!(stage, Stage::Position | Stage::Watching);
            let holder = match busy {
                true => Some(
                    prim.rival()
                        .handle(rivals, name, opts())
                        .acquire()
                        .await
                        .unwrap(),
                ),
                false => None,
            };
            let ms = Duration::from_millis;
            let (fault, cut) = match stage {
                Stage::Grant => (Some((Op::Grant, Fault::Delay(ms(800)))), ms(300)),
                Stage::Enqueue => (Some((Op::Enqueue, Fault::Slow(ms(800)))), ms(300)),
                Stage::Position => (Some((Op::Position, Fault::Delay(ms(1000)))), ms(300)),
                Stage::Watching => (None, ms(500)),
            };
            if let Some((op, fault)) = fault {
                faults.inject(op, fault, 1);
            }
            let handle = prim.handle(&manager, name, opts());
            let dropped = timeout(cut, handle.acquire()).await;
            assert!(dropped.is_err(), "{prim:?} {stage:?}: not cut off");
            if let Some(holder) = holder {
                holder.release().await.unwrap();
            }
            sleep(ms(600)).await; // whatever was on the wire landed
            nothing_left_within(fx, rivals, prim, name, Duration::from_secs(3)).await;
            let other = prim
                .rival()
                .handle(rivals, name, opts())
                .try_acquire()
                .await;
            let other = other
                .unwrap()
                .unwrap_or_else(|| panic!("{prim:?} {stage:?}: busy"));
            other.release().await.unwrap();
        }
    })
    .await;
}
