//! An axum service whose `POST /orders/{id}/pay` runs one at a time per order
//! across two servers, with `distlock-tower`'s `LockLayer` on etcd.
//!
//! It starts two servers (each with its own `LockManager`, as two
//! processes would have), sends them concurrent requests, prints what
//! happened, and exits:
//!
//! 1. four payments of one order, spread over both servers: one at a time;
//! 2. payments of four different orders: all at once;
//! 3. a background job holding `order:7`: a payment of order 7 waits 1 s,
//!    then gets `429` with `Retry-After` (a busy order is not a server
//!    failure: no 5xx for proxies and tracing to count);
//! 4. `GET /health`, outside the layer, is never locked; neither are an
//!    unknown path (404) nor a wrong method (405): the layer sits on the
//!    route's method router (`post(pay).route_layer(layer)`);
//! 5. `GET /metrics`, outside the layer too, serves distlock's metrics in the
//!    Prometheus text format (`metrics-exporter-prometheus`, installed as the
//!    process's `metrics` recorder): acquisitions, waits, holds, ... with
//!    buckets for the histograms, so `histogram_quantile` (the Grafana
//!    dashboard's percentile panels) works on them.
//!
//! `cargo run -p distlock-examples --example axum_service` (on the etcd of
//! `DISTLOCK_ENDPOINTS`, else on a throwaway local one)

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use distlock::{EtcdConfig, LockManager, LockOptions};
use distlock_tower::{HeldLock, LockLayer, PathParam};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Buckets (seconds) for distlock's histograms (waits, holds, hand-offs):
/// without them the exporter renders each histogram as a summary, which
/// has no `_bucket` series for `histogram_quantile`.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 1800.0,
];

/// Pays an order: 100 ms of work under the order's lock.
async fn pay(State(server): State<&'static str>, Path(id): Path<u32>, lock: HeldLock) -> String {
    tokio::time::sleep(Duration::from_millis(100)).await;
    format!(
        "order {id} paid on {server} under `{}` (fencing token {})",
        lock.key(),
        lock.fencing_token()
    )
}

/// The app of one server: the order routes behind the layer, `/health` not.
fn app(server: &'static str, manager: LockManager, metrics: PrometheusHandle) -> Router {
    // The route's `{id}` of `/orders/42/pay` is `42`: the lock is `order:42`,
    // the name a background job would lock too. The prefix keeps clients from
    // naming any other lock.
    let layer = LockLayer::new(manager, PathParam::new("id").prefix("order:"))
        .ttl(Duration::from_secs(10)) // a crashed server frees its orders within 10 s
        .expect("a valid TTL")
        .wait(Duration::from_secs(1)) // then 429 + Retry-After
        .retry_after(Duration::from_secs(2))
        .max_hold(Duration::from_secs(30)) // no request holds an order longer
        .max_waiters(16) // more requests for one order are shed at once
        .require_key(); // the route below never runs unlocked
                        // On the route's method router: after routing, so `PathParam` sees
                        // `{id}`; and only requests that reach `pay` take a lock (not 404s,
                        // not 405s).
    Router::new()
        .route("/orders/{id}/pay", post(pay).route_layer(layer))
        .route("/health", get(|| async { "ok" })) // no layer: unlocked
        .route(
            "/metrics",
            get(move || std::future::ready(metrics.render())),
        )
        .with_state(server)
}

async fn serve(app: Router) -> Result<SocketAddr, Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// Sends `method path` to `addr`; returns the status line, `Retry-After` and body.
async fn send(addr: SocketAddr, method: &str, path: &str) -> Result<String, Error> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(req).await?;
    let status = response.status();
    let retry = match response.headers().get("retry-after") {
        Some(after) => format!(" (Retry-After: {})", after.to_str()?),
        None => String::new(),
    };
    let body = response.into_body().collect().await?.to_bytes();
    Ok(format!(
        "{status}{retry}: {}",
        String::from_utf8_lossy(&body)
    ))
}

/// Sends the requests at once; prints the answers in the order they came,
/// with their time since the start.
async fn burst(requests: Vec<(SocketAddr, &'static str, String)>) -> Result<(), Error> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (addr, method, path) in requests {
        tasks.push(tokio::spawn(async move {
            let answer = send(addr, method, &path).await;
            (started.elapsed(), path, answer)
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await?);
    }
    answers.sort_by_key(|(at, _, _)| *at);
    for (at, path, answer) in answers {
        println!("  {:>5} ms  {path:<15} {}", at.as_millis(), answer?);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    // The process's `metrics` recorder: distlock records into it, /metrics renders it.
    let metrics = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Prefix("distlock_".into()), BUCKETS)?
        .install_recorder()?;
    // DISTLOCK_ENDPOINTS, or a throwaway etcd (examples/support), removed on exit.
    let etcd = support::etcd().await?;
    let config = EtcdConfig::new(etcd.endpoints());
    let namespace = "/shop";
    let a = serve(app(
        "server-a",
        LockManager::connect(config.clone(), namespace).await?,
        metrics.clone(),
    ))
    .await?;
    let b = serve(app(
        "server-b",
        LockManager::connect(config.clone(), namespace).await?,
        metrics.clone(),
    ))
    .await?;
    println!(
        "etcd at {}, server-a at {a}, server-b at {b}",
        etcd.endpoints()[0]
    );

    println!("\n1. four payments of order 42 on both servers: one at a time (~100 ms each)");
    let path = || "/orders/42/pay".to_owned();
    burst(vec![
        (a, "POST", path()),
        (b, "POST", path()),
        (a, "POST", path()),
        (b, "POST", path()),
    ])
    .await?;

    println!("\n2. payments of four different orders: concurrent (~100 ms in all)");
    burst(
        (1..=4)
            .map(|id| ([a, b][id % 2], "POST", format!("/orders/{id}/pay")))
            .collect(),
    )
    .await?;

    println!(
        "\n3. a background job holds `order:7`; a payment of order 7 gives up after 1 s \
         (429), while /health, a wrong method (405) and an unknown path (404) answer at once"
    );
    let jobs = LockManager::connect(config, namespace).await?;
    let job = jobs
        .new_lock("order:7", LockOptions::default())?
        .lock()
        .await?;
    burst(vec![
        (a, "POST", "/orders/7/pay".to_owned()),
        (b, "GET", "/health".to_owned()),
        (b, "GET", "/orders/7/pay".to_owned()),
        (a, "POST", "/orders/7/refund".to_owned()),
    ])
    .await?;
    job.unlock().await?;
    println!("   the job is done; order 7 again:");
    burst(vec![(b, "POST", "/orders/7/pay".to_owned())]).await?;

    println!(
        "\n5. GET /metrics (the acquisition counters and the waits' histogram; both servers \
         share this process's recorder):"
    );
    let scrape = send(a, "GET", "/metrics").await?;
    // Of the waits' buckets, a few bounds of the layer's acquisitions.
    let bounds = ["0.005", "0.1", "0.25", "0.5", "+Inf"].map(|le| format!(r#"le="{le}""#));
    let shown = |l: &&str| {
        l.starts_with("distlock_acquisitions_total")
            || (l.starts_with(r#"distlock_wait_seconds_bucket{source="layer",result="acquired""#)
                && bounds.iter().any(|b| l.contains(b.as_str())))
    };
    for line in scrape.lines().filter(shown) {
        println!("   {line}");
    }
    Ok(())
}
