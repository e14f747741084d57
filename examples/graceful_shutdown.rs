//! Graceful shutdown: a deploy that stops a server leaves no lock behind.
//!
//! A process that exits while holding locks without closing its
//! `LockManager` leaves their keys in etcd until their lease runs out (the
//! TTL, 30 s by default): meanwhile the next instance waits. Stopping in
//! order — stop taking requests, let the ones in flight finish
//! (`axum::serve(..).with_graceful_shutdown(..)`), then
//! `manager.close().await` — releases everything at once.
//!
//! It runs one server, sends it a payment that takes 500 ms, and triggers
//! the shutdown while it runs (as SIGTERM from a deploy, or Ctrl-C, would):
//!
//! 1. the payment in flight completes (200);
//! 2. `close()` releases its locks: the nightly job's lock, held for the
//!    server's lifetime, ends (`lost()` resolves) and its key is gone;
//! 3. the next instance takes that lock at once, not after a TTL.
//!
//! `cargo run -p distlock-examples --example graceful_shutdown` (on the etcd
//! of `DISTLOCK_ENDPOINTS`, else on a throwaway local one)

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use distlock::{distributed_lock, EtcdConfig, LockError, LockManager, LockOptions};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

type Error = Box<dyn std::error::Error + Send + Sync>;

const NAMESPACE: &str = "/graceful-shutdown";

#[derive(Clone)]
struct AppState {
    locks: LockManager,
}

/// Pays an order under its lock; `LockError` is a response itself (the
/// `axum` feature of distlock: a busy order is a 429 with `Retry-After`).
#[distributed_lock(key = "order:{id}", manager = state.locks, wait = "2s")]
async fn pay(State(state): State<AppState>, Path(id): Path<u32>) -> Result<String, LockError> {
    tokio::time::sleep(Duration::from_millis(500)).await; // the work
    Ok(format!("order {id} paid"))
}

/// What stops the server: Ctrl-C, SIGTERM (what a deploy sends), or — for
/// this example, which stops itself — `trigger`.
async fn shutdown_signal(trigger: oneshot::Receiver<()>) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
        _ = trigger => {}
    }
    println!("  shutdown: no new connections; waiting for requests in flight");
}

/// The server: serves until `trigger` (or a signal), drains, then closes
/// its lock manager. Returns once everything is released.
async fn run_server(
    config: EtcdConfig,
    listener: tokio::net::TcpListener,
    trigger: oneshot::Receiver<()>,
) -> Result<(), Error> {
    let locks = LockManager::connect(config, NAMESPACE).await?;

    // A job that holds its lock for the server's whole life (a singleton
    // worker): it ends when the lock does.
    let nightly = locks.new_lock("report:nightly", LockOptions::default())?;
    let guard = nightly.lock().await?;
    println!(
        "  server: holds `report:nightly` (token {})",
        guard.fencing_token()
    );
    let job = tokio::spawn(async move {
        guard.lost().await;
        println!("  job: its lock ended with the manager (lost() resolved)");
    });

    let app = Router::new()
        .route("/orders/{id}/pay", post(pay))
        .with_state(AppState {
            locks: locks.clone(),
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal(trigger))
        .await?;
    println!("  server: drained");

    // Last: release every lock, revoke the lease. Without this the keys
    // would stay in etcd until their TTL ran out.
    locks.close().await;
    println!("  server: lock manager closed");
    job.await?;
    Ok(())
}

/// `POST path` to `addr`: the status and body.
async fn send_post(addr: SocketAddr, path: &str) -> Result<String, Error> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::post(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(req).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(format!("{status}: {}", String::from_utf8_lossy(&body)))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    // DISTLOCK_ENDPOINTS, or a throwaway etcd (examples/support), removed on exit.
    let etcd = support::etcd().await?;
    let config = EtcdConfig::new(etcd.endpoints());
    let admin = LockManager::connect(config.clone(), NAMESPACE).await?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (trigger, triggered) = oneshot::channel();
    println!("1. a server at {addr}; a payment of order 7 (500 ms of work) is sent");
    let server = tokio::spawn(run_server(config.clone(), listener, triggered));
    // Wait until the server holds its job's lock, i.e. is up.
    while admin.lock_info("report:nightly").await?.is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let payment = tokio::spawn(send_post(addr, "/orders/7/pay"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!("   while it runs, the deploy stops the server");
    let _ = trigger.send(());
    println!("   the payment: {}", payment.await??);

    server.await??;
    println!("\n2. after the shutdown:");
    let left = admin.list_locks("").await?;
    println!("   locks held in {NAMESPACE}: {}", left.len());
    assert!(left.is_empty(), "a lock was left behind: {left:?}");

    println!("\n3. the next instance takes `report:nightly` at once:");
    let next = LockManager::connect(config, NAMESPACE).await?;
    let started = Instant::now();
    let guard = next
        .new_lock("report:nightly", LockOptions::default())?
        .lock_timeout(Duration::from_secs(5))
        .await?;
    println!(
        "   acquired in {} ms (token {}); without close() it would have waited for the TTL ({} s)",
        started.elapsed().as_millis(),
        guard.fencing_token(),
        LockOptions::default().ttl.as_secs()
    );
    guard.unlock().await?;
    next.close().await;
    admin.close().await;
    Ok(())
}
