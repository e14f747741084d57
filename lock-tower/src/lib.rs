//! Tower middleware for [`distlock`]: serializes requests by a key taken from
//! the request, across every server that shares an etcd namespace.
//!
//! [`LockLayer`] wraps a service (an axum `Router`, a tonic server, any
//! `tower::Service<http::Request<B>>`). For each request a [`KeyExtractor`]
//! names a lock — from a [`Header`], a [`PathSegment`], a [`Query`]
//! parameter, axum's named path parameter (`PathParam`), a gRPC method's
//! metadata ([`GrpcMethod`]), a closure, or the first of two ([`Or`]) — and:
//!
//! - requests with the same key run one at a time, fleet-wide; requests with
//!   different keys run concurrently; requests without a key pass through;
//! - within one server, requests for one key queue in FIFO order in memory, so
//!   a server keeps at most one waiter per key in etcd;
//! - the lock covers the whole response, streamed body included, and is
//!   released as soon as the body ends or the client goes away;
//! - rejections are answers that do not make a healthy server look broken:
//!   a busy key is 429 with `Retry-After` (gRPC `ABORTED`), a full queue 429
//!   (`RESOURCE_EXHAUSTED`), an etcd outage 503 (`UNAVAILABLE`), a lock lost
//!   mid-request 503 (`ABORTED`, not transparently retried), a configuration
//!   fault 500 (`INTERNAL`), a bad key 400 (`INVALID_ARGUMENT`); each code
//!   can be changed ([`LockLayer::status_for`], [`LockLayer::grpc_code_for`])
//!   and the whole answer too ([`LockLayer::on_rejection`], which takes a
//!   closure returning anything axum turns into a response). See
//!   [`RejectionKind`](RejectionKind#default-answers) for the table and why;
//! - protections: [`max_hold`](LockLayer::max_hold) (the longest a request
//!   holds its key), [`max_waiters`](LockLayer::max_waiters) (load shedding
//!   per key), [`require_key`](LockLayer::require_key) (400 instead of
//!   running unlocked);
//! - other [modes](mode) than one request per key:
//!   [`permits(n)`](LockLayer::permits), at most `n` requests per key at
//!   once across the fleet (a permit of the key's semaphore), and
//!   [`read_write()`](LockLayer::read_write), where requests that only read
//!   (`GET`, `HEAD`, `OPTIONS`, or your [rule](LockLayer::read_if)) share
//!   their key and the others run alone (a side of the key's read-write lock).
//!
//! Prefix every client-supplied key (`.prefix("order:")`), so that clients
//! cannot name locks that background jobs use.
//!
//! The key is the lock's name as is: a background job holding
//! `manager.new_lock("order:42", ..)` and a request with key `order:42`
//! exclude each other.
//!
//! # Example
//!
//! ```
//! use axum::{routing::post, Router};
//! use distlock::LockManager;
//! use distlock_tower::{HeldLock, LockLayer, PathParam};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // On etcd: LockManager::connect(EtcdConfig::new(["http://127.0.0.1:2379"]), "/shop").await?
//! let manager = LockManager::in_memory();
//! let lock = LockLayer::new(manager, PathParam::new("id").prefix("order:"))
//!     .ttl(Duration::from_secs(10))
//!     .expect("10s is a valid TTL")
//!     .wait(Duration::from_secs(3));
//!
//! // POST /orders/{id}/pay runs one at a time per order, fleet-wide.
//! async fn pay(lock: HeldLock) -> String {
//!     format!("paid under {} (fencing token {})", lock.key(), lock.fencing_token())
//! }
//! let app: Router = Router::new().route("/orders/{id}/pay", post(pay).route_layer(lock));
//! # let _ = app;
//! // axum::serve(listener, app).await?;
//! # }
//! ```
//!
//! # With axum: `route_layer` on each route
//!
//! Put the layer on the routes' method routers (`post(pay).route_layer(lock)`):
//! only requests that reach a handler take a lock, so an unknown path stays
//! 404 and a wrong method 405, without touching etcd. `Router::layer` also
//! wraps the router's fallback (an unknown path takes a lock first, or with
//! [`require_key`](LockLayer::require_key) and a key from the path is
//! answered 400 instead of 404), and both `Router::layer` and
//! `Router::route_layer` wrap each route's 405 answer. See
//! [`LockLayer`](LockLayer#where-to-put-it-in-an-axum-router).
//!
//! In a handler, [`HeldLock`] is an extractor (`lock: HeldLock`, or
//! `Option<HeldLock>` where requests may run unlocked): its key, its fencing
//! token, and whether it is still held.
//!
//! With tonic: `Server::builder().layer(LockLayer::new(manager, Header::new("x-order-id").prefix("order:")))`.
//!
//! See [`lock`] for what happens when, including a lock lost mid-request.
//!
//! # Leader-only routes
//!
//! [`LeaderOnly`] is a second layer, for routes that must run on one server
//! of the fleet (a singleton writer, an admin action): each server keeps a
//! [`Candidacy`] in an election, with its address as the value; the leader
//! runs the requests under its leadership (a [`HeldLock`] of kind
//! [`HoldKind::Leader`] in the handler, cancelled if the leadership is
//! lost), and the others answer 421 Misdirected Request with the leader's
//! address in [`x-distlock-leader`](LEADER_HEADER) (gRPC `UNAVAILABLE`, the
//! address in the metadata), forwarding nothing. See [`leader`].
//!
//! ```
//! use axum::{routing::post, Router};
//! use distlock::{LockManager, LockOptions};
//! use distlock_tower::{Candidacy, HeldLock, LeaderOnly};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
//! let manager = LockManager::in_memory();
//! let candidacy = Candidacy::start(&manager, "writer", "http://10.0.0.7:8080", LockOptions::default())?;
//! let app: Router = Router::new().route(
//!     "/admin/reindex",
//!     post(|leader: HeldLock| async move { format!("token {}", leader.fencing_token()) })
//!         .route_layer(LeaderOnly::new(candidacy)),
//! );
//! # let _ = app; Ok(()) }
//! ```
//!
//! # Features
//!
//! - `axum`: `PathParam` (axum's named path parameter as the key),
//!   `HeldLock` as an extractor (`FromRequestParts`, and
//!   `OptionalFromRequestParts` for `Option<HeldLock>`), and
//!   [`on_rejection`](LockLayer::on_rejection) handlers returning anything
//!   that implements axum's `IntoResponse`.
//! - `tonic`: `Rejection::to_status`, `tonic::Code` accepted wherever a
//!   [`GrpcCode`] is, and `tonic::server::NamedService` for
//!   [`LockService`] and [`LeaderOnlyService`] (so one tonic service can be
//!   wrapped and added to a server on its own). gRPC clients get proper statuses without it: the
//!   layers write `grpc-status` themselves.

pub mod extract;
mod grpc;
pub mod leader;
pub mod lock;
pub mod mode;
mod rejection;
mod report;
mod respond;

#[cfg(feature = "axum")]
pub use extract::PathParam;
pub use extract::{GrpcMethod, Header, InvalidGrpcMethod, KeyExtractor, Or, PathSegment, Query};
pub use grpc::GrpcCode;
pub use leader::{Candidacy, LeaderOnly, LeaderOnlyService, Role, LEADER_HEADER};
#[cfg(feature = "axum")]
pub use lock::MissingHeldLock;
pub use lock::{HeldLock, HoldKind, LockBody, LockLayer, LockService, ResponseFuture};
pub use rejection::{Rejection, RejectionKind};
pub use respond::IntoRejectionResponse;
