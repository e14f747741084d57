//! [`LockLayer`]: the configuration, shared by every service it makes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use distlock::{LockError, LockManager, LockOptions};
use http::Response;
use tower_layer::Layer;

use super::LockService;
use crate::rejection::Rejection;

/// How long a request waits for its lock by default.
const DEFAULT_WAIT: Duration = Duration::from_secs(10);
/// The default `Retry-After` advice.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A rejection handler: builds the response for a request the layer rejects.
type RejectFn = dyn Fn(&Rejection) -> Response<Bytes> + Send + Sync;

/// Everything but the extractor; shared by the layer and its services.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) manager: LockManager,
    pub(crate) options: LockOptions,
    pub(crate) wait: Duration,
    pub(crate) retry_after: Duration,
    on_rejection: Option<Arc<RejectFn>>,
}

impl Settings {
    /// The response for `rejection`: the handler's, or the default.
    pub(crate) fn respond(&self, rejection: &Rejection) -> Response<Bytes> {
        match &self.on_rejection {
            Some(handler) => handler(rejection),
            None => rejection.default_response(),
        }
    }
}

/// Serializes requests by key: requests whose [`KeyExtractor`](crate::KeyExtractor)
/// gives the same key run one at a time across every server whose
/// [`LockManager`] shares the etcd namespace; requests with different keys run
/// concurrently; requests without a key pass straight through.
///
/// The lock is held until the response body has been sent (or dropped), so a
/// streamed response is covered to its end. A request that waits longer than
/// [`wait`](LockLayer::wait) is answered 503 with `Retry-After` (gRPC:
/// `UNAVAILABLE`), as is one whose lock backend fails; see
/// [`Rejection`] for all cases and [`on_rejection`](LockLayer::on_rejection)
/// to change the answers.
///
/// The key is the lock's name as is: a background job that locks the same name
/// with [`LockManager::new_lock`] contends with the requests.
///
/// Defaults: wait 10 s, `Retry-After: 1`, the core's [`LockOptions::default`]
/// (TTL 30 s, renewed every 10 s: a server that dies holding a key blocks it
/// for up to the TTL).
///
/// # Example
///
/// With axum (layered after routing, so only the routes above it are locked):
///
/// ```
/// use axum::{routing::post, Router};
/// use distlock::LockManager;
/// use distlock_tower::{Header, LockLayer};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // In production: LockManager::connect(EtcdConfig::new([...]), "/my-service").await?
/// let manager = LockManager::in_memory();
/// let app: Router = Router::new()
///     .route("/transfer", post(|| async { "done" }))
///     .layer(
///         LockLayer::new(manager, Header::new("x-account-id").prefix("account:"))
///             .ttl(Duration::from_secs(10))
///             .expect("10s is a valid TTL")
///             .wait(Duration::from_secs(2)),
///     );
///
/// use tower::ServiceExt;
/// let req = http::Request::post("/transfer").header("x-account-id", "7").body(axum::body::Body::empty()).unwrap();
/// let response = app.oneshot(req).await.unwrap();
/// assert_eq!(response.status(), 200);
/// # }
/// ```
///
/// With tonic, on the server builder:
/// `Server::builder().layer(LockLayer::new(manager, Header::new("x-order-id")))`
/// (gRPC metadata are HTTP/2 headers).
pub struct LockLayer<E> {
    extractor: Arc<E>,
    settings: Arc<Settings>,
}

impl<E> LockLayer<E> {
    /// A layer taking locks from `manager`, named by `extractor`: a
    /// [`Header`](crate::Header), a [`PathSegment`](crate::PathSegment), or a
    /// closure over the request (annotate its argument's type).
    ///
    /// ```
    /// use axum::{body::Body, routing::put, Router};
    /// use distlock_tower::{LockLayer, PathSegment};
    ///
    /// let manager = distlock::LockManager::in_memory();
    /// let by_path = LockLayer::new(manager.clone(), PathSegment::new(1));
    ///
    /// // Lock per tenant and document; other requests run unlocked.
    /// let by_closure = LockLayer::new(manager, |req: &http::Request<Body>| {
    ///     let tenant = req.headers().get("x-tenant")?.to_str().ok()?;
    ///     let doc = req.uri().path().strip_prefix("/docs/")?;
    ///     Some(format!("{tenant}/doc:{doc}"))
    /// });
    /// let app: Router = Router::new()
    ///     .route("/docs/{id}", put(|| async { "saved" }))
    ///     .layer(by_closure);
    /// ```
    pub fn new(manager: LockManager, extractor: E) -> Self {
        LockLayer {
            extractor: Arc::new(extractor),
            settings: Arc::new(Settings {
                manager,
                options: LockOptions::default(),
                wait: DEFAULT_WAIT,
                retry_after: DEFAULT_RETRY_AFTER,
                on_rejection: None,
            }),
        }
    }

