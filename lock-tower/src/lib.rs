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
//! - a request that waits too long gets HTTP 503 with `Retry-After`, or gRPC
//!   `UNAVAILABLE` (see [`Rejection`]); so does one whose backend fails;
//! - protections: [`max_hold`](LockLayer::max_hold) (the longest a request
//!   holds its key), [`max_waiters`](LockLayer::max_waiters) (load shedding
//!   per key), [`require_key`](LockLayer::require_key) (400 instead of
//!   running unlocked).
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
//! use distlock_tower::{LockLayer, PathSegment};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // On etcd: LockManager::connect(EtcdConfig::new(["http://127.0.0.1:2379"]), "/shop").await?
//! let manager = LockManager::in_memory();
//!
//! // POST /orders/{id}/pay runs one at a time per order, fleet-wide.
//! let app: Router = Router::new()
//!     .route("/orders/{id}/pay", post(|| async { "paid" }))
//!     .layer(
//!         LockLayer::new(manager, PathSegment::new(1).prefix("order:"))
//!             .ttl(Duration::from_secs(10))
//!             .expect("10s is a valid TTL")
//!             .wait(Duration::from_secs(3)),
//!     );
//! # let _ = app;
//! // axum::serve(listener, app).await?;
//! # }
//! ```
//!
//! With tonic: `Server::builder().layer(LockLayer::new(manager, Header::new("x-order-id").prefix("order:")))`.
//!
//! See [`lock`] for what happens when, including a lock lost mid-request.
//!
//! # Features
//!
//! - `axum`: `PathParam`, axum's named path parameter as the key; and
//!   `HeldLock` as an extractor (`FromRequestParts`, and
//!   `OptionalFromRequestParts` for `Option<HeldLock>`).
//! - `tonic`: `Rejection::to_status`. gRPC clients get proper statuses
//!   without it: the layer writes `grpc-status` itself.

pub mod extract;
pub mod lock;
mod rejection;
mod report;

#[cfg(feature = "axum")]
pub use extract::PathParam;
pub use extract::{GrpcMethod, Header, InvalidGrpcMethod, KeyExtractor, Or, PathSegment, Query};
#[cfg(feature = "axum")]
pub use lock::MissingHeldLock;
pub use lock::{HeldLock, LockBody, LockLayer, LockService, ResponseFuture};
pub use rejection::{Rejection, RejectionKind};
