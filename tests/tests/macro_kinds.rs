//! What `#[distributed_lock]` guarantees for each kind of lock, on a real
//! etcd (`etcd::`) and in memory (`memory::`): `permits = n` admits at most
//! n calls at once across managers (and does admit n), `read` calls overlap
//! while a `write` call excludes every other call on its key, `keys = [..]`
//! transfers in opposite orders neither deadlock nor overlap a call on one
//! of their names; nested calls; what `current_lock()` says in each.
//!
//! Each guarantee is checked by a detector that could fail, and each
//! detector is first shown to fail without the lock.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use distlock::{distributed_lock, ErrorCode, LockError, LockManager, LockOptions};
use support::{on_both_backends, Fixture, OverlapDetector};
use tokio::sync::Notify;
use tokio::time::{sleep, timeout, Instant};

on_both_backends!(
    permits_bound_the_calls_across_two_managers,
    a_permit_call_shares_the_semaphore_with_the_api,
    a_nested_permit_call_takes_another_permit,
    skip_if_busy_skips_when_every_permit_is_taken,
    skip_if_busy_skips_a_busy_name_or_side,
    hold_at_least_keeps_the_permit_after_the_call,
    reads_overlap_and_writes_exclude_everyone,
    read_and_write_calls_contend_with_locks_of_their_key,
    calls_nested_in_read_and_write_bodies,
    a_read_holds_scope_refuses_exclusive_acquisitions,
    opposite_transfers_never_deadlock_nor_overlap_an_account_call,
    a_transfer_body_sees_every_name_and_one_token,
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
    fn code(&self) -> ErrorCode {
        let AppError::Lock(err) = self;
        err.code()
    }
}

/// Waits, at most `within`, until `enough` holds: a body that waits for
/// company shows that the lock lets company in.
async fn until(enough: impl Fn() -> bool, within: Duration) {
    let deadline = Instant::now() + within;
    while !enough() && Instant::now() < deadline {
        sleep(Duration::from_millis(2)).await;
    }
}

// ------------------------------------------------------------ permits ---

/// A critical section of at most two: waits (a little) until two were
/// inside at once, so that a semaphore admitting two shows it.
#[distributed_lock(key = "crawl:{host}", permits = 2, ttl = "5s", wait = "60s", manager = manager)]
async fn crawl(
    manager: &LockManager,
    host: &str,
    inside: &OverlapDetector,
) -> Result<u64, AppError> {
    let _inside = inside.enter();
    until(|| inside.most_at_once() >= 2, Duration::from_millis(300)).await;
    sleep(Duration::from_millis(5)).await;
    let lock = distlock::current_lock().expect("inside a locked call");
    assert_eq!(lock.name(), format!("crawl:{host}"));
    assert!(lock.is_held());
    Ok(distlock::current_fencing_token().expect("the permit's token"))
}

async fn crawl_unlocked(inside: &OverlapDetector) {
    let _inside = inside.enter();
    until(|| inside.most_at_once() >= 3, Duration::from_millis(300)).await;
}

