//! Throughput and scale of distlock next to etcd's own lock RPC and raw reads,
//! measured in one run against throwaway etcds (compare the ratios: the
//! machine is shared): one member, then a three-member loopback cluster, each
//! row with a column per topology.
//!
//! `cargo bench -p distlock-tests --bench scale`
//!
//! Each target is printed with ✓ or ✗ per topology:
//! - distinct-key throughput, 64 tasks: ≥ 2x etcd's lock RPC on one manager,
//!   ≥ 1.5x across 4 managers in one process;
//! - `list_locks` over 10,000 held locks ≤ 5x one raw range read of the keys;
//! - 10,000 held locks on one manager: acquired at ≥ 10,000/s, ≤ 1 KiB RSS
//!   per held lock, one keep-alive per session per renew interval;
//! - 1,000 waiters across 100 managers on one key: tokens grow in acquisition
//!   order, each hand-off wakes one waiter (read RPCs per hand-off), no key left;
//! - more callers are not slower (issue #17, item 10): `n` distinct locks
//!   acquired and held on one manager, and `n` acquire+release cycles on
//!   distinct keys, with 1, 64, 256 and 1,024 acquisitions in flight: the
//!   rate at each count is at least the rate at the count before it (so
//!   the rates at 256 and 1,024 are at least the rate at 64; the median of
//!   interleaved rounds).
//!
//! `DISTLOCK_SCALE_LOCKS` (default 10000) and `DISTLOCK_SCALE_SECONDS`
//! (default 2, per throughput round) shrink or grow the run;
//! `DISTLOCK_SCALE_ROUNDS` (default 3) sets the sweep's rounds,
//! `DISTLOCK_SCALE_IN_FLIGHT` (default `64,256,1024`) its in-flight counts,
//! `DISTLOCK_SCALE_ONLY=sweep` runs the sweep alone,
//! `DISTLOCK_SCALE_TOPOLOGY` (`one`, `three` or `both`, the default) the
//! etcds to measure on, and
//! `DISTLOCK_SCALE_DIAG=1` prints each sweep row's backend calls and etcd
//! counters to stderr.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::load::{cpu_seconds, rss_bytes, throughput};
use common::{env_counts, env_usize, mark, median};

use distlock::testing::{Faults, Op};
use distlock::{EtcdConfig, LockGuard, LockManager, LockOptions};
use distlock_tests::Etcd;
use etcd_client::{Client, GetOptions, LockOptions as RpcLockOptions};

const TASKS: usize = 64;

