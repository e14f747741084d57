//! Key extractors: which lock, if any, a request needs.
//!
//! A [`KeyExtractor`] looks at a request and returns the name of the lock to
//! hold while it runs, or `None` to let it through unlocked. The name is used
//! as is, so a background job that locks the same name with
//! [`LockManager::new_lock`](distlock::LockManager::new_lock) contends with the
//! requests.
//!
//! Ready-made: [`Header`] (a header's value), [`PathSegment`] (one segment of
//! the path), [`Query`] (a query parameter), [`GrpcMethod`] (a metadata entry
//! of one gRPC method), `PathParam` (axum's named path parameter, with the
//! `axum` feature), [`Or`] (the first of two that finds a key), and any
//! closure `Fn(&http::Request<B>) -> Option<String>`.
//!
//! **Prefix every key a client supplies.** The key is a lock name: without a
//! prefix, a client sending `x-order-id: nightly-report` would block the lock
//! a background job takes under that name. With `.prefix("order:")` clients
//! can only name locks under `order:`. An empty client-supplied part (`/orders//pay`,
//! `x-order-id:` with no value, `?id=`) gives the empty key, which is not a valid
//! lock name: the request is answered 400, never run under the shared lock
//! `"order:"`.
//!
//! ```
//! use distlock_tower::extract::{Header, KeyExtractor, PathSegment, Query};
//!
//! let req = http::Request::post("/orders/42/pay?tenant=acme").header("x-tenant", "acme").body(()).unwrap();
//! assert_eq!(PathSegment::new(1).prefix("order:").extract(&req).as_deref(), Some("order:42"));
//! assert_eq!(Header::new("x-tenant").prefix("tenant:").extract(&req).as_deref(), Some("tenant:acme"));
//! assert_eq!(Query::new("tenant").prefix("tenant:").extract(&req).as_deref(), Some("tenant:acme"));
//! let closure = |req: &http::Request<()>| Some(format!("method:{}", req.method()));
//! assert_eq!(closure.extract(&req).as_deref(), Some("method:POST"));
//!
//! let empty = http::Request::post("/orders//pay").body(()).unwrap();
//! assert_eq!(PathSegment::new(1).prefix("order:").extract(&empty).as_deref(), Some("")); // → 400
//! ```

use http::header::{HeaderName, InvalidHeaderName};
use http::Request;

/// Gives the lock name a request must hold, or `None` for no lock.
///
/// Implemented for closures `Fn(&http::Request<B>) -> Option<String>`, and by
/// [`Header`], [`PathSegment`], [`Query`], [`GrpcMethod`], `PathParam` and
/// [`Or`]. It runs on every request, before the lock is taken, so it should
/// be cheap and must not block.
///
/// Return `Some(String::new())` (an invalid lock name) to answer a request
/// 400 / `INVALID_ARGUMENT` because its key is malformed; see
/// [`LockLayer::require_key`](crate::LockLayer::require_key) for requests
/// without a key.
///
/// # Example
///
/// A closure (annotate the request type: the layer cannot infer it):
///
/// ```
/// use distlock_tower::KeyExtractor;
/// use http::Request;
///
/// let by_tenant_and_order = |req: &Request<String>| {
///     let tenant = req.headers().get("x-tenant")?.to_str().ok()?;
///     let order = req.uri().path().strip_prefix("/orders/")?;
///     Some(format!("{tenant}/order:{order}"))
/// };
/// let req = Request::get("/orders/42").header("x-tenant", "acme").body(String::new()).unwrap();
/// assert_eq!(by_tenant_and_order.extract(&req).as_deref(), Some("acme/order:42"));
/// ```
///
/// A type of your own:
///
/// ```
/// use distlock_tower::KeyExtractor;
/// use http::{Method, Request};
///
/// /// Serializes writes to one account; reads run freely.
/// struct AccountWrites;
///
/// impl<B> KeyExtractor<B> for AccountWrites {
///     fn extract(&self, req: &Request<B>) -> Option<String> {
///         if req.method() == Method::GET {
///             return None;
///         }
///         let id = req.uri().path().strip_prefix("/accounts/")?.split('/').next()?;
///         Some(format!("account:{id}"))
///     }
/// }
///
/// let post = Request::post("/accounts/7/deposit").body(()).unwrap();
/// assert_eq!(AccountWrites.extract(&post).as_deref(), Some("account:7"));
/// let get = Request::get("/accounts/7").body(()).unwrap();
/// assert_eq!(AccountWrites.extract(&get), None);
/// ```
pub trait KeyExtractor<B> {
    /// The lock name for `request`, or `None` to run it without a lock.
    ///
    /// ```
    /// use distlock_tower::{Header, KeyExtractor};
    /// let req = http::Request::get("/").header("x-key", "k").body(()).unwrap();
    /// assert_eq!(Header::new("x-key").prefix("k:").extract(&req).as_deref(), Some("k:k"));
    /// ```
    fn extract(&self, request: &Request<B>) -> Option<String>;
}