/// Two managers, 4 tasks each, 3 calls per task, one semaphore of 2.
async fn permits_bound_the_calls_across_two_managers(fx: &Fixture) {
    // The control: without the semaphore, more than two are inside.
    let control = OverlapDetector::default();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let control = control.clone();
            tokio::spawn(async move { crawl_unlocked(&control).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert!(control.most_at_once() > 2, "the detector saw no crowd");

    let managers = [fx.manager(), fx.another().await];
    let inside = OverlapDetector::default();
    let mut tasks = Vec::new();
    for manager in &managers {
        for _ in 0..4 {
            let (manager, inside) = (manager.clone(), inside.clone());
            tasks.push(tokio::spawn(async move {
                let mut tokens = Vec::new();
                for _ in 0..3 {
                    tokens.push(crawl(&manager, "example.com", &inside).await.unwrap());
                }
                tokens
            }));
        }
    }
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.extend(
            timeout(Duration::from_secs(60), task)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(inside.entries(), 24);
    assert_eq!(
        inside.most_at_once(),
        2,
        "a semaphore of 2 admitted another number"
    );
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), 24, "every permit has its own fencing token");
    assert!(managers[0]
        .semaphore_info("crawl:example.com")
        .await
        .unwrap()
        .is_none());
}

#[distributed_lock(key = "crawl:{host}", permits = 2, wait = "300ms", manager = manager)]
async fn crawl_briefly(manager: &LockManager, host: &str) -> Result<(u64, Vec<u64>), AppError> {
    let info = manager.semaphore_info(&format!("crawl:{host}")).await?;
    let holders = info.expect("held").holders;
    let token = distlock::current_fencing_token().expect("the permit's token");
    Ok((token, holders.iter().map(|h| h.fencing_token).collect()))
}

/// The call takes a permit of the semaphore that `new_semaphore(key, 2, ..)`
/// takes elsewhere: one held there leaves one; two leave none.
async fn a_permit_call_shares_the_semaphore_with_the_api(fx: &Fixture) {
    let (ours, theirs) = (fx.manager(), fx.another().await);
    let semaphore = theirs
        .new_semaphore("crawl:shared", 2, LockOptions::default())
        .unwrap();
    let first = semaphore.acquire().await.unwrap();
    let (token, holders) = crawl_briefly(&ours, "shared").await.unwrap();
    assert_eq!(holders.len(), 2, "the call's permit and the API's");
    assert!(holders.contains(&token) && holders.contains(&first.fencing_token()));
    let second = semaphore.acquire().await.unwrap();
    let err = crawl_briefly(&ours, "shared").await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout, "{err:?}");
    first.release().await.unwrap();
    second.release().await.unwrap();
}

#[distributed_lock(key = "pool:{name}", permits = 2, wait = "300ms", manager = manager)]
async fn pool_user(manager: &LockManager, name: &str, depth: u32) -> Result<Vec<u64>, AppError> {
    let mut tokens = vec![distlock::current_fencing_token().unwrap()];
    if depth > 0 {
        tokens.extend(Box::pin(pool_user(manager, name, depth - 1)).await?);
    }
    Ok(tokens)
}

/// A permit is never re-entered: a call nested in a permit call on the
/// same key takes a permit of its own; past the count it waits for its
/// caller until its `wait` runs out.
async fn a_nested_permit_call_takes_another_permit(fx: &Fixture) {
    let manager = fx.manager();
    let tokens = pool_user(&manager, "nest", 1).await.unwrap();
    assert_eq!(tokens.len(), 2);
    assert_ne!(tokens[0], tokens[1], "two permits, two tokens");
    let err = pool_user(&manager, "nest", 2).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout, "{err:?}");
    // The timed-out waiter's key leaves in the background (if a release
    // promoted it meanwhile, as a holder nobody holds): soon, not at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(left) = manager.semaphore_info("pool:nest").await.unwrap() {
        assert!(Instant::now() < deadline, "left behind: {left:?}");
        sleep(Duration::from_millis(20)).await;
    }
}

/// A scheduled job of which two replicas may run at once.
#[distributed_lock(key = "job:{name}", permits = 2, skip_if_busy, manager = manager)]
async fn job(manager: &LockManager, name: &str, ran: &AtomicUsize) -> Option<u64> {
    ran.fetch_add(1, Ordering::SeqCst);
    distlock::current_fencing_token()
}

async fn skip_if_busy_skips_when_every_permit_is_taken(fx: &Fixture) {
    let (ours, theirs) = (fx.manager(), fx.another().await);
    let semaphore = theirs
        .new_semaphore("job:index", 2, LockOptions::default())
        .unwrap();
    let held = [
        semaphore.acquire().await.unwrap(),
        semaphore.acquire().await.unwrap(),
    ];
    let ran = AtomicUsize::new(0);
    let started = Instant::now();
    assert_eq!(job(&ours, "index", &ran).await, None, "skipped");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "the body ran without a permit"
    );
    let [one, two] = held;
    one.release().await.unwrap();
    assert!(
        job(&ours, "index", &ran).await.is_some(),
        "a permit was free"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    two.release().await.unwrap();
}

