//! [`LeaderOnly`]: the layer, and its answers' settings.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use tower_layer::Layer;

use super::{Candidacy, LeaderOnlyService};
use crate::lock::Settings;
use crate::{GrpcCode, IntoRejectionResponse, Rejection, RejectionKind};

/// Runs requests only on the leader of an election, under its leadership;
/// followers answer them without forwarding anything.
///
/// Whether this server leads comes from its [`Candidacy`], read locally on
/// every request (no etcd round trip):
///
/// - **leader** (its leadership held on this process's clock): the inner
///   service runs under the leadership's [owner scope](distlock::Leadership::scope),
///   with a [`HeldLock`](crate::HeldLock) of kind
///   [`HoldKind::Leader`](crate::HoldKind::Leader) in the request's extensions
///   (the election's name as its key, the leadership's fencing token), an
///   axum extractor as behind a [`LockLayer`](crate::LockLayer). If the
///   leadership is lost before the response, the handler is cancelled at its
///   next await and the client gets [`RejectionKind::Lost`] (503; gRPC
///   `ABORTED`, not transparently retried); a body still streaming stops, as
///   behind a `LockLayer` (see [`lock`](crate::lock#when-the-lock-is-lost)).
///   Requests run concurrently: leadership is not a lock per request;
/// - **follower**: [`RejectionKind::NotLeader`], 421 Misdirected Request with
///   the leader's proclaimed value in [`x-distlock-leader`](super::LEADER_HEADER)
///   (gRPC `UNAVAILABLE`, the value in the metadata);
/// - **nobody leads** as far as this server knows (a handover, a leader lost
///   on this server's clock and not yet gone from etcd, the first moments):
///   [`RejectionKind::NoLeader`], 503 with `Retry-After` (gRPC
///   `UNAVAILABLE` with `grpc-retry-pushback-ms`);
/// - **the manager is closed**: [`RejectionKind::Unavailable`], 503 with
///   `Retry-After`.
///
/// Nothing but the leader ever calls the inner service: a refused request
/// is answered by the layer, its body unread.
///
/// With axum, put it on the routes that must run on the leader
/// (`post(h).route_layer(leader_only.clone())`): other routes, unknown paths
/// and wrong methods are unaffected. With tonic, wrap one service
/// (`Server::builder().add_service(leader_only.layer(WriterServer::new(svc)))`:
/// with the `tonic` feature the wrapped service keeps its gRPC name), or every
/// service with `Server::builder().layer(leader_only)`.
///
/// # Example
///
/// ```
/// use axum::{routing::{get, post}, Router};
/// use distlock::{LockManager, LockOptions};
/// use distlock_tower::{Candidacy, HeldLock, LeaderOnly, Role};
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
/// // Each server: its own manager on the shared namespace, its own address as the value.
/// let manager = LockManager::in_memory();
/// let candidacy = Candidacy::start(&manager, "writer", "http://10.0.0.7:8080", LockOptions::default())?;
///
/// async fn compact(leader: HeldLock) -> String {
///     // Pass the token along with the writes: storage rejects an older leader's.
///     format!("compacted under fencing token {}", leader.fencing_token())
/// }
/// let app: Router = Router::new()
///     .route("/admin/compact", post(compact).route_layer(LeaderOnly::new(candidacy.clone())))
///     .route("/health", get(|| async { "ok" })); // every server answers
///
/// candidacy.wait_for(|role| matches!(role, Role::Leader { .. })).await;
/// let req = http::Request::post("/admin/compact").body(axum::body::Body::empty()).unwrap();
/// assert_eq!(app.oneshot(req).await.unwrap().status(), 200);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LeaderOnly {
    candidacy: Candidacy,
    settings: Arc<Settings>,
}

impl LeaderOnly {
    /// A layer running requests only while `candidacy` leads.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// use distlock_tower::{Candidacy, LeaderOnly};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// let manager = LockManager::in_memory();
    /// let candidacy = Candidacy::start(&manager, "writer", "10.0.0.7:8080", LockOptions::default())?;
    /// let layer = LeaderOnly::new(candidacy);
    /// # let _ = layer; Ok(()) }
    /// ```
    pub fn new(candidacy: Candidacy) -> Self {
        let settings = Arc::new(Settings::new(candidacy.manager().clone()));
        LeaderOnly {
            candidacy,
            settings,
        }
    }

    /// The candidacy the layer asks.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # use distlock_tower::{Candidacy, LeaderOnly};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// # let candidacy = Candidacy::start(&LockManager::in_memory(), "writer", "a", LockOptions::default())?;
    /// let layer = LeaderOnly::new(candidacy);
    /// assert_eq!(layer.candidacy().name(), "writer");
    /// # Ok(()) }
    /// ```
    pub fn candidacy(&self) -> &Candidacy {
        &self.candidacy
    }

