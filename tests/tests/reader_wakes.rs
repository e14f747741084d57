//! Readers of one manager woken together share their position reads (issue
//! #19's "K readers behind a writer"): fewer reads than readers, and each
//! reader's answer still its own — a key deleted behind one reader's back, a
//! writer queued between two readers of one manager, a read that fails.
//! Which reads a reader shares depends on how the runtime runs the woken
//! tasks (the first to ask gathers those that ask while it yields; see
//! `lock/src/shared/reads.rs`, whose unit tests pin the sharing down on one
//! thread), so these tests check each reader's outcome, whatever read
//! answered it; reads are delayed (`Fault::Delay` on `Op::Position`) so that
//! the faults land while they are in flight.

mod support;

use std::time::Duration;

use distlock::testing::{Fault, Faults, Op};
use distlock::{ErrorCode, LockManager, LockOptions, ReadGuard, Result, WriteGuard};
use support::{faulty, on_both_backends, Fixture, OverlapDetector};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

on_both_backends!(
    readers_of_one_manager_share_their_reads,
    a_writer_between_two_readers_of_one_manager_keeps_the_later_one_waiting,
    a_refused_shared_read_fails_each_reader_it_answers_for,
    a_failed_shared_read_is_retried_by_each_reader,
);

mod etcd_only {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_whose_key_went_is_not_admitted_by_a_shared_read() {
        super::a_reader_whose_key_went_is_not_admitted(&super::Fixture::etcd().await).await;
    }
}

const WAIT: Duration = Duration::from_secs(20);

async fn wait_lock_waiters(observer: &LockManager, name: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while observer.lock_info(name).await.unwrap().map(|i| i.waiters) != Some(n) {
        assert!(Instant::now() < deadline, "{name} never had {n} waiters");
        sleep(Duration::from_millis(10)).await;
    }
}

/// A reader of `name` on `manager`, spawned; `queued` readers and writers
/// wait already, and this one is waiting too when it returns.
async fn queue_reader(
    observer: &LockManager,
    manager: &LockManager,
    name: &str,
    queued: usize,
) -> JoinHandle<Result<ReadGuard>> {
    let rw = manager.new_rw_lock(name, LockOptions::default()).unwrap();
    let reader = tokio::spawn(async move { rw.read().await });
    wait_lock_waiters(observer, name, queued + 1).await;
    reader
}

/// A write lock of `name` held through `holder`, and `k` readers of
/// `readers` queued behind it, each waiting in a task of its own.
async fn writer_then_readers(
    holder: &LockManager,
    readers: &LockManager,
    name: &str,
    k: usize,
) -> (WriteGuard, Vec<JoinHandle<Result<ReadGuard>>>) {
    let rw = holder.new_rw_lock(name, LockOptions::default()).unwrap();
    let writer = rw.write().await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..k {
        tasks.push(queue_reader(holder, readers, name, i).await);
    }
    (writer, tasks)
}

async fn joined<T>(task: JoinHandle<T>) -> T {
    timeout(WAIT, task).await.expect("in time").unwrap()
}

/// 8 readers of one manager behind a writer of another: on its release all
/// hold at once, after fewer reads than readers (on etcd).
async fn readers_of_one_manager_share_their_reads(fx: &Fixture) {
    let holder = fx.manager();
    let faults = Faults::new();
    let readers = faulty(fx, &faults).await;
    let (w, tasks) = writer_then_readers(&holder, &readers, "share", 8).await;
    sleep(Duration::from_millis(200)).await; // every reader watches
    let before = faults.calls(Op::Position);
    w.release().await.unwrap();
    let inside = OverlapDetector::default();
    let mut scopes = Vec::new();
    let mut guards = Vec::new();
    for task in tasks {
        guards.push(joined(task).await.expect("admitted"));
        scopes.push(inside.enter());
    }
    let reads = faults.calls(Op::Position) - before;
    assert_eq!(inside.most_at_once(), 8);
    // In memory a read answers at once: none is in flight for another
    // reader to wait for, so each reader reads.
    let most = if fx.etcd.is_some() { 7 } else { 8 };
    assert!(
        (1..=most).contains(&reads),
        "8 readers woken together made {reads} reads"
    );
    println!("8 readers woken together made {reads} reads");
    drop(scopes);
    for g in guards {
        g.release().await.unwrap();
    }
}