impl<B, F> KeyExtractor<B> for F
where
    F: Fn(&Request<B>) -> Option<String>,
{
    fn extract(&self, request: &Request<B>) -> Option<String> {
        self(request)
    }
}

/// The value of a request header (its first occurrence), after an optional
/// prefix. A request without the header passes unlocked.
///
/// Bytes that are not UTF-8 are replaced (lossily), so every value gives a
/// key. An empty value gives the empty key, with or without a prefix: an
/// invalid lock name, answered 400 (gRPC `INVALID_ARGUMENT`).
///
/// # Example
///
/// ```
/// use distlock_tower::{Header, KeyExtractor};
/// use http::Request;
///
/// let by_idempotency_key = Header::new("idempotency-key").prefix("idem:");
/// let req = Request::post("/payments").header("Idempotency-Key", "abc").body(()).unwrap();
/// assert_eq!(by_idempotency_key.extract(&req).as_deref(), Some("idem:abc"));
///
/// let without = Request::post("/payments").body(()).unwrap();
/// assert_eq!(by_idempotency_key.extract(&without), None);
/// ```
#[derive(Debug, Clone)]
pub struct Header {
    name: HeaderName,
    prefix: String,
}

impl Header {
    /// Uses the header `name` (case-insensitive).
    ///
    /// # Panics
    ///
    /// When `name` is not a valid header name; see [`Header::try_new`].
    ///
    /// ```
    /// let header = distlock_tower::Header::new("x-order-id");
    /// assert_eq!(header.name(), "x-order-id");
    /// ```
    pub fn new(name: &str) -> Self {
        Self::try_new(name).unwrap_or_else(|e| panic!("invalid header name {name:?}: {e}"))
    }

    /// Uses the header `name`, or fails if it is not a valid header name.
    ///
    /// ```
    /// assert!(distlock_tower::Header::try_new("x-order-id").is_ok());
    /// assert!(distlock_tower::Header::try_new("not a header").is_err());
    /// ```
    pub fn try_new(name: &str) -> Result<Self, InvalidHeaderName> {
        Ok(Header {
            name: HeaderName::try_from(name)?,
            prefix: String::new(),
        })
    }

    /// Puts `prefix` before the header's value, e.g. `"order:"`, so that the
    /// lock name matches what other code (a background job) locks.
    ///
    /// ```
    /// use distlock_tower::{Header, KeyExtractor};
    /// let header = Header::new("x-order-id").prefix("order:");
    /// let req = http::Request::get("/").header("x-order-id", "42").body(()).unwrap();
    /// assert_eq!(header.extract(&req).as_deref(), Some("order:42"));
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// This extractor, or `other` when it finds no key; see [`Or`].
    ///
    /// ```
    /// use distlock_tower::{Header, KeyExtractor};
    /// let id = Header::new("x-order-id").prefix("order:").or(Header::new("x-legacy-order").prefix("order:"));
    /// let req = http::Request::get("/").header("x-legacy-order", "5").body(()).unwrap();
    /// assert_eq!(id.extract(&req).as_deref(), Some("order:5"));
    /// ```
    pub fn or<O>(self, other: O) -> Or<Self, O> {
        Or::new(self, other)
    }

