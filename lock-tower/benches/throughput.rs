//! Requests/s through an axum service over loopback, on a throwaway etcd:
//!
//! - `no layer`: the bare router;
//! - `layer, no key`: the same router behind `LockLayer`, requests without the
//!   key header (the pass-through path);
//! - `layer, 64 keys`: every client worker on a key of its own;
//! - `layer, hot key`: every worker on one key (one request at a time);
//! - `etcd puts`: raw concurrent etcd `put`s on the same etcd, for scale (a
//!   locked request costs two writes: enqueue and release, so 0.5× is the
//!   ceiling for distinct keys);
//! - `etcd txns`: the same with the write the lock makes to enqueue, a
//!   compare-and-put transaction (etcd runs these markedly slower than puts);
//! - `core lock+release`: the core crate alone, no HTTP, 64 keys.
//!
//! Each case runs in several interleaved rounds with the same number of
//! concurrent client workers (each on its own keep-alive HTTP/1 connection);
//! the table shows the median round.
//!
//! The pass-through cost is also measured in extra paired rounds of 1 s
//! (`no layer`, `layer, no key`, alternating), and in process without the
//! network, next to a no-op layer (what any layer costs in an axum router).
//!
//! Run: `cargo bench -p distlock-tower` (settings: `BENCH_SECS` per round,
//! default 2; `BENCH_ROUNDS`, default 5; `BENCH_PAIR_ROUNDS`, default 10;
//! `BENCH_WORKERS`, default 64). It takes about two minutes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use distlock::{EtcdConfig, LockManager};
use distlock_tower::{Header, LockLayer};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::sync::Barrier;

/// One thing to measure.
#[derive(Clone)]
enum Target {
    /// `GET /` on `addr`, with `x-key: key(worker)` when `key` is given.
    Http {
        addr: SocketAddr,
        key: Option<fn(usize) -> String>,
    },
    /// A plain `put` on a key per worker.
    EtcdPut { client: etcd_client::Client },
    /// The core's enqueue write: a transaction that compares a key's create
    /// revision, puts it with a lease and reads the queue head.
    EtcdTxn {
        client: etcd_client::Client,
        lease: i64,
    },
    /// The core alone: lock and release a key per worker, no HTTP.
    Core { manager: LockManager },
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let secs = env("BENCH_SECS", 2);
    let rounds = env("BENCH_ROUNDS", 5) as usize;
    let workers = env("BENCH_WORKERS", 64) as usize;
    let round = Duration::from_secs(secs);
    let pair_rounds = env("BENCH_PAIR_ROUNDS", 10) as usize;
    let pair_round = Duration::from_secs(1);

    let etcd = distlock_tests::Etcd::start().await;
    let namespace = etcd.namespace();
    let manager = LockManager::connect(EtcdConfig::new(etcd.endpoints()), &namespace)
        .await
        .expect("connect to etcd");
    let client = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .expect("etcd client");

    let app = || Router::new().route("/", get(|| async { "ok" }));
    let bare = serve(app()).await;
    let layered = serve(app().layer(LockLayer::new(manager.clone(), Header::new("x-key")))).await;

    let lease = client
        .clone()
        .lease_grant(3600, None)
        .await
        .expect("lease")
        .id();
    let cases: Vec<(&str, Target)> = vec![
        (
            "etcd puts",
            Target::EtcdPut {
                client: client.clone(),
            },
        ),
        (
            "etcd txns (enqueue shape)",
            Target::EtcdTxn { client, lease },
        ),
        (
            "core lock+release, 64 keys",
            Target::Core {
                manager: manager.clone(),
            },
        ),
        (
            "no layer",
            Target::Http {
                addr: bare,
                key: None,
            },
        ),
        (
            "layer, no key",
            Target::Http {
                addr: layered,
                key: None,
            },
        ),
        (
            "layer, 64 keys",
            Target::Http {
                addr: layered,
                key: Some(|worker| format!("key-{}", worker % 64)),
            },
        ),
        (
            "layer, hot key",
            Target::Http {
                addr: layered,
                key: Some(|_| "hot".to_owned()),
            },
        ),
    ];

    println!(
        "distlock-tower throughput: {workers} concurrent workers, {rounds} rounds of {secs}s per case, median round"
    );
    // Warm up: connections, sessions, caches.
    for (_, target) in &cases {
        measure(target, workers, Duration::from_millis(300)).await;
    }
    let [etcd_puts, etcd_txns, core, no_layer, no_key, distinct, hot] = [0, 1, 2, 3, 4, 5, 6];
    // Rounds alternate the order of the cases (ABBA), so that a drifting load
    // on the machine weighs alike on the cases compared.
    let mut results = vec![Vec::new(); cases.len()];
    for r in 0..rounds {
        let mut order: Vec<usize> = (0..cases.len()).collect();
        if r % 2 == 1 {
            order.reverse();
        }
        for i in order {
            results[i].push(measure(&cases[i].1, workers, round).await);
        }
    }

