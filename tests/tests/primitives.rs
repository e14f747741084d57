//! Semaphores, read-write locks and multi-locks (issue #19), on a real etcd
//! (`etcd::`) and in memory (`memory::`): each property checked by a
//! detector that would see it broken, across managers that behave like
//! separate processes.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distlock::testing::{Fault, Faults, Op};
use distlock::{ErrorCode, LockManager, LockOptions};
use support::{on_both_backends, short_ttl, Fixture, OverlapDetector, RwDetector};
use tokio::time::{sleep, timeout, Instant};

on_both_backends!(
    a_semaphore_admits_at_most_n,
    a_semaphores_permits_are_fifo_and_fenced,
    processes_that_disagree_on_permits_are_refused,
    a_release_wakes_one_waiter,
    a_crashed_holders_permit_comes_back_within_a_ttl,
    readers_share_and_writers_exclude,
    readers_sharing_reads_in_few_managers_never_meet_a_writer,
    a_reader_waits_for_a_writer_queued_before_it,
    readers_behind_a_writer_are_admitted_together,
    a_downgrade_lets_no_writer_in_between,
    a_lock_and_a_write_lock_of_one_name_exclude_each_other,
    one_task_re_enters_its_read_and_cannot_upgrade,
    a_multi_lock_never_overlaps_a_lock_of_its_names,
    opposite_transfers_never_deadlock,
    a_multi_lock_try_takes_none_when_one_name_is_busy,
    abandoned_waiters_of_every_primitive_leave_no_key,
    a_late_enqueue_of_every_primitive_leaves_no_key,
    a_timeout_names_what_it_waited_for,
);

/// Keys left under the namespace (etcd), or held locks and semaphore
/// holders the observer can see (memory).
async fn keys_left(fx: &Fixture, observer: &LockManager) -> usize {
    match fx.raw_keys().await {
        Some(keys) => keys.len(),
        None => {
            let locks = observer.list_locks("").await.unwrap().len();
            let sems = observer.list_semaphores("").await.unwrap();
            locks
                + sems
                    .iter()
                    .map(|s| s.holders.len() + s.waiters)
                    .sum::<usize>()
        }
    }
}

async fn no_keys_left(fx: &Fixture, observer: &LockManager) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while keys_left(fx, observer).await > 0 {
        assert!(
            Instant::now() < deadline,
            "keys were left behind: {:?}",
            fx.raw_keys().await
        );
        sleep(Duration::from_millis(50)).await;
    }
}

/// 3 managers × 4 tasks × 4 rounds on a semaphore of 2: never more than 2
/// inside at once, and 2 at once is reached (permits are not wasted).
async fn a_semaphore_admits_at_most_n(fx: &Fixture) {
    let detector = OverlapDetector::default();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let manager = fx.another().await;
        for _ in 0..4 {
            let (manager, detector) = (manager.clone(), detector.clone());
            tasks.push(tokio::spawn(async move {
                let sem = manager
                    .new_semaphore("pool", 2, LockOptions::default())
                    .unwrap();
                for _ in 0..4 {
                    let permit = sem.acquire().await.unwrap();
                    {
                        let _inside = detector.enter();
                        sleep(Duration::from_millis(10)).await;
                    }
                    permit.release().await.unwrap();
                }
            }));
        }
    }
    for t in tasks {
        timeout(Duration::from_secs(60), t).await.unwrap().unwrap();
    }
    assert_eq!(detector.entries(), 48);
    assert_eq!(
        detector.most_at_once(),
        2,
        "more than 2, or never 2, at once"
    );
    no_keys_left(fx, &fx.manager()).await;
}