    /// The header's name, in lower case.
    ///
    /// ```
    /// assert_eq!(distlock_tower::Header::new("X-Tenant").name(), "x-tenant");
    /// ```
    pub fn name(&self) -> &str {
        self.name.as_str()
    }
}

impl<B> KeyExtractor<B> for Header {
    fn extract(&self, request: &Request<B>) -> Option<String> {
        let value = request.headers().get(&self.name)?;
        Some(prefixed(
            &self.prefix,
            &String::from_utf8_lossy(value.as_bytes()),
        ))
    }
}

/// `prefix` + `value`, or the empty (invalid, answered 400) key when the
/// client-supplied `value` is empty.
fn prefixed(prefix: &str, value: &str) -> String {
    if value.is_empty() {
        return String::new();
    }
    let mut key = String::with_capacity(prefix.len() + value.len());
    key.push_str(prefix);
    key.push_str(value);
    key
}

/// One segment of the request path, counted from 0 after the leading `/`
/// (in `/orders/42/pay`, segment 0 is `orders` and segment 1 is `42`),
/// percent-decoded, after an optional prefix. A shorter path passes unlocked;
/// an empty segment (`/orders//pay`, `/orders/`) gives the empty key, answered
/// 400.
///
/// The path is the one the layer sees: under axum's `Router::nest`, the
/// nested router's layers see the path with the prefix stripped.
///
/// # Example
///
/// ```
/// use distlock_tower::{KeyExtractor, PathSegment};
/// use http::Request;
///
/// let order = PathSegment::new(1).prefix("order:");
/// let req = Request::post("/orders/42/pay").body(()).unwrap();
/// assert_eq!(order.extract(&req).as_deref(), Some("order:42"));
///
/// let list = Request::get("/orders").body(()).unwrap();
/// assert_eq!(order.extract(&list), None);
/// ```
#[derive(Debug, Clone)]
pub struct PathSegment {
    index: usize,
    prefix: String,
}

impl PathSegment {
    /// Uses segment `index` (0-based) of the path.
    ///
    /// ```
    /// use distlock_tower::{KeyExtractor, PathSegment};
    /// let req = http::Request::get("/users/ann%20lee").body(()).unwrap();
    /// assert_eq!(PathSegment::new(1).extract(&req).as_deref(), Some("ann lee"));
    /// ```
    pub fn new(index: usize) -> Self {
        PathSegment {
            index,
            prefix: String::new(),
        }
    }

    /// Puts `prefix` before the segment, e.g. `"user:"`.
    ///
    /// ```
    /// use distlock_tower::{KeyExtractor, PathSegment};
    /// let req = http::Request::get("/users/7").body(()).unwrap();
    /// let user = PathSegment::new(1).prefix("user:");
    /// assert_eq!(user.extract(&req).as_deref(), Some("user:7"));
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// This extractor, or `other` when it finds no key; see [`Or`].
    ///
    /// ```
    /// use distlock_tower::{Header, KeyExtractor, PathSegment};
    /// let user = PathSegment::new(1).prefix("user:").or(Header::new("x-user").prefix("user:"));
    /// let req = http::Request::get("/me").header("x-user", "7").body(()).unwrap();
    /// assert_eq!(user.extract(&req).as_deref(), Some("user:7"));
    /// ```
    pub fn or<O>(self, other: O) -> Or<Self, O> {
        Or::new(self, other)
    }
}

impl<B> KeyExtractor<B> for PathSegment {
    fn extract(&self, request: &Request<B>) -> Option<String> {
        let path = request.uri().path();
        let segment = path
            .strip_prefix('/')
            .unwrap_or(path)
            .split('/')
            .nth(self.index)?;
        Some(prefixed(&self.prefix, &percent_decode(segment)))
    }
}

/// A query parameter's value (its first occurrence), percent-decoded (`+` is
/// a space), after an optional prefix. A request without the parameter
/// passes unlocked; an empty value (`?id=` or `?id`) gives the empty key,
/// answered 400.
///
/// # Example
///
/// ```
/// use distlock_tower::{KeyExtractor, Query};
/// use http::Request;
///
/// let by_cart = Query::new("cart").prefix("cart:");
/// let req = Request::post("/checkout?cart=c%2017&step=2").body(()).unwrap();
/// assert_eq!(by_cart.extract(&req).as_deref(), Some("cart:c 17"));
///
/// let without = Request::post("/checkout?step=2").body(()).unwrap();
/// assert_eq!(by_cart.extract(&without), None);
/// ```
#[derive(Debug, Clone)]
pub struct Query {
    name: String,
    prefix: String,
}

