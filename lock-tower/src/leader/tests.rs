//! [`LeaderOnly`] and [`Candidacy`] in memory: who serves, what followers
//! answer, and what happens to requests when the role changes under them.
//! The suites on etcd are `tests/tests/tower_leader.rs`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distlock::{ErrorCode, LockManager, LockOptions};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use tokio::time::timeout;
use tower::{service_fn, Layer, ServiceExt};

use super::{Candidacy, LeaderOnly, Role, LEADER_HEADER};
use crate::{HeldLock, HoldKind, LockBody, Rejection, RejectionKind};

const WAIT: Duration = Duration::from_secs(5);

fn start(manager: &LockManager, value: &str) -> Candidacy {
    Candidacy::start(manager, "writer", value, LockOptions::default()).unwrap()
}

async fn becomes(c: &Candidacy, pred: impl FnMut(&Role) -> bool) -> Role {
    timeout(WAIT, c.wait_for(pred))
        .await
        .unwrap_or_else(|_| panic!("{c:?} never got there"))
}

fn is_leader(role: &Role) -> bool {
    matches!(role, Role::Leader { .. })
}

fn follows(value: &'static str) -> impl FnMut(&Role) -> bool {
    move |role| matches!(role, Role::Follower(l) if l.value == value.as_bytes())
}

/// A service behind `layer` that counts its calls and answers with what the
/// handler saw: the hold's kind, key and token, and the scope's token.
fn counted(
    layer: &LeaderOnly,
) -> (
    impl tower::Service<
            Request<String>,
            Response = Response<LockBody<String>>,
            Error = Infallible,
            Future = impl Send,
        > + Clone,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let count = calls.clone();
    let service = layer.layer(service_fn(move |req: Request<String>| {
        count.fetch_add(1, Ordering::SeqCst);
        async move {
            let held = req.extensions().get::<HeldLock>().unwrap().clone();
            let scope = distlock::current_fencing_token();
            let body = format!(
                "{:?} {} {} {:?}",
                held.kind(),
                held.key(),
                held.fencing_token(),
                scope
            );
            Ok::<_, Infallible>(Response::new(body))
        }
    }));
    (service, calls)
}

fn grpc_request() -> Request<String> {
    Request::post("/shop.v1.Writer/Put")
        .header("content-type", "application/grpc")
        .body(String::new())
        .unwrap()
}

