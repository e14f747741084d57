//! Scheduled jobs (issue #9, after ShedLock's `@SchedulerLock`), on a real
//! etcd (`etcd::`) and in memory (`memory::`): `skip_if_busy` returns at once
//! without running the body, `hold_at_least` keeps the key after a short body,
//! `hold_at_most` cancels a long one, and a job fired every period by three
//! managers runs exactly once per period, even on a replica whose clock is
//! late.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distlock::{distributed_lock, ErrorCode, LockError, LockManager, LockOptions};
use support::{on_both_backends, Fixture};
use tokio::time::{sleep, sleep_until, timeout, Instant};

on_both_backends!(
    skip_if_busy_returns_at_once_for_every_return_shape,
    hold_at_least_keeps_the_key_after_a_short_body,
    hold_at_most_cancels_the_body_and_frees_the_key,
    a_job_on_three_managers_runs_once_per_period,
);

#[derive(Debug)]
struct JobError(#[allow(dead_code)] LockError);

impl From<LockError> for JobError {
    fn from(err: LockError) -> Self {
        JobError(err)
    }
}

#[distributed_lock(key = "job:{name}", skip_if_busy, manager = manager)]
async fn unit_job(manager: &LockManager, name: &str, ran: &AtomicUsize) {
    ran.fetch_add(1, Ordering::SeqCst);
}

#[distributed_lock(key = "job:{name}", skip_if_busy, manager = manager)]
async fn option_job(manager: &LockManager, name: &str, ran: &AtomicUsize) -> Option<u64> {
    ran.fetch_add(1, Ordering::SeqCst);
    distlock::current_fencing_token()
}

#[distributed_lock(key = "job:{name}", skip_if_busy, manager = manager)]
async fn result_job(manager: &LockManager, name: &str, ran: &AtomicUsize) -> Result<(), JobError> {
    ran.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[distributed_lock(key = "job:{name}", skip_if_busy, manager = manager)]
async fn result_option_job(
    manager: &LockManager,
    name: &str,
    ran: &AtomicUsize,
) -> Result<Option<u64>, JobError> {
    ran.fetch_add(1, Ordering::SeqCst);
    Ok(distlock::current_fencing_token())
}

async fn skip_if_busy_returns_at_once_for_every_return_shape(fx: &Fixture) {
    let (ours, theirs) = (fx.manager(), fx.another().await);
    let held = theirs
        .new_lock("job:daily", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let ran = AtomicUsize::new(0);
    let started = Instant::now();
    unit_job(&ours, "daily", &ran).await;
    assert_eq!(option_job(&ours, "daily", &ran).await, None);
    result_job(&ours, "daily", &ran).await.unwrap();
    assert_eq!(result_option_job(&ours, "daily", &ran).await.unwrap(), None);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "skipping took {took:?}");
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "a body ran while another held the key"
    );

    held.unlock().await.unwrap();
    unit_job(&ours, "daily", &ran).await;
    assert!(option_job(&ours, "daily", &ran).await.is_some());
    result_job(&ours, "daily", &ran).await.unwrap();
    assert!(result_option_job(&ours, "daily", &ran)
        .await
        .unwrap()
        .is_some());
    assert_eq!(ran.load(Ordering::SeqCst), 4);
}

#[distributed_lock(key = "job:short", skip_if_busy, hold_at_least = "1500ms", ttl = "5s", manager = manager)]
async fn short_job(manager: &LockManager) -> Result<(), JobError> {
    Ok(())
}

async fn hold_at_least_keeps_the_key_after_a_short_body(fx: &Fixture) {
    let (ours, theirs) = (fx.manager(), fx.another().await);
    let started = Instant::now();
    short_job(&ours).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "the call waited for hold_at_least"
    );
    let probe = theirs
        .new_lock("job:short", LockOptions::default())
        .unwrap();
    assert!(
        probe.try_lock().await.unwrap().is_none(),
        "released before hold_at_least"
    );
    sleep_until(started + Duration::from_millis(1200)).await;
    assert!(
        probe.try_lock().await.unwrap().is_none(),
        "released before hold_at_least"
    );
    // Released in the background once it has passed.
    sleep_until(started + Duration::from_millis(2500)).await;
    let guard = timeout(Duration::from_secs(3), probe.lock())
        .await
        .expect("kept past hold_at_least")
        .unwrap();
    guard.unlock().await.unwrap();
}