async fn rpc_throughput(client: &Client, lease: i64, secs: f64, round: usize) -> f64 {
    let client = client.clone();
    throughput(TASKS, secs, move |task| {
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
    throughput(TASKS, secs, move |task| {
        let lock = locks[task].clone();
        async move {
            lock.lock().await.unwrap().unlock().await.unwrap();
        }
    })
    .await
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

/// Acquisitions in flight in the concurrency sweep, each compared with the
/// one before. `DISTLOCK_SCALE_IN_FLIGHT` (e.g. `64,1024`) overrides them.
fn sweep_counts() -> Vec<usize> {
    env_counts("DISTLOCK_SCALE_IN_FLIGHT", &[1, 64, 256, 1024])
}

/// Per in-flight count: the median rate and every round's rate.
type SweepRows = Vec<(usize, f64, Vec<f64>)>;

/// The concurrency sweep (issue #17, item 10) on one manager: `n` distinct
/// locks acquired and held until all are (then released), and `n`
/// acquire+release cycles on distinct keys, with 1, 64, 256 and 1,024
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

/// What one topology's run measured (`rows` is `None` when only the sweep ran).
struct Report {
    topology: &'static str,
    rows: Option<Rows>,
    held: SweepRows,
    cycles: SweepRows,
}

/// The rows before the sweep.
struct Rows {
    rpc: f64,
    ours1: f64,
    ours4: f64,
    raw_read: Duration,
    list: Duration,
    acquire_rate: f64,
    release_rate: f64,
    rss_per_lock: f64,
    /// Whether this was the process's first run: a later run reuses memory
    /// the earlier one freed, so its RSS growth says nothing.
    rss_fresh: bool,
    keep_alives: usize,
    fifo: bool,
    reads_per_handoff: f64,
    ms_per_handoff: f64,
    left: usize,
}

/// Every row on `etcd`.
async fn measure(etcd: &Etcd, topology: &'static str, only_sweep: bool, first: bool) -> Report {
    let n = env_usize("DISTLOCK_SCALE_LOCKS", 10_000);
    let secs = env_usize("DISTLOCK_SCALE_SECONDS", 2) as f64;
    let rounds = env_usize("DISTLOCK_SCALE_ROUNDS", 3);
    let diag = std::env::var_os("DISTLOCK_SCALE_DIAG").is_some();
    let ns = etcd.namespace();
    let connect = || LockManager::connect(EtcdConfig::new(etcd.endpoints()), &ns);
    let rows = match only_sweep {
        true => None,
        false => Some(main_rows(etcd, &ns, n, secs, first).await),
    };
    // More callers must not be slower: 1, 64, 256 and 1,024 in flight.
    let (held, cycles) = run_sweep(etcd, connect().await.unwrap(), n, rounds, diag).await;
    Report {
        topology,
        rows,
        held,
        cycles,
    }
}

/// Throughput, many held locks, listing them, and the herd.
async fn main_rows(etcd: &Etcd, ns: &str, n: usize, secs: f64, rss_fresh: bool) -> Rows {
    let mut client = Client::connect(etcd.endpoints(), None).await.unwrap();
    let connect = || LockManager::connect(EtcdConfig::new(etcd.endpoints()), ns);
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
    one.close().await;
    for m in four {
        m.close().await;
    }
    Rows {
        rpc,
        ours1,
        ours4,
        raw_read,
        list,
        acquire_rate,
        release_rate,
        rss_per_lock,
        rss_fresh,
        keep_alives,
        fifo,
        reads_per_handoff,
        ms_per_handoff,
        left,
    }
}

/// A Markdown table: a header row, then one row per line.
fn table(first: &str, columns: &[&str], lines: Vec<(String, Vec<String>)>) {
    println!("\n| {first} | {} |", columns.join(" | "));
    println!("|---|{}", "---|".repeat(columns.len()));
    for (name, cells) in lines {
        println!("| {name} | {} |", cells.join(" | "));
    }
}

/// The rows and the targets, a column per topology.
fn print_rows(reports: &[Report], n: usize) {
    let reports: Vec<(&str, &Rows)> = reports
        .iter()
        .filter_map(|r| Some((r.topology, r.rows.as_ref()?)))
        .collect();
    if reports.is_empty() {
        return;
    }
    let columns: Vec<&str> = reports.iter().map(|(t, _)| *t).collect();
    let row = |name: &str, cell: &dyn Fn(&Rows) -> String| {
        (
            name.to_owned(),
            reports.iter().map(|(_, r)| cell(r)).collect(),
        )
    };
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    table(
        "row",
        &columns,
        vec![
            row("etcd lock RPC, 64 tasks, distinct keys", &|r| {
                format!("{:.0} cycles/s", r.rpc)
            }),
            row("distlock, one manager", &|r| {
                format!("{:.0} cycles/s", r.ours1)
            }),
            row("distlock, 4 managers", &|r| {
                format!("{:.0} cycles/s", r.ours4)
            }),
            row(&format!("raw range read of {n} keys"), &|r| ms(r.raw_read)),
            row(&format!("list_locks over {n} locks"), &|r| ms(r.list)),
            row(&format!("acquiring {n} locks on one manager"), &|r| {
                format!("{:.0} locks/s", r.acquire_rate)
            }),
            row("releasing them", &|r| {
                format!("{:.0} locks/s", r.release_rate)
            }),
            row("RSS per held lock", &|r| match r.rss_fresh {
                true => format!("{:.0} B", r.rss_per_lock),
                false => "— (reuses the first run's memory)".to_owned(),
            }),
            row(
                &format!("keep-alives in 3 s, renew every 1 s, {n} locks"),
                &|r| r.keep_alives.to_string(),
            ),
            row("1,000 waiters / 100 managers: hand-off", &|r| {
                format!("{:.2} ms", r.ms_per_handoff)
            }),
            row("queue reads per hand-off", &|r| {
                format!("{:.2}", r.reads_per_handoff)
            }),
        ],
    );
    let target = |name: &str, cell: &dyn Fn(&Rows) -> (String, bool)| {
        row(name, &|r| match cell(r) {
            (value, _) if value == "—" => value, // not measured
            (value, ok) => format!("{value} {}", mark(ok)),
        })
    };
    table(
        "target",
        &columns,
        vec![
            target("one manager / lock RPC ≥ 2.0x", &|r| {
                let x = r.ours1 / r.rpc;
                (format!("{x:.2}x"), x >= 2.0)
            }),
            target("4 managers / lock RPC ≥ 1.5x", &|r| {
                let x = r.ours4 / r.rpc;
                (format!("{x:.2}x"), x >= 1.5)
            }),
            target("list_locks / raw read ≤ 5x", &|r| {
                let x = r.list.as_secs_f64() / r.raw_read.as_secs_f64();
                (format!("{x:.2}x"), x <= 5.0)
            }),
            target("acquire rate ≥ 10,000/s", &|r| {
                (
                    format!("{:.0}/s", r.acquire_rate),
                    r.acquire_rate >= 10_000.0,
                )
            }),
            target(
                "RSS per held lock ≤ 1,024 B (first run only)",
                &|r| match r.rss_fresh {
                    true => (format!("{:.0} B", r.rss_per_lock), r.rss_per_lock <= 1024.0),
                    false => ("—".to_owned(), true),
                },
            ),
            target("keep-alives per renew interval: 1 per session", &|r| {
                let per = r.keep_alives as f64 / 3.0;
                (format!("{per:.1}"), r.keep_alives <= 4)
            }),
            target(
                "herd: tokens in order, ≤ 2 reads per hand-off, no key left",
                &|r| {
                    let ok = r.fifo && r.reads_per_handoff <= 2.0 && r.left == 0;
                    let value = format!(
                        "{}, {:.2} reads, {} left",
                        if r.fifo { "in order" } else { "OUT OF ORDER" },
                        r.reads_per_handoff,
                        r.left
                    );
                    (value, ok)
                },
            ),
        ],
    );
}

/// One sweep table, a column per topology; then a target row per in-flight
/// count after the first: its rate must be at least the rate at the count
/// before it.
fn print_sweep(title: &str, n: usize, reports: &[Report], rows: fn(&Report) -> &SweepRows) {
    let columns: Vec<&str> = reports.iter().map(|r| r.topology).collect();
    let first = rows(&reports[0]);
    let mut lines = Vec::new();
    for (i, (k, _, _)) in first.iter().enumerate() {
        let cells = reports
            .iter()
            .map(|r| {
                let (_, rate, all) = &rows(r)[i];
                let all: Vec<String> = all.iter().map(|r| format!("{r:.0}")).collect();
                format!("{rate:.0}/s ({})", all.join(", "))
            })
            .collect();
        lines.push((format!("{k} in flight"), cells));
    }
    for (i, pair) in first.windows(2).enumerate() {
        let cells = reports
            .iter()
            .map(|r| {
                let ratio = rows(r)[i + 1].1 / rows(r)[i].1;
                format!("{ratio:.2}x {}", mark(ratio >= 1.0))
            })
            .collect();
        let (before, k) = (pair[0].0, pair[1].0);
        lines.push((format!("{k} / {before} in flight ≥ 1.0x"), cells));
    }
    let first_column = format!("{title}, {n} distinct locks, one manager: median (each round)");
    table(&first_column, &columns, lines);
}

/// The etcds to measure on, from `DISTLOCK_SCALE_TOPOLOGY`.
fn topologies() -> Vec<usize> {
    match std::env::var("DISTLOCK_SCALE_TOPOLOGY").as_deref() {
        Ok("one") => vec![1],
        Ok("three") => vec![3],
        Ok("both") | Err(_) => vec![1, 3],
        Ok(other) => panic!("DISTLOCK_SCALE_TOPOLOGY is `one`, `three` or `both`, not `{other}`"),
    }
}

#[tokio::main]
async fn main() {
    let n = env_usize("DISTLOCK_SCALE_LOCKS", 10_000);
    let only_sweep = std::env::var("DISTLOCK_SCALE_ONLY").is_ok_and(|only| only == "sweep");
    let mut reports = Vec::new();
    for (i, members) in topologies().into_iter().enumerate() {
        let (etcd, topology) = match members {
            1 => (Etcd::start().await, "one member"),
            _ => (Etcd::start_cluster(members).await, "three members"),
        };
        eprintln!("measuring on {topology}");
        reports.push(measure(&etcd, topology, only_sweep, i == 0).await);
        drop(etcd); // stopped before the next topology starts
    }
    print_rows(&reports, n);
    print_sweep("acquiring held locks", n, &reports, |r| &r.held);
    print_sweep("acquire+release cycles", n, &reports, |r| &r.cycles);
}