/// Three readers of manager B, then a writer of C, then reader `r1` of B.
/// When the first writer goes, the three read (delayed) and `r1` asks
/// meanwhile: the three hold, `r1` must not (the writer is ahead of it
/// alone) until that writer has come and gone, whichever read answered it.
async fn a_writer_between_two_readers_of_one_manager_keeps_the_later_one_waiting(fx: &Fixture) {
    let (a, c) = (fx.manager(), fx.another().await);
    let faults = Faults::new();
    let b = faulty(fx, &faults).await;
    let name = "between";
    let (first, early) = writer_then_readers(&a, &b, name, 3).await;
    let writer = c.new_rw_lock(name, LockOptions::default()).unwrap();
    let w = tokio::spawn(async move { writer.write().await });
    wait_lock_waiters(&a, name, 4).await;
    sleep(Duration::from_millis(200)).await;
    faults.inject(Op::Position, Fault::Delay(Duration::from_millis(600)), 2);
    let before = faults.calls(Op::Position);
    first.release().await.unwrap();
    sleep(Duration::from_millis(100)).await; // the early readers' reads in flight
    let late = b.new_rw_lock(name, LockOptions::default()).unwrap();
    let r1 = tokio::spawn(async move {
        let guard = late.read().await;
        (Instant::now(), guard)
    });
    let mut held = Vec::new();
    for r in early {
        held.push(joined(r).await.unwrap());
    }
    sleep(Duration::from_millis(300)).await;
    let reads = faults.calls(Op::Position) - before;
    assert!((1..=4).contains(&reads), "{reads} reads for four readers");
    assert!(
        !r1.is_finished(),
        "a reader got in ahead of a writer queued before it"
    );
    for r in held {
        r.release().await.unwrap();
    }
    let w = joined(w).await.unwrap();
    sleep(Duration::from_millis(200)).await;
    assert!(!r1.is_finished(), "a reader got in while a writer held");
    let released = Instant::now();
    w.release().await.unwrap();
    let (admitted, r1) = joined(r1).await;
    assert!(admitted >= released);
    r1.unwrap().release().await.unwrap();
}

/// Four readers of one manager woken together; the first read after the
/// release is refused (a permanent error): each reader it answered (the
/// readers that shared it) fails with it, as its own read would have; any
/// reader another read answered holds.
async fn a_refused_shared_read_fails_each_reader_it_answers_for(fx: &Fixture) {
    let (outcomes, reads) = after_a_faulty_shared_read(fx, "refused", Fault::Refuse).await;
    let failed: Vec<ErrorCode> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().err().map(|e| e.code()))
        .collect();
    assert!(
        !failed.is_empty(),
        "nobody met the refused read: {outcomes:?}"
    );
    assert!(
        failed.iter().all(|c| *c == ErrorCode::Backend),
        "{outcomes:?}"
    );
    assert!(reads <= 4, "{reads} reads for four readers");
    println!("a refused read failed {} reader(s)", failed.len());
}

/// As above with a transient failure: each reader it answered retries, and
/// all hold.
async fn a_failed_shared_read_is_retried_by_each_reader(fx: &Fixture) {
    let (outcomes, reads) = after_a_faulty_shared_read(fx, "failed", Fault::Fail).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert!(reads >= 2, "the failed read was not retried: {reads} reads");
}

/// Four readers of one manager behind a writer that releases; the first
/// read after the release meets `fault`.
/// How each reader's acquisition ended, and how many reads were made.
async fn after_a_faulty_shared_read(
    fx: &Fixture,
    name: &str,
    fault: Fault,
) -> (Vec<Result<()>>, usize) {
    let holder = fx.manager();
    let faults = Faults::new();
    let readers = faulty(fx, &faults).await;
    let (w, tasks) = writer_then_readers(&holder, &readers, name, 4).await;
    sleep(Duration::from_millis(200)).await;
    faults.inject(Op::Position, fault, 1);
    let before = faults.calls(Op::Position);
    w.release().await.unwrap();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(match joined(task).await {
            Ok(guard) => guard.release().await,
            Err(err) => Err(err),
        });
    }
    (outcomes, faults.calls(Op::Position) - before)
}

/// Four readers of one manager wake together; while their reads are in
/// flight (delayed), the third's key is deleted behind its back. The other
/// three hold; the third, whatever read answers it (its own or one it
/// shares), fails with `Expired`.
async fn a_reader_whose_key_went_is_not_admitted(fx: &Fixture) {
    let holder = fx.manager();
    let faults = Faults::new();
    let readers = faulty(fx, &faults).await;
    let name = "went";
    let (w, tasks) = writer_then_readers(&holder, &readers, name, 4).await;
    sleep(Duration::from_millis(200)).await;
    let etcd = fx.etcd.as_ref().expect("etcd");
    let mut raw = support::raw_client(etcd).await;
    let options = etcd_client::GetOptions::new()
        .with_prefix()
        .with_keys_only()
        .with_sort(
            etcd_client::SortTarget::Create,
            etcd_client::SortOrder::Ascend,
        );
    let listed = raw.get(fx.namespace.as_str(), Some(options)).await.unwrap();
    let queue: Vec<Vec<u8>> = listed
        .kvs()
        .iter()
        .map(|kv| kv.key().to_vec())
        .filter(|k| String::from_utf8_lossy(k).contains(name))
        .collect();
    assert_eq!(queue.len(), 5, "the writer and four readers");
    let third = queue[3].clone(); // after the writer's, r0's and r1's
    faults.inject(Op::Position, Fault::Delay(Duration::from_millis(500)), 3);
    let before = faults.calls(Op::Position);
    w.release().await.unwrap();
    sleep(Duration::from_millis(150)).await; // every reader asked; none answered
    assert_eq!(raw.delete(third, None).await.unwrap().deleted(), 1);
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(joined(task).await.map(|_guard| ()).map_err(|e| e.code()));
    }
    let reads = faults.calls(Op::Position) - before;
    assert!((1..=4).contains(&reads), "{reads} reads for four readers");
    assert_eq!(
        outcomes,
        [Ok(()), Ok(()), Err(ErrorCode::Expired), Ok(())],
        "a reader without its key was admitted (or another was refused)"
    );
}
