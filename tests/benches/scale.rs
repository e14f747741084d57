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
//!   order, each hand-off wakes one waiter (read RPCs per hand-off), no key left;
//! - more callers are not slower (issue #17, item 10): `n` distinct locks
//!   acquired and held on one manager, and `n` acquire+release cycles on
//!   distinct keys, with 64, 256 and 1,024 acquisitions in flight: the rate
//!   at 256 and at 1,024 is at least the rate at 64 (the median of
//!   interleaved rounds).
//!
//! `DISTLOCK_SCALE_LOCKS` (default 10000) and `DISTLOCK_SCALE_SECONDS`
//! (default 2, per throughput round) shrink or grow the run;
//! `DISTLOCK_SCALE_ROUNDS` (default 3) sets the sweep's rounds,
//! `DISTLOCK_SCALE_IN_FLIGHT` (default `64,256,1024`) its in-flight counts,
//! `DISTLOCK_SCALE_ONLY=sweep` runs the sweep alone, and
//! `DISTLOCK_SCALE_DIAG=1` prints each sweep row's backend calls and etcd
//! counters to stderr.

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

/// CPU time of this process (user + system), in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th of the line, in clock ticks (100 per second).
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
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
    acquire_many(manager, n, opts, TASKS, "many", false).await
}

/// Acquires `n` distinct locks `{prefix}-{i}` on one manager, `in_flight`
/// acquisitions at a time. Each is held until all are acquired (returned as
/// guards), or with `cycle` released at once (acquire+release cycles). The
/// rate is per second over the whole run.
async fn acquire_many(
    manager: &LockManager,
    n: usize,
    opts: &LockOptions,
    in_flight: usize,
    prefix: &str,
    cycle: bool,
) -> (Vec<LockGuard>, f64) {
    let next = Arc::new(AtomicU64::new(0));
    let held = Arc::new(Mutex::new(Vec::with_capacity(if cycle { 0 } else { n })));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let (manager, opts, next, held) =
            (manager.clone(), opts.clone(), next.clone(), held.clone());
        let prefix = prefix.to_owned();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n {
                    return;
                }
                let lock = manager
                    .new_lock(format!("{prefix}-{i}"), opts.clone())
                    .unwrap();
                let guard = lock.lock().await.unwrap();
                if cycle {
                    guard.unlock().await.unwrap();
                } else {
                    held.lock().unwrap().push(guard);
                }
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

/// Releases `guards`, `TASKS` at a time; releases per second.
async fn release_all(mut guards: Vec<LockGuard>) -> f64 {
    let t = Instant::now();
    let released = guards.len();
    let mut releases = tokio::task::JoinSet::new();
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
    released as f64 / t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Acquisitions in flight in the concurrency sweep; the first is the
/// baseline. `DISTLOCK_SCALE_IN_FLIGHT` (e.g. `64,1024`) overrides them.
fn sweep_counts() -> Vec<usize> {
    std::env::var("DISTLOCK_SCALE_IN_FLIGHT")
        .ok()
        .map(|v| v.split(',').filter_map(|k| k.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![64, 256, 1024])
}

/// Per in-flight count: the median rate and every round's rate.
type SweepRows = Vec<(usize, f64, Vec<f64>)>;

/// The concurrency sweep (issue #17, item 10) on one manager: `n` distinct
/// locks acquired and held until all are (then released), and `n`
/// acquire+release cycles on distinct keys, with 64, 256 and 1,024
/// acquisitions in flight (see [`sweep_counts`]). Rounds interleave the
/// in-flight counts.
async fn sweep(
    manager: &LockManager,
    n: usize,
    rounds: usize,
    diag: Option<(&Etcd, &Faults)>,
) -> (SweepRows, SweepRows) {
    let opts = LockOptions::default()
        .ttl(Duration::from_secs(5))
        .renew_interval(Duration::from_secs(1));
    let counts = sweep_counts();
    let mut held = vec![Vec::new(); counts.len()];
    let mut cycles = vec![Vec::new(); counts.len()];
    for round in 0..rounds {
        for (k, &in_flight) in counts.iter().enumerate() {
            let prefix = format!("held-{round}-{in_flight}");
            let before = Counts::read(diag).await;
            let (guards, rate) = acquire_many(manager, n, &opts, in_flight, &prefix, false).await;
            Counts::read(diag).await.print_since(&before, &prefix, n);
            assert_eq!(guards.len(), n);
            release_all(guards).await;
            held[k].push(rate);
        }
        for (k, &in_flight) in counts.iter().enumerate() {
            let prefix = format!("cycle-{round}-{in_flight}");
            let before = Counts::read(diag).await;
            let (_, rate) = acquire_many(manager, n, &opts, in_flight, &prefix, true).await;
            Counts::read(diag).await.print_since(&before, &prefix, n);
            cycles[k].push(rate);
        }
    }
    let rows = |all: Vec<Vec<f64>>| -> SweepRows {
        counts
            .iter()
            .zip(all)
            .map(|(&k, rates)| (k, median(rates.clone()), rates))
            .collect()
    };
    (rows(held), rows(cycles))
}

/// Diagnostics of a sweep row (`DISTLOCK_SCALE_DIAG=1`): the manager's
/// backend calls and etcd's own counters.
#[derive(Default)]
struct Counts {
    at: Option<Instant>,
    calls: Vec<(&'static str, f64)>,
}

impl Counts {
    async fn read(diag: Option<(&Etcd, &Faults)>) -> Counts {
        let Some((etcd, faults)) = diag else {
            return Counts::default();
        };
        let mut calls = Vec::new();
        for (name, op) in [
            ("enqueue", Op::Enqueue),
            ("position", Op::Position),
            ("wait_deleted", Op::WaitDeleted),
            ("delete", Op::Delete),
            ("revisions", Op::Revisions),
            ("watch_deletes", Op::WatchDeletes),
        ] {
            calls.push((name, faults.calls(op) as f64));
        }
        let txn = "grpc_method=\"Txn\"";
        let range = "grpc_method=\"Range\"";
        let delete = "grpc_method=\"DeleteRange\"";
        let watch = "grpc_method=\"Watch\"";
        for (name, metric, label) in [
            ("etcd txn", "grpc_server_handled_total", txn),
            ("etcd range", "grpc_server_handled_total", range),
            ("etcd delete", "grpc_server_handled_total", delete),
            ("proposals", "etcd_server_proposals_committed_total", ""),
            ("mvcc range", "etcd_debugging_mvcc_range_total", ""),
            ("mvcc txn", "etcd_debugging_mvcc_txn_total", ""),
            ("watch streams", "grpc_server_started_total", watch),
            ("watchers", "etcd_debugging_mvcc_watcher_total", ""),
            (
                "slow watchers",
                "etcd_debugging_mvcc_slow_watcher_total",
                "",
            ),
            ("events", "etcd_debugging_mvcc_events_total", ""),
            ("etcd cpu s", "process_cpu_seconds_total", ""),
        ] {
            let labels: &[&str] = if label.is_empty() { &[] } else { &[label] };
            calls.push((name, etcd.metric(metric, labels).await));
        }
        calls.push(("client cpu s", cpu_seconds()));
        Counts {
            at: Some(Instant::now()),
            calls,
        }
    }

    fn print_since(&self, before: &Counts, row: &str, n: usize) {
        let (Some(at), Some(was)) = (self.at, before.at) else {
            return;
        };
        let mut line = format!("diag {row}: {:.2} s", (at - was).as_secs_f64());
        for ((name, now), (_, then)) in self.calls.iter().zip(&before.calls) {
            let delta = now - then;
            if name.contains("watchers") {
                line += &format!(", {name} {now:.0}");
            } else if name.ends_with("cpu s") {
                line += &format!(", {name} {delta:.2}");
            } else {
                line += &format!(", {name} {delta:.0} ({:.2}/lock)", delta / n as f64);
            }
        }
        eprintln!("{line}");
    }
}

/// The sweep on a fresh manager `manager`, its backend calls counted when
/// `diag`; the manager is closed after it.
async fn run_sweep(
    etcd: &Etcd,
    manager: LockManager,
    n: usize,
    rounds: usize,
    diag: bool,
) -> (SweepRows, SweepRows) {
    let faults = Faults::new();
    let counted = diag.then(|| manager.with_faults(&faults));
    let rows = sweep(
        counted.as_ref().unwrap_or(&manager),
        n,
        rounds,
        diag.then_some((etcd, &faults)),
    )
    .await;
    if let Some(counted) = counted {
        counted.close().await;
    }
    manager.close().await;
    rows
}

/// Prints one sweep table; a ✓/✗ line per in-flight count above the first:
/// its rate must be at least the rate at the first (64).
fn print_sweep(title: &str, n: usize, rows: &SweepRows) {
    println!("\n| {title}, {n} distinct locks, one manager | rate (median) | each round |");
    println!("|---|---|---|");
    for (k, rate, all) in rows {
        let all: Vec<String> = all.iter().map(|r| format!("{r:.0}")).collect();
        println!("| {k} in flight | {rate:.0}/s | {} |", all.join(", "));
    }
    let (base_k, base) = (rows[0].0, rows[0].1);
    for (k, rate, _) in &rows[1..] {
        let ratio = rate / base;
        println!(
            "{} {title}: {k} in flight / {base_k} in flight: {ratio:.2}x (target >= 1.0x)",
            mark(ratio >= 1.0),
        );
    }
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
    let rounds = env_usize("DISTLOCK_SCALE_ROUNDS", 3);
    let diag = std::env::var_os("DISTLOCK_SCALE_DIAG").is_some();
    if std::env::var("DISTLOCK_SCALE_ONLY").is_ok_and(|only| only == "sweep") {
        let (held, cycles) = run_sweep(&etcd, connect().await.unwrap(), n, rounds, diag).await;
        print_sweep("acquiring held locks", n, &held);
        print_sweep("acquire+release cycles", n, &cycles);
        one.close().await;
        for m in four {
            m.close().await;
        }
        return;
    }
    let lease = client.lease_grant(60, None).await.unwrap().id();

    // Throughput: interleaved rounds, the median of each.
    let (mut rpc, mut ours1, mut ours4) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..3 {
        rpc.push(rpc_throughput(&client, lease, secs, round).await);
        ours1.push(distlock_throughput(std::slice::from_ref(&one), secs, round).await);
        ours4.push(distlock_throughput(&four, secs, round).await);
    }
    let (rpc, ours1, ours4) = (median(rpc), median(ours1), median(ours4));
    // Revoked now: its 60 s TTL would not outlast the rows below.
    client.lease_revoke(lease).await.unwrap();

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
    let release_rate = release_all(guards).await;

    let (fifo, reads_per_handoff, ms_per_handoff, left) = herd(&one, &Faults::new()).await;

    // More callers must not be slower: 64, 256 and 1,024 in flight.
    let (held, cycles) = run_sweep(&etcd, connect().await.unwrap(), n, rounds, diag).await;

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
    print_sweep("acquiring held locks", n, &held);
    print_sweep("acquire+release cycles", n, &cycles);
    one.close().await;
    for m in four {
        m.close().await;
    }
}
