//! Latency of distlock against etcd's own primitives, measured in one run
//! against one throwaway etcd (so ratios, not absolutes, are what count on a
//! shared machine).
//!
//! `cargo bench -p distlock-tests --bench lock_latency`
//!
//! Rows:
//! - raw put: one `put`, the unit of a Raft write, back to back; and the same
//!   after 30 ms idle, the way each hand-off's release is issued;
//! - raw get, raw delete: a linearizable read, and the plain delete that any
//!   release has to make;
//! - delete + watch event, floor: from a delete call to a watcher (started at
//!   the next revision) hearing it, and that plus one confirmation read — the
//!   least any correct watch-based hand-off can cost;
//! - etcd lock RPC cycle: `lock` + `unlock` with a pre-granted lease, uncontended;
//! - etcd lock RPC hand-off: from the holder's `unlock` call to the waiting
//!   client's `lock` returning;
//! - distlock cycle: `lock()` + `unlock()`, uncontended;
//! - distlock hand-off between two managers: from the holder's `unlock()` call
//!   to the waiting manager holding.
//!
//! Targets: distlock cycle ≤ 1.0× the lock RPC cycle; distlock hand-off
//! median ≤ 1.2× the floor (delete + watch event + read); for the record,
//! the hand-off against one put (an earlier target of 2.5×).

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use common::handoff::{handoffs, HandOff, MutexHandOff};
use common::{mark, ms, ratio, stats};
use distlock::{EtcdConfig, LockManager, LockOptions};
use distlock_tests::Etcd;
use etcd_client::{Client, LockOptions as RpcLockOptions};

const CYCLES: usize = 1000;
const HANDOFFS: usize = 100;

async fn raw_puts(client: &mut Client) -> Vec<Duration> {
    let mut out = Vec::with_capacity(CYCLES);
    for i in 0..CYCLES {
        let t = Instant::now();
        client.put("/bench/put", i.to_string(), None).await.unwrap();
        out.push(t.elapsed());
    }
    out
}

/// Puts issued the way a hand-off's release is: after the client and etcd
/// sat idle for a while (here 30 ms), not back to back. On this VM, waking
/// idle threads costs more than the put itself.
async fn raw_puts_after_idle(client: &mut Client) -> Vec<Duration> {
    let mut out = Vec::with_capacity(HANDOFFS);
    for i in 0..HANDOFFS {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let t = Instant::now();
        client
            .put("/bench/idle-put", i.to_string(), None)
            .await
            .unwrap();
        out.push(t.elapsed());
    }
    out
}

/// A plain delete of an existing key: the write any release has to make.
async fn raw_deletes(client: &mut Client) -> Vec<Duration> {
    let mut out = Vec::with_capacity(CYCLES);
    for _ in 0..CYCLES {
        client.put("/bench/delete", "", None).await.unwrap();
        let t = Instant::now();
        client.delete("/bench/delete", None).await.unwrap();
        out.push(t.elapsed());
    }
    out
}

async fn raw_gets(client: &mut Client) -> Vec<Duration> {
    let mut out = Vec::with_capacity(CYCLES);
    for _ in 0..CYCLES {
        let t = Instant::now();
        client.get("/bench/put", None).await.unwrap();
        out.push(t.elapsed());
    }
    out
}

/// Uncontended cycles of etcd's lock RPC (lock + unlock, pre-granted lease)
/// and of distlock (lock + unlock), interleaved one by one so that drift on
/// a shared machine weighs on both alike.
async fn paired_cycles(
    client: &mut Client,
    manager: &LockManager,
) -> (Vec<Duration>, Vec<Duration>) {
    let lease = client.lease_grant(30, None).await.unwrap().id();
    let lock = manager.new_lock("cycle", LockOptions::default()).unwrap();
    lock.lock().await.unwrap().unlock().await.unwrap(); // starts the session
    let (mut rpc, mut ours) = (Vec::with_capacity(CYCLES), Vec::with_capacity(CYCLES));
    for i in 0..CYCLES * 2 {
        let t = Instant::now();
        if i % 2 == 0 {
            let opts = Some(RpcLockOptions::new().with_lease(lease));
            let key = client
                .lock("/bench/rpc-cycle", opts)
                .await
                .unwrap()
                .key()
                .to_vec();
            client.unlock(key).await.unwrap();
            rpc.push(t.elapsed());
        } else {
            lock.lock().await.unwrap().unlock().await.unwrap();
            ours.push(t.elapsed());
        }
    }
    client.lease_revoke(lease).await.unwrap();
    (rpc, ours)
}

/// The hand-off of etcd's lock RPC: two clients with a pre-granted lease each.
struct RpcLockHandOff {
    holder: Client,
    waiter: Client,
    leases: (i64, i64),
}

impl RpcLockHandOff {
    async fn new(mut holder: Client, waiter: Client) -> RpcLockHandOff {
        let a = holder.lease_grant(30, None).await.unwrap().id();
        let b = holder.lease_grant(30, None).await.unwrap().id();
        RpcLockHandOff {
            holder,
            waiter,
            leases: (a, b),
        }
    }
}

impl HandOff for RpcLockHandOff {
    type Held = Vec<u8>;
    type Got = Vec<u8>;

    async fn take(&mut self) -> Vec<u8> {
        let opts = RpcLockOptions::new().with_lease(self.leases.0);
        let held = self.holder.lock("/bench/rpc-handoff", Some(opts)).await;
        held.unwrap().key().to_vec()
    }

