//! Latency and load of the primitives besides the mutex — semaphores,
//! read-write locks, multi-locks, elections — each next to the mutex measured
//! in the same run against one throwaway etcd (compare the ratios: the
//! machine is shared), and elections next to etcd's own v3election RPCs.
//!
//! `cargo bench -p distlock-tests --bench primitives`
//!
//! Targets, each printed with ✓ or ✗ (hand-offs timed as in
//! `lock_latency`: from the holder's call to the waiter holding, the waiter
//! in another manager, interleaved one by one with mutex hand-offs):
//! - semaphore hand-off (3 permits, all held, one waiter) ≤ 1.2x the mutex
//!   hand-off; and a release admits one waiter without waking the others
//!   (queue reads per waiter after one release, 64 waiters, one manager each);
//! - K = 8 and 64 readers (in 4 and 8 managers) queued behind a write lock:
//!   from the writer's `release()` call to the last reader holding ≤ 2x one
//!   mutex hand-off; next to it, the floor of one confirming read per
//!   manager (raw etcd clients, one per manager, each watching the writer's
//!   key and reading once on its delete) and, for 64 readers, the same 8
//!   managers with one reader each (the same etcd traffic), which splits the
//!   row into what etcd costs and what each further reader's admission adds
//!   in the client;
//! - an uncontended multi-lock of 2 names: `lock()` + `release()` ≤ 1.2x the
//!   mutex's `lock()` + `unlock()`; next to it, raw, one transaction deleting
//!   2 keys and one plain delete (a one-request release's floor);
//! - election: from the leader's `resign()` call to the next candidate (in
//!   another manager) leading ≤ 1.2x the mutex hand-off; next to it, the
//!   same hand-off through etcd's v3election `campaign`/`resign` RPCs (leases
//!   granted beforehand).
//!
//! Then a load sweep (1, 64 and 1,024 acquire+release cycles in flight on
//! one manager) of the mutex, a semaphore of 1,024 permits, one of 3, and
//! read locks: no point may be slower than the one before. Under it, what one
//! read of a queue of 64 and of 1,024 keys costs etcd, sorted by create
//! revision (as every queue read is), in key order and counted: the cost a
//! long queue puts on each enqueue and position read.
//!
//! The profile table splits each hand-off with distlock's
//! `distlock_handoff_seconds` histogram: wake-up (the watch event) to the
//! confirmed win; the rest is the release and the event's delivery.
//!
//! `DISTLOCK_PRIM_HANDOFFS` (default 100) hand-offs per row,
//! `DISTLOCK_PRIM_READER_ROUNDS` (default 20) rounds per reader count,
//! `DISTLOCK_PRIM_CYCLES` (default 1000) cycles per multi-lock row,
//! `DISTLOCK_PRIM_IN_FLIGHT` (default `1,64,1024`), `DISTLOCK_PRIM_SECONDS`
//! (default 2) and `DISTLOCK_PRIM_ROUNDS` (default 3) shape the sweep;
//! `DISTLOCK_PRIM_ONLY=sweep` runs the sweep alone.

#[path = "../common/mod.rs"]
mod common;
mod kinds;
mod profile;
mod readers;
mod sweep;
mod wakes;

use std::time::{Duration, Instant};

use common::handoff::{handoff, paired, MutexHandOff};
use common::{env_counts, env_usize, mark, ms, ratio, stats, Stats};
use distlock::{EtcdConfig, LockManager, LockOptions};
use distlock_tests::Etcd;
use etcd_client::{Client, Txn, TxnOp};

use kinds::{ElectionHandOff, RpcElectionHandOff, SemaphoreHandOff, PERMITS};

/// Readers per round, and the managers they are spread over.
const READERS: [(usize, usize); 2] = [(8, 4), (64, 8)];

/// One row of the latency table.
struct Row {
    name: String,
    ours: Stats,
    /// The mutex hand-off (or cycle) measured in the same rounds.
    mutex: Stats,
    /// The target ratio of medians, or `None` for a row shown for comparison.
    target: Option<f64>,
    /// Wake-up to win (median) of the row's waiters, of the mutex's.
    wake_to_win: Option<(Duration, Duration)>,
}

