//! Throughput and scale of distlock next to etcd's own lock RPC and raw reads,
//! measured in one run against one throwaway etcd (compare the ratios: the
//! machine is shared).
//!
//! `cargo bench -p distlock-tests --bench scale`
//!
//! Each target is printed next to its anchor row with ✓ or ✗:
//! - distinct-key throughput, 64 tasks: ≥ 2x etcd's lock RPC on one manager,
//!   ≥ 1.5x across 4 managers in one process;
//! - `list_locks` over 10,000 held locks ≤ 5x one raw range read of the keys;
//! - 10,000 held locks on one manager: acquired at ≥ 10,000/s, ≤ 1 KiB RSS
//!   per held lock, one keep-alive per session per renew interval;
//! - 1,000 waiters across 100 managers on one key: tokens grow in acquisition
//!   order, each hand-off wakes one waiter (read RPCs per hand-off), no key left.
//!
//! `DISTLOCK_SCALE_LOCKS` (default 10000) and `DISTLOCK_SCALE_SECONDS`
//! (default 2, per throughput round) shrink or grow the run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distlock::testing::{Faults, Op};
use distlock::{EtcdConfig, LockGuard, LockManager, LockOptions};
use distlock_tests::Etcd;
use etcd_client::{Client, GetOptions, LockOptions as RpcLockOptions};

const TASKS: usize = 64;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "✓"
    } else {
        "✗"
    }
}