#[distributed_lock(keys = ["acct:{from}", "acct:{to}"], skip_if_busy, manager = manager)]
async fn nightly_transfer(manager: &LockManager, from: u32, to: u32) -> Option<usize> {
    Some(distlock::current_lock()?.names().count())
}

#[distributed_lock(key = "doc:{id}", read, skip_if_busy, manager = manager)]
async fn nightly_read(manager: &LockManager, id: u32) -> Option<u64> {
    distlock::current_fencing_token()
}

/// `skip_if_busy` with the other kinds: a transfer skips when any of its
/// names is held, a read when a writer holds.
async fn skip_if_busy_skips_a_busy_name_or_side(fx: &Fixture) {
    let (ours, theirs) = (fx.manager(), fx.another().await);
    let held = theirs
        .new_lock("acct:22", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    assert_eq!(nightly_transfer(&ours, 21, 22).await, None);
    held.unlock().await.unwrap();
    assert_eq!(nightly_transfer(&ours, 21, 22).await, Some(2));

    let rw = theirs
        .new_rw_lock("doc:21", LockOptions::default())
        .unwrap();
    let write = rw.write().await.unwrap();
    assert_eq!(nightly_read(&ours, 21).await, None);
    write.release().await.unwrap();
    let read = rw.read().await.unwrap();
    assert!(nightly_read(&ours, 21).await.is_some(), "reads share");
    read.release().await.unwrap();
}

/// Two replicas per period: each keeps its permit 5 s after it started.
#[distributed_lock(key = "report", permits = 2, skip_if_busy, hold_at_least = "5s", manager = manager)]
async fn report(manager: &LockManager, ran: &AtomicUsize) -> Option<()> {
    ran.fetch_add(1, Ordering::SeqCst);
    Some(())
}

async fn hold_at_least_keeps_the_permit_after_the_call(fx: &Fixture) {
    let replicas = [fx.manager(), fx.another().await, fx.another().await];
    let ran = AtomicUsize::new(0);
    let started = Instant::now();
    let mut ran_here = Vec::new();
    for replica in &replicas {
        ran_here.push(report(replica, &ran).await.is_some());
    }
    assert_eq!(ran_here, [true, true, false], "the third replica skips");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "too slow to tell"
    );
    let info = replicas[2].semaphore_info("report").await.unwrap().unwrap();
    assert_eq!(info.holders.len(), 2, "both permits kept after the calls");
    // Released in the background once hold_at_least has passed.
    let deadline = Instant::now() + Duration::from_secs(15);
    while replicas[2]
        .semaphore_info("report")
        .await
        .unwrap()
        .is_some()
    {
        assert!(Instant::now() < deadline, "permits kept past hold_at_least");
        sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "released early"
    );
    assert!(report(&replicas[2], &ran).await.is_some());
    assert_eq!(ran.load(Ordering::SeqCst), 3);
}

// ------------------------------------------------------- read, write ---

/// Who is inside a read-write section: readers may overlap each other,
/// a writer nobody. Entering counts first and then looks at the other
/// side, so of two overlapping sections the later one sees the earlier.
#[derive(Default)]
struct RwChecker {
    readers: AtomicUsize,
    writers: AtomicUsize,
    most_readers: AtomicUsize,
    violations: AtomicUsize,
    reads: AtomicUsize,
    writes: AtomicUsize,
}

struct Inside<'a>(&'a AtomicUsize);

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl RwChecker {
    fn read(&self) -> Inside<'_> {
        let readers = self.readers.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_readers.fetch_max(readers, Ordering::SeqCst);
        self.reads.fetch_add(1, Ordering::SeqCst);
        if self.writers.load(Ordering::SeqCst) > 0 {
            self.violations.fetch_add(1, Ordering::SeqCst);
        }
        Inside(&self.readers)
    }

    fn write(&self) -> Inside<'_> {
        let writers = self.writers.fetch_add(1, Ordering::SeqCst) + 1;
        self.writes.fetch_add(1, Ordering::SeqCst);
        if writers > 1 || self.readers.load(Ordering::SeqCst) > 0 {
            self.violations.fetch_add(1, Ordering::SeqCst);
        }
        Inside(&self.writers)
    }

    fn count(&self, of: &AtomicUsize) -> usize {
        of.load(Ordering::SeqCst)
    }
}