impl Query {
    /// Uses the query parameter `name` (compared after percent-decoding).
    ///
    /// ```
    /// use distlock_tower::{KeyExtractor, Query};
    /// let req = http::Request::get("/report?user%20id=7").body(()).unwrap();
    /// assert_eq!(Query::new("user id").extract(&req).as_deref(), Some("7"));
    /// ```
    pub fn new(name: impl Into<String>) -> Self {
        Query {
            name: name.into(),
            prefix: String::new(),
        }
    }

    /// Puts `prefix` before the value, e.g. `"cart:"`.
    ///
    /// ```
    /// use distlock_tower::{KeyExtractor, Query};
    /// let req = http::Request::get("/?id=9").body(()).unwrap();
    /// assert_eq!(Query::new("id").prefix("job:").extract(&req).as_deref(), Some("job:9"));
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// This extractor, or `other` when this one finds no key; see [`Or`].
    ///
    /// ```
    /// use distlock_tower::{Header, KeyExtractor, Query};
    /// let either = Query::new("id").prefix("doc:").or(Header::new("x-doc-id").prefix("doc:"));
    /// let req = http::Request::get("/").header("x-doc-id", "4").body(()).unwrap();
    /// assert_eq!(either.extract(&req).as_deref(), Some("doc:4"));
    /// ```
    pub fn or<O>(self, other: O) -> Or<Self, O> {
        Or::new(self, other)
    }
}

impl<B> KeyExtractor<B> for Query {
    fn extract(&self, request: &Request<B>) -> Option<String> {
        let query = request.uri().query()?;
        query.split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name, true) == self.name).then(|| prefixed(&self.prefix, &decode(value, true)))
        })
    }
}

/// The key of the first extractor that finds one: `a.or(b)` tries `a`, and
/// `b` only when `a` gives `None`. A key that `a` finds but is malformed (the
/// empty key) is final: the request is answered 400, not retried with `b`.
///
/// The built-in extractors have an `or` method; [`Or::new`] combines any two,
/// closures included.
///
/// # Example
///
/// ```
/// use distlock_tower::{Header, KeyExtractor, Or, PathSegment};
///
/// // The order from the path, or else from a header.
/// let order = PathSegment::new(1).prefix("order:").or(Header::new("x-order-id").prefix("order:"));
/// let by_path = http::Request::post("/orders/42").body(()).unwrap();
/// let by_header = http::Request::post("/pay").header("x-order-id", "7").body(()).unwrap();
/// assert_eq!(order.extract(&by_path).as_deref(), Some("order:42"));
/// assert_eq!(order.extract(&by_header).as_deref(), Some("order:7"));
///
/// // A closure as the fallback: the tenant from the host name.
/// let tenant = Or::new(Header::new("x-tenant").prefix("tenant:"), |req: &http::Request<()>| {
///     let host = req.headers().get("host")?.to_str().ok()?;
///     Some(format!("tenant:{}", host.split('.').next()?))
/// });
/// let req = http::Request::get("/").header("host", "acme.example.com").body(()).unwrap();
/// assert_eq!(tenant.extract(&req).as_deref(), Some("tenant:acme"));
/// ```
#[derive(Debug, Clone)]
pub struct Or<A, B> {
    first: A,
    second: B,
}

impl<A, B> Or<A, B> {
    /// `first`, or `second` when `first` finds no key.
    ///
    /// ```
    /// use distlock_tower::{Header, KeyExtractor, Or};
    /// let either = Or::new(Header::new("x-a").prefix("a:"), Header::new("x-b").prefix("b:"));
    /// let req = http::Request::get("/").header("x-b", "1").body(()).unwrap();
    /// assert_eq!(either.extract(&req).as_deref(), Some("b:1"));
    /// ```
    pub fn new(first: A, second: B) -> Self {
        Or { first, second }
    }

