//! [`LockLayer`]: the configuration, shared by every service it makes.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distlock::{ErrorCode, LockError, LockManager, LockOptions};
use http::{Response, StatusCode};
use tower_layer::Layer;

use super::future::Refusal;
use super::LockService;
use crate::mode::{Access, Exclusive};
use crate::rejection::{Rejection, RejectionKind};
use crate::report::Reporter;
use crate::respond::sealed::Convert;
use crate::respond::{IntoRejectionResponse, RejectionBody};
use crate::GrpcCode;

/// The default `Retry-After` advice.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A rejection handler: builds the response for a request the layer rejects.
type RejectFn = dyn Fn(&Rejection) -> Response<RejectionBody> + Send + Sync;

/// Everything but the extractor; shared by the layer and its services.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) manager: LockManager,
    /// What each request takes of its key: the layer's mode.
    pub(crate) access: Access,
    pub(crate) options: LockOptions,
    pub(crate) wait: Duration,
    pub(crate) retry_after: Duration,
    pub(crate) max_hold: Option<Duration>,
    pub(crate) require_key: bool,
    on_rejection: Option<Arc<RejectFn>>,
    /// HTTP statuses and gRPC codes that replace the kinds' defaults.
    statuses: HashMap<RejectionKind, StatusCode>,
    grpc_codes: HashMap<RejectionKind, GrpcCode>,
    /// Requests waiting per key, shared by every service of the layer.
    pub(crate) waiters: Arc<Waiters>,
    pub(crate) reporter: Arc<Reporter>,
}

/// How many requests wait for each key on this server, and how many may.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    max: Option<usize>,
    count: Mutex<HashMap<String, usize>>,
}

/// One request counted among its key's waiters; uncounted when dropped.
pub(crate) struct WaiterSlot {
    waiters: Arc<Waiters>,
    key: String,
}

impl Waiters {
    /// Counts a request as a waiter for `key`, or refuses it when
    /// `max_waiters` already wait. `None` when there is no limit (nothing to
    /// count).
    pub(crate) fn enter(self: &Arc<Self>, key: &str) -> Result<Option<WaiterSlot>, Refusal> {
        let Some(max) = self.max else {
            return Ok(None);
        };
        // A request acquiring a free key counts too: with a limit of 0, none
        // could ever get in.
        let max = max.max(1);
        let mut count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        let n = count.entry(key.to_owned()).or_default();
        if *n >= max {
            if *n == 0 {
                count.remove(key);
            }
            return Err(Refusal::new(
                RejectionKind::QueueFull,
                LockError::new(
                    ErrorCode::Timeout,
                    format!("{max} request(s) already wait for lock `{key}` on this server"),
                ),
            ));
        }
        *n += 1;
        Ok(Some(WaiterSlot {
            waiters: Arc::clone(self),
            key: key.to_owned(),
        }))
    }

    /// How many requests wait for `key` now.
    #[cfg(test)]
    pub(crate) fn waiting(&self, key: &str) -> usize {
        let count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        count.get(key).copied().unwrap_or(0)
    }
}

impl Drop for WaiterSlot {
    fn drop(&mut self) {
        let mut count = self.waiters.count.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = count.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                count.remove(&self.key);
            }
        }
    }
}

impl Settings {
    /// The defaults: see [`LockLayer`]'s.
    pub(crate) fn new(manager: LockManager) -> Self {
        Settings {
            manager,
            access: Access::Exclusive,
            options: LockOptions::default(),
            wait: distlock::DEFAULT_WAIT, // the kit's one default wait
            retry_after: DEFAULT_RETRY_AFTER,
            max_hold: None,
            require_key: false,
            on_rejection: None,
            statuses: HashMap::new(),
            grpc_codes: HashMap::new(),
            waiters: Arc::default(),
            reporter: Arc::default(),
        }
    }

    /// Answers rejections with `handler`'s response.
    pub(crate) fn set_on_rejection<F, R, T>(&mut self, handler: F)
    where
        F: Fn(&Rejection) -> R + Send + Sync + 'static,
        R: IntoRejectionResponse<T>,
    {
        self.on_rejection = Some(Arc::new(move |r: &Rejection| handler(r).convert()));
    }