/// Uncontended cycles, interleaved one by one: a 2-name multi-lock's
/// `lock()` + `release()` and the mutex's `lock()` + `unlock()`, each as
/// (acquire, release) times.
async fn cycles(manager: &LockManager, n: usize) -> (Vec<[Duration; 2]>, Vec<[Duration; 2]>) {
    let multi = manager
        .new_multi_lock(["acct:1", "acct:2"], LockOptions::default())
        .unwrap();
    let lock = manager.new_lock("cycle", LockOptions::default()).unwrap();
    multi.lock().await.unwrap().release().await.unwrap();
    lock.lock().await.unwrap().unlock().await.unwrap();
    let (mut ours, mut mutex) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let t = Instant::now();
        let g = multi.lock().await.unwrap();
        let locked = t.elapsed();
        g.release().await.unwrap();
        ours.push([locked, t.elapsed() - locked]);
        let t = Instant::now();
        let g = lock.lock().await.unwrap();
        let locked = t.elapsed();
        g.unlock().await.unwrap();
        mutex.push([locked, t.elapsed() - locked]);
    }
    (ours, mutex)
}

/// The floor of a release of 2 names in one request, next to one plain
/// delete (what the mutex's release sends), raw and interleaved, `n` each:
/// (a transaction deleting two keys, a plain delete of one), medians.
async fn raw_releases(client: &mut Client, n: usize) -> (Duration, Duration) {
    let (a, b) = ("/bench-release/a", "/bench-release/b");
    let (mut two, mut one) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        client.put(a, "", None).await.unwrap();
        client.put(b, "", None).await.unwrap();
        let both = Txn::new().and_then([TxnOp::delete(a, None), TxnOp::delete(b, None)]);
        let t = Instant::now();
        client.txn(both).await.unwrap();
        two.push(t.elapsed());
        client.put(a, "", None).await.unwrap();
        let t = Instant::now();
        client.delete(a, None).await.unwrap();
        one.push(t.elapsed());
    }
    (stats(two).median, stats(one).median)
}

fn median_of(samples: Option<&Vec<Duration>>) -> Duration {
    samples.map_or(Duration::ZERO, |s| stats(s.clone()).median)
}

