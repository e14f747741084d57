//! A scheduled job on three replicas, run once per period (ShedLock's
//! `@SchedulerLock`, with `#[distributed_lock]`), on a throwaway local etcd.
//!
//! Every replica fires the job every second; the third replica's clock runs
//! 400 ms late. `skip_if_busy` makes the replicas that find the key taken
//! return at once, and `hold_at_least` keeps the key for 700 ms after the
//! job started, so the late replica does not run the same period again.
//! `hold_at_most` cancels a run that takes too long and frees the key.
//!
//! `cargo run -p distlock-examples --example scheduled_job` (on the etcd of
//! `DISTLOCK_ENDPOINTS`, else on a throwaway local one)

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distlock::{distributed_lock, EtcdConfig, LockManager};
use tokio::time::{sleep, sleep_until, Instant};

/// Who ran the job in which period.
type Runs = Arc<Mutex<BTreeMap<u32, Vec<&'static str>>>>;

/// The job: once per period across the fleet. Returns `()`, so a busy key
/// simply skips it (a lock error would be logged).
#[distributed_lock(
    key = "job:hourly-report",
    skip_if_busy,
    hold_at_least = "700ms",
    hold_at_most = "5s",
    manager = manager
)]
async fn hourly_report(manager: &LockManager, replica: &'static str, period: u32, runs: &Runs) {
    runs.lock()
        .unwrap()
        .entry(period)
        .or_default()
        .push(replica);
    sleep(Duration::from_millis(50)).await; // the work
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // DISTLOCK_ENDPOINTS, or a throwaway etcd (examples/support), removed on exit.
    let etcd = support::etcd().await?;
    let config = EtcdConfig::new(etcd.endpoints());
    let namespace = "/scheduled-job";
    println!("etcd at {:?}, namespace {namespace}", etcd.endpoints());

    const PERIODS: u32 = 5;
    let replicas = [("east", 0), ("west", 150), ("late", 400)];
    let runs: Runs = Arc::default();
    let start = Instant::now() + Duration::from_millis(300);
    let mut tasks = Vec::new();
    for (name, skew_ms) in replicas {
        let manager = LockManager::connect(config.clone(), &namespace).await?;
        let runs = runs.clone();
        tasks.push(tokio::spawn(async move {
            for period in 0..PERIODS {
                let at =
                    start + Duration::from_secs(period.into()) + Duration::from_millis(skew_ms);
                sleep_until(at).await;
                hourly_report(&manager, name, period, &runs).await;
            }
            manager
        }));
    }
    let mut managers = Vec::new();
    for task in tasks {
        managers.push(task.await?);
    }
    // Closing a manager releases what it holds: only once every replica is done.
    for manager in managers {
        manager.close().await;
    }

    println!("\nperiod  ran on");
    let runs = runs.lock().unwrap();
    for (period, ran) in runs.iter() {
        println!("{period:>6}  {}", ran.join(", "));
    }
    assert_eq!(runs.len(), PERIODS as usize, "a period was missed");
    assert!(
        runs.values().all(|ran| ran.len() == 1),
        "a period ran twice"
    );
    println!("\nexactly once per period on three replicas (one 400 ms late)");
    Ok(())
}