    /// Answers HTTP requests rejected for `kind` with `status`.
    pub(crate) fn set_status(&mut self, kind: RejectionKind, status: StatusCode) {
        self.statuses.insert(kind, status);
    }

    /// Answers gRPC calls rejected for `kind` with `code`.
    pub(crate) fn set_grpc_code(&mut self, kind: RejectionKind, code: GrpcCode) {
        self.grpc_codes.insert(kind, code);
    }

    /// The response for `rejection`: the handler's, or the default.
    pub(crate) fn respond(&self, rejection: &Rejection) -> Response<RejectionBody> {
        match &self.on_rejection {
            Some(handler) => handler(rejection),
            None => rejection.default_response().convert(),
        }
    }

    /// The HTTP status `kind` is answered with.
    pub(crate) fn status(&self, kind: RejectionKind) -> StatusCode {
        self.statuses
            .get(&kind)
            .copied()
            .unwrap_or_else(|| kind.default_status())
    }

    /// The gRPC code `kind` is answered with.
    pub(crate) fn grpc_code(&self, kind: RejectionKind) -> GrpcCode {
        self.grpc_codes
            .get(&kind)
            .copied()
            .unwrap_or_else(|| kind.default_grpc_code())
    }
}

/// Serializes requests by key: requests whose [`KeyExtractor`](crate::KeyExtractor)
/// gives the same key run one at a time across every server whose
/// [`LockManager`] shares the etcd namespace; requests with different keys run
/// concurrently; requests without a key pass straight through.
///
/// The lock is held until the response body has been sent (or dropped), so a
/// streamed response is covered to its end. A request that waits longer than
/// [`wait`](LockLayer::wait) for a busy key is answered 429 with
/// `Retry-After` (gRPC: `ABORTED`), not as a server failure; one whose lock
/// backend fails gets 503 (gRPC: `UNAVAILABLE`). See
/// [`RejectionKind`](crate::RejectionKind#default-answers) for every case and
/// why, [`status_for`](LockLayer::status_for) and
/// [`grpc_code_for`](LockLayer::grpc_code_for) to change a code, and
/// [`on_rejection`](LockLayer::on_rejection) to change the whole answer.
///
/// The key is the lock's name as is: a background job that locks the same name
/// with [`LockManager::new_lock`] contends with the requests.
///
/// Defaults: wait 10 s, `Retry-After: 1`, the core's [`LockOptions::default`]
/// (TTL 30 s, renewed every 10 s: a server that dies holding a key blocks it
/// for up to the TTL), no [`max_hold`](LockLayer::max_hold), no
/// [`max_waiters`](LockLayer::max_waiters), requests without a key pass
/// (see [`require_key`](LockLayer::require_key)).
///
/// Put a prefix on every key a client supplies (`Header::new("x-account-id")
/// .prefix("account:")`): the key is a lock name, and without a prefix a
/// client could name, and so block, a lock that a background job uses.
///
/// Capacity limits (tower's `ConcurrencyLimit`, `Buffer`, `RateLimit`) go
/// *inside* this layer: the layer makes its inner service ready only once a
/// request holds its lock, so requests waiting for a busy key take no
/// capacity from other keys. A limit outside the layer counts waiting
/// requests too; bound those with [`max_waiters`](LockLayer::max_waiters).
///
/// # Where to put it in an axum `Router`
///
/// Put it on the routes' method routers with `MethodRouter::route_layer`:
/// `.route("/orders/{id}/pay", post(pay).route_layer(layer.clone()))`. Only
/// requests that reach a handler then take a lock: an unknown path is still
/// 404 and a wrong method still 405, without a lock or a call to etcd, and
/// axum's path parameters are known ([`PathParam`](crate::extract) works).
///
/// The other places wrap more than the handlers:
///
/// | form | unknown path | wrong method |
/// |---|---|---|
/// | `post(h).route_layer(layer)` (recommended) | 404 | 405 |
/// | `Router::route_layer(layer)` | 404 | locks, then 405 |
/// | `Router::layer(layer)` | locks, then 404 (with [`require_key`](LockLayer::require_key) and a key from the path: 400) | locks, then 405 |
/// | around the whole `Router` (`ServiceBuilder`) | as `Router::layer`, and path parameters are not known yet | locks, then 405 |
///
/// `Router::route_layer` wraps each route *with* its method fallback (the
/// 405 answer); `Router::layer` also wraps the router's fallback (the 404
/// answer). With a key from a header, an unknown path or a wrong method
/// then waits for the key (or gets its 429) before its 404 or 405; with
/// `require_key` and a key from the path, an unknown path has no key and is
/// answered 400. (Routes added after `Router::layer` are not wrapped at all.)
///
/// # Example
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
/// let lock = LockLayer::new(manager, Header::new("x-account-id").prefix("account:"))
///     .ttl(Duration::from_secs(10))
///     .expect("10s is a valid TTL")
///     .wait(Duration::from_secs(2));
/// let app: Router = Router::new()
///     .route("/transfer", post(|| async { "done" }).route_layer(lock.clone()))
///     .route("/refund", post(|| async { "refunded" }).route_layer(lock));
///
/// use tower::ServiceExt;
/// let req = |method: &str, path: &str| {
///     http::Request::builder().method(method).uri(path).header("x-account-id", "7")
///         .body(axum::body::Body::empty()).unwrap()
/// };
/// assert_eq!(app.clone().oneshot(req("POST", "/transfer")).await.unwrap().status(), 200);
/// assert_eq!(app.clone().oneshot(req("GET", "/transfer")).await.unwrap().status(), 405); // no lock taken
/// assert_eq!(app.oneshot(req("POST", "/nowhere")).await.unwrap().status(), 404); // no lock taken
/// # }
/// ```
///
/// With tonic, on the server builder:
/// `Server::builder().layer(LockLayer::new(manager, Header::new("x-order-id").prefix("order:")))`
/// (gRPC metadata are HTTP/2 headers).
pub struct LockLayer<E, M = Exclusive> {
    extractor: Arc<E>,
    pub(crate) settings: Arc<Settings>,
    mode: PhantomData<fn() -> M>,
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
    /// let by_path = LockLayer::new(manager.clone(), PathSegment::new(1).prefix("doc:"));
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
            mode: PhantomData,
            settings: Arc::new(Settings::new(manager)),
        }
    }
}