    // The pass-through cost is small against the noise of a shared machine:
    // more, shorter rounds, alternating the two.
    let (mut bare_rates, mut keyless_rates) = (Vec::new(), Vec::new());
    for r in 0..pair_rounds {
        let (bare_target, keyless_target) = (&cases[no_layer].1, &cases[no_key].1);
        if r % 2 == 0 {
            bare_rates.push(measure(bare_target, workers, pair_round).await);
            keyless_rates.push(measure(keyless_target, workers, pair_round).await);
        } else {
            keyless_rates.push(measure(keyless_target, workers, pair_round).await);
            bare_rates.push(measure(bare_target, workers, pair_round).await);
        }
    }

    println!();
    println!("| case | requests/s (median round) | rounds |");
    println!("|---|---:|---|");
    for ((name, _), rates) in cases.iter().zip(&results) {
        let all: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "| {name} | {:.0} | {} |",
            median(rates.clone()),
            all.join(", ")
        );
    }
    // A ratio is taken within each round, then the median of the rounds.
    let ratio = |a: usize, b: usize| {
        let per_round: Vec<f64> = results[a]
            .iter()
            .zip(&results[b])
            .map(|(x, y)| x / y)
            .collect();
        let all: Vec<String> = per_round.iter().map(|r| format!("{r:.2}")).collect();
        (median(per_round), all.join(", "))
    };
    println!();
    println!("| ratio (median of rounds) | value | target | rounds |");
    println!("|---|---:|---|---|");
    let (r, all) = ratio(no_key, no_layer);
    println!(
        "| layer, no key ÷ no layer | {r:.3} ({:.1}% cost) | ≥ 0.95 (< 5% cost) | {all} |",
        (1.0 - r) * 100.0
    );
    let paired: Vec<f64> = keyless_rates
        .iter()
        .zip(&bare_rates)
        .map(|(k, b)| k / b)
        .collect();
    let all: Vec<String> = paired.iter().map(|r| format!("{r:.2}")).collect();
    let r = median(paired);
    println!(
        "| the same, {pair_rounds} paired rounds of {}s | {r:.3} ({:.1}% cost) | ≥ 0.95 (< 5% cost) | {} |",
        pair_round.as_secs(),
        (1.0 - r) * 100.0,
        all.join(", ")
    );
    let (r, all) = ratio(distinct, etcd_puts);
    println!(
        "| layer, 64 keys ÷ etcd puts | {r:.3} | ≥ 0.40 (0.5 = two writes per request) | {all} |"
    );
    let (r, all) = ratio(distinct, etcd_txns);
    println!(
        "| layer, 64 keys ÷ etcd txns | {r:.3} | (against the lock's own write shape) | {all} |"
    );
    let (r, all) = ratio(distinct, core);
    println!(
        "| layer, 64 keys ÷ core, 64 keys | {r:.3} | (what HTTP and the layer cost) | {all} |"
    );
    let (r, all) = ratio(hot, distinct);
    println!(
        "| layer, hot key ÷ layer, 64 keys | {r:.3} | ({:.2} ms per hand-over) | {all} |",
        1000.0 / median(results[hot].clone())
    );

    in_process(manager.clone()).await;
    manager.close().await;
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// The pass-through path without the network: the same router called in
/// process, without and with the layer (no key), in nanoseconds per request.
async fn in_process(manager: LockManager) {
    use tower::ServiceExt;
    const CALLS: u32 = 100_000;
    let app = || Router::new().route("/", get(|| async { "ok" }));
    let bare = app();
    let noop = app().layer(tower::layer::layer_fn(Noop));
    let layered = app().layer(LockLayer::new(manager, Header::new("x-key")));
    let time = |router: Router| async move {
        let started = Instant::now();
        for _ in 0..CALLS {
            let req = http::Request::get("/")
                .body(axum::body::Body::empty())
                .expect("request");
            let response = router.clone().oneshot(req).await.expect("infallible");
            response.into_body().collect().await.expect("body");
        }
        started.elapsed().as_nanos() as f64 / f64::from(CALLS)
    };
    let (mut without, mut with_noop, mut with) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        without.push(time(bare.clone()).await);
        with_noop.push(time(noop.clone()).await);
        with.push(time(layered.clone()).await);
    }
    let (without, with_noop, with) = (median(without), median(with_noop), median(with));
    println!();
    println!("in process (no network; {CALLS} calls, median of 5):");
    println!("| router | ns/request |");
    println!("|---|---:|");
    println!("| no layer | {without:.0} |");
    println!(
        "| a no-op tower layer | {with_noop:.0} ({:+.0}) |",
        with_noop - without
    );
    println!("| LockLayer, no key | {with:.0} ({:+.0}) |", with - without);
}