async fn text(response: Response<LockBody<String>>) -> String {
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// The leader runs the request under its leadership (kind, key, token, and
/// the owner scope's token agree); a follower answers 421 naming the leader
/// and calls nothing, over HTTP and gRPC alike.
#[tokio::test]
async fn the_leader_serves_and_a_follower_names_it_without_forwarding() {
    let manager = LockManager::in_memory();
    let a = start(&manager, "http://a:8080");
    let Role::Leader { fencing_token } = becomes(&a, is_leader).await else {
        unreachable!()
    };
    let b = start(&manager.peer(), "http://b:8080");
    becomes(&b, follows("http://a:8080")).await;

    let (leader, leader_calls) = counted(&LeaderOnly::new(a));
    let response = leader.oneshot(Request::new(String::new())).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let want = format!("Leader writer {fencing_token} Some({fencing_token})");
    assert_eq!(text(response).await, want);
    assert_eq!(leader_calls.load(Ordering::SeqCst), 1);

    let (follower, follower_calls) = counted(&LeaderOnly::new(b));
    let response = follower
        .clone()
        .oneshot(Request::new(String::new()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(response.headers()[LEADER_HEADER], "http://a:8080");
    assert!(response.headers().get("retry-after").is_none());

    let response = follower.oneshot(grpc_request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK); // a trailers-only gRPC answer
    let status = tonic::Status::from_header_map(response.headers()).unwrap();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(
        status.metadata().get(LEADER_HEADER).unwrap(),
        "http://a:8080"
    );
    assert_eq!(
        follower_calls.load(Ordering::SeqCst),
        0,
        "a follower forwarded"
    );
}

/// A server that sees the leader with its own value does not send clients
/// to itself: it answers 503 with `Retry-After`, as when nobody leads.
#[tokio::test]
async fn a_leader_with_this_servers_value_is_no_leader_to_send_clients_to() {
    let manager = LockManager::in_memory();
    let a = start(&manager, "same");
    becomes(&a, is_leader).await;
    let twin = start(&manager.peer(), "same");
    // Its observer has seen the leader: the role stays NoLeader.
    becomes(&twin, |r| *r == Role::NoLeader).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(twin.role(), Role::NoLeader);

    let (service, calls) = counted(&LeaderOnly::new(twin).retry_after(Duration::from_millis(2500)));
    let response = service.oneshot(Request::new(String::new())).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "3");
    assert!(response.headers().get(LEADER_HEADER).is_none());
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// After `resign` with no request in flight the key is gone at once, the
/// next candidate leads, and the resigned server sends clients there.
#[tokio::test]
async fn resign_hands_over_and_the_old_leader_follows() {
    let manager = LockManager::in_memory();
    let a = start(&manager, "a");
    becomes(&a, is_leader).await;
    let b = start(&manager.peer(), "b");
    becomes(&b, follows("a")).await;
    a.resign().await.unwrap();
    a.resign().await.unwrap(); // twice is fine
    becomes(&b, is_leader).await;
    becomes(&a, follows("b")).await;
    assert!(a.leadership().is_none());

    // Alone in the election, a resigned server knows no leader.
    b.resign().await.unwrap();
    becomes(&a, |r| *r == Role::NoLeader).await;
    let election = manager
        .new_election("writer", LockOptions::default())
        .unwrap();
    assert!(election.leader().await.unwrap().is_none());
}

/// A resigning leader stops admitting requests at once, but keeps its key
/// until the request it serves has ended: the next leader never starts
/// beside it.
#[tokio::test]
async fn a_resigning_leader_keeps_leading_until_its_requests_end() {
    let manager = LockManager::in_memory();
    let a = start(&manager, "a");
    becomes(&a, is_leader).await;
    let b = start(&manager.peer(), "b");
    becomes(&b, follows("a")).await;

    let (started_tx, started_rx) = oneshot::channel::<()>();
    let (finish_tx, finish_rx) = oneshot::channel::<()>();
    let hooks = Arc::new(Mutex::new(Some((started_tx, finish_rx))));
    let layer = LeaderOnly::new(a.clone());
    let service = layer.layer(service_fn(move |_req: Request<String>| {
        let hooks = hooks.lock().unwrap().take();
        async move {
            if let Some((started, finish)) = hooks {
                let _ = started.send(());
                let _ = finish.await;
            }
            Ok::<_, Infallible>(Response::new(String::from("done")))
        }
    }));
    let in_flight = tokio::spawn(service.clone().oneshot(Request::new(String::new())));
    started_rx.await.unwrap();

    timeout(WAIT, a.resign()).await.unwrap().unwrap();
    let refused = service
        .clone()
        .oneshot(Request::new(String::new()))
        .await
        .unwrap();
    assert_ne!(
        refused.status(),
        StatusCode::OK,
        "a resigned server served as leader"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !is_leader(&b.role()),
        "the next leader started beside a request"
    );

    finish_tx.send(()).unwrap();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(text(response).await, "done"); // the body holds the leadership to its end
    becomes(&b, is_leader).await;
}

/// A leadership lost while a request runs (here: its manager closed)
/// cancels the handler at its next await; the client gets 503 `Lost`
/// without `Retry-After`; later requests are answered `Unavailable`.
#[tokio::test]
async fn a_request_in_flight_is_cancelled_when_leadership_is_lost() {
    let manager = LockManager::in_memory();
    let a = start(&manager, "a");
    becomes(&a, is_leader).await;

    let kinds = Arc::new(Mutex::new(Vec::new()));
    let seen = kinds.clone();
    let layer = LeaderOnly::new(a.clone()).on_rejection(move |r: &Rejection| {
        seen.lock().unwrap().push(r.kind());
        r.default_response()
    });
    let (started_tx, started_rx) = oneshot::channel::<HeldLock>();
    let started = Arc::new(Mutex::new(Some(started_tx)));
    let finished = Arc::new(AtomicUsize::new(0));
    let done = finished.clone();
    let service = layer.layer(service_fn(move |req: Request<String>| {
        let started = started.lock().unwrap().take();
        let done = done.clone();
        async move {
            let held = req.extensions().get::<HeldLock>().unwrap().clone();
            if let Some(started) = started {
                let _ = started.send(held);
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
            done.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Infallible>(Response::new(String::new()))
        }
    }));
    let in_flight = tokio::spawn(service.clone().oneshot(Request::new(String::new())));
    let held = started_rx.await.unwrap();
    assert!(held.is_held());
    manager.close().await;

    let response = timeout(WAIT, in_flight).await.unwrap().unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().get("retry-after").is_none());
    assert!(!held.is_held());
    assert_eq!(finished.load(Ordering::SeqCst), 0, "the handler ran on");

    assert_eq!(a.role(), Role::Closed);
    let response = service.oneshot(Request::new(String::new())).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        *kinds.lock().unwrap(),
        [RejectionKind::Lost, RejectionKind::Unavailable]
    );
}

/// Bad input is a typed error, not a panic.
#[tokio::test]
async fn bad_values_and_names_are_typed_errors() {
    let manager = LockManager::in_memory();
    let options = LockOptions::default();
    for value in [Vec::new(), vec![b'x'; distlock::MAX_VALUE_LEN + 1]] {
        let err = Candidacy::start(&manager, "writer", value, options.clone()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidOptions, "{err}");
    }
    let err = Candidacy::start(&manager, "", "a", options.clone()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidKey, "{err}");
    let bad = options.clone().ttl(Duration::from_millis(10));
    let err = Candidacy::start(&manager, "writer", "a", bad).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidOptions, "{err}");
    manager.close().await;
    let err = Candidacy::start(&manager, "writer", "a", options).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Closed, "{err}");
}

#[test]
fn outside_a_runtime_start_is_a_typed_error() {
    let manager = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async { LockManager::in_memory() });
    let err = Candidacy::start(&manager, "writer", "a", LockOptions::default()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidOptions, "{err}");
}

/// A leader value that is no valid header value is left out of the header
/// (the rejection still has it); a valid one is sent as is.
#[test]
fn only_valid_header_values_are_sent() {
    let err = || distlock::LockError::new(ErrorCode::NotHeld, "follower");
    let bad = Rejection::new(RejectionKind::NotLeader, "writer", err()).with_leader("a\nb");
    let response = bad.default_response();
    assert_eq!(response.status(), 421);
    assert!(response.headers().get(LEADER_HEADER).is_none());
    assert_eq!(bad.leader(), Some(&b"a\nb"[..]));
    let good = Rejection::new(RejectionKind::NotLeader, "writer", err()).with_leader("10.0.0.7:80");
    assert_eq!(
        good.to_status().metadata().get(LEADER_HEADER).unwrap(),
        "10.0.0.7:80"
    );
    assert_eq!(HoldKind::Leader.what(), "leadership of election");
}
