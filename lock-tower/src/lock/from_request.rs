//! [`HeldLock`] as an axum extractor (the `axum` feature), and
//! [`MissingHeldLock`], the answer when there is none.

use std::convert::Infallible;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{header, HeaderValue, StatusCode};

use super::HeldLock;

/// A handler asked for the [`HeldLock`] of a request that holds none: the
/// route is not behind a [`LockLayer`](super::LockLayer) (or a
/// [`LeaderOnly`](crate::LeaderOnly)), or the layer's key extractor found no
/// key for this request (and the layer does not
/// [require one](super::LockLayer::require_key)).
///
/// Its response is 500 with a message saying so: the client's request was
/// fine, the server is wired wrong (axum answers a missing `Extension<T>`
/// the same way). A client that omits the key is answered 400 by the layer
/// itself with `require_key`; a handler that also runs unlocked takes
/// `Option<HeldLock>`.
///
/// # Example
///
/// ```
/// use axum::{routing::post, Router};
/// use distlock_tower::HeldLock;
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // No LockLayer on this route: a handler that needs the lock is answered 500.
/// let app: Router = Router::new().route("/pay", post(|lock: HeldLock| async move { lock.key().to_owned() }));
/// let req = http::Request::post("/pay").body(axum::body::Body::empty()).unwrap();
/// let response = app.oneshot(req).await.unwrap();
/// assert_eq!(response.status(), 500);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, thiserror::Error)]
#[error(
    "this request holds no lock: its route is not behind a distlock LockLayer (or LeaderOnly), \
     or the layer's key extractor found no key for it (use `require_key` to answer \
     such requests 400, or take `Option<HeldLock>` in a handler that may run unlocked)"
)]
#[non_exhaustive]
pub struct MissingHeldLock;

impl IntoResponse for MissingHeldLock {
    fn into_response(self) -> Response {
        tracing::debug!("{self}");
        let mut response = self.to_string().into_response();
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

/// A handler takes `lock: HeldLock` directly (the `axum` feature); a request
/// without one is answered with [`MissingHeldLock`].
///
/// ```
/// use axum::{routing::post, Router};
/// use distlock_tower::{HeldLock, LockLayer, PathParam};
///
/// async fn pay(lock: HeldLock) -> String {
///     format!("paid under {} (fencing token {})", lock.key(), lock.fencing_token())
/// }
///
/// let layer = LockLayer::new(distlock::LockManager::in_memory(), PathParam::new("id").prefix("order:"));
/// let app: Router = Router::new().route("/orders/{id}/pay", post(pay).route_layer(layer));
/// ```
impl<S: Send + Sync> FromRequestParts<S> for HeldLock {
    type Rejection = MissingHeldLock;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<HeldLock>()
            .cloned()
            .ok_or(MissingHeldLock)
    }
}

/// A handler takes `lock: Option<HeldLock>` when its route may run without a
/// lock (the layer's extractor found no key); it is never rejected.
///
/// ```
/// use axum::{routing::get, Router};
/// use distlock_tower::{Header, HeldLock, LockLayer};
///
/// async fn report(lock: Option<HeldLock>) -> String {
///     match lock {
///         Some(lock) => format!("under {}", lock.key()),
///         None => "unlocked".to_owned(),
///     }
/// }
///
/// let layer = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-tenant").prefix("tenant:"));
/// let app: Router = Router::new().route("/report", get(report).route_layer(layer));
/// ```
impl<S: Send + Sync> OptionalFromRequestParts<S> for HeldLock {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<HeldLock>().cloned())
    }
}
