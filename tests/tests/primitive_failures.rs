//! The failure paths of `tests/failure_paths.rs` (the mutex's), run over
//! every other primitive (issues #19 and #20): a semaphore's permit, a read
//! and a write lock, a multi-lock and an election's leadership, each driven
//! through one shape ([`Prim`]) so that one test body serves all five, on a
//! real etcd and in memory. Faults are injected (a fault-injecting backend, a
//! blackholing TCP proxy, a runtime that shut down, keys and leases removed
//! behind a holder's back); each test says what it guards against and checks
//! what another process sees. The five run at once, each on names and (where
//! faults are injected) a manager of its own. The tests are grouped by what
//! fails: releases, acquisitions, losses, in-place updates, runtimes.

mod support;

#[path = "primitive_failures/acquisitions.rs"]
mod acquisitions;
#[path = "primitive_failures/losses.rs"]
mod losses;
#[path = "primitive_failures/releases.rs"]
mod releases;
#[path = "primitive_failures/runtimes.rs"]
mod runtimes;
#[path = "primitive_failures/updates.rs"]
mod updates;

use std::time::Duration;

use distlock::{ErrorCode, LockManager, Result};
use support::prim::{Held, Prim};
use support::{on_both_backends, raw_keys, Fixture};
use tokio::time::{sleep, Instant};

use acquisitions::*;
use losses::*;
use releases::*;
use updates::*;

on_both_backends!(
    a_release_that_keeps_failing_still_frees_the_name,
    tokens_never_repeat_after_a_failed_release,
    a_release_whose_answer_was_lost_succeeds,
    a_stale_release_delete_spares_the_next_holder,
    an_enqueue_whose_answer_was_lost_keeps_its_place,
    a_late_first_enqueue_leaves_no_key,
    a_try_after_our_own_timeout_is_not_busy,
    a_try_is_bounded_while_the_backend_stalls,
    an_outage_while_waiting_is_not_a_busy_name,
    a_lost_lease_is_noticed_before_a_rival_gets_in,
    a_deleted_key_is_noticed_and_frees_the_process,
    a_multi_lock_that_loses_one_name_keeps_the_others_until_released,
    a_blocked_thread_sees_its_holds_lost_on_its_own_clock,
    close_revokes_at_once,
    a_dropped_guard_frees_in_the_background,
    a_dropped_acquire_leaves_no_key_at_any_point,
    a_downgrade_is_bounded_and_reports_a_loss,
    a_proclaim_is_bounded_and_reports_a_loss,
    a_multi_lock_release_is_one_transaction,
    a_dropped_multi_lock_release_finishes,
    a_multi_lock_on_its_own_lease_is_released_by_one_revoke,
);

/// How many of `prim`'s keys for `name` exist: on etcd every key in its
/// queues, in memory what the API shows `observer`; `None` when that cannot
/// be told (an election's candidates in memory).
async fn count(fx: &Fixture, observer: &LockManager, prim: Prim, name: &str) -> Option<usize> {
    match &fx.etcd {
        Some(etcd) => {
            let mut n = 0;
            for prefix in prim.queue_prefixes(&fx.namespace, name) {
                n += raw_keys(etcd, &prefix).await.len();
            }
            Some(n)
        }
        None => prim.entries(observer, name).await,
    }
}

/// Whether any key of `prim` for `name` is left.
async fn anything_left(fx: &Fixture, observer: &LockManager, prim: Prim, name: &str) -> bool {
    match count(fx, observer, prim, name).await {
        Some(n) => n > 0,
        None => Prim::leads(observer, name).await,
    }
}

/// Waits until no key of `prim` for `name` is left, failing after `within`.
async fn nothing_left_within(
    fx: &Fixture,
    observer: &LockManager,
    prim: Prim,
    name: &str,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    while anything_left(fx, observer, prim, name).await {
        assert!(Instant::now() < deadline, "{prim:?}: a key was left behind");
        sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `prim`'s queues of `name` hold `entries` acquisitions' keys
/// (as [`count`] sees them; a fixed pause where it cannot tell).
async fn wait_entries(
    fx: &Fixture,
    observer: &LockManager,
    prim: Prim,
    name: &str,
    entries: usize,
) {
    let want = entries * prim.keys_per_entry();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match count(fx, observer, prim, name).await {
            Some(n) if n == want => return,
            Some(n) => assert!(Instant::now() < deadline, "{prim:?}: {n} keys, not {want}"),
            None => return sleep(Duration::from_millis(500)).await,
        }
        sleep(Duration::from_millis(20)).await;
    }
}

/// The code of a failed acquisition (it must have failed).
fn code_of(what: &str, prim: Prim, acquired: Result<Held>) -> ErrorCode {
    match acquired {
        Ok(_) => panic!("{prim:?}: {what} acquired"),
        Err(err) => err.code(),
    }
}
