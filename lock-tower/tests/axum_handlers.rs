//! distlock-tower as axum handlers see it (issue #21): `HeldLock` and
//! `Option<HeldLock>` as extractors, `on_rejection` handlers returning an
//! application's own JSON error type (checked at runtime, so this is also the
//! compile test of that form), and per-kind status and gRPC code overrides.
//!
//! In memory: these are about types and answers, not about etcd. (They live
//! here rather than in `tests/` because they need this crate's `axum`
//! feature and axum's `json` feature.)

use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use distlock::{LockManager, LockOptions};
use distlock_tower::{GrpcCode, Header, HeldLock, LockLayer, PathParam, Rejection, RejectionKind};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

/// An application's own error type, as its API answers errors.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct MyError {
    code: String,
    message: String,
    retry_after_secs: Option<u64>,
}

impl MyError {
    fn from_rejection(r: &Rejection) -> MyError {
        MyError {
            code: format!("{:?}", r.kind()).to_lowercase(),
            message: r.message().to_owned(),
            retry_after_secs: r.kind().advises_retry().then(|| r.retry_after().as_secs()),
        }
    }
}

/// The same type, answering for itself.
impl IntoResponse for MyError {
    fn into_response(self) -> Response {
        (StatusCode::SERVICE_UNAVAILABLE, Json(self)).into_response()
    }
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

async fn send(app: &Router, method: &str, path: &str, key: Option<&str>) -> Reply {
    let mut req = http::Request::builder().method(method).uri(path);
    if let Some(key) = key {
        req = req.header("x-key", key);
    }
    let response = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

/// Holds `name` from another owner (a peer manager), so that requests of
/// this test's task wait for it.
async fn hold(manager: &LockManager, name: &str) -> distlock::LockGuard {
    let lock = manager
        .peer()
        .new_lock(name, LockOptions::default())
        .unwrap();
    lock.lock().await.unwrap()
}

fn layer(manager: &LockManager) -> LockLayer<Header> {
    LockLayer::new(manager.clone(), Header::new("x-key").prefix("k:")).wait(Duration::ZERO)
}

// ------------------------------------------------------------ extractor ---

async fn needs_lock(lock: HeldLock) -> String {
    assert!(lock.is_held());
    format!("{} #{}", lock.key(), lock.fencing_token())
}

async fn may_lock(lock: Option<HeldLock>) -> String {
    lock.map_or("unlocked".to_owned(), |l| l.key().to_owned())
}

/// `lock: HeldLock` in a handler gets the request's lock; a route that is
/// not behind the layer, or a request without a key, is answered 500 with
/// a message that says why; `Option<HeldLock>` is `None` there instead.
#[tokio::test]
async fn held_lock_and_option_held_lock_are_extractors() {
    let manager = LockManager::in_memory();
    // A wait: each request waits for the previous one's background release.
    let lock = layer(&manager).wait(Duration::from_secs(5));
    let app = Router::new()
        .route("/needs", get(needs_lock).route_layer(lock.clone()))
        .route("/may", get(may_lock).route_layer(lock))
        .route("/needs-unlayered", get(needs_lock))
        .route("/may-unlayered", get(may_lock));

    let reply = send(&app, "GET", "/needs", Some("7")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.starts_with("k:7 #"), "{}", reply.body);
    let reply = send(&app, "GET", "/may", Some("7")).await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "k:7"));

    // No layer on the route, or no key for the request: no lock.
    for (path, key) in [("/needs-unlayered", Some("7")), ("/needs", None)] {
        let reply = send(&app, "GET", path, key).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        assert!(
            reply.body.contains("not behind a distlock LockLayer")
                && reply.body.contains("found no key"),
            "{}",
            reply.body
        );
        assert_eq!(
            reply.headers["content-type"], "text/plain; charset=utf-8",
            "{path}"
        );
    }
    for (path, key) in [("/may-unlayered", Some("7")), ("/may", None)] {
        let reply = send(&app, "GET", path, key).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "unlocked"),
            "{path}"
        );
    }
}

/// The extractor and `PathParam` on the recommended `MethodRouter::route_layer`:
/// the route's parameters are known there.
#[tokio::test]
async fn held_lock_with_a_path_param_key() {
    let manager = LockManager::in_memory();
    let lock = LockLayer::new(manager, PathParam::new("id").prefix("order:")).require_key();
    let app = Router::new().route("/orders/{id}/pay", post(needs_lock).route_layer(lock));
    let reply = send(&app, "POST", "/orders/42/pay", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.starts_with("order:42 #"), "{}", reply.body);
}

// --------------------------------------------------------- on_rejection ---

