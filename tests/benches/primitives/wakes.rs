//! How many waiters a semaphore's release wakes: one waiter per manager,
//! each with its own counter of queue reads (the read a waiter makes when its
//! watch fires), as in the scale bench's herd.

use std::time::{Duration, Instant};

use distlock::testing::{Faults, Op};
use distlock::{LockManager, LockOptions};
use tokio::sync::{mpsc, watch};

use crate::kinds::PERMITS;

/// Queue reads after one release, and over the drain that follows.
pub struct Wakes {
    pub waiters: usize,
    /// Reads by the waiter the release admitted.
    pub admitted: usize,
    /// Reads by the waiter just behind it (woken once by its promotion).
    pub next: usize,
    /// How many of the other waiters read at all, and how often in all.
    pub others_woken: usize,
    pub others_reads: usize,
    /// Queue reads per acquisition while every waiter in turn takes a
    /// permit and releases it at once.
    pub reads_per_handoff: f64,
    /// From the first of the drain's releases to the last waiter holding,
    /// per hand-off.
    pub per_handoff: Duration,
}

/// [`PERMITS`] held on `base`; `waiters` waiters queue behind them, each on
/// its own peer of `base` (own session, own counter); one permit is
/// released, then the rest.
pub async fn semaphore(base: &LockManager, waiters: usize, name: &str) -> Wakes {
    let opts = LockOptions::default;
    let gate = base.new_semaphore(name, PERMITS, opts()).unwrap();
    let mut held = Vec::new();
    for _ in 0..PERMITS {
        held.push(gate.acquire().await.unwrap());
    }
    let (admitted_tx, mut admitted) = mpsc::unbounded_channel();
    let (go_tx, go) = watch::channel(false);
    let (mut counters, mut tasks) = (Vec::new(), Vec::new());
    for i in 0..waiters {
        let faults = Faults::new();
        let manager = base.with_faults(&faults);
        counters.push(faults);
        let (admitted_tx, mut go, sem_name) = (admitted_tx.clone(), go.clone(), name.to_owned());
        tasks.push(tokio::spawn(async move {
            let sem = manager.new_semaphore(sem_name, PERMITS, opts()).unwrap();
            let permit = sem.acquire().await.unwrap();
            admitted_tx.send(i).unwrap();
            go.wait_for(|go| *go).await.unwrap();
            permit.release().await.unwrap();
            manager.close().await;
        }));
        queued(base, name, i + 1).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // every waiter watches
    let reads = |counters: &[Faults]| -> Vec<usize> {
        counters.iter().map(|f| f.calls(Op::Position)).collect()
    };
    let before = reads(&counters);
    held.pop().unwrap().release().await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), admitted.recv())
        .await
        .expect("a release admitted no waiter")
        .unwrap();
    assert_eq!(
        first, 0,
        "the first waiter in the queue was not admitted first"
    );
    tokio::time::sleep(Duration::from_millis(300)).await; // any herd would show by now
    let woken: Vec<usize> = reads(&counters)
        .iter()
        .zip(&before)
        .map(|(now, then)| now - then)
        .collect();

    let before: usize = reads(&counters).iter().sum();
    let started = Instant::now();
    go_tx.send(true).unwrap();
    for permit in held {
        permit.release().await.unwrap();
    }
    for _ in 1..waiters {
        admitted.recv().await.unwrap();
    }
    let per_handoff = started.elapsed() / (waiters - 1) as u32;
    for task in tasks {
        task.await.unwrap();
    }
    let drained: usize = reads(&counters).iter().sum::<usize>() - before;
    Wakes {
        waiters,
        admitted: woken[0],
        next: woken[1],
        others_woken: woken[2..].iter().filter(|&&n| n > 0).count(),
        others_reads: woken[2..].iter().sum(),
        reads_per_handoff: drained as f64 / (waiters - 1) as f64,
        per_handoff,
    }
}

/// Waits until `n` contenders wait for semaphore `name`.
async fn queued(observer: &LockManager, name: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = observer.semaphore_info(name).await.unwrap();
        if info.is_some_and(|i| i.waiters == n) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never had {n} waiters");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