impl<E, M> LockLayer<E, M> {
    pub(crate) fn settings(&mut self) -> &mut Settings {
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
    /// let layer = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key").prefix("k:"))
    ///     .ttl(Duration::from_secs(5))?;
    /// assert_eq!(layer.lock_options().renew_interval, Duration::from_secs(5) / 3);
    ///
    /// let too_short = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key").prefix("k:"))
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
    /// let layer = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key").prefix("k:"))
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
    /// let layer = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key").prefix("k:"));
    /// assert_eq!(layer.lock_options(), &distlock::LockOptions::default());
    /// ```
    pub fn lock_options(&self) -> &LockOptions {
        &self.settings.options
    }

    /// Sets how long a request waits for its lock (default 10 s); then it is
    /// rejected with [`RejectionKind::Timeout`](crate::RejectionKind::Timeout).
    /// The wait includes reaching etcd and the backend's retries, so a backend
    /// that does not answer also ends in a rejection after this long.
    /// `Duration::ZERO` tries once and rejects a request whose key is busy
    /// right away; that one attempt is bounded too, by 1 s, so a zero wait
    /// never hangs on an unreachable backend (that is answered as
    /// [`RejectionKind::Unavailable`], not as a busy key).
    ///
    /// ```
    /// # use distlock_tower::{Header, LockLayer};
    /// use std::time::Duration;
    /// let layer = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key").prefix("k:"))
    ///     .wait(Duration::from_millis(500));
    /// ```
    pub fn wait(mut self, wait: Duration) -> Self {
        self.settings().wait = wait;
        self
    }

    /// Sets the longest a request may hold its key (default: no limit),
    /// counted from the moment it has the lock to the end of its response
    /// body. Past it, the request ends as if its lock were lost: before the
    /// response, the handler is cancelled at its next await and the client
    /// gets a [`RejectionKind::MaxHold`] rejection (503 / `ABORTED`); while
    /// the body streams, the body stops (an HTTP body ends with an error, a
    /// gRPC body with `ABORTED` trailers) and the lock is released. So a
    /// slow-reading client, or a handler that hangs, cannot hold a key forever.
    ///
    /// ```
    /// # use distlock_tower::{Header, LockLayer};
    /// use std::time::Duration;
    /// let layer = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key").prefix("doc:"))
    ///     .max_hold(Duration::from_secs(30));
    /// ```
    pub fn max_hold(mut self, limit: Duration) -> Self {
        self.settings().max_hold = Some(limit);
        self
    }

    /// Sets how many requests may wait for one key on this server (default:
    /// no limit). A request for a key that already has `n` waiters here is
    /// answered at once with [`RejectionKind::QueueFull`] (429 with
    /// `Retry-After` / `RESOURCE_EXHAUSTED`) instead of queueing: load shedding for a
    /// hot key. The request holding the key is not a waiter, but one still
    /// acquiring a free key is, so `0` acts as `1`: a request is let in only
    /// when no other one for its key is waiting or acquiring (it does not
    /// shed every request).
    ///
    /// ```
    /// # use distlock_tower::{Header, LockLayer};
    /// let layer = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key").prefix("cart:"))
    ///     .max_waiters(8);
    /// ```
    pub fn max_waiters(mut self, n: usize) -> Self {
        self.settings().waiters = Arc::new(Waiters {
            max: Some(n),
            count: Mutex::default(),
        });
        self
    }

    /// Answers requests for which the extractor finds no key with
    /// [`RejectionKind::MissingKey`] (400 / `INVALID_ARGUMENT`) instead of
    /// passing them through unlocked. Use it on routes that must never run
    /// unlocked; routes added to an axum `Router` after the layer stay
    /// unaffected.
    ///
    /// ```
    /// use distlock_tower::{Header, LockLayer};
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let service = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-order-id").prefix("order:"))
    ///     .require_key()
    ///     .layer(service_fn(|_req: http::Request<String>| async {
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    ///     }));
    /// let without_key = http::Request::post("/pay").body(String::new()).unwrap();
    /// assert_eq!(service.oneshot(without_key).await.unwrap().status(), 400);
    /// # }
    /// ```
    pub fn require_key(mut self) -> Self {
        self.settings().require_key = true;
        self
    }

    /// Sets the retry advice of the default responses to rejections that
    /// [advise a retry](crate::RejectionKind::advises_retry) (busy key, full
    /// queue, outage): default 1 s, sent as `Retry-After` in whole seconds
    /// (rounded up) and, to gRPC clients, as `grpc-retry-pushback-ms`.
    ///
    /// ```
    /// # use distlock_tower::{Header, LockLayer};
    /// use std::time::Duration;
    /// let layer = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key").prefix("k:"))
    ///     .retry_after(Duration::from_secs(5));
    /// ```
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.settings().retry_after = after;
        self
    }