    /// This extractor, or `other` when it finds no key.
    ///
    /// ```
    /// use distlock_tower::{Header, KeyExtractor, Or, Query};
    /// let any = Or::new(Header::new("x-a").prefix("k:"), Header::new("x-b").prefix("k:")).or(Query::new("k").prefix("k:"));
    /// let req = http::Request::get("/?k=3").body(()).unwrap();
    /// assert_eq!(any.extract(&req).as_deref(), Some("k:3"));
    /// ```
    pub fn or<O>(self, other: O) -> Or<Self, O> {
        Or::new(self, other)
    }
}

impl<A, B, Body> KeyExtractor<Body> for Or<A, B>
where
    A: KeyExtractor<Body>,
    B: KeyExtractor<Body>,
{
    fn extract(&self, request: &Request<Body>) -> Option<String> {
        self.first
            .extract(request)
            .or_else(|| self.second.extract(request))
    }
}

/// For calls to one gRPC method (or every method of a service), a metadata
/// entry's value, after an optional prefix. Other calls, and calls without
/// the entry, pass unlocked; an empty value gives the empty key, answered
/// `INVALID_ARGUMENT`.
///
/// The method is the request path, `/{package}.{Service}/{Method}`;
/// `/{package}.{Service}/*` matches every method of the service. Metadata
/// are HTTP/2 headers, so names are case-insensitive; binary (`-bin`)
/// entries are used as sent (base64). Combine several with
/// [`or`](GrpcMethod::or).
///
/// # Example
///
/// ```
/// use distlock_tower::{GrpcMethod, KeyExtractor};
///
/// // Pay and Refund of one order run one at a time; other methods are not locked.
/// let order = GrpcMethod::new("/shop.v1.Orders/Pay", "x-order-id")
///     .prefix("order:")
///     .or(GrpcMethod::new("/shop.v1.Orders/Refund", "x-order-id").prefix("order:"));
///
/// let pay = http::Request::post("/shop.v1.Orders/Pay").header("x-order-id", "42").body(()).unwrap();
/// assert_eq!(order.extract(&pay).as_deref(), Some("order:42"));
/// let get = http::Request::post("/shop.v1.Orders/Get").header("x-order-id", "42").body(()).unwrap();
/// assert_eq!(order.extract(&get), None);
/// ```
///
/// With tonic: `Server::builder().layer(LockLayer::new(manager, order)).add_service(..)`.
#[derive(Debug, Clone)]
pub struct GrpcMethod {
    /// The full path, or the service's path with a trailing `/` for `/*`.
    method: String,
    any_method: bool,
    metadata: HeaderName,
    prefix: String,
}

