//! K readers queued behind a writer: from the writer's `release()` call to
//! the last reader holding.

use std::time::{Duration, Instant};

use distlock::{LockManager, LockOptions};
use etcd_client::{Client, EventType, GetOptions, SortOrder, SortTarget, Txn, TxnOp, WatchOptions};

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

/// The floor of one confirming read per manager after a release: each of
/// `clients` watches a writer's key from the next revision and, on its
/// delete, reads once as a shared read does (two ranges of the queue);
/// from the delete call to the last answer.
pub async fn raw_wakes(writer: &mut Client, clients: &[Client], queue: &str) -> Duration {
    let key = format!("{queue}0");
    let put = writer.put(key.as_str(), "", None).await.unwrap();
    let rev = put.header().unwrap().revision();
    let (armed, mut all_armed) = tokio::sync::mpsc::channel(clients.len());
    let mut reads = tokio::task::JoinSet::new();
    for client in clients {
        let (mut client, key, queue) = (client.clone(), key.clone(), queue.to_owned());
        let armed = armed.clone();
        reads.spawn(async move {
            let from = WatchOptions::new().with_start_revision(rev + 1);
            let mut events = client.watch(key, Some(from)).await.unwrap();
            armed.send(()).await.unwrap();
            while let Some(resp) = events.message().await.unwrap() {
                if resp
                    .events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Delete)
                {
                    break;
                }
            }
            let span = GetOptions::new().with_prefix().with_keys_only();
            let older = GetOptions::new()
                .with_range(format!("{queue}g"))
                .with_max_create_revision(rev)
                .with_sort(SortTarget::Create, SortOrder::Descend)
                .with_limit(16);
            let txn = Txn::new().and_then([
                TxnOp::get(format!("{queue}r/"), Some(span)),
                TxnOp::get(format!("{queue}0"), Some(older)),
            ]);
            client.txn(txn).await.unwrap();
            Instant::now()
        });
    }
    for _ in clients {
        all_armed.recv().await;
    }
    tokio::time::sleep(ARMED).await;
    let t = Instant::now();
    writer.delete(key, None).await.unwrap();
    let mut last = t;
    while let Some(answered) = reads.join_next().await {
        last = last.max(answered.unwrap());
    }
    last - t
}