/// A layer that does nothing: what any layer costs in an axum router.
#[derive(Clone)]
struct Noop<S>(S);

impl<S: tower::Service<R>, R> tower::Service<R> for Noop<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> S::Future {
        self.0.call(req)
    }
}

/// A server for `app` on a free loopback port, for the rest of the run.
async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    addr
}

/// Operations per second on `target` with `workers` concurrent workers,
/// counted over `period` once every worker is connected.
async fn measure(target: &Target, workers: usize, period: Duration) -> f64 {
    let start = Arc::new(Barrier::new(workers + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(workers);
    for worker in 0..workers {
        let (target, start, stop) = (target.clone(), start.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            match target {
                Target::Http { addr, key } => {
                    http_worker(addr, key.map(|k| k(worker)), &start, &stop).await
                }
                Target::EtcdPut { client } => {
                    etcd_worker(client, None, worker, &start, &stop).await
                }
                Target::EtcdTxn { client, lease } => {
                    etcd_worker(client, Some(lease), worker, &start, &stop).await
                }
                Target::Core { manager } => core_worker(manager, worker, &start, &stop).await,
            }
        }));
    }
    start.wait().await;
    let began = Instant::now();
    tokio::time::sleep(period).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = began.elapsed();
    let mut done = 0u64;
    for task in tasks {
        done += task.await.expect("worker");
    }
    done as f64 / elapsed.as_secs_f64()
}

async fn http_worker(
    addr: SocketAddr,
    key: Option<String>,
    start: &Barrier,
    stop: &AtomicBool,
) -> u64 {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    let conn = tokio::spawn(conn);
    start.wait().await;
    let mut done = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut req = http::Request::get("/").header("host", "bench");
        if let Some(key) = &key {
            req = req.header("x-key", key);
        }
        sender.ready().await.expect("connection ready");
        let response = sender
            .send_request(req.body(Empty::<Bytes>::new()).expect("request"))
            .await
            .expect("response");
        assert_eq!(response.status(), 200, "the bench expects no rejections");
        response.into_body().collect().await.expect("body");
        if !stop.load(Ordering::Relaxed) {
            done += 1;
        }
    }
    drop(sender);
    let _ = conn.await;
    done
}

/// `put`s (or, with a lease, enqueue-shaped transactions) on a key of its own.
async fn etcd_worker(
    mut client: etcd_client::Client,
    lease: Option<i64>,
    worker: usize,
    start: &Barrier,
    stop: &AtomicBool,
) -> u64 {
    use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
    let key = format!("/distlock-bench/w/{worker}");
    start.wait().await;
    let mut done = 0;
    while !stop.load(Ordering::Relaxed) {
        match lease {
            None => {
                client.put(key.as_str(), "v", None).await.expect("put");
            }
            Some(lease) => {
                // Always true, so that every transaction writes.
                let txn = Txn::new()
                    .when([Compare::create_revision(
                        key.as_str(),
                        CompareOp::Greater,
                        -1,
                    )])
                    .and_then([
                        TxnOp::put(key.as_str(), "v", Some(PutOptions::new().with_lease(lease))),
                        TxnOp::get(key.as_str(), Some(GetOptions::new().with_limit(1))),
                    ]);
                client.txn(txn).await.expect("txn");
            }
        }
        if !stop.load(Ordering::Relaxed) {
            done += 1;
        }
    }
    done
}

/// Locks and releases (by dropping the guard, as the layer does) a key of its own.
async fn core_worker(
    manager: LockManager,
    worker: usize,
    start: &Barrier,
    stop: &AtomicBool,
) -> u64 {
    let key = format!("core-{}", worker % 64);
    start.wait().await;
    let mut done = 0;
    while !stop.load(Ordering::Relaxed) {
        let lock = manager
            .new_lock(key.as_str(), Default::default())
            .expect("lock");
        drop(lock.lock().await.expect("locked"));
        if !stop.load(Ordering::Relaxed) {
            done += 1;
        }
    }
    done
}