    fn wait(&self) -> impl Future<Output = Vec<u8>> + Send + 'static {
        let (mut waiter, lease) = (self.waiter.clone(), self.leases.1);
        async move {
            let opts = RpcLockOptions::new().with_lease(lease);
            let got = waiter.lock("/bench/rpc-handoff", Some(opts)).await;
            got.unwrap().key().to_vec()
        }
    }

    async fn give(&mut self, key: Vec<u8>) {
        self.holder.unlock(key).await.unwrap();
    }

    async fn done(&mut self, key: Vec<u8>) {
        self.waiter.unlock(key).await.unwrap();
    }
}

/// The floor of any correct watch-based hand-off: the holder's delete, the
/// waiter's watch (started at the next revision) hearing it, and the
/// waiter's one linearizable confirmation read.
async fn raw_handoff_floor(holder: &mut Client, waiter: &Client, confirm: bool) -> Vec<Duration> {
    let mut out = Vec::with_capacity(HANDOFFS);
    for i in 0..HANDOFFS {
        let key = format!("/bench/floor/{i}");
        let rev = holder
            .put(key.clone(), "", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        let mut w = waiter.clone();
        let watched = key.clone();
        let waiting = tokio::spawn(async move {
            let opts = etcd_client::WatchOptions::new().with_start_revision(rev + 1);
            let mut stream = w.watch(watched.clone(), Some(opts)).await.unwrap();
            loop {
                let resp = stream.message().await.unwrap().unwrap();
                if !resp.events().is_empty() {
                    break;
                }
            }
            if confirm {
                w.get(watched, None).await.unwrap();
            }
            Instant::now()
        });
        tokio::time::sleep(Duration::from_millis(30)).await; // the watch is armed
        let t = Instant::now();
        holder.delete(key, None).await.unwrap();
        out.push(waiting.await.unwrap() - t);
    }
    out
}

#[tokio::main]
async fn main() {
    let etcd = Etcd::start().await;
    // This etcd is the bench's own, so the namespace need not be unique; a
    // short one gives distlock's keys the length of the lock RPC's keys
    // (`/bench/locks/cycle/{lease}` against `/bench/rpc-cycle/{lease}`), so
    // the two cycles send requests of comparable size.
    let ns = "/bench".to_owned();
    let mut client = Client::connect(etcd.endpoints(), None).await.unwrap();
    let waiter_client = Client::connect(etcd.endpoints(), None).await.unwrap();
    let a = LockManager::connect(EtcdConfig::new(etcd.endpoints()), &ns)
        .await
        .unwrap();
    let b = LockManager::connect(EtcdConfig::new(etcd.endpoints()), &ns)
        .await
        .unwrap();

    let put = stats(raw_puts(&mut client).await);
    let idle_put = stats(raw_puts_after_idle(&mut client).await);
    let (rpc_cycle, cycle) = paired_cycles(&mut client, &a).await;
    let (rpc_cycle, cycle) = (stats(rpc_cycle), stats(cycle));
    let mut rpc = RpcLockHandOff::new(client.clone(), waiter_client.clone()).await;
    let rpc_handoff = stats(handoffs(&mut rpc, HANDOFFS).await);
    let event = stats(raw_handoff_floor(&mut client, &waiter_client, false).await);
    let floor = stats(raw_handoff_floor(&mut client, &waiter_client, true).await);
    let get = stats(raw_gets(&mut client).await);
    let delete = stats(raw_deletes(&mut client).await);
    let mut mutex = MutexHandOff::new(&a, &b, "handoff").await;
    let handoff = stats(handoffs(&mut mutex, HANDOFFS).await);

    println!("\n{:<40} {:>8} {:>8}", "operation (ms)", "median", "p99");
    for (name, s) in [
        ("raw put", &put),
        ("raw put after 30 ms idle", &idle_put),
        ("etcd lock RPC: lock + unlock", &rpc_cycle),
        ("etcd lock RPC: hand-off", &rpc_handoff),
        ("raw get (linearizable)", &get),
        ("raw delete", &delete),
        ("delete + watch event", &event),
        ("floor: delete + watch event + get", &floor),
        ("distlock: lock + unlock", &cycle),
        ("distlock: hand-off between managers", &handoff),
    ] {
        println!("{name:<40} {} {}", ms(s.median), ms(s.p99));
    }
    let cycle_ratio = ratio(cycle.median, rpc_cycle.median);
    let handoff_ratio = ratio(handoff.median, put.median);
    println!();
    let floor_ratio = ratio(handoff.median, floor.median);
    println!(
        "distlock cycle / lock RPC cycle (median): {cycle_ratio:.2}x  (target <= 1.0x) {}",
        mark(cycle_ratio <= 1.0)
    );
    println!(
        "distlock hand-off / floor (median):        {floor_ratio:.2}x  (target <= 1.2x) {}",
        mark(floor_ratio <= 1.2)
    );
    println!(
        "distlock hand-off / put (median):          {handoff_ratio:.2}x  (earlier target <= 2.5x) {}",
        mark(handoff_ratio <= 2.5)
    );
    println!(
        "distlock hand-off / put after idle:        {:.2}x  (the same, against a put made like the release is)",
        ratio(handoff.median, idle_put.median)
    );
    println!(
        "lock RPC hand-off / put (median):          {:.2}x  (for comparison)",
        ratio(rpc_handoff.median, put.median)
    );
    println!(
        "floor (delete + event + get) / put:        {:.2}x  (no correct watch-based hand-off beats this)",
        ratio(floor.median, put.median)
    );
    println!(
        "raw delete / put (median):                 {:.2}x  (the write a release makes)",
        ratio(delete.median, put.median)
    );
    a.close().await;
    b.close().await;
}