impl GrpcMethod {
    /// Locks calls to `method` (`/package.Service/Method`, or
    /// `/package.Service/*`) by the metadata entry `metadata`.
    ///
    /// # Panics
    ///
    /// When `method` or `metadata` is malformed; see [`GrpcMethod::try_new`].
    ///
    /// ```
    /// let by_account = distlock_tower::GrpcMethod::new("/bank.Accounts/*", "x-account-id").prefix("account:");
    /// # let _ = by_account;
    /// ```
    pub fn new(method: &str, metadata: &str) -> Self {
        Self::try_new(method, metadata).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`GrpcMethod::new`], but a malformed `method` (not
    /// `/service/method` or `/service/*`) or `metadata` name is an error.
    ///
    /// ```
    /// use distlock_tower::GrpcMethod;
    /// assert!(GrpcMethod::try_new("/shop.Orders/Pay", "x-order-id").is_ok());
    /// assert!(GrpcMethod::try_new("shop.Orders/Pay", "x-order-id").is_err());
    /// assert!(GrpcMethod::try_new("/shop.Orders/Pay", "not a name").is_err());
    /// ```
    pub fn try_new(method: &str, metadata: &str) -> Result<Self, InvalidGrpcMethod> {
        let invalid = |why: &str| InvalidGrpcMethod(format!("{method:?} / {metadata:?}: {why}"));
        let Some((service, name)) = method.strip_prefix('/').and_then(|m| m.split_once('/')) else {
            return Err(invalid("the method must be `/package.Service/Method`"));
        };
        if service.is_empty() || name.is_empty() || name.contains('/') {
            return Err(invalid("the method must be `/package.Service/Method`"));
        }
        let metadata = HeaderName::try_from(metadata)
            .map_err(|_| invalid("the metadata key is not a valid header name"))?;
        let any_method = name == "*";
        Ok(GrpcMethod {
            method: if any_method {
                format!("/{service}/")
            } else {
                method.to_owned()
            },
            any_method,
            metadata,
            prefix: String::new(),
        })
    }

    /// Puts `prefix` before the metadata value, e.g. `"order:"`.
    ///
    /// ```
    /// use distlock_tower::{GrpcMethod, KeyExtractor};
    /// let m = GrpcMethod::new("/a.B/C", "x-id").prefix("b:");
    /// let req = http::Request::post("/a.B/C").header("x-id", "1").body(()).unwrap();
    /// assert_eq!(m.extract(&req).as_deref(), Some("b:1"));
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// This extractor, or `other` when it finds no key; see [`Or`].
    ///
    /// ```
    /// use distlock_tower::{GrpcMethod, KeyExtractor};
    /// let m = GrpcMethod::new("/a.B/C", "x-id").prefix("k:").or(GrpcMethod::new("/a.B/D", "x-id").prefix("k:"));
    /// let req = http::Request::post("/a.B/D").header("x-id", "2").body(()).unwrap();
    /// assert_eq!(m.extract(&req).as_deref(), Some("k:2"));
    /// ```
    pub fn or<O>(self, other: O) -> Or<Self, O> {
        Or::new(self, other)
    }
}

impl<B> KeyExtractor<B> for GrpcMethod {
    fn extract(&self, request: &Request<B>) -> Option<String> {
        let path = request.uri().path();
        let matches = if self.any_method {
            path.strip_prefix(self.method.as_str())
                .is_some_and(|name| !name.is_empty() && !name.contains('/'))
        } else {
            path == self.method
        };
        if !matches {
            return None;
        }
        let value = request.headers().get(&self.metadata)?;
        Some(prefixed(
            &self.prefix,
            &String::from_utf8_lossy(value.as_bytes()),
        ))
    }
}

/// A [`GrpcMethod`] was given a malformed method path or metadata name.
///
/// ```
/// let err = distlock_tower::GrpcMethod::try_new("Pay", "x-id").unwrap_err();
/// assert!(err.to_string().contains("/package.Service/Method"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidGrpcMethod(String);

impl std::fmt::Display for InvalidGrpcMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid gRPC method extractor {}", self.0)
    }
}

impl std::error::Error for InvalidGrpcMethod {}

/// A named path parameter of the axum route that matched, percent-decoded,
/// after an optional prefix (needs the `axum` feature).
///
/// It reads what axum's router stores in the request's extensions once a
/// route matched, so it works where the layer runs *after* routing: on a
/// `MethodRouter` (`post(h).route_layer(layer)`, the recommended form, see
/// [`LockLayer`](crate::LockLayer#where-to-put-it-in-an-axum-router)), or
/// added with `Router::route_layer` or `Router::layer` (each route's service
/// is wrapped; the router's fallback, under `Router::layer`, has no
/// parameters). It finds nothing, and the request passes
/// unlocked (or is answered 400 with [`require_key`](crate::LockLayer::require_key)),
/// where the layer runs *before* routing: around the whole `Router`
/// (`ServiceBuilder::new().layer(..).service(router)`, `Router::into_service`
/// wrapped by hand, `axum::serve` of a layered router service), or outside
/// axum. There, use [`PathSegment`], possibly as a fallback with
/// [`or`](PathParam::or). Unlike [`PathSegment`], it is unaffected by
/// `Router::nest` prefixes.
///
/// A parameter that is not valid UTF-8 after decoding gives the empty key
/// (answered 400).
///
/// # Example
///
/// ```
/// use axum::{routing::post, Router};
/// use distlock_tower::{LockLayer, PathParam};
///
/// let lock = LockLayer::new(
///     distlock::LockManager::in_memory(),
///     PathParam::new("order_id").prefix("order:"),
/// );
/// // On each route's method router: 404 and 405 answers take no lock.
/// let app: Router = Router::new()
///     .route("/orders/{order_id}/pay", post(|| async { "paid" }).route_layer(lock.clone()))
///     .route("/orders/{order_id}/refund", post(|| async { "refunded" }).route_layer(lock));
/// ```
#[cfg(feature = "axum")]
#[derive(Debug, Clone)]
pub struct PathParam {
    name: String,
    prefix: String,
}

