//! Load sweep: acquire+release cycles per second on one manager with 1, 64
//! and 1,024 tasks in flight, for the mutex (distinct keys, the baseline),
//! a semaphore whose permits outnumber the tasks, a contended semaphore, and
//! read locks on one name.

use std::sync::Arc;
use std::time::{Duration, Instant};

use distlock::{LockManager, LockOptions, MAX_PERMITS};
use etcd_client::{Client, GetOptions, SortOrder, SortTarget};

use crate::common::load::throughput;
use crate::common::median;
use crate::kinds::PERMITS;

/// The sweep's columns.
pub const COLUMNS: [&str; 4] = [
    "mutex, distinct keys",
    "semaphore, 1,024 permits",
    "semaphore, 3 permits",
    "read locks, one name",
];

/// Per in-flight count: the median rate of each column, and every round's.
pub struct Row {
    pub in_flight: usize,
    pub rates: [f64; 4],
    pub rounds: [Vec<f64>; 4],
}

/// `rounds` rounds over every in-flight count and column (interleaved, so
/// drift weighs on all alike), `secs` seconds per point.
pub async fn sweep(manager: &LockManager, counts: &[usize], rounds: usize, secs: f64) -> Vec<Row> {
    let mut all: Vec<[Vec<f64>; 4]> = vec![Default::default(); counts.len()];
    for round in 0..rounds {
        for (i, &in_flight) in counts.iter().enumerate() {
            for (column, rates) in all[i].iter_mut().enumerate() {
                let tag = format!("{round}-{in_flight}");
                rates.push(point(manager, column, in_flight, secs, &tag).await);
            }
        }
    }
    counts
        .iter()
        .zip(all)
        .map(|(&in_flight, rounds)| Row {
            in_flight,
            rates: std::array::from_fn(|c| median(rounds[c].clone())),
            rounds,
        })
        .collect()
}

/// Cycles per second of one column with `in_flight` tasks.
async fn point(
    manager: &LockManager,
    column: usize,
    in_flight: usize,
    secs: f64,
    tag: &str,
) -> f64 {
    let opts = LockOptions::default;
    match column {
        0 => {
            let locks: Vec<_> = (0..in_flight)
                .map(|task| {
                    Arc::new(
                        manager
                            .new_lock(format!("mx-{tag}-{task}"), opts())
                            .unwrap(),
                    )
                })
                .collect();
            throughput(in_flight, secs, move |task| {
                let lock = locks[task].clone();
                async move { lock.lock().await.unwrap().unlock().await.unwrap() }
            })
            .await
        }
        1 | 2 => {
            let permits = if column == 1 { MAX_PERMITS } else { PERMITS };
            let name = format!("sem{permits}-{tag}");
            let sem = Arc::new(manager.new_semaphore(name, permits, opts()).unwrap());
            throughput(in_flight, secs, move |_| {
                let sem = sem.clone();
                async move { sem.acquire().await.unwrap().release().await.unwrap() }
            })
            .await
        }
        _ => {
            let rw = Arc::new(manager.new_rw_lock(format!("rd-{tag}"), opts()).unwrap());
            throughput(in_flight, secs, move |_| {
                let rw = rw.clone();
                async move { rw.read().await.unwrap().release().await.unwrap() }
            })
            .await
        }
    }
}

/// What one read of a queue of `n` keys costs etcd, raw and one at a time:
/// sorted by create revision with a limit of 3 (the shape of every queue
/// read: the oldest keys, or the youngest ones ahead of a key), then in key
/// order with the same limit, then a count. etcd reads a range it must sort
/// whole before it cuts it, so only the first grows with the queue: at 1,024
/// in flight on one name, a semaphore's queue holds ~1,024 keys.
pub async fn queue_read_cost(client: &mut Client, n: usize, reads: usize) -> [Duration; 3] {
    let prefix = format!("/bench-queue-read/{n}/");
    for i in 0..n {
        // Values the size of an entry's metadata.
        let key = format!("{prefix}{i:05}");
        client.put(key, vec![b'm'; 120], None).await.unwrap();
    }
    let shapes = [
        GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(3),
        GetOptions::new().with_prefix().with_limit(3),
        GetOptions::new().with_prefix().with_count_only(),
    ];
    let mut costs = [Duration::ZERO; 3];
    for (cost, shape) in costs.iter_mut().zip(shapes) {
        let started = Instant::now();
        for _ in 0..reads {
            client
                .get(prefix.as_str(), Some(shape.clone()))
                .await
                .unwrap();
        }
        *cost = started.elapsed() / reads as u32;
    }
    costs
}