#[distributed_lock(key = "job:long", hold_at_most = "500ms", ttl = "5s", manager = manager)]
async fn long_job(manager: &LockManager, reached: &AtomicBool) -> Result<(), JobError> {
    sleep(Duration::from_secs(30)).await;
    reached.store(true, Ordering::SeqCst);
    Ok(())
}

async fn hold_at_most_cancels_the_body_and_frees_the_key(fx: &Fixture) {
    let (ours, theirs) = (fx.manager(), fx.another().await);
    let reached = AtomicBool::new(false);
    let started = Instant::now();
    let err = timeout(Duration::from_secs(10), long_job(&ours, &reached))
        .await
        .expect("not cancelled at hold_at_most")
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.0.code(), ErrorCode::Timeout, "{err:?}");
    assert!(
        took >= Duration::from_millis(500),
        "cancelled after {took:?}"
    );
    assert!(took < Duration::from_secs(3), "cancelled after {took:?}");
    assert!(!reached.load(Ordering::SeqCst));
    let probe = theirs.new_lock("job:long", LockOptions::default()).unwrap();
    assert!(
        probe.try_lock().await.unwrap().is_some(),
        "the key stayed held"
    );
}

/// Runs per period, recording the period it ran in.
#[distributed_lock(key = "job:report", skip_if_busy, hold_at_least = "700ms", ttl = "5s", manager = manager)]
async fn report(manager: &LockManager, period: u32, runs: &Runs) {
    runs.record(period);
    sleep(Duration::from_millis(50)).await;
}

/// The same job without `hold_at_least`: the checker's control.
#[distributed_lock(key = "job:report-unheld", skip_if_busy, ttl = "5s", manager = manager)]
async fn report_unheld(manager: &LockManager, period: u32, runs: &Runs) {
    runs.record(period);
    sleep(Duration::from_millis(50)).await;
}

/// How often the job ran in each period.
#[derive(Default, Clone)]
struct Runs(Arc<Mutex<BTreeMap<u32, usize>>>);

impl Runs {
    fn record(&self, period: u32) {
        *self.0.lock().unwrap().entry(period).or_default() += 1;
    }

    fn per_period(&self) -> BTreeMap<u32, usize> {
        self.0.lock().unwrap().clone()
    }
}

/// Fires `job` on each manager every second for `periods` periods; replica
/// `i` fires `skews[i]` late (a clock running behind).
async fn fire<F, Fut>(managers: &[LockManager], periods: u32, job: F) -> Runs
where
    F: Fn(LockManager, u32, Runs) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    const SKEWS: [u64; 3] = [0, 150, 400];
    let runs = Runs::default();
    let start = Instant::now() + Duration::from_millis(300);
    let replicas: Vec<_> = managers
        .iter()
        .zip(SKEWS)
        .map(|(manager, skew)| {
            let (manager, runs) = (manager.clone(), runs.clone());
            tokio::spawn(async move {
                for period in 0..periods {
                    let at =
                        start + Duration::from_secs(period.into()) + Duration::from_millis(skew);
                    sleep_until(at).await;
                    job(manager.clone(), period, runs.clone()).await;
                }
            })
        })
        .collect();
    for replica in replicas {
        replica.await.unwrap();
    }
    runs
}

async fn a_job_on_three_managers_runs_once_per_period(fx: &Fixture) {
    let managers = [fx.manager(), fx.another().await, fx.another().await];

    // The control: without hold_at_least, the replica 400 ms late finds the
    // key free again and runs the job a second time; the checker sees it.
    let control = fire(&managers, 1, |m, p, r| async move {
        report_unheld(&m, p, &r).await
    })
    .await;
    assert!(
        control.per_period().values().any(|&n| n > 1),
        "the checker saw no double run: {:?}",
        control.per_period()
    );

    let runs = fire(
        &managers,
        4,
        |m, p, r| async move { report(&m, p, &r).await },
    )
    .await;
    let expected: BTreeMap<u32, usize> = (0..4).map(|p| (p, 1)).collect();
    assert_eq!(runs.per_period(), expected, "runs per period");
}