#[cfg(feature = "axum")]
impl PathParam {
    /// Uses the route parameter `name` (`{name}` in the route's path).
    ///
    /// ```
    /// let by_user = distlock_tower::PathParam::new("user_id").prefix("user:");
    /// # let _ = by_user;
    /// ```
    pub fn new(name: impl Into<String>) -> Self {
        PathParam {
            name: name.into(),
            prefix: String::new(),
        }
    }

    /// Puts `prefix` before the parameter's value, e.g. `"user:"`.
    ///
    /// ```
    /// let by_user = distlock_tower::PathParam::new("id").prefix("user:");
    /// # let _ = by_user;
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// This extractor, or `other` when it finds no key; see [`Or`].
    ///
    /// ```
    /// use distlock_tower::{PathParam, PathSegment};
    /// // Outside a Router, fall back to the second path segment.
    /// let order = PathParam::new("id").prefix("order:").or(PathSegment::new(1).prefix("order:"));
    /// # let _ = order;
    /// ```
    pub fn or<O>(self, other: O) -> Or<Self, O> {
        Or::new(self, other)
    }
}

#[cfg(feature = "axum")]
impl<B> KeyExtractor<B> for PathParam {
    fn extract(&self, request: &Request<B>) -> Option<String> {
        use axum::extract::{FromRequestParts, RawPathParams};
        use std::future::Future;
        use std::task::{Context, Poll, Waker};

        // `RawPathParams` reads axum's (private) route parameters from the
        // extensions; its extraction never waits, so one poll completes it.
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.extensions = request.extensions().clone();
        let extraction = RawPathParams::from_request_parts(&mut parts, &());
        let mut extraction = std::pin::pin!(extraction);
        let Poll::Ready(result) = extraction
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        else {
            return None;
        };
        match result {
            Ok(params) => params
                .iter()
                .find(|(name, _)| *name == self.name)
                .map(|(_, value)| prefixed(&self.prefix, value)),
            Err(axum::extract::rejection::RawPathParamsRejection::InvalidUtf8InPathParam(_)) => {
                Some(String::new())
            }
            Err(_) => None,
        }
    }
}

/// Decodes `%XX` escapes; malformed escapes stay as they are, and bytes that
/// are not UTF-8 are replaced, so every segment gives a key.
fn percent_decode(s: &str) -> String {
    decode(s, false)
}