#[distributed_lock(key = "doc:{id}", read, ttl = "5s", wait = "60s", manager = manager)]
async fn show(manager: &LockManager, id: u32, checker: &RwChecker) -> Result<u64, AppError> {
    let _inside = checker.read();
    until(
        || checker.count(&checker.most_readers) >= 2,
        Duration::from_millis(100),
    )
    .await;
    sleep(Duration::from_millis(3)).await;
    Ok(distlock::current_fencing_token().expect("the read lock's token"))
}

#[distributed_lock(key = "doc:{id}", write, ttl = "5s", wait = "60s", manager = manager)]
async fn edit(manager: &LockManager, id: u32, checker: &RwChecker) -> Result<u64, AppError> {
    let _inside = checker.write();
    sleep(Duration::from_millis(5)).await;
    tokio::task::yield_now().await;
    sleep(Duration::from_millis(3)).await;
    Ok(distlock::current_fencing_token().expect("the write lock's token"))
}

/// Phase 1, reads only: they overlap. Phase 2, reads and writes from two
/// managers: no write overlaps anything.
async fn reads_overlap_and_writes_exclude_everyone(fx: &Fixture) {
    // The control: the same sections without the lock do overlap.
    let control = Arc::new(RwChecker::default());
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let control = control.clone();
            tokio::spawn(async move {
                let _inside = if i % 2 == 0 {
                    control.write()
                } else {
                    control.read()
                };
                sleep(Duration::from_millis(20)).await;
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        control.count(&control.violations) > 0,
        "the checker saw nothing"
    );

    let managers = [fx.manager(), fx.another().await];
    let checker = Arc::new(RwChecker::default());
    let reads: Vec<_> = (0..6)
        .map(|i| {
            let (manager, checker) = (managers[i % 2].clone(), checker.clone());
            tokio::spawn(async move { show(&manager, 1, &checker).await.unwrap() })
        })
        .collect();
    for read in reads {
        timeout(Duration::from_secs(60), read)
            .await
            .unwrap()
            .unwrap();
    }
    assert!(
        checker.count(&checker.most_readers) >= 2,
        "reads did not overlap"
    );

    let mut tasks = Vec::new();
    for manager in &managers {
        for t in 0..4 {
            let (manager, checker) = (manager.clone(), checker.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..4 {
                    if (t + i) % 3 == 0 {
                        edit(&manager, 1, &checker).await.unwrap();
                    } else {
                        show(&manager, 1, &checker).await.unwrap();
                    }
                }
            }));
        }
    }
    for task in tasks {
        timeout(Duration::from_secs(60), task)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(checker.count(&checker.violations), 0, "a write overlapped");
    // Per manager and task t, call i writes when (t + i) % 3 == 0: 6 of 16.
    assert_eq!(checker.count(&checker.writes), 2 * 6);
    assert_eq!(checker.count(&checker.reads), 6 + 2 * 10);
}

#[distributed_lock(key = "doc:{id}", read, wait = "0s", manager = manager)]
async fn show_if_free(manager: &LockManager, id: u32) -> Result<(), AppError> {
    Ok(())
}

#[distributed_lock(key = "doc:{id}", write, wait = "0s", manager = manager)]
async fn edit_if_free(manager: &LockManager, id: u32) -> Result<(), AppError> {
    Ok(())
}

#[distributed_lock(key = "doc:{id}", wait = "0s", manager = manager)]
async fn lock_if_free(manager: &LockManager, id: u32) -> Result<(), AppError> {
    Ok(())
}