    /// Answers rejected requests with `handler`'s response instead of the
    /// [default](Rejection::default_response). The handler may return an
    /// `http::Response<Bytes>` (such as the default response, amended), and,
    /// with the `axum` feature, anything axum turns into a response (an
    /// application's own JSON error type, `(StatusCode, Json<_>)`, ...);
    /// without it, any `http::Response<B>` with a body of `Bytes`. See
    /// [`IntoRejectionResponse`](crate::IntoRejectionResponse).
    ///
    /// The handler answers gRPC calls too ([`Rejection::is_grpc`]): return
    /// [`Rejection::default_response`] for those unless you build gRPC
    /// statuses yourself.
    ///
    /// ```
    /// use axum::{http::StatusCode, Json};
    /// use distlock_tower::{Header, LockLayer, Rejection, RejectionKind};
    /// use http::Response;
    ///
    /// #[derive(serde::Serialize)]
    /// struct ApiError { error: &'static str, retry_after_secs: u64 }
    ///
    /// // An application's JSON error type (with the `axum` feature).
    /// let json = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key").prefix("k:"))
    ///     .on_rejection(|r: &Rejection| {
    ///         let body = ApiError { error: r.message(), retry_after_secs: r.retry_after().as_secs() };
    ///         (r.status(), Json(body))
    ///     });
    ///
    /// // The default response, or one built by hand.
    /// let plain = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key").prefix("k:"))
    ///     .on_rejection(|rejection: &Rejection| match rejection.kind() {
    ///         RejectionKind::Timeout if !rejection.is_grpc() => Response::builder()
    ///             .status(StatusCode::CONFLICT)
    ///             .header("content-type", "application/json")
    ///             .body(format!(r#"{{"error":"busy","key":"{}"}}"#, rejection.key()).into())
    ///             .unwrap(),
    ///         _ => rejection.default_response(),
    ///     });
    /// # let _ = (json, plain);
    /// ```
    pub fn on_rejection<F, R, T>(mut self, handler: F) -> Self
    where
        F: Fn(&Rejection) -> R + Send + Sync + 'static,
        R: IntoRejectionResponse<T>,
    {
        self.settings().set_on_rejection(handler);
        self
    }