    fn settings(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.settings)
    }

    /// Sets the retry advice of the answers that give one
    /// ([`NoLeader`](RejectionKind::NoLeader), a closed manager): default
    /// 1 s, as `Retry-After` in whole seconds (rounded up) and, to gRPC
    /// clients, `grpc-retry-pushback-ms`. A follower's 421 carries none.
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// # use distlock_tower::{Candidacy, LeaderOnly};
    /// use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// # let candidacy = Candidacy::start(&LockManager::in_memory(), "writer", "a", LockOptions::default())?;
    /// let layer = LeaderOnly::new(candidacy).retry_after(Duration::from_secs(3));
    /// # let _ = layer; Ok(()) }
    /// ```
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.settings().retry_after = after;
        self
    }

    /// Answers refused requests with `handler`'s response instead of the
    /// [default](Rejection::default_response), as
    /// [`LockLayer::on_rejection`](crate::LockLayer::on_rejection) does; a
    /// follower's rejection names the leader ([`Rejection::leader`]), e.g.
    /// to redirect there.
    ///
    /// ```
    /// use distlock::{LockManager, LockOptions};
    /// use distlock_tower::{Candidacy, LeaderOnly, Rejection, RejectionKind};
    /// use http::{header, Response, StatusCode};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// # let candidacy = Candidacy::start(&LockManager::in_memory(), "writer", "http://10.0.0.7:8080", LockOptions::default())?;
    /// // Browsers follow a 307 to the leader; the method and body are kept.
    /// let layer = LeaderOnly::new(candidacy).on_rejection(|r: &Rejection| match r.leader() {
    ///     Some(leader) if r.kind() == RejectionKind::NotLeader && !r.is_grpc() => Response::builder()
    ///         .status(StatusCode::TEMPORARY_REDIRECT)
    ///         .header(header::LOCATION, format!("{}/admin/compact", String::from_utf8_lossy(leader)))
    ///         .body(bytes::Bytes::new())
    ///         .unwrap(),
    ///     _ => r.default_response(),
    /// });
    /// # let _ = layer; Ok(()) }
    /// ```
    pub fn on_rejection<F, R, T>(mut self, handler: F) -> Self
    where
        F: Fn(&Rejection) -> R + Send + Sync + 'static,
        R: IntoRejectionResponse<T>,
    {
        self.settings().set_on_rejection(handler);
        self
    }

    /// Answers HTTP requests refused for `kind` with `status` instead of the
    /// kind's [default](crate::RejectionKind#default-answers).
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// use distlock_tower::{Candidacy, LeaderOnly, RejectionKind};
    /// use http::StatusCode;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// # let candidacy = Candidacy::start(&LockManager::in_memory(), "writer", "a", LockOptions::default())?;
    /// // This API's clients know 409 as "ask another server".
    /// let layer = LeaderOnly::new(candidacy).status_for(RejectionKind::NotLeader, StatusCode::CONFLICT);
    /// # let _ = layer; Ok(()) }
    /// ```
    pub fn status_for(mut self, kind: RejectionKind, status: StatusCode) -> Self {
        self.settings().set_status(kind, status);
        self
    }

    /// Answers gRPC calls refused for `kind` with `code` instead of the
    /// kind's [default](crate::RejectionKind#default-answers) (for `Lost`,
    /// also the code of the trailers that end a stream cut off mid-way).
    ///
    /// ```
    /// # use distlock::{LockManager, LockOptions};
    /// use distlock_tower::{Candidacy, GrpcCode, LeaderOnly, RejectionKind};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> distlock::Result<()> {
    /// # let candidacy = Candidacy::start(&LockManager::in_memory(), "writer", "a", LockOptions::default())?;
    /// // Keep the mesh's outlier detection from counting followers' answers as 503s.
    /// let layer = LeaderOnly::new(candidacy)
    ///     .grpc_code_for(RejectionKind::NotLeader, GrpcCode::FailedPrecondition);
    /// # let _ = layer; Ok(()) }
    /// ```
    pub fn grpc_code_for(mut self, kind: RejectionKind, code: impl Into<GrpcCode>) -> Self {
        self.settings().set_grpc_code(kind, code.into());
        self
    }
}

impl<S> Layer<S> for LeaderOnly {
    type Service = LeaderOnlyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LeaderOnlyService::new(inner, self.candidacy.clone(), Arc::clone(&self.settings))
    }
}

impl fmt::Debug for LeaderOnly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaderOnly")
            .field("candidacy", &self.candidacy)
            .field("settings", &self.settings)
            .finish()
    }
}
