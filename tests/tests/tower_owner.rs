//! The layer and the macro composed (issue #9, defects 1, 2 and 5): a real
//! axum server on loopback behind `LockLayer`, on a real etcd (`etcd::`) and
//! in memory (`memory::`). A handler runs as its request's owner, so its
//! `#[distributed_lock]` calls, a second layer, and `manager.new_lock(key)`
//! on the request's key run under the request's hold; concurrent same-key
//! sections in one handler still take turns, and requests still exclude each
//! other.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use distlock::{distributed_lock, LockError, LockManager, LockOptions};
use distlock_tower::{HeldLock, LockLayer, PathSegment};
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use support::{on_both_backends, Fixture, OverlapDetector};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};

on_both_backends!(
    a_handler_calls_a_locked_function_on_its_requests_key,
    a_handler_calls_a_locked_function_with_the_default_wait,
    a_handler_locks_its_requests_key_with_a_handle,
    stacked_layers_on_one_key_do_not_wait_for_each_other,
    concurrent_sections_in_one_handler_take_turns,
    requests_on_one_key_still_exclude_each_other,
    a_handler_that_completes_as_the_loss_is_noticed_is_not_rejected,
);

#[derive(Clone)]
struct App {
    manager: LockManager,
    detector: OverlapDetector,
    started: Arc<Notify>,
}

#[distributed_lock(key = "order:{id}", wait = "2s", ttl = "5s", manager = manager)]
async fn settle(
    manager: &LockManager,
    id: u64,
    detector: &OverlapDetector,
) -> Result<u64, LockError> {
    let _inside = detector.enter();
    sleep(Duration::from_millis(30)).await;
    tokio::task::yield_now().await;
    sleep(Duration::from_millis(10)).await;
    Ok(distlock::current_fencing_token().unwrap())
}

/// No `wait`: the default (10 s), longer than the client waits here.
#[distributed_lock(key = "order:{id}", ttl = "5s", manager = manager)]
async fn settle_by_default(manager: &LockManager, id: u64) -> Result<u64, LockError> {
    Ok(distlock::current_fencing_token().unwrap())
}

/// `"{handler token} {inner token}"`, or 500 with the error.
fn answer(held: &HeldLock, inner: Result<u64, LockError>) -> (StatusCode, String) {
    match inner {
        Ok(token) => (StatusCode::OK, format!("{} {token}", held.fencing_token())),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{:?}: {err}", err.code()),
        ),
    }
}

async fn macro_call(
    State(app): State<App>,
    Path(id): Path<u64>,
    Extension(held): Extension<HeldLock>,
) -> (StatusCode, String) {
    answer(&held, settle(&app.manager, id, &app.detector).await)
}

async fn default_wait(
    State(app): State<App>,
    Path(id): Path<u64>,
    Extension(held): Extension<HeldLock>,
) -> (StatusCode, String) {
    answer(&held, settle_by_default(&app.manager, id).await)
}

async fn handle_call(
    State(app): State<App>,
    Path(id): Path<u64>,
    Extension(held): Extension<HeldLock>,
) -> (StatusCode, String) {
    let lock = app
        .manager
        .new_lock(format!("order:{id}"), LockOptions::default());
    let inner = async {
        let guard = lock?.lock_timeout(Duration::from_secs(2)).await?;
        let token = guard.fencing_token();
        guard.unlock().await?;
        Ok(token)
    };
    answer(&held, inner.await)
}

async fn join_calls(
    State(app): State<App>,
    Path(id): Path<u64>,
    Extension(held): Extension<HeldLock>,
) -> (StatusCode, String) {
    let (a, b) = tokio::join!(
        settle(&app.manager, id, &app.detector),
        settle(&app.manager, id, &app.detector)
    );
    match (a, b) {
        (Ok(a), Ok(b)) if a == b => answer(&held, Ok(a)),
        (a, b) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{a:?} {b:?}")),
    }
}

async fn slow(State(app): State<App>) -> &'static str {
    let _inside = app.detector.enter();
    sleep(Duration::from_millis(60)).await;
    "ok"
}

async fn until_lost(State(app): State<App>) -> &'static str {
    let lost = distlock::current_lock()
        .expect("the request's scope")
        .lost();
    app.started.notify_one();
    lost.await;
    "done"
}

fn routes(app: &App) -> Router<App> {
    let _ = app;
    Router::new()
        .route("/orders/{id}/macro", get(macro_call))
        .route("/orders/{id}/default", get(default_wait))
        .route("/orders/{id}/handle", get(handle_call))
        .route("/orders/{id}/join", get(join_calls))
        .route("/orders/{id}/slow", get(slow))
        .route("/orders/{id}/until-lost", get(until_lost))
}

fn layer(manager: &LockManager) -> LockLayer<PathSegment> {
    LockLayer::new(manager.clone(), PathSegment::new(1).prefix("order:"))
        .ttl(Duration::from_secs(5))
        .unwrap()
        .wait(Duration::from_secs(2))
}