/// Waiters get permits in the order they queued; tokens grow.
async fn a_semaphores_permits_are_fifo_and_fenced(fx: &Fixture) {
    let holder = fx.manager();
    let sem = holder
        .new_semaphore("fifo", 1, LockOptions::default())
        .unwrap();
    let held = sem.acquire().await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..4 {
        let manager = fx.another().await;
        let order = order.clone();
        waiters.push(tokio::spawn(async move {
            let sem = manager
                .new_semaphore("fifo", 1, LockOptions::default())
                .unwrap();
            let permit = sem.acquire().await.unwrap();
            order.lock().unwrap().push((i, permit.fencing_token()));
            sleep(Duration::from_millis(20)).await;
            permit.release().await.unwrap();
        }));
        wait_semaphore_waiters(&holder, "fifo", i + 1).await;
    }
    let first = held.fencing_token();
    held.release().await.unwrap();
    for w in waiters {
        timeout(Duration::from_secs(20), w).await.unwrap().unwrap();
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(
        order.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    let mut last = first;
    for (_, token) in order {
        assert!(token > last, "tokens must grow: {last} then {token}");
        last = token;
    }
}

async fn wait_semaphore_waiters(observer: &LockManager, name: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = observer.semaphore_info(name).await.unwrap();
        if info.is_some_and(|i| i.waiters == n) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never had {n} waiters");
        sleep(Duration::from_millis(10)).await;
    }
}

async fn processes_that_disagree_on_permits_are_refused(fx: &Fixture) {
    let a = fx
        .manager()
        .new_semaphore("disagree", 3, LockOptions::default())
        .unwrap();
    let _held = a.acquire().await.unwrap();
    let b = fx
        .another()
        .await
        .new_semaphore("disagree", 5, LockOptions::default())
        .unwrap();
    let err = b.try_acquire().await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidOptions, "{err}");
    assert!(
        err.message().contains('3') && err.message().contains('5'),
        "{err}"
    );
    let err = b.acquire_timeout(Duration::from_secs(2)).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidOptions, "{err}");
    // The refused contender left nothing behind: one holder, no waiter.
    let info = fx
        .manager()
        .semaphore_info("disagree")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((info.holders.len(), info.waiters), (1, 0));
    assert_eq!(info.permits, 3);
}

