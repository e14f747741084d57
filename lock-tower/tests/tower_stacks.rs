//! distlock-tower in the two stacks a service is built with, on real etcd
//! with real servers on loopback:
//!
//! - an axum `Router` with the layer added by `Router::layer` (it wraps each
//!   route, after routing);
//! - a `ServiceBuilder` stack around the whole `Router` (before routing),
//!   served by hyper.
//!
//! In both, an inner service whose `poll_ready` reserves capacity (tower's
//! `ConcurrencyLimit`, `Buffer`) must not lend that capacity to requests
//! that wait for a busy key; and axum's named path parameter (`PathParam`)
//! is found after routing, and not before it.
//!
//! (These tests live here rather than in `tests/` because they need tower's
//! `limit` and `buffer` features and this crate's `axum` feature.)

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::Request;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use distlock::{EtcdConfig, LockManager, LockOptions};
use distlock_tests::Etcd;
use distlock_tower::{HeldLock, LockLayer, PathParam, PathSegment};
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};
use tower::limit::ConcurrencyLimitLayer;
use tower::ServiceBuilder;

/// The key the request runs under, or `-`.
async fn whoami(req: Request) -> String {
    req.extensions()
        .get::<HeldLock>()
        .map_or("-".to_owned(), |l| l.key().to_owned())
}

fn routes() -> Router {
    Router::new().route("/orders/{id}/pay", post(whoami))
}

/// A server; stopped when dropped.
struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves an axum `Router` with `axum::serve`.
async fn serve_router(app: Router) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server { addr, task }
}

/// Serves any cloneable tower service with hyper, one clone per connection.
async fn serve_service<S, B>(service: S) -> Server
where
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Server { addr, task }
}

/// `POST /orders/{order}/pay` on a connection of its own: status and body.
async fn pay(addr: SocketAddr, order: &str) -> (StatusCode, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::post(format!("/orders/{order}/pay"))
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    conn.abort();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn manager(etcd: &Etcd, namespace: &str) -> LockManager {
    LockManager::connect(EtcdConfig::new(etcd.endpoints()), namespace)
        .await
        .expect("connect to etcd")
}

/// With a job holding `order:hot`, three requests for it wait; a request for
/// another order must still be served at once, and the three run once the
/// job is done.
async fn hot_key_waiters_leave_capacity_to_other_keys(addr: SocketAddr, admin: &LockManager) {
    let job = admin
        .new_lock("order:hot", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    let waiting: Vec<_> = (0..3)
        .map(|_| tokio::spawn(async move { pay(addr, "hot").await }))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while admin.lock_info("order:hot").await.unwrap().unwrap().waiters < 1 {
        assert!(Instant::now() < deadline, "the hot requests never queued");
        sleep(Duration::from_millis(20)).await;
    }
    sleep(Duration::from_millis(200)).await;

    let cold = timeout(Duration::from_secs(3), pay(addr, "cold"))
        .await
        .expect("a request for another key is not blocked by the hot key's waiters");
    assert_eq!(cold, (StatusCode::OK, "order:cold".to_owned()));
    assert!(waiting.iter().all(|w| !w.is_finished()));

    job.unlock().await.unwrap();
    for w in waiting {
        let reply = timeout(Duration::from_secs(5), w).await.unwrap().unwrap();
        assert_eq!(reply, (StatusCode::OK, "order:hot".to_owned()));
    }
}

/// axum `Router::layer`: the lock layer outside a per-route
/// `ConcurrencyLimit(1)`; keys from the named path parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_layer_stack_with_a_concurrency_limit() {
    let etcd = Etcd::start().await;
    let namespace = etcd.namespace();
    let (server_manager, admin) = (
        manager(&etcd, &namespace).await,
        manager(&etcd, &namespace).await,
    );
    let app = routes()
        .layer(ConcurrencyLimitLayer::new(1))
        .layer(LockLayer::new(server_manager, PathParam::new("id").prefix("order:")).require_key());
    let server = serve_router(app).await;
    hot_key_waiters_leave_capacity_to_other_keys(server.addr, &admin).await;
}

/// A `ServiceBuilder` stack around the whole `Router`: the lock layer, then
/// a `Buffer` and a `ConcurrencyLimit(1)`, then the router. The layer runs
/// before routing here, so `PathParam` finds nothing (with `require_key`,
/// that is a 400) and `PathSegment` is the fallback that works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_builder_stack_around_the_router_with_buffer_and_limit() {
    let etcd = Etcd::start().await;
    let namespace = etcd.namespace();
    let (server_manager, admin) = (
        manager(&etcd, &namespace).await,
        manager(&etcd, &namespace).await,
    );

    // Before routing, the path parameter is unknown: no key, so 400.
    let param_only = ServiceBuilder::new()
        .layer(
            LockLayer::new(
                server_manager.clone(),
                PathParam::new("id").prefix("order:"),
            )
            .require_key(),
        )
        .service(routes());
    let server = serve_service(param_only).await;
    let reply = pay(server.addr, "1").await;
    assert_eq!(reply.0, StatusCode::BAD_REQUEST, "{reply:?}");
    drop(server);

    let key = PathParam::new("id")
        .prefix("order:")
        .or(PathSegment::new(1).prefix("order:"));
    let stack = ServiceBuilder::new()
        .layer(LockLayer::new(server_manager, key).require_key())
        .buffer(8)
        .concurrency_limit(1)
        .service(routes());
    let server = serve_service(stack).await;
    hot_key_waiters_leave_capacity_to_other_keys(server.addr, &admin).await;
}
