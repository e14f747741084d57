//! K readers queued behind a writer: from the writer's `release()` call to
//! the last reader holding.

use std::time::{Duration, Instant};

use distlock::{LockManager, LockOptions};
use etcd_client::Client;

/// How long the readers get, once all are queued, to arm their watches.
const ARMED: Duration = Duration::from_millis(100);

/// One round's times from the writer's release call: to the first reader
/// holding and to the last.
pub struct Round {
    pub first: Duration,
    pub last: Duration,
}

/// The writer on `writer` takes `name`, `k` readers spread over `readers`
/// (reader `i` on manager `i % len`) queue behind it, and the writer
/// releases.
pub async fn round(writer: &LockManager, readers: &[LockManager], k: usize, name: &str) -> Round {
    let w = writer
        .new_rw_lock(name, LockOptions::default())
        .unwrap()
        .write()
        .await
        .unwrap();
    let mut tasks = Vec::with_capacity(k);
    for i in 0..k {
        let manager = readers[i % readers.len()].clone();
        let name = name.to_owned();
        tasks.push(tokio::spawn(async move {
            let r = manager
                .new_rw_lock(name, LockOptions::default())
                .unwrap()
                .read()
                .await
                .unwrap();
            (Instant::now(), r)
        }));
    }
    queued(writer, name, k).await;
    tokio::time::sleep(ARMED).await;
    let t = Instant::now();
    w.release().await.unwrap();
    let mut got = Vec::with_capacity(k);
    for task in tasks {
        got.push(task.await.unwrap());
    }
    let first = got.iter().map(|(at, _)| *at - t).min().unwrap();
    let last = got.iter().map(|(at, _)| *at - t).max().unwrap();
    let mut releases = tokio::task::JoinSet::new();
    for (_, r) in got {
        releases.spawn(async move { r.release().await.unwrap() });
    }
    while releases.join_next().await.is_some() {}
    Round { first, last }
}

/// Waits until `k` contenders wait behind the holder of `name`.
async fn queued(observer: &LockManager, name: &str, k: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while observer.lock_info(name).await.unwrap().map(|i| i.waiters) != Some(k) {
        assert!(Instant::now() < deadline, "{name} never had {k} waiters");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The floor of `k` readers that each make one read on waking: `k`
/// linearizable reads issued at once over `clients` (read `i` on client
/// `i % len`), until the last answer.
pub async fn raw_reads(clients: &[Client], k: usize, key: &str) -> Duration {
    let t = Instant::now();
    let mut reads = tokio::task::JoinSet::new();
    for i in 0..k {
        let (mut client, key) = (clients[i % clients.len()].clone(), key.to_owned());
        reads.spawn(async move { client.get(key, None).await.unwrap() });
    }
    while reads.join_next().await.is_some() {}
    t.elapsed()
}