/// A release wakes one waiter: of 4 waiters of a semaphore of 1, only the
/// first reads the queue again when the holder releases.
async fn a_release_wakes_one_waiter(fx: &Fixture) {
    let holder = fx.manager();
    let sem = holder
        .new_semaphore("herd", 1, LockOptions::default())
        .unwrap();
    let held = sem.acquire().await.unwrap();
    let mut waiters = Vec::new();
    let mut counters = Vec::new();
    for i in 0..4 {
        let faults = Faults::new();
        let manager = fx.another().await.with_faults(&faults);
        counters.push(faults);
        waiters.push(tokio::spawn(async move {
            let sem = manager
                .new_semaphore("herd", 1, LockOptions::default())
                .unwrap();
            let permit = sem.acquire().await.unwrap();
            (i, permit)
        }));
        wait_semaphore_waiters(&holder, "herd", i + 1).await;
    }
    sleep(Duration::from_millis(200)).await; // every waiter is watching
    let before: Vec<usize> = counters.iter().map(|f| f.calls(Op::Position)).collect();
    held.release().await.unwrap();
    let (first, permit) = timeout(Duration::from_secs(10), waiters.remove(0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, 0);
    sleep(Duration::from_millis(300)).await;
    let woken: Vec<usize> = counters
        .iter()
        .zip(&before)
        .map(|(f, b)| f.calls(Op::Position) - b)
        .collect();
    assert!(woken[0] >= 1, "the first waiter did not re-read: {woken:?}");
    // The second waiter wakes once (the first's promotion), the others not at all.
    assert!(woken[1] <= 1, "{woken:?}");
    assert_eq!(&woken[2..], [0, 0], "a release woke a herd: {woken:?}");
    drop(permit);
    for w in waiters {
        let (_, permit) = timeout(Duration::from_secs(20), w).await.unwrap().unwrap();
        drop(permit);
    }
}

/// A holder whose process stops renewing (keep-alives fail) loses its permit
/// on its own clock, and the waiter gets it within about one TTL.
async fn a_crashed_holders_permit_comes_back_within_a_ttl(fx: &Fixture) {
    let faults = Faults::new();
    let crashing = fx.another().await.with_faults(&faults);
    let opts = short_ttl(2);
    let sem = crashing.new_semaphore("crash", 1, opts.clone()).unwrap();
    let permit = sem.acquire().await.unwrap();
    faults.always(Op::KeepAlive, Fault::Fail);
    faults.always(Op::Revoke, Fault::Fail);
    let started = Instant::now();
    let other = fx.another().await.new_semaphore("crash", 1, opts).unwrap();
    let taken = other
        .acquire_timeout(Duration::from_secs(6))
        .await
        .expect("the crashed holder's permit came back");
    assert!(
        started.elapsed() < Duration::from_millis(4500),
        "{:?}",
        started.elapsed()
    );
    assert!(
        !permit.is_held(),
        "the crashed holder still believes it holds"
    );
    taken.release().await.unwrap();
    faults.heal();
}

/// Readers overlap each other; a writer overlaps nothing.
async fn readers_share_and_writers_exclude(fx: &Fixture) {
    let detector = RwDetector::default();
    let mut tasks = Vec::new();
    for m in 0..3 {
        let manager = fx.another().await;
        for t in 0..3 {
            let (manager, detector) = (manager.clone(), detector.clone());
            tasks.push(tokio::spawn(async move {
                let rw = manager.new_rw_lock("doc", LockOptions::default()).unwrap();
                for round in 0..4 {
                    if (m + t + round) % 3 == 0 {
                        let w = rw.write().await.unwrap();
                        {
                            let _inside = detector.writer();
                            sleep(Duration::from_millis(5)).await;
                        }
                        w.release().await.unwrap();
                    } else {
                        let r = rw.read().await.unwrap();
                        {
                            let _inside = detector.reader();
                            sleep(Duration::from_millis(15)).await;
                        }
                        r.release().await.unwrap();
                    }
                }
            }));
        }
    }
    for t in tasks {
        timeout(Duration::from_secs(60), t).await.unwrap().unwrap();
    }
    assert!(
        detector.most_readers.load(Ordering::SeqCst) > 1,
        "readers never shared"
    );
    let violations = detector.violations.load(Ordering::SeqCst);
    assert_eq!(violations, 0, "a writer overlapped another section");
    no_keys_left(fx, &fx.manager()).await;
}

/// Many readers per manager (whose position reads are shared) and writers
/// among them, on 3 managers: readers overlap each other; a writer overlaps
/// nothing.
async fn readers_sharing_reads_in_few_managers_never_meet_a_writer(fx: &Fixture) {
    let detector = RwDetector::default();
    let mut tasks = Vec::new();
    for m in 0..3 {
        let manager = fx.another().await;
        for t in 0..8 {
            let (manager, detector) = (manager.clone(), detector.clone());
            tasks.push(tokio::spawn(async move {
                let rw = manager.new_rw_lock("many", LockOptions::default()).unwrap();
                for round in 0..5 {
                    if (m + t + round) % 5 == 0 {
                        let w = rw.write().await.unwrap();
                        {
                            let _inside = detector.writer();
                            sleep(Duration::from_millis(3)).await;
                        }
                        w.release().await.unwrap();
                    } else {
                        let r = rw.read().await.unwrap();
                        {
                            let _inside = detector.reader();
                            sleep(Duration::from_millis(10)).await;
                        }
                        r.release().await.unwrap();
                    }
                }
            }));
        }
    }
    for t in tasks {
        timeout(Duration::from_secs(120), t).await.unwrap().unwrap();
    }
    assert!(
        detector.most_readers.load(Ordering::SeqCst) > 3,
        "readers never shared"
    );
    let violations = detector.violations.load(Ordering::SeqCst);
    assert_eq!(violations, 0, "a writer overlapped another section");
    no_keys_left(fx, &fx.manager()).await;
}

/// FIFO across kinds: a reader queued after a writer waits for it, even
/// while readers hold.
async fn a_reader_waits_for_a_writer_queued_before_it(fx: &Fixture) {
    let (a, b, c) = (fx.manager(), fx.another().await, fx.another().await);
    let opts = LockOptions::default;
    let r1 = a
        .new_rw_lock("fifo-rw", opts())
        .unwrap()
        .read()
        .await
        .unwrap();
    let writer = b.new_rw_lock("fifo-rw", opts()).unwrap();
    let w = tokio::spawn(async move { writer.write().await.map(|g| g.fencing_token()) });
    wait_lock_waiters(&a, "fifo-rw", 1).await;
    let late_reader = c.new_rw_lock("fifo-rw", opts()).unwrap();
    assert!(
        late_reader.try_read().await.unwrap().is_none(),
        "a reader overtook a writer queued before it"
    );
    r1.release().await.unwrap();
    let token = timeout(Duration::from_secs(10), w)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(token > 0);
}

async fn wait_lock_waiters(observer: &LockManager, name: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while observer.lock_info(name).await.unwrap().map(|i| i.waiters) != Some(n) {
        assert!(Instant::now() < deadline, "{name} never had {n} waiters");
        sleep(Duration::from_millis(10)).await;
    }
}

/// K readers queued behind a writer all get in when it releases.
async fn readers_behind_a_writer_are_admitted_together(fx: &Fixture) {
    let holder = fx.manager();
    let w = holder
        .new_rw_lock("batch", LockOptions::default())
        .unwrap()
        .write()
        .await
        .unwrap();
    let inside = OverlapDetector::default();
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let mut readers = Vec::new();
    for i in 0..4 {
        let manager = fx.another().await;
        let (inside, tx) = (inside.clone(), tx.clone());
        readers.push(tokio::spawn(async move {
            let r = manager
                .new_rw_lock("batch", LockOptions::default())
                .unwrap()
                .read()
                .await
                .unwrap();
            let _in = inside.enter();
            tx.send(()).await.unwrap();
            sleep(Duration::from_millis(300)).await;
            r.release().await.unwrap();
        }));
        wait_lock_waiters(&holder, "batch", i + 1).await;
    }
    w.release().await.unwrap();
    for _ in 0..4 {
        timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(inside.most_at_once(), 4, "readers were admitted one by one");
    for r in readers {
        r.await.unwrap();
    }
}

/// A write lock downgraded in place: a reader queued before the next writer
/// gets in at once; that writer does not get in between, and gets the lock
/// only when every reader ahead of it is gone.
async fn a_downgrade_lets_no_writer_in_between(fx: &Fixture) {
    let (a, b, c) = (fx.manager(), fx.another().await, fx.another().await);
    let opts = LockOptions::default;
    let w = a.new_rw_lock("dg", opts()).unwrap().write().await.unwrap();
    let token = w.fencing_token();
    let early_reader = b.new_rw_lock("dg", opts()).unwrap();
    let r0 = tokio::spawn(async move { early_reader.read().await.unwrap() });
    wait_lock_waiters(&a, "dg", 1).await;
    let writer = c.new_rw_lock("dg", opts()).unwrap();
    let w2 = tokio::spawn(async move { writer.write().await.unwrap() });
    wait_lock_waiters(&a, "dg", 2).await;
    let r = w.downgrade().await.unwrap();
    assert_eq!(r.fencing_token(), token);
    let r0 = timeout(Duration::from_secs(5), r0)
        .await
        .expect("the reader queued behind the downgraded writer was not admitted")
        .unwrap();
    sleep(Duration::from_millis(300)).await;
    assert!(!w2.is_finished(), "a writer got in between");
    r.release().await.unwrap();
    sleep(Duration::from_millis(200)).await;
    assert!(
        !w2.is_finished(),
        "the writer overtook a reader ahead of it"
    );
    r0.release().await.unwrap();
    let w2 = timeout(Duration::from_secs(5), w2).await.unwrap().unwrap();
    assert!(w2.fencing_token() > token);
    w2.release().await.unwrap();
}

async fn a_lock_and_a_write_lock_of_one_name_exclude_each_other(fx: &Fixture) {
    let (a, b) = (fx.manager(), fx.another().await);
    let g = a
        .new_lock("same", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let rw = b.new_rw_lock("same", LockOptions::default()).unwrap();
    assert!(rw.try_write().await.unwrap().is_none());
    assert!(
        rw.try_read().await.unwrap().is_none(),
        "a reader shared with a mutex"
    );
    g.unlock().await.unwrap();
    let w = rw.try_write().await.unwrap().expect("free");
    let lock = a.new_lock("same", LockOptions::default()).unwrap();
    assert!(lock.try_lock().await.unwrap().is_none());
    w.release().await.unwrap();
}

/// Owners are tasks: a task's second read re-enters its read hold (no
/// deadlock behind a writer queued in between); a task that reads cannot
/// upgrade; a task that writes may also read.
async fn one_task_re_enters_its_read_and_cannot_upgrade(fx: &Fixture) {
    let (a, b) = (fx.manager(), fx.another().await);
    let rw = a.new_rw_lock("re", LockOptions::default()).unwrap();
    let r1 = rw.read().await.unwrap();
    let writer = b.new_rw_lock("re", LockOptions::default()).unwrap();
    let w = tokio::spawn(async move { writer.write().await.unwrap() });
    wait_lock_waiters(&a, "re", 1).await;
    let r2 = timeout(Duration::from_secs(2), rw.read())
        .await
        .expect("a second read waited behind the writer: self-deadlock")
        .unwrap();
    assert_eq!(r2.fencing_token(), r1.fencing_token());
    let err = rw.try_write().await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::AlreadyHeld, "{err}");
    r2.release().await.unwrap();
    r1.release().await.unwrap();
    let w = timeout(Duration::from_secs(5), w).await.unwrap().unwrap();
    w.release().await.unwrap();
    let w = rw.write().await.unwrap();
    let r = timeout(Duration::from_secs(2), rw.read())
        .await
        .expect("a read inside the task's own write waited for itself")
        .unwrap();
    assert_eq!(r.fencing_token(), w.fencing_token());
    r.release().await.unwrap();
    w.release().await.unwrap();
}

/// Transfers (multi-locks of two accounts) and single-account audits (locks
/// of one): no section of an account overlaps another of that account.
async fn a_multi_lock_never_overlaps_a_lock_of_its_names(fx: &Fixture) {
    let accounts = ["acct:1", "acct:2", "acct:3"];
    let detectors: HashMap<&str, OverlapDetector> = accounts
        .iter()
        .map(|a| (*a, OverlapDetector::default()))
        .collect();
    let detectors = Arc::new(detectors);
    let mut tasks = Vec::new();
    for m in 0..3 {
        let manager = fx.another().await;
        for t in 0..3usize {
            let (manager, detectors) = (manager.clone(), detectors.clone());
            tasks.push(tokio::spawn(async move {
                for round in 0..4 {
                    let i = (m + t + round) % 3;
                    let (from, to) = (accounts[i], accounts[(i + 1) % 3]);
                    if t == 0 {
                        let g = manager
                            .new_lock(from, LockOptions::default())
                            .unwrap()
                            .lock()
                            .await
                            .unwrap();
                        let _in = detectors[from].enter();
                        sleep(Duration::from_millis(5)).await;
                        drop(_in);
                        g.unlock().await.unwrap();
                    } else {
                        let ml = manager
                            .new_multi_lock([from, to], LockOptions::default())
                            .unwrap();
                        let g = ml.lock().await.unwrap();
                        let (_a, _b) = (detectors[from].enter(), detectors[to].enter());
                        sleep(Duration::from_millis(5)).await;
                        drop((_a, _b));
                        g.release().await.unwrap();
                    }
                }
            }));
        }
    }
    for t in tasks {
        timeout(Duration::from_secs(60), t).await.unwrap().unwrap();
    }
    for (account, d) in detectors.iter() {
        assert_eq!(d.most_at_once(), 1, "{account} had two sections at once");
    }
    no_keys_left(fx, &fx.manager()).await;
}

/// Transfers in opposite directions under load all finish: the keys of a
/// multi-lock share one revision, so every queue orders them alike.
async fn opposite_transfers_never_deadlock(fx: &Fixture) {
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for m in 0..2 {
        let manager = fx.another().await;
        for t in 0..4 {
            let (manager, done) = (manager.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                let names = if (m + t) % 2 == 0 {
                    ["a", "b"]
                } else {
                    ["b", "a"]
                };
                for _ in 0..5 {
                    let ml = manager
                        .new_multi_lock(names, LockOptions::default())
                        .unwrap();
                    let g = ml.lock().await.unwrap();
                    sleep(Duration::from_millis(2)).await;
                    g.release().await.unwrap();
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
    }
    for t in tasks {
        timeout(Duration::from_secs(60), t)
            .await
            .expect("transfers deadlocked")
            .unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 40);
}

async fn a_multi_lock_try_takes_none_when_one_name_is_busy(fx: &Fixture) {
    let (a, b) = (fx.manager(), fx.another().await);
    let held = a
        .new_lock("y", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let ml = b
        .new_multi_lock(["x", "y", "z"], LockOptions::default())
        .unwrap();
    assert!(ml.try_lock().await.unwrap().is_none());
    // Nothing of it is left in any queue: x and z are free for others.
    for name in ["x", "z"] {
        let g = a
            .new_lock(name, LockOptions::default())
            .unwrap()
            .try_lock()
            .await
            .unwrap();
        assert!(g.is_some(), "{name} was left taken");
    }
    assert_eq!(a.lock_info("y").await.unwrap().unwrap().waiters, 0);
    let err = ml
        .lock_timeout(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout);
    held.unlock().await.unwrap();
    let g = ml.lock_timeout(Duration::from_secs(5)).await.unwrap();
    assert_eq!(g.fencing_tokens().len(), 3);
    let tokens: Vec<u64> = g.fencing_tokens().values().copied().collect();
    assert!(
        tokens.windows(2).all(|w| w[0] == w[1]),
        "one transaction, one revision"
    );
    g.release().await.unwrap();
}

/// Timeouts, lost tries and futures dropped mid-wait, for every primitive:
/// no key is left behind.
async fn abandoned_waiters_of_every_primitive_leave_no_key(fx: &Fixture) {
    let holder = fx.manager();
    let sem = holder
        .new_semaphore("s", 1, LockOptions::default())
        .unwrap()
        .acquire()
        .await
        .unwrap();
    let w = holder
        .new_rw_lock("rw", LockOptions::default())
        .unwrap()
        .write()
        .await
        .unwrap();
    let g = holder
        .new_lock("m", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..60usize {
        let manager = fx.another().await;
        tasks.push(tokio::spawn(async move {
            let short = Duration::from_millis(5 + (i % 7) as u64 * 10);
            match i % 4 {
                0 => {
                    let s = manager
                        .new_semaphore("s", 1, LockOptions::default())
                        .unwrap();
                    match i % 3 {
                        0 => assert!(s.try_acquire().await.unwrap().is_none()),
                        1 => assert!(s.acquire_timeout(short).await.is_err()),
                        _ => assert!(timeout(short, s.acquire()).await.is_err()),
                    }
                }
                1 => {
                    let rw = manager.new_rw_lock("rw", LockOptions::default()).unwrap();
                    match i % 3 {
                        0 => assert!(rw.try_read().await.unwrap().is_none()),
                        1 => assert!(rw.read_timeout(short).await.is_err()),
                        _ => assert!(timeout(short, rw.read()).await.is_err()),
                    }
                }
                2 => {
                    let rw = manager.new_rw_lock("rw", LockOptions::default()).unwrap();
                    assert!(timeout(short, rw.write()).await.is_err());
                }
                _ => {
                    let ml = manager
                        .new_multi_lock(["m", "free"], LockOptions::default())
                        .unwrap();
                    match i % 3 {
                        0 => assert!(ml.try_lock().await.unwrap().is_none()),
                        1 => assert!(ml.lock_timeout(short).await.is_err()),
                        _ => assert!(timeout(short, ml.lock()).await.is_err()),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    sem.release().await.unwrap();
    w.release().await.unwrap();
    g.unlock().await.unwrap();
    no_keys_left(fx, &holder).await;
}

/// #17.2 for every primitive: a first enqueue attempt that lands late,
/// after the acquisition ended, leaves no key.
async fn a_late_enqueue_of_every_primitive_leaves_no_key(fx: &Fixture) {
    let faults = Faults::new();
    faults.request_timeout(Duration::from_millis(800));
    let manager = fx.another().await.with_faults(&faults);
    let late = || Fault::Late(Duration::from_millis(400));
    faults.inject(Op::Enqueue, late(), 1);
    let s = manager
        .new_semaphore("late-s", 2, LockOptions::default())
        .unwrap();
    s.acquire().await.unwrap().release().await.unwrap();
    faults.inject(Op::Enqueue, late(), 1);
    let rw = manager
        .new_rw_lock("late-rw", LockOptions::default())
        .unwrap();
    rw.read().await.unwrap().release().await.unwrap();
    faults.inject(Op::Enqueue, late(), 1);
    let ml = manager
        .new_multi_lock(["late-a", "late-b"], LockOptions::default())
        .unwrap();
    ml.lock().await.unwrap().release().await.unwrap();
    sleep(Duration::from_millis(400 + 1500)).await; // landed, then swept or revoked
    no_keys_left(fx, &fx.manager()).await;
}

/// A wait that ran out says what it waited for: a lock, a read lock, a
/// semaphore, an election or a multi-lock's names.
async fn a_timeout_names_what_it_waited_for(fx: &Fixture) {
    let (holder, waiter) = (fx.another().await, fx.another().await);
    let opts = LockOptions::default;
    let wait = Duration::from_millis(200);
    let said = |err: distlock::LockError| {
        assert_eq!(err.code(), ErrorCode::Timeout, "{err}");
        err.message().to_owned()
    };
    let _lock = holder
        .new_lock("t-a", opts())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let _write = holder
        .new_rw_lock("t-rw", opts())
        .unwrap()
        .write()
        .await
        .unwrap();
    let _permit = holder
        .new_semaphore("t-sem", 1, opts())
        .unwrap()
        .acquire()
        .await
        .unwrap();
    let _leads = holder
        .new_election("t-e", opts())
        .unwrap()
        .campaign("h")
        .await
        .unwrap();

    let lock = waiter.new_lock("t-a", opts()).unwrap();
    let err = said(lock.lock_timeout(wait).await.unwrap_err());
    assert!(err.starts_with("lock `t-a` not acquired within"), "{err}");
    let rw = waiter.new_rw_lock("t-rw", opts()).unwrap();
    let err = said(rw.read_timeout(wait).await.unwrap_err());
    assert!(err.starts_with("read lock `t-rw` not acquired"), "{err}");
    let sem = waiter.new_semaphore("t-sem", 1, opts()).unwrap();
    let err = said(sem.acquire_timeout(wait).await.unwrap_err());
    assert!(err.starts_with("semaphore `t-sem` not acquired"), "{err}");
    let election = waiter.new_election("t-e", opts()).unwrap();
    let err = said(election.campaign_timeout("w", wait).await.unwrap_err());
    assert!(err.starts_with("election `t-e` not acquired"), "{err}");
    let multi = waiter.new_multi_lock(["t-b", "t-a"], opts()).unwrap();
    let err = said(multi.lock_timeout(wait).await.unwrap_err());
    assert!(
        err.starts_with("multi-lock `t-a`, `t-b` not acquired"),
        "{err}"
    );
}
