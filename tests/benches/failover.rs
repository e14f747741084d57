//! Failover of an election after the leader's process is killed with
//! SIGKILL: from the kill to the next candidate (in this process) leading,
//! for distlock and for etcd's own v3election RPCs, each leader in a child
//! process with a lease of the same short TTL (this binary, re-run with
//! `--failover-child`).
//!
//! `cargo bench -p distlock-tests --bench failover`
//!
//! Target: every failover ≤ TTL + 2 mutex hand-offs (the hand-off measured
//! in the same run, as in `lock_latency`). The kill comes at a different
//! point of the leader's keep-alive cycle each time (spread evenly over one
//! renew interval, TTL / 3), the same points for both.
//!
//! etcdctl's `elect` cannot be the etcd side: its session TTL is fixed at
//! 60 s. The etcd child does what Go's `concurrency.Election` does with a
//! session of the same TTL: a lease kept alive every TTL / 3, and the
//! `campaign` RPC.
//!
//! `DISTLOCK_FAILOVER_TTL` (seconds, default 2) and `DISTLOCK_FAILOVER_KILLS`
//! (default 6 per side).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::handoff::{handoffs, MutexHandOff};
use common::{env_usize, mark, stats};
use distlock::{EtcdConfig, LockManager, LockOptions};
use distlock_tests::Etcd;
use etcd_client::{Client, GetOptions, ResignOptions};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The argument that makes this binary a leader's process.
const CHILD: &str = "--failover-child";

/// Which leader a child process runs.
#[derive(Clone, Copy)]
enum Side {
    Distlock,
    Etcd,
}

impl Side {
    fn arg(self) -> &'static str {
        match self {
            Side::Distlock => "distlock",
            Side::Etcd => "etcd",
        }
    }
}

/// The leader's process: campaigns, says `leading` on stdout, then keeps
/// its lease alive until it is killed.
async fn child(side: &str, endpoints: Vec<String>, prefix: String, ttl: Duration) {
    match side {
        "distlock" => {
            let manager = LockManager::connect(EtcdConfig::new(endpoints), &prefix)
                .await
                .unwrap();
            let election = manager
                .new_election("failover", LockOptions::default().ttl(ttl))
                .unwrap();
            let _leading = election.campaign("child").await.unwrap();
            println!("leading");
            std::future::pending::<()>().await;
        }
        _ => {
            let mut client = Client::connect(endpoints, None).await.unwrap();
            let lease = client
                .lease_grant(ttl.as_secs() as i64, None)
                .await
                .unwrap()
                .id();
            let (mut keeper, mut answers) = client.lease_keep_alive(lease).await.unwrap();
            tokio::spawn(async move {
                loop {
                    keeper.keep_alive().await.unwrap();
                    answers.message().await.unwrap();
                    tokio::time::sleep(ttl / 3).await;
                }
            });
            client.campaign(prefix, "child", lease).await.unwrap();
            println!("leading");
            std::future::pending::<()>().await;
        }
    }
}

/// Starts a leader's process and waits until it leads.
async fn start_leader(side: Side, etcd: &Etcd, prefix: &str, ttl: Duration) -> Child {
    let mut leader = Command::new(std::env::current_exe().unwrap())
        .args([CHILD, side.arg(), &etcd.endpoints().join(","), prefix])
        .arg(ttl.as_secs().to_string())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(leader.stdout.take().unwrap()).lines();
    let said = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the leader's process did not lead within 20 s");
    assert_eq!(said.unwrap().as_deref(), Some("leading"));
    leader
}