/// Runs `TASKS` loops of `cycle(task)` for `secs`, returning cycles per second.
async fn throughput<F, Fut>(secs: f64, cycle: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let cycle = Arc::new(cycle);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for task in 0..TASKS {
        let (cycle, stop, done) = (cycle.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                cycle(task).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

async fn rpc_throughput(client: &Client, lease: i64, secs: f64, round: usize) -> f64 {
    let client = client.clone();
    throughput(secs, move |task| {
        let mut c = client.clone();
        async move {
            let name = format!("/bench/rpc-{round}-{task}");
            let opts = Some(RpcLockOptions::new().with_lease(lease));
            let key = c.lock(name, opts).await.unwrap().key().to_vec();
            c.unlock(key).await.unwrap();
        }
    })
    .await
}

async fn distlock_throughput(managers: &[LockManager], secs: f64, round: usize) -> f64 {
    let locks: Vec<_> = (0..TASKS)
        .map(|task| {
            let m = &managers[task % managers.len()];
            Arc::new(
                m.new_lock(format!("tp-{round}-{task}"), LockOptions::default())
                    .unwrap(),
            )
        })
        .collect();
    throughput(secs, move |task| {
        let lock = locks[task].clone();
        async move {
            lock.lock().await.unwrap().unlock().await.unwrap();
        }
    })
    .await
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Acquires `n` locks on one manager, 64 at a time; the guards and the rate.
async fn hold_many(manager: &LockManager, n: usize, opts: &LockOptions) -> (Vec<LockGuard>, f64) {
    let next = Arc::new(AtomicU64::new(0));
    let held = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (manager, opts, next, held) =
            (manager.clone(), opts.clone(), next.clone(), held.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n {
                    return;
                }
                let lock = manager.new_lock(format!("many-{i}"), opts.clone()).unwrap();
                let guard = lock.lock().await.unwrap();
                held.lock().unwrap().push(guard);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let guards = std::mem::take(&mut *held.lock().unwrap());
    (guards, rate)
}

/// 1,000 waiters across 100 managers (peers on one connection, with their own
/// sessions and local queues) on one key: acquisition order, tokens, and the
/// read RPCs each hand-off costs.
async fn herd(manager: &LockManager, faults: &Faults) -> (bool, f64, f64, usize) {
    const MANAGERS: usize = 100;
    const PER_MANAGER: usize = 10;
    let base = manager.with_faults(faults);
    let managers: Vec<LockManager> = (0..MANAGERS).map(|_| base.peer()).collect();
    let first = managers[0]
        .new_lock("herd", LockOptions::default())
        .unwrap();
    let gate = first.lock().await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for m in &managers {
        for _ in 0..PER_MANAGER {
            let (m, order) = (m.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let lock = m.new_lock("herd", LockOptions::default()).unwrap();
                let guard = lock.lock().await.unwrap();
                order.lock().unwrap().push(guard.fencing_token());
                guard.unlock().await.unwrap();
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // everyone queued
    let reads_before = faults.calls(Op::Position);
    let started = Instant::now();
    gate.unlock().await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    let handoffs = MANAGERS * PER_MANAGER;
    let reads = (faults.calls(Op::Position) - reads_before) as f64 / handoffs as f64;
    let tokens = order.lock().unwrap().clone();
    let increasing = tokens.windows(2).all(|w| w[0] < w[1]);
    let left = manager.list_locks("herd").await.unwrap().len();
    for m in &managers {
        m.close().await;
    }
    (
        increasing,
        reads,
        took.as_secs_f64() * 1000.0 / handoffs as f64,
        left,
    )
}

#[tokio::main]
async fn main() {
    let n = env_usize("DISTLOCK_SCALE_LOCKS", 10_000);
    let secs = env_usize("DISTLOCK_SCALE_SECONDS", 2) as f64;
    let etcd = Etcd::start().await;
    let ns = etcd.namespace();
    let mut client = Client::connect(etcd.endpoints(), None).await.unwrap();
    let connect = || LockManager::connect(EtcdConfig::new(etcd.endpoints()), &ns);
    let one = connect().await.unwrap();
    let mut four = Vec::new();
    for _ in 0..4 {
        four.push(connect().await.unwrap());
    }
    let lease = client.lease_grant(60, None).await.unwrap().id();

    // Throughput: interleaved rounds, the median of each.
    let (mut rpc, mut ours1, mut ours4) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..3 {
        rpc.push(rpc_throughput(&client, lease, secs, round).await);
        ours1.push(distlock_throughput(std::slice::from_ref(&one), secs, round).await);
        ours4.push(distlock_throughput(&four, secs, round).await);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (rpc, ours1, ours4) = (median(rpc), median(ours1), median(ours4));

    // Many held locks on one manager, with keep-alives counted.
    let faults = Faults::new();
    let counted = one.with_faults(&faults);
    let opts = LockOptions::default()
        .ttl(Duration::from_secs(5))
        .renew_interval(Duration::from_secs(1));
    let rss_before = rss_bytes();
    let (guards, acquire_rate) = hold_many(&counted, n, &opts).await;
    let rss_per_lock = rss_bytes().saturating_sub(rss_before) as f64 / n as f64;
    let keep_alives_before = faults.calls(Op::KeepAlive);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let keep_alives = faults.calls(Op::KeepAlive) - keep_alives_before;

    // Listing them, against one raw range read of the same keys.
    let root = format!("{ns}/locks/");
    let t = Instant::now();
    let raw = client
        .get(root.as_str(), Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let raw_read = t.elapsed();
    let t = Instant::now();
    let listed = counted.list_locks("").await.unwrap();
    let list = t.elapsed();
    assert_eq!(listed.len(), n);
    assert_eq!(raw.kvs().len(), n);
    let t = Instant::now();
    let released = guards.len();
    let mut releases = tokio::task::JoinSet::new();
    let mut guards = guards;
    let per_task = released.div_ceil(TASKS).max(1);
    while !guards.is_empty() {
        let chunk: Vec<LockGuard> = guards.drain(..per_task.min(guards.len())).collect();
        releases.spawn(async move {
            for g in chunk {
                g.unlock().await.unwrap();
            }
        });
    }
    while releases.join_next().await.is_some() {}
    let release_rate = released as f64 / t.elapsed().as_secs_f64();

    let (fifo, reads_per_handoff, ms_per_handoff, left) = herd(&one, &Faults::new()).await;

    println!("\n| row | value |");
    println!("|---|---|");
    println!("| etcd lock RPC, 64 tasks, distinct keys | {rpc:.0} cycles/s |");
    println!("| distlock, one manager | {ours1:.0} cycles/s |");
    println!("| distlock, 4 managers | {ours4:.0} cycles/s |");
    println!(
        "| raw range read of {n} keys | {:.1} ms |",
        raw_read.as_secs_f64() * 1000.0
    );
    println!(
        "| list_locks over {n} locks | {:.1} ms |",
        list.as_secs_f64() * 1000.0
    );
    println!("| acquiring {n} locks on one manager | {acquire_rate:.0} locks/s |");
    println!("| releasing them | {release_rate:.0} locks/s |");
    println!("| RSS per held lock | {rss_per_lock:.0} B |");
    println!("| keep-alives in 3 s, renew every 1 s, {n} locks | {keep_alives} |");
    println!("| 1,000 waiters / 100 managers: hand-off | {ms_per_handoff:.2} ms |");
    println!("| queue reads per hand-off | {reads_per_handoff:.2} |");
    println!();
    let r1 = ours1 / rpc;
    let r4 = ours4 / rpc;
    let lr = list.as_secs_f64() / raw_read.as_secs_f64();
    println!(
        "{} one manager / lock RPC:     {r1:.2}x (target >= 2.0x)",
        mark(r1 >= 2.0)
    );
    println!(
        "{} 4 managers / lock RPC:      {r4:.2}x (target >= 1.5x)",
        mark(r4 >= 1.5)
    );
    println!(
        "{} list_locks / raw read:      {lr:.2}x (target <= 5x)",
        mark(lr <= 5.0)
    );
    println!(
        "{} acquire rate:               {acquire_rate:.0}/s (target >= 10000/s)",
        mark(acquire_rate >= 10_000.0)
    );
    println!(
        "{} RSS per held lock:          {rss_per_lock:.0} B (target <= 1024 B)",
        mark(rss_per_lock <= 1024.0)
    );
    println!(
        "{} keep-alives per interval:   {:.1} for 1 session (target 1, independent of {n} locks)",
        mark(keep_alives <= 4),
        keep_alives as f64 / 3.0
    );
    println!("{} herd: tokens in acquisition order: {fifo}; reads per hand-off {reads_per_handoff:.2} (target <= 2: no thundering herd); keys left {left}", mark(fifo && reads_per_handoff <= 2.0 && left == 0));
    client.lease_revoke(lease).await.unwrap();
    one.close().await;
    for m in four {
        m.close().await;
    }
}