    fn settings(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.settings)
    }

    /// Sets the locks' TTL: how long a key outlives a server that died holding
    /// it. Locks are renewed every `ttl / 3` while held.
    ///
    /// Fails with [`ErrorCode::InvalidOptions`](distlock::ErrorCode::InvalidOptions)
    /// when `ttl` is shorter than 1 s (etcd leases count in seconds).
    ///
    /// ```
    /// # use distlock_tower::{Header, LockLayer};
    /// use std::time::Duration;
    /// let layer = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key"))
    ///     .ttl(Duration::from_secs(5))?;
    /// assert_eq!(layer.lock_options().renew_interval, Duration::from_secs(5) / 3);
    ///
    /// let too_short = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key"))
    ///     .ttl(Duration::from_millis(500));
    /// assert_eq!(too_short.unwrap_err().code(), distlock::ErrorCode::InvalidOptions);
    /// # Ok::<(), distlock::LockError>(())
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Result<Self, LockError> {
        let options = self.settings().options.clone().ttl(ttl);
        let options = if options.auto_renew {
            options.renew_interval((ttl / 3).max(Duration::from_millis(1)))
        } else {
            options
        };
        self.options(options)
    }

    /// Sets the lock options (TTL, renewal, retries of backend failures)
    /// in full.
    ///
    /// Fails with [`ErrorCode::InvalidOptions`](distlock::ErrorCode::InvalidOptions)
    /// when the options are invalid ([`LockOptions::validate`]).
    ///
    /// ```
    /// # use distlock_tower::{Header, LockLayer};
    /// use distlock::LockOptions;
    /// use std::time::Duration;
    /// let layer = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key"))
    ///     .options(LockOptions::default().max_retries(3))?;
    /// assert_eq!(layer.lock_options().max_retries, 3);
    /// # Ok::<(), distlock::LockError>(())
    /// ```
    pub fn options(mut self, options: LockOptions) -> Result<Self, LockError> {
        options.validate()?;
        self.settings().options = options;
        Ok(self)
    }

    /// The lock options in use.
    ///
    /// ```
    /// # use distlock_tower::{Header, LockLayer};
    /// let layer = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key"));
    /// assert_eq!(layer.lock_options(), &distlock::LockOptions::default());
    /// ```
    pub fn lock_options(&self) -> &LockOptions {
        &self.settings.options
    }

    /// Sets how long a request waits for its lock (default 10 s); then it is
    /// rejected with [`RejectionKind::Timeout`](crate::RejectionKind::Timeout).
    /// The wait includes reaching etcd, so a backend that does not answer also
    /// ends in a rejection after this long. `Duration::ZERO` tries once and
    /// rejects a request whose key is busy right away.
    ///
    /// ```
    /// # use distlock_tower::{Header, LockLayer};
    /// use std::time::Duration;
    /// let layer = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key"))
    ///     .wait(Duration::from_millis(500));
    /// ```
    pub fn wait(mut self, wait: Duration) -> Self {
        self.settings().wait = wait;
        self
    }

    /// Sets the `Retry-After` advice of the default 503 responses (default
    /// 1 s; sent in whole seconds, rounded up).
    ///
    /// ```
    /// # use distlock_tower::{Header, LockLayer};
    /// use std::time::Duration;
    /// let layer = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key"))
    ///     .retry_after(Duration::from_secs(5));
    /// ```
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.settings().retry_after = after;
        self
    }

    /// Answers rejected requests with `handler`'s response instead of the
    /// [default](Rejection::default_response). The body is any
    /// `Into<Bytes>` (a `String`, a `&'static str`, a `Vec<u8>`).
    ///
    /// ```
    /// use distlock_tower::{Header, LockLayer, Rejection, RejectionKind};
    /// use http::{Response, StatusCode};
    ///
    /// let layer = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key"))
    ///     .on_rejection(|rejection: &Rejection| match rejection.kind() {
    ///         RejectionKind::Timeout if !rejection.is_grpc() => Response::builder()
    ///             .status(StatusCode::TOO_MANY_REQUESTS)
    ///             .header("content-type", "application/json")
    ///             .body(format!(r#"{{"error":"busy","key":"{}"}}"#, rejection.key()).into())
    ///             .unwrap(),
    ///         _ => rejection.default_response(),
    ///     });
    /// ```
    pub fn on_rejection<F>(mut self, handler: F) -> Self
    where
        F: Fn(&Rejection) -> Response<Bytes> + Send + Sync + 'static,
    {
        self.settings().on_rejection = Some(Arc::new(handler));
        self
    }
}

impl<E> Clone for LockLayer<E> {
    fn clone(&self) -> Self {
        LockLayer {
            extractor: Arc::clone(&self.extractor),
            settings: Arc::clone(&self.settings),
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for LockLayer<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockLayer")
            .field("extractor", &self.extractor)
            .field("settings", &self.settings)
            .finish()
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("namespace", &self.manager.namespace())
            .field("options", &self.options)
            .field("wait", &self.wait)
            .field("retry_after", &self.retry_after)
            .field("on_rejection", &self.on_rejection.is_some())
            .finish()
    }
}

impl<S, E> Layer<S> for LockLayer<E> {
    type Service = LockService<S, E>;

    fn layer(&self, inner: S) -> Self::Service {
        LockService::new(
            inner,
            Arc::clone(&self.extractor),
            Arc::clone(&self.settings),
        )
    }
}