#[tokio::main]
async fn main() {
    let profile = profile::Profile::install();
    let etcd = Etcd::start().await;
    let ns = etcd.namespace();
    let connect = || async {
        LockManager::connect(EtcdConfig::new(etcd.endpoints()), &ns)
            .await
            .unwrap()
            .with_metric_names(true)
    };
    let (a, b, c) = (connect().await, connect().await, connect().await);
    let n = env_usize("DISTLOCK_PRIM_HANDOFFS", 100);
    let only_sweep = std::env::var("DISTLOCK_PRIM_ONLY").is_ok_and(|only| only == "sweep");

    let mut rows = Vec::new();
    let mut extra = Vec::new();
    if !only_sweep {
        let mut mutex = MutexHandOff::new(&a, &b, "mutex").await;
        profile.wake_to_win(); // from here on
        let mut sem = SemaphoreHandOff::new(&a, &b, &c, "sem").await;
        let (ours, theirs) = paired(&mut sem, &mut mutex, n).await;
        let woke = profile.wake_to_win();
        rows.push(Row {
            name: format!("semaphore hand-off ({PERMITS} permits, all held, 1 waiter)"),
            ours: stats(ours),
            mutex: stats(theirs),
            target: Some(1.2),
            wake_to_win: Some((median_of(woke.get("sem")), median_of(woke.get("mutex")))),
        });

        let mut election = ElectionHandOff::new(&a, &b, "election").await;
        let (ours, theirs) = paired(&mut election, &mut mutex, n).await;
        let woke = profile.wake_to_win();
        rows.push(Row {
            name: "election: resign() → next candidate leads".into(),
            ours: stats(ours),
            mutex: stats(theirs),
            target: Some(1.2),
            wake_to_win: Some((
                median_of(woke.get("election")),
                median_of(woke.get("mutex")),
            )),
        });

        let clients = (
            Client::connect(etcd.endpoints(), None).await.unwrap(),
            Client::connect(etcd.endpoints(), None).await.unwrap(),
        );
        let mut rpc = RpcElectionHandOff::new(clients.0, clients.1, "/bench-election").await;
        let (ours, theirs) = paired(&mut rpc, &mut mutex, n).await;
        rpc.close().await;
        rows.push(Row {
            name: "etcd v3election RPC: resign → next campaign returns".into(),
            ours: stats(ours),
            mutex: stats(theirs),
            target: None,
            wake_to_win: None,
        });
        profile.wake_to_win();

        let (mut reader_managers, mut reader_clients) = (Vec::new(), Vec::new());
        for _ in 0..READERS.iter().map(|(_, m)| *m).max().unwrap() {
            reader_managers.push(connect().await);
            reader_clients.push(Client::connect(etcd.endpoints(), None).await.unwrap());
        }
        let reader_rounds = env_usize("DISTLOCK_PRIM_READER_ROUNDS", 20);
        let mut floor_writer = Client::connect(etcd.endpoints(), None).await.unwrap();
        for (k, managers) in READERS {
            let name = format!("readers-{k}");
            let (mut first, mut last, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
            let (mut raw, mut floor, mut one_each) = (Vec::new(), Vec::new(), Vec::new());
            let one_each_name = format!("readers-{k}-one-each");
            for _ in 0..reader_rounds {
                let round = readers::round(&a, &reader_managers[..managers], k, &name).await;
                first.push(round.first);
                last.push(round.last);
                theirs.push(handoff(&mut mutex).await);
                raw.push(readers::raw_reads(&reader_clients[..managers], k, &name).await);
                let queue = format!("/bench-floor/{k}/");
                let clients = &reader_clients[..managers];
                floor.push(readers::raw_wakes(&mut floor_writer, clients, &queue).await);
                if k > managers {
                    let managers = &reader_managers[..managers];
                    let round = readers::round(&a, managers, managers.len(), &one_each_name);
                    one_each.push(round.await.last);
                }
            }
            let raw = stats(raw).median;
            let floor = stats(floor).median;
            let woke = profile.wake_to_win();
            let mutex_stats = stats(theirs);
            let mutex_median = mutex_stats.median;
            let last = stats(last);
            let last_median = last.median;
            rows.push(Row {
                name: format!("{k} readers in {managers} managers: release → last reader holds"),
                ours: last,
                mutex: mutex_stats,
                target: Some(2.0),
                wake_to_win: None,
            });
            let first = stats(first);
            extra.push(format!(
                "{k} readers: release → first reader holds {:.3} ms ({:.2}x the mutex hand-off); \
                 {k} raw reads at once over {managers} clients: last answer after {:.3} ms; \
                 the floor of one read per manager ({managers} raw clients each watching the \
                 writer's key, one read on its delete): last answer {:.3} ms ({:.2}x); \
                 wake-up → win: median {:.3} ms, slowest {:.3} ms",
                first.median.as_secs_f64() * 1000.0,
                ratio(first.median, mutex_median),
                raw.as_secs_f64() * 1000.0,
                floor.as_secs_f64() * 1000.0,
                ratio(floor, mutex_median),
                median_of(woke.get(&name)).as_secs_f64() * 1000.0,
                woke.get(&name)
                    .and_then(|s| s.iter().max())
                    .map_or(0.0, |d| d.as_secs_f64() * 1000.0),
            ));
            if !one_each.is_empty() {
                // The same managers, hence the same etcd traffic (one event
                // and one read each), with one reader each: what the other
                // readers add is their admission in the client.
                let one_each = stats(one_each).median;
                let more = k - managers;
                let each = last_median.saturating_sub(one_each) / more as u32;
                extra.push(format!(
                    "{managers} readers, one per manager (the same etcd traffic): last holds \
                     {:.3} ms ({:.2}x); each of the {more} further readers of the row above \
                     adds {:.1} µs",
                    one_each.as_secs_f64() * 1000.0,
                    ratio(one_each, mutex_median),
                    each.as_secs_f64() * 1e6,
                ));
            }
        }
        for m in reader_managers {
            m.close().await;
        }

        let n_cycles = env_usize("DISTLOCK_PRIM_CYCLES", 1000);
        let (ours, theirs) = cycles(&a, n_cycles).await;
        let mut client = Client::connect(etcd.endpoints(), None).await.unwrap();
        let (raw_two, raw_one) = raw_releases(&mut client, n_cycles).await;
        let half = |v: &[[Duration; 2]], i: usize| stats(v.iter().map(|s| s[i]).collect());
        extra.push(format!(
            "multi-lock of 2 names: lock() {:.3} ms + release() {:.3} ms; \
             mutex: lock() {:.3} ms + unlock() {:.3} ms (medians); \
             raw, for the floor: one transaction deleting 2 keys {:.3} ms, \
             one plain delete {:.3} ms",
            half(&ours, 0).median.as_secs_f64() * 1000.0,
            half(&ours, 1).median.as_secs_f64() * 1000.0,
            half(&theirs, 0).median.as_secs_f64() * 1000.0,
            half(&theirs, 1).median.as_secs_f64() * 1000.0,
            raw_two.as_secs_f64() * 1000.0,
            raw_one.as_secs_f64() * 1000.0,
        ));
        let total = |v: Vec<[Duration; 2]>| stats(v.into_iter().map(|[l, r]| l + r).collect());
        rows.push(Row {
            name: "multi-lock of 2 names: lock() + release(), uncontended".into(),
            ours: total(ours),
            mutex: total(theirs),
            target: Some(1.2),
            wake_to_win: None,
        });
    }

    let wakes = if only_sweep {
        None
    } else {
        Some(wakes::semaphore(&c, 64, "wakes").await)
    };

    let counts = env_counts("DISTLOCK_PRIM_IN_FLIGHT", &[1, 64, 1024]);
    let secs = env_usize("DISTLOCK_PRIM_SECONDS", 2) as f64;
    let sweep_rounds = env_usize("DISTLOCK_PRIM_ROUNDS", 3);
    let swept = sweep::sweep(&a, &counts, sweep_rounds, secs).await;
    let mut client = Client::connect(etcd.endpoints(), None).await.unwrap();
    let mut read_costs = Vec::new();
    for n in [64, 1024] {
        read_costs.push((n, sweep::queue_read_cost(&mut client, n, 200).await));
    }

    print_rows(&rows);
    for line in extra {
        println!("- {line}");
    }
    if let Some(w) = wakes {
        print_wakes(&w);
    }
    print_sweep(&swept);
    let shown: Vec<String> = read_costs
        .iter()
        .map(|(n, [sorted, by_key, count])| {
            format!(
                "{n} keys: sorted by create revision {:.3} ms, in key order {:.3} ms, \
                 counted {:.3} ms",
                sorted.as_secs_f64() * 1000.0,
                by_key.as_secs_f64() * 1000.0,
                count.as_secs_f64() * 1000.0,
            )
        })
        .collect();
    println!(
        "  etcd, raw, one read of a queue at a time (limit 3; what a queue read costs grows \
         with the queue only when sorted by create revision, as every queue read is): {}",
        shown.join("; ")
    );
    for m in [a, b, c] {
        m.close().await;
    }
}

fn print_rows(rows: &[Row]) {
    if rows.is_empty() {
        return;
    }
    println!("\n| row | median ms | p99 ms | mutex, same rounds: median ms | ratio | target |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        let x = ratio(r.ours.median, r.mutex.median);
        let target = match r.target {
            Some(t) => format!("≤ {t:.1}x {}", mark(x <= t)),
            None => "for comparison".to_owned(),
        };
        println!(
            "| {} | {} | {} | {} | {x:.2}x | {target} |",
            r.name,
            ms(r.ours.median).trim(),
            ms(r.ours.p99).trim(),
            ms(r.mutex.median).trim(),
        );
    }
    println!("\n| profile (medians) | hand-off ms | wake-up → win ms | release → wake-up ms |");
    println!("|---|---|---|---|");
    for r in rows {
        let Some((ours, theirs)) = r.wake_to_win else {
            continue;
        };
        for (name, total, woke) in [
            (r.name.as_str(), r.ours.median, ours),
            ("  the mutex, same rounds", r.mutex.median, theirs),
        ] {
            println!(
                "| {name} | {} | {} | {} |",
                ms(total).trim(),
                ms(woke).trim(),
                ms(total.saturating_sub(woke)).trim()
            );
        }
    }
    println!();
}

fn print_wakes(w: &wakes::Wakes) {
    let ok = w.admitted >= 1 && w.next <= 1 && w.others_woken == 0;
    println!(
        "\n{} semaphore of {PERMITS}, {} waiters (one manager each), one release: the admitted \
         waiter read {} time(s), the next one {} (its promotion), {} of the other {} read \
         ({} reads) — target: one waiter admitted, no other woken but the next, once",
        mark(ok),
        w.waiters,
        w.admitted,
        w.next,
        w.others_woken,
        w.waiters - 2,
        w.others_reads,
    );
    println!(
        "  drain: {:.2} queue reads per hand-off, {:.3} ms per hand-off ({} waiters, {PERMITS} permits)",
        w.reads_per_handoff,
        w.per_handoff.as_secs_f64() * 1000.0,
        w.waiters - 1,
    );
}

fn print_sweep(rows: &[sweep::Row]) {
    println!(
        "\n| cycles/s, one manager: median (each round) | {} |",
        sweep::COLUMNS.join(" | ")
    );
    println!("|---|{}", "---|".repeat(sweep::COLUMNS.len()));
    for row in rows {
        let cells: Vec<String> = (0..sweep::COLUMNS.len())
            .map(|c| {
                let all: Vec<String> = row.rounds[c].iter().map(|r| format!("{r:.0}")).collect();
                format!("{:.0} ({})", row.rates[c], all.join(", "))
            })
            .collect();
        println!("| {} in flight | {} |", row.in_flight, cells.join(" | "));
    }
    for pair in rows.windows(2) {
        let cells: Vec<String> = (0..sweep::COLUMNS.len())
            .map(|c| {
                let x = pair[1].rates[c] / pair[0].rates[c];
                format!("{x:.2}x {}", mark(x >= 1.0))
            })
            .collect();
        println!(
            "| {} / {} in flight ≥ 1.0x | {} |",
            pair[1].in_flight,
            pair[0].in_flight,
            cells.join(" | ")
        );
    }
}