/// The read-write lock of a key is its lock's queue: a lock held elsewhere
/// excludes both sides; a read held elsewhere admits reads only; a write
/// call held excludes a lock call.
async fn read_and_write_calls_contend_with_locks_of_their_key(fx: &Fixture) {
    let (ours, theirs) = (fx.manager(), fx.another().await);
    let busy = |r: Result<(), AppError>| r.is_err_and(|e| e.code() == ErrorCode::Timeout);
    let lock = theirs.new_lock("doc:9", LockOptions::default()).unwrap();
    let held = lock.lock().await.unwrap();
    assert!(busy(show_if_free(&ours, 9).await));
    assert!(busy(edit_if_free(&ours, 9).await));
    held.unlock().await.unwrap();

    let rw = theirs.new_rw_lock("doc:9", LockOptions::default()).unwrap();
    let read = rw.read().await.unwrap();
    show_if_free(&ours, 9).await.unwrap();
    assert!(busy(edit_if_free(&ours, 9).await));
    assert!(busy(lock_if_free(&ours, 9).await));
    read.release().await.unwrap();

    let (entered, leave) = (Notify::new(), Notify::new());
    let (edited, (locked, shown)) = tokio::join!(edit_while(&ours, 9, &entered, &leave), async {
        entered.notified().await;
        let tried = (
            lock_if_free(&theirs, 9).await,
            show_if_free(&theirs, 9).await,
        );
        leave.notify_one();
        tried
    });
    edited.unwrap();
    assert!(busy(locked), "a lock call ran beside a write call");
    assert!(busy(shown), "a read call ran beside a write call");
}

#[distributed_lock(key = "doc:{id}", write, wait = "5s", manager = manager)]
async fn edit_while(
    manager: &LockManager,
    id: u32,
    entered: &Notify,
    leave: &Notify,
) -> Result<(), AppError> {
    entered.notify_one();
    leave.notified().await;
    Ok(())
}

#[distributed_lock(key = "doc:{id}", write, wait = "2s", manager = manager)]
async fn edit_then_show(manager: &LockManager, id: u32) -> Result<(u64, u64, u64), AppError> {
    let outer = distlock::current_fencing_token().unwrap();
    // Under the write lock, this task's body may read and lock the key.
    let read = show(manager, id, &RwChecker::default()).await?;
    let lock = nested_lock(manager, id).await?;
    Ok((outer, read, lock))
}

#[distributed_lock(key = "doc:{id}", wait = "2s", manager = manager)]
async fn nested_lock(manager: &LockManager, id: u32) -> Result<u64, AppError> {
    Ok(distlock::current_fencing_token().unwrap())
}

#[distributed_lock(key = "doc:{id}", read, wait = "2s", manager = manager)]
async fn show_then_edit(manager: &LockManager, id: u32) -> Result<(u64, ErrorCode), AppError> {
    let outer = distlock::current_fencing_token().unwrap();
    let again = show(manager, id, &RwChecker::default()).await?;
    assert_eq!(again, outer, "a read in a read body runs under it");
    let started = Instant::now();
    let refused = edit(manager, id, &RwChecker::default()).await.unwrap_err();
    let lock_refused = nested_lock(manager, id).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "it waited for itself"
    );
    assert_eq!(lock_refused.code(), refused.code());
    Ok((outer, refused.code()))
}

/// Nested calls on the key, in the body's task and through its manager:
/// under a write, a read and a lock run as child sections of it; under a
/// read, a read does, and a write or a lock is refused at once
/// (`AlreadyHeld`: it would wait for itself, and it must not run beside
/// other readers).
async fn calls_nested_in_read_and_write_bodies(fx: &Fixture) {
    let manager = fx.manager();
    let (outer, read, lock) = timeout(Duration::from_secs(10), edit_then_show(&manager, 3))
        .await
        .expect("deadlocked")
        .unwrap();
    assert_eq!(
        (read, lock),
        (outer, outer),
        "nested calls run under the write"
    );
    let (_, refused) = show_then_edit(&manager, 4).await.unwrap();
    assert_eq!(refused, ErrorCode::AlreadyHeld);
    assert!(manager.lock_info("doc:3").await.unwrap().is_none());
    assert!(manager.lock_info("doc:4").await.unwrap().is_none());
}