/// Waits until the election under `keys` has `n` candidates.
async fn candidates(client: &mut Client, keys: &str, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let opts = || Some(GetOptions::new().with_prefix().with_count_only());
    while client.get(keys, opts()).await.unwrap().count() != n {
        assert!(Instant::now() < deadline, "{keys} never had {n} candidates");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One failover: a leader's process, the next candidate here, the kill
/// `delay` after the leader led; from the kill to the candidate leading.
async fn failover(
    side: Side,
    etcd: &Etcd,
    next: &LockManager,
    client: &mut Client,
    lease: i64,
    ttl: Duration,
    delay: Duration,
) -> Duration {
    let ns = next.namespace();
    let (prefix, keys) = match side {
        Side::Distlock => (ns.to_owned(), format!("{ns}/elections/failover/")),
        Side::Etcd => (format!("{ns}/rpc-election"), format!("{ns}/rpc-election/")),
    };
    let started = Instant::now();
    let mut leader = start_leader(side, etcd, &prefix, ttl).await;
    let waiting = match side {
        Side::Distlock => {
            let election = next
                .new_election("failover", LockOptions::default().ttl(ttl))
                .unwrap();
            tokio::spawn(async move {
                let leading = election.campaign("next").await.unwrap();
                let at = Instant::now();
                leading.resign().await.unwrap();
                at
            })
        }
        Side::Etcd => {
            let mut client = client.clone();
            tokio::spawn(async move {
                let mut won = client.campaign(prefix, "next", lease).await.unwrap();
                let at = Instant::now();
                let resign = ResignOptions::new().with_leader(won.take_leader().unwrap());
                client.resign(Some(resign)).await.unwrap();
                at
            })
        }
    };
    candidates(client, &keys, 2).await;
    tokio::time::sleep(delay.saturating_sub(started.elapsed())).await;
    let t = Instant::now();
    leader.start_kill().unwrap(); // SIGKILL
    leader.wait().await.unwrap();
    let at = waiting.await.unwrap();
    at - t
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    if args.get(1).map(String::as_str) == Some(CHILD) {
        let endpoints = args[3].split(',').map(str::to_owned).collect();
        let ttl = Duration::from_secs(args[5].parse().unwrap());
        runtime.block_on(child(&args[2], endpoints, args[4].clone(), ttl));
        return;
    }
    runtime.block_on(bench());
}

async fn bench() {
    let ttl = Duration::from_secs(env_usize("DISTLOCK_FAILOVER_TTL", 2) as u64);
    let kills = env_usize("DISTLOCK_FAILOVER_KILLS", 6);
    let etcd = Etcd::start().await;
    let ns = etcd.namespace();
    let connect = || LockManager::connect(EtcdConfig::new(etcd.endpoints()), &ns);
    let (a, b) = (connect().await.unwrap(), connect().await.unwrap());
    let mut client = Client::connect(etcd.endpoints(), None).await.unwrap();
    let lease = client.lease_grant(600, None).await.unwrap().id();

    let mut mutex = MutexHandOff::new(&a, &b, "mutex").await;
    let mut hand_offs = handoffs(&mut mutex, 50).await;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for i in 0..kills {
        // A point in the leader's keep-alive cycle: it renews every TTL / 3.
        let delay = ttl / 3 * (2 * i as u32 + 1) / (2 * kills as u32);
        let delay = delay + Duration::from_millis(200); // after the start-up
        ours.push(failover(Side::Distlock, &etcd, &b, &mut client, lease, ttl, delay).await);
        theirs.push(failover(Side::Etcd, &etcd, &b, &mut client, lease, ttl, delay).await);
        hand_offs.extend(handoffs(&mut mutex, 10).await);
    }
    client.lease_revoke(lease).await.unwrap();
    let hand_off = stats(hand_offs).median;
    let bound = ttl + 2 * hand_off;

    println!(
        "\nTTL {} s; mutex hand-off (median) {:.3} ms; bound TTL + 2 hand-offs = {} s",
        ttl.as_secs(),
        hand_off.as_secs_f64() * 1000.0,
        secs(bound)
    );
    println!(
        "\n| SIGKILL of the leader's process → next candidate leads | each kill (s) | median s | max s | median ≤ {0} s | every one ≤ {0} s |",
        secs(bound)
    );
    println!("|---|---|---|---|---|---|");
    for (name, samples) in [
        ("distlock election", &ours),
        (
            "etcd v3election RPC (for comparison), lease kept alive like Go's session",
            &theirs,
        ),
    ] {
        let each: Vec<String> = samples.iter().map(|d| secs(*d)).collect();
        let s = stats(samples.clone());
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            each.join(", "),
            secs(s.median),
            secs(s.max),
            mark(s.median <= bound),
            mark(s.max <= bound),
        );
    }
    a.close().await;
    b.close().await;
}