/// `on_rejection` returning `(StatusCode, Json<MyError>)`: the client gets
/// the application's JSON error, with the layer's status.
#[tokio::test]
async fn on_rejection_returns_an_apps_json_error() {
    let manager = LockManager::in_memory();
    let lock = layer(&manager)
        .retry_after(Duration::from_secs(3))
        .on_rejection(|r: &Rejection| (r.status(), Json(MyError::from_rejection(r))));
    let app = Router::new().route("/work", post(needs_lock).route_layer(lock));
    let _busy = hold(&manager, "k:busy").await;

    let reply = send(&app, "POST", "/work", Some("busy")).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.headers["content-type"], "application/json");
    let error: MyError = serde_json::from_str(&reply.body).unwrap();
    let timeout = Rejection::new(
        RejectionKind::Timeout,
        "k:busy",
        distlock::LockError::new(distlock::ErrorCode::Timeout, "busy"),
    );
    assert_eq!(
        error,
        MyError {
            code: "timeout".into(),
            message: timeout.message().into(),
            retry_after_secs: Some(3),
        }
    );

    let reply = send(&app, "POST", "/work", Some("")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let error: MyError = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(error.code, "invalidkey");
    assert_eq!(error.retry_after_secs, None);
}

/// Other return types: the app's error type itself (`IntoResponse`), an
/// axum `Response`, and the pre-existing forms (`Response<Bytes>` from the
/// default response, amended; a `Response<String>`; unannotated closures).
#[tokio::test]
async fn on_rejection_accepts_into_response_types_and_the_existing_forms() {
    let manager = LockManager::in_memory();
    let _busy = hold(&manager, "k:busy").await;
    let cases: Vec<(LockLayer<Header>, StatusCode, &str)> = vec![
        (
            layer(&manager).on_rejection(MyError::from_rejection),
            StatusCode::SERVICE_UNAVAILABLE,
            "\"code\":\"timeout\"",
        ),
        (
            layer(&manager).on_rejection(|r: &Rejection| {
                Response::builder()
                    .status(StatusCode::CONFLICT)
                    .body(Body::from(format!("axum body: {}", r.key())))
                    .unwrap()
            }),
            StatusCode::CONFLICT,
            "axum body: k:busy",
        ),
        (
            layer(&manager).on_rejection(|r| {
                let mut response = r.default_response();
                response
                    .headers_mut()
                    .insert("x-lock-key", r.key().parse().unwrap());
                response
            }),
            StatusCode::TOO_MANY_REQUESTS,
            "resource busy",
        ),
        (
            layer(&manager).on_rejection(|r| {
                if r.key() == "k:busy" {
                    http::Response::builder()
                        .status(StatusCode::LOCKED)
                        .body(format!("busy: {}", r.key()).into())
                        .unwrap()
                } else {
                    r.default_response()
                }
            }),
            StatusCode::LOCKED,
            "busy: k:busy",
        ),
        (
            layer(&manager).on_rejection(|r: &Rejection| {
                http::Response::builder()
                    .status(r.status())
                    .body(format!("string body: {}", r.message()))
                    .unwrap()
            }),
            StatusCode::TOO_MANY_REQUESTS,
            "string body: resource busy",
        ),
    ];
    for (lock, status, body) in cases {
        let app = Router::new().route("/work", post(needs_lock).route_layer(lock));
        let reply = send(&app, "POST", "/work", Some("busy")).await;
        assert_eq!(reply.status, status, "{}", reply.body);
        assert!(reply.body.contains(body), "{} !~ {body}", reply.body);
    }
}

// ------------------------------------------------------------ overrides ---

/// `status_for` and `grpc_code_for` replace one kind's default and leave
/// the others; retry advice still follows the kind.
#[tokio::test]
async fn status_and_grpc_code_overrides() {
    let manager = LockManager::in_memory();
    let lock = layer(&manager)
        .status_for(RejectionKind::Timeout, StatusCode::CONFLICT)
        .grpc_code_for(RejectionKind::Timeout, GrpcCode::Unavailable)
        .grpc_code_for(RejectionKind::InvalidKey, tonic::Code::FailedPrecondition);
    let app = Router::new().route("/work", post(needs_lock).route_layer(lock));
    let _busy = hold(&manager, "k:busy").await;

    let reply = send(&app, "POST", "/work", Some("busy")).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.headers["retry-after"], "1");
    let reply = send(&app, "POST", "/work", Some("")).await;
    assert_eq!(
        reply.status,
        StatusCode::BAD_REQUEST,
        "not overridden for HTTP"
    );

    let grpc = |key: &str| {
        http::Request::post("/work")
            .header("content-type", "application/grpc")
            .header("x-key", key)
            .body(Body::empty())
            .unwrap()
    };
    let response = app.clone().oneshot(grpc("busy")).await.unwrap();
    let status = tonic::Status::from_header_map(response.headers()).unwrap();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(response.headers()["grpc-retry-pushback-ms"], "1000");
    let response = app.clone().oneshot(grpc("")).await.unwrap();
    let status = tonic::Status::from_header_map(response.headers()).unwrap();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(!response.headers().contains_key("grpc-retry-pushback-ms"));
}