/// A server on a free loopback port; stopped when dropped.
struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
    app: App,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(fx: &Fixture, layers: usize) -> Server {
    let manager = fx.manager();
    let app = App {
        manager: manager.clone(),
        detector: OverlapDetector::default(),
        started: Arc::new(Notify::new()),
    };
    let mut router = routes(&app);
    for _ in 0..layers {
        router = router.layer(layer(&manager));
    }
    let router = router.with_state(app.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Server { addr, task, app }
}

/// `GET path`: the status and the body (or the body's error).
async fn get_path(addr: SocketAddr, path: &str) -> (StatusCode, Result<String, String>) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::get(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(req).await.expect("a response head");
    let status = response.status();
    let body = match response.into_body().collect().await {
        Ok(body) => Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned()),
        Err(err) => Err(err.to_string()),
    };
    conn.abort();
    (status, body)
}

/// `GET path`, which must answer 200 within `within`: the body's two tokens.
async fn tokens(addr: SocketAddr, path: &str, within: Duration) -> (u64, u64) {
    let (status, body) = timeout(within, get_path(addr, path))
        .await
        .unwrap_or_else(|_| panic!("{path} waited for its own request's lock"));
    let body = body.unwrap();
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    let (outer, inner) = body.split_once(' ').unwrap();
    (outer.parse().unwrap(), inner.parse().unwrap())
}

/// Issue #9, defect 1: the handler's `#[distributed_lock]` call on the
/// request's key (wait 2 s) used to time out behind its own request.
async fn a_handler_calls_a_locked_function_on_its_requests_key(fx: &Fixture) {
    let server = serve(fx, 1).await;
    let (outer, inner) = tokens(server.addr, "/orders/7/macro", Duration::from_secs(5)).await;
    assert_eq!(inner, outer, "the call ran under the request's hold");
    // The layer releases once the body has ended: shortly after the client read it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !server
        .app
        .manager
        .list_locks("order:")
        .await
        .unwrap()
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the key stayed held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Defect 1 with the macro's default wait: it used to hang.
async fn a_handler_calls_a_locked_function_with_the_default_wait(fx: &Fixture) {
    let server = serve(fx, 1).await;
    let (outer, inner) = tokens(server.addr, "/orders/8/default", Duration::from_secs(5)).await;
    assert_eq!(inner, outer);
}

/// Defect 1: `manager.new_lock(key).lock_timeout(..)` in the handler.
async fn a_handler_locks_its_requests_key_with_a_handle(fx: &Fixture) {
    let server = serve(fx, 1).await;
    let (outer, inner) = tokens(server.addr, "/orders/9/handle", Duration::from_secs(5)).await;
    assert_eq!(inner, outer);
}

/// Defect 1: two `LockLayer`s on one key.
async fn stacked_layers_on_one_key_do_not_wait_for_each_other(fx: &Fixture) {
    let server = serve(fx, 2).await;
    let (outer, inner) = tokens(server.addr, "/orders/10/macro", Duration::from_secs(5)).await;
    assert_eq!(inner, outer);
    // Other owners still find the key busy while a request holds it.
    let other = fx.another().await;
    let (status, _) = timeout(
        Duration::from_secs(5),
        get_path(server.addr, "/orders/10/slow"),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    // Released once the body has ended (shortly after the client read it).
    let taken = other
        .new_lock("order:10", LockOptions::default())
        .unwrap()
        .lock_timeout(Duration::from_secs(3))
        .await
        .expect("the request's key was released");
    taken.unlock().await.unwrap();
}

/// Defect 2 behind the layer: `join!(settle(7), settle(7))` in a handler.
async fn concurrent_sections_in_one_handler_take_turns(fx: &Fixture) {
    let server = serve(fx, 1).await;
    let (outer, inner) = tokens(server.addr, "/orders/11/join", Duration::from_secs(5)).await;
    assert_eq!(inner, outer);
    assert_eq!(server.app.detector.entries(), 2);
    assert_eq!(
        server.app.detector.most_at_once(),
        1,
        "two same-key sections ran at once"
    );
}

/// The scope is the request's: concurrent requests on one key (each in a
/// task of its own, as the server runs them) still run one at a time.
async fn requests_on_one_key_still_exclude_each_other(fx: &Fixture) {
    let server = serve(fx, 1).await;
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let addr = server.addr;
            tokio::spawn(async move { get_path(addr, "/orders/12/slow").await })
        })
        .collect();
    for call in calls {
        let (status, _) = timeout(Duration::from_secs(10), call)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(server.app.detector.entries(), 4);
    assert_eq!(
        server.app.detector.most_at_once(),
        1,
        "two requests ran at once"
    );
}

/// Defect 5 behind the layer: the handler returns in the poll in which the
/// loss is noticed; its response stands (no 503 inviting a retry).
async fn a_handler_that_completes_as_the_loss_is_noticed_is_not_rejected(fx: &Fixture) {
    let server = serve(fx, 1).await;
    let admin = fx.another().await;
    let started = Arc::clone(&server.app.started);
    let force = async {
        started.notified().await;
        assert!(admin.force_unlock("order:13").await.unwrap());
    };
    let ((status, _body), ()) = timeout(Duration::from_secs(10), async {
        tokio::join!(get_path(server.addr, "/orders/13/until-lost"), force)
    })
    .await
    .expect("the loss was never heard");
    assert_eq!(
        status,
        StatusCode::OK,
        "a completed handler was answered as lost"
    );
}