/// The rule under the macro's nested calls, for any owner scope of a read
/// hold (`ReadGuard::scope`, a read request under `LockLayer`): an
/// exclusive acquisition of the name there is refused, not run beside the
/// other readers; a read is a child section.
async fn a_read_holds_scope_refuses_exclusive_acquisitions(fx: &Fixture) {
    let (manager, peer) = (fx.manager(), fx.another().await);
    let rw = manager
        .new_rw_lock("doc:12", LockOptions::default())
        .unwrap();
    let read = rw.read().await.unwrap();
    let (write, lock, again) = read
        .scope()
        .run(async {
            let wait = Duration::from_secs(2);
            let rw = manager
                .new_rw_lock("doc:12", LockOptions::default())
                .unwrap();
            let lock = manager.new_lock("doc:12", LockOptions::default()).unwrap();
            (
                rw.write_timeout(wait).await.map(|g| g.fencing_token()),
                lock.lock_timeout(wait).await.map(|g| g.fencing_token()),
                rw.read_timeout(wait).await.map(|g| g.fencing_token()),
            )
        })
        .await;
    assert_eq!(write.unwrap_err().code(), ErrorCode::AlreadyHeld);
    assert_eq!(lock.unwrap_err().code(), ErrorCode::AlreadyHeld);
    assert_eq!(again.unwrap(), read.fencing_token());
    // Other readers still get in: the read hold was never made exclusive.
    let other = peer.new_rw_lock("doc:12", LockOptions::default()).unwrap();
    assert!(other.try_read().await.unwrap().is_some());
    read.release().await.unwrap();
}

// -------------------------------------------------------------- keys ---

/// One detector per account.
#[derive(Default, Clone)]
struct Accounts([OverlapDetector; 3]);

#[distributed_lock(keys = ["acct:{from}", "acct:{to}"], ttl = "5s", wait = "60s", manager = manager)]
async fn transfer(
    manager: &LockManager,
    from: usize,
    to: usize,
    accounts: &Accounts,
    entered: Option<&Notify>,
) -> Result<(), AppError> {
    let _from = accounts.0[from].enter();
    let _to = accounts.0[to].enter();
    if let Some(entered) = entered {
        entered.notify_one();
    }
    sleep(Duration::from_millis(3)).await;
    tokio::task::yield_now().await;
    Ok(())
}

#[distributed_lock(key = "acct:{id}", ttl = "5s", wait = "60s", manager = manager)]
async fn audit(manager: &LockManager, id: usize, accounts: &Accounts) -> Result<(), AppError> {
    let _inside = accounts.0[id].enter();
    sleep(Duration::from_millis(3)).await;
    Ok(())
}

/// Two managers; in each, a task transferring 1 → 2, one 2 → 1, one
/// auditing account 1 or 2, and one doing a transfer and an audit of one
/// of its accounts concurrently in one task (`join!`; the audit starts
/// once the transfer's body runs: it must not run under the transfer's
/// hold, which is the transfer's own, not its task's).
async fn opposite_transfers_never_deadlock_nor_overlap_an_account_call(fx: &Fixture) {
    // The control: unlocked, the same sections overlap on an account.
    let control = Accounts::default();
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let control = control.clone();
            tokio::spawn(async move {
                let _inside = control.0[1 + i % 2].enter();
                sleep(Duration::from_millis(20)).await;
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        control.0[1].most_at_once() > 1,
        "the detector saw no overlap"
    );

    let accounts = Accounts::default();
    let mut tasks = Vec::new();
    for m in 0..2 {
        let manager = fx.another().await;
        for t in 0..4 {
            let (manager, accounts) = (manager.clone(), accounts.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..5 {
                    match t {
                        0 => transfer(&manager, 1, 2, &accounts, None).await.unwrap(),
                        1 => transfer(&manager, 2, 1, &accounts, None).await.unwrap(),
                        2 => audit(&manager, 1 + m, &accounts).await.unwrap(),
                        _ => {
                            let entered = Notify::new();
                            let (a, b) = tokio::join!(
                                transfer(&manager, 2, 1, &accounts, Some(&entered)),
                                async {
                                    entered.notified().await;
                                    audit(&manager, 2 - m, &accounts).await
                                }
                            );
                            a.unwrap();
                            b.unwrap();
                        }
                    }
                }
            }));
        }
    }
    for task in tasks {
        timeout(Duration::from_secs(90), task)
            .await
            .expect("transfers deadlocked")
            .unwrap();
    }
    for id in [1, 2] {
        let account = &accounts.0[id];
        assert_eq!(
            account.most_at_once(),
            1,
            "acct:{id} had two sections at once"
        );
        // Per manager: 5 + 5 transfers, 5 audits of one account, 5 + 5 in
        // the join!s; the audits of each account come from one manager each.
        assert_eq!(account.entries(), 2 * (5 + 5 + 5) + 5 + 5);
    }
    let left = fx.manager().list_locks("acct:").await.unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[distributed_lock(keys = ["acct:{to}", "acct:{from}"], wait = "5s", manager = manager)]