    /// Answers HTTP requests rejected for `kind` with `status` instead of
    /// the kind's [default](crate::RejectionKind#default-answers), in the
    /// default responses (and in [`Rejection::status`], for a handler given
    /// to [`on_rejection`](LockLayer::on_rejection)). Whether `Retry-After`
    /// is sent still follows the kind
    /// ([`advises_retry`](crate::RejectionKind::advises_retry)).
    ///
    /// ```
    /// use distlock_tower::{Header, LockLayer, RejectionKind};
    /// use http::StatusCode;
    ///
    /// // Clients of this API already treat 409 as "busy, retry later".
    /// let layer = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key").prefix("k:"))
    ///     .status_for(RejectionKind::Timeout, StatusCode::CONFLICT)
    ///     .status_for(RejectionKind::QueueFull, StatusCode::SERVICE_UNAVAILABLE);
    /// # let _ = layer;
    /// ```
    pub fn status_for(mut self, kind: RejectionKind, status: StatusCode) -> Self {
        self.settings().set_status(kind, status);
        self
    }

    /// Answers gRPC calls rejected for `kind` with `code` instead of the
    /// kind's [default](crate::RejectionKind#default-answers); for `Lost`
    /// and `MaxHold`, also the code of the trailers that end a stream cut
    /// off mid-way. Takes a [`GrpcCode`], or with the `tonic` feature a
    /// `tonic::Code`.
    ///
    /// ```
    /// use distlock_tower::{GrpcCode, Header, LockLayer, RejectionKind};
    ///
    /// // This fleet's clients retry UNAVAILABLE only, and a busy key should be retried.
    /// let layer = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key").prefix("k:"))
    ///     .grpc_code_for(RejectionKind::Timeout, GrpcCode::Unavailable)
    ///     .grpc_code_for(RejectionKind::QueueFull, tonic::Code::Unavailable);
    /// # let _ = layer;
    /// ```
    pub fn grpc_code_for(mut self, kind: RejectionKind, code: impl Into<GrpcCode>) -> Self {
        self.settings().set_grpc_code(kind, code.into());
        self
    }

    /// The same layer in another mode.
    pub(crate) fn into_mode<N>(mut self, access: Access) -> LockLayer<E, N> {
        self.settings().access = access;
        LockLayer {
            extractor: self.extractor,
            settings: self.settings,
            mode: PhantomData,
        }
    }
}

impl<E, M> Clone for LockLayer<E, M> {
    fn clone(&self) -> Self {
        LockLayer {
            extractor: Arc::clone(&self.extractor),
            settings: Arc::clone(&self.settings),
            mode: PhantomData,
        }
    }
}

impl<E: fmt::Debug, M> fmt::Debug for LockLayer<E, M> {
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
            .field("access", &self.access)
            .field("options", &self.options)
            .field("wait", &self.wait)
            .field("retry_after", &self.retry_after)
            .field("max_hold", &self.max_hold)
            .field("max_waiters", &self.waiters.max)
            .field("require_key", &self.require_key)
            .field("on_rejection", &self.on_rejection.is_some())
            .field("statuses", &self.statuses)
            .field("grpc_codes", &self.grpc_codes)
            .finish()
    }
}

impl<S, E, M> Layer<S> for LockLayer<E, M> {
    type Service = LockService<S, E>;

    fn layer(&self, inner: S) -> Self::Service {
        LockService::new(
            inner,
            Arc::clone(&self.extractor),
            Arc::clone(&self.settings),
        )
    }
}