/// [`percent_decode`], and with `plus` also `+` as a space (query strings).
fn decode(s: &str, plus: bool) -> String {
    let escaped = s.contains('%') || (plus && s.contains('+'));
    if !escaped {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if plus && bytes[i] == b'+' {
            out.push(b' ');
            i += 1;
            continue;
        }
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(uri: &str) -> Request<()> {
        Request::get(uri).body(()).unwrap()
    }

    #[test]
    fn path_segments_are_counted_after_the_leading_slash() {
        let req = get("/a/b/c?x=1");
        assert_eq!(PathSegment::new(0).extract(&req).as_deref(), Some("a"));
        assert_eq!(PathSegment::new(2).extract(&req).as_deref(), Some("c"));
        assert_eq!(PathSegment::new(3).extract(&req), None);
        // A trailing slash gives an empty last segment: an invalid lock name,
        // answered 400, rather than silently no lock.
        assert_eq!(
            PathSegment::new(1).extract(&get("/a/")).as_deref(),
            Some("")
        );
    }

    #[test]
    fn an_empty_client_part_is_the_empty_key_even_with_a_prefix() {
        let order = PathSegment::new(1).prefix("order:");
        assert_eq!(order.extract(&get("/orders//pay")).as_deref(), Some(""));
        assert_eq!(order.extract(&get("/orders/")).as_deref(), Some(""));
        assert_eq!(
            order.extract(&get("/orders/%20")).as_deref(),
            Some("order: ")
        );
        let header = Header::new("x-id").prefix("order:");
        let req = Request::get("/").header("x-id", "").body(()).unwrap();
        assert_eq!(header.extract(&req).as_deref(), Some(""));
        let query = Query::new("id").prefix("order:");
        assert_eq!(query.extract(&get("/?id=")).as_deref(), Some(""));
        assert_eq!(query.extract(&get("/?id")).as_deref(), Some(""));
        assert_eq!(query.extract(&get("/?idx=1")), None);
        assert_eq!(query.extract(&get("/")), None);
        let grpc = GrpcMethod::new("/a.B/C", "x-id").prefix("order:");
        let req = Request::post("/a.B/C").header("x-id", "").body(()).unwrap();
        assert_eq!(grpc.extract(&req).as_deref(), Some(""));
    }

    #[test]
    fn query_takes_the_first_occurrence_and_decodes() {
        let q = Query::new("a b");
        assert_eq!(
            q.extract(&get("/?x=1&a+b=1%2B1&a%20b=2")).as_deref(),
            Some("1+1")
        );
        assert_eq!(q.extract(&get("/?a%20b=x+y")).as_deref(), Some("x y"));
    }

    #[test]
    fn or_takes_the_first_key_and_a_malformed_one_is_final() {
        let e = Header::new("x-a")
            .prefix("a:")
            .or(Header::new("x-b").prefix("b:"));
        let both = Request::get("/")
            .header("x-a", "1")
            .header("x-b", "2")
            .body(())
            .unwrap();
        assert_eq!(e.extract(&both).as_deref(), Some("a:1"));
        let empty_a = Request::get("/")
            .header("x-a", "")
            .header("x-b", "2")
            .body(())
            .unwrap();
        assert_eq!(e.extract(&empty_a).as_deref(), Some(""));
        assert_eq!(e.extract(&get("/")), None);
    }

    #[test]
    fn grpc_method_matches_one_method_or_a_whole_service() {
        let call = |path: &str| Request::post(path).header("x-id", "9").body(()).unwrap();
        let one = GrpcMethod::new("/s.v1.Svc/Do", "x-id").prefix("k:");
        assert_eq!(one.extract(&call("/s.v1.Svc/Do")).as_deref(), Some("k:9"));
        assert_eq!(one.extract(&call("/s.v1.Svc/DoMore")), None);
        assert_eq!(one.extract(&call("/s.v1.Other/Do")), None);
        let all = GrpcMethod::new("/s.v1.Svc/*", "X-Id").prefix("k:");
        assert_eq!(all.extract(&call("/s.v1.Svc/Any")).as_deref(), Some("k:9"));
        assert_eq!(all.extract(&call("/s.v1.Svc/")), None);
        assert_eq!(all.extract(&call("/s.v1.Svc/a/b")), None);
        assert_eq!(all.extract(&call("/s.v1.Svc2/Any")), None);
        let without = Request::post("/s.v1.Svc/Do").body(()).unwrap();
        assert_eq!(one.extract(&without), None);
        for bad in ["", "/", "Svc/Do", "/Svc", "/Svc/", "//Do", "/a/b/c"] {
            assert!(GrpcMethod::try_new(bad, "x-id").is_err(), "{bad:?}");
        }
        assert!(GrpcMethod::try_new("/a/b", "bad name").is_err());
    }

    #[test]
    fn percent_decoding_keeps_malformed_escapes() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(percent_decode("%FF"), "\u{FFFD}");
    }

    #[test]
    fn header_takes_the_first_value_and_is_lossy() {
        let req = Request::get("/")
            .header("x-k", "one")
            .header("x-k", "two")
            .body(())
            .unwrap();
        assert_eq!(Header::new("X-K").extract(&req).as_deref(), Some("one"));
        let odd = Request::get("/")
            .header("x-k", http::HeaderValue::from_bytes(b"a\xffb").unwrap())
            .body(())
            .unwrap();
        assert_eq!(
            Header::new("x-k").extract(&odd).as_deref(),
            Some("a\u{FFFD}b")
        );
    }
}