async fn inspect_transfer(manager: &LockManager, from: u32, to: u32) -> Result<(), AppError> {
    let lock = distlock::current_lock().unwrap();
    let names: Vec<&str> = lock.names().collect();
    let mut sorted = [format!("acct:{from}"), format!("acct:{to}")];
    sorted.sort();
    assert_eq!(names, sorted, "in name order");
    assert_eq!(lock.name(), sorted[0]);
    assert!(lock.is_held());
    let token = lock.fencing_token();
    assert_eq!(distlock::current_fencing_token(), Some(token));
    for name in &names {
        let info = manager.lock_info(name).await?.expect("held");
        assert_eq!(
            info.fencing_token, token,
            "{name} has the multi-lock's token"
        );
    }
    // A call on one of the names, nested in the body: a child section of
    // the transfer's hold (no deadlock), and its own current lock.
    let nested = timeout(Duration::from_secs(5), nested_account(manager, from))
        .await
        .expect("a nested call waited for its own transfer")?;
    assert_eq!(nested, (format!("acct:{from}"), token));
    // Back in the transfer's body: the whole multi-lock again.
    assert_eq!(distlock::current_lock().unwrap().names().count(), 2);
    Ok(())
}

#[distributed_lock(key = "acct:{id}", wait = "1s", manager = manager)]
async fn nested_account(manager: &LockManager, id: u32) -> Result<(String, u64), AppError> {
    let lock = distlock::current_lock().unwrap();
    assert_eq!(lock.names().count(), 1);
    Ok((lock.name().to_owned(), lock.fencing_token()))
}

async fn a_transfer_body_sees_every_name_and_one_token(fx: &Fixture) {
    let manager = fx.manager();
    inspect_transfer(&manager, 5, 6).await.unwrap();
    inspect_transfer(&manager, 8, 7).await.unwrap();
    assert!(manager.list_locks("acct:").await.unwrap().is_empty());
}

// ------------------------------------------------- the default manager ---

#[distributed_lock(keys = ["acct:{from}", "acct:{to}"], wait = "1s")]
async fn transfer_by_default(from: u32, to: u32) -> Result<usize, AppError> {
    Ok(distlock::current_lock().unwrap().names().count())
}

#[distributed_lock(key = "pool", permits = 3, wait = "1s")]
async fn pooled() -> Result<u32, AppError> {
    let manager = distlock::default_manager().unwrap();
    Ok(manager.semaphore_info("pool").await?.unwrap().permits)
}

#[tokio::test]
async fn kinds_lock_with_the_default_manager() {
    let manager = LockManager::in_memory();
    let (names, permits) = distlock::with_default_manager(manager, async {
        (transfer_by_default(1, 2).await, pooled().await)
    })
    .await;
    assert_eq!(names.unwrap(), 2);
    assert_eq!(permits.unwrap(), 3);
    // A name rendered twice is locked once.
    let one = distlock::with_default_manager(LockManager::in_memory(), transfer_by_default(4, 4));
    assert_eq!(one.await.unwrap(), 1);
    let err = pooled().await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidOptions, "no default manager");
}
