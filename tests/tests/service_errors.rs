//! `LockError` in services (features `tonic` and `axum`, issue #21): a
//! `#[distributed_lock]` tonic service method returning
//! `Result<Response<T>, Status>` needs no glue, and an axum handler returns
//! `Result<_, LockError>`; both answer with the documented codes.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use distlock::testing::{Fault, Faults, Op};
use distlock::{distributed_lock, LockError, LockGuard, LockManager, LockOptions};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

const WAIT: Duration = Duration::from_millis(200);

/// The gRPC health service, each `Check` under lock `health:{service}`.
struct LockedHealth {
    locks: LockManager,
}

#[async_trait::async_trait]
impl Health for LockedHealth {
    // `Status: From<LockError>` (feature `tonic`): nothing else needed.
    #[distributed_lock(key = "health:{request.get_ref().service}", manager = self.locks, wait = "200ms")]
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let held = distlock::current_lock().is_some_and(|lock| lock.is_held());
        let status = if held {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        Ok(Response::new(HealthCheckResponse {
            status: status as i32,
        }))
    }

    type WatchStream = tonic::codegen::tokio_stream::Empty<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

/// Serves [`LockedHealth`] with `locks` on a free port; a client of it.
async fn serve_grpc(locks: LockManager) -> HealthClient<Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(HealthServer::new(LockedHealth { locks }))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap();
    HealthClient::new(channel.connect().await.unwrap())
}

async fn check(client: &HealthClient<Channel>, service: &str) -> Result<i32, Status> {
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    Ok(client.clone().check(request).await?.into_inner().status)
}

async fn hold(manager: &LockManager, name: &str) -> LockGuard {
    let lock = manager.new_lock(name, LockOptions::default()).unwrap();
    lock.lock().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_tonic_method_answers_lock_errors_as_statuses() {
    let locks = LockManager::in_memory();
    let client = serve_grpc(locks.clone()).await;
    let serving = ServingStatus::Serving as i32;
    assert_eq!(check(&client, "orders").await.unwrap(), serving);

    // Busy past the wait: ABORTED, with a retry hint.
    let job = hold(&locks.peer(), "health:orders").await;
    let started = Instant::now();
    let status = check(&client, "orders").await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert!(status.message().contains("busy"), "{status:?}");
    assert!(!status.message().contains("health:orders"), "{status:?}");
    assert_eq!(
        status.metadata().get("grpc-retry-pushback-ms").unwrap(),
        "1000"
    );
    assert!(started.elapsed() >= WAIT, "{:?}", started.elapsed());
    // Other keys pass meanwhile.
    assert_eq!(check(&client, "billing").await.unwrap(), serving);
    job.unlock().await.unwrap();
    assert_eq!(check(&client, "orders").await.unwrap(), serving);

    // A name that cannot be a lock: INVALID_ARGUMENT.
    let status = check(&client, "a\0b").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.metadata().get("grpc-retry-pushback-ms").is_none());

    // The manager closed: UNAVAILABLE.
    locks.close().await;
    let status = check(&client, "orders").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_unavailable_to_grpc_clients() {
    let faults = Faults::new();
    faults.always(Op::Enqueue, Fault::Fail);
    let client = serve_grpc(LockManager::in_memory().with_faults(&faults)).await;
    let status = check(&client, "orders").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(!status.message().contains("injected"), "{status:?}");
}

#[derive(Clone)]
struct AppState {
    locks: LockManager,
}

/// An axum handler whose error type is `LockError` itself.
#[distributed_lock(key = "order:{id}", manager = state.locks, wait = "200ms")]
async fn pay(State(state): State<AppState>, Path(id): Path<u32>) -> Result<String, LockError> {
    Ok(format!("order {id} paid"))
}

async fn serve_http(locks: LockManager) -> SocketAddr {
    let app = Router::new()
        .route("/orders/{id}/pay", post(pay))
        .with_state(AppState { locks });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// `POST path`: status, `Retry-After` and body.
async fn post_to(addr: SocketAddr, path: &str) -> (u16, Option<String>, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, retry, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_axum_handler_answers_lock_errors_as_responses() {
    let locks = LockManager::in_memory();
    let addr = serve_http(locks.clone()).await;
    assert_eq!(
        post_to(addr, "/orders/7/pay").await,
        (200, None, "order 7 paid".to_owned())
    );

    let job = hold(&locks.peer(), "order:7").await;
    let (status, retry, body) = post_to(addr, "/orders/7/pay").await;
    assert_eq!((status, retry.as_deref()), (429, Some("1")), "{body}");
    assert!(body.contains("busy") && !body.contains("order:7"), "{body}");
    job.unlock().await.unwrap();

    locks.close().await;
    let (status, retry, _) = post_to(addr, "/orders/7/pay").await;
    assert_eq!((status, retry.as_deref()), (503, Some("1")));
}
