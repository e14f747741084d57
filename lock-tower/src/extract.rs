//! Key extractors: which lock, if any, a request needs.
//!
//! A [`KeyExtractor`] looks at a request and returns the name of the lock to
//! hold while it runs, or `None` to let it through unlocked. The name is used
//! as is, so a background job that locks the same name with
//! [`LockManager::new_lock`](distlock::LockManager::new_lock) contends with the
//! requests.
//!
//! Ready-made: [`Header`] (a header's value), [`PathSegment`] (one segment of
//! the path), and any closure `Fn(&http::Request<B>) -> Option<String>`.
//!
//! ```
//! use distlock_tower::extract::{Header, KeyExtractor, PathSegment};
//!
//! let req = http::Request::post("/orders/42/pay").header("x-tenant", "acme").body(()).unwrap();
//! assert_eq!(PathSegment::new(1).extract(&req).as_deref(), Some("42"));
//! assert_eq!(Header::new("x-tenant").extract(&req).as_deref(), Some("acme"));
//! let closure = |req: &http::Request<()>| Some(req.method().to_string());
//! assert_eq!(closure.extract(&req).as_deref(), Some("POST"));
//! ```

use http::header::{HeaderName, InvalidHeaderName};
use http::Request;

/// Gives the lock name a request must hold, or `None` for no lock.
///
/// Implemented for closures `Fn(&http::Request<B>) -> Option<String>`, and by
/// [`Header`] and [`PathSegment`]. It runs on every request, before the lock
/// is taken, so it should be cheap and must not block.
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
    /// assert_eq!(Header::new("x-key").extract(&req).as_deref(), Some("k"));
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
/// key. An empty value without a prefix is an invalid lock name: the request
/// is answered 400 (gRPC `INVALID_ARGUMENT`).
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
        let value = String::from_utf8_lossy(value.as_bytes());
        Some(format!("{}{}", self.prefix, value))
    }
}

/// One segment of the request path, counted from 0 after the leading `/`
/// (in `/orders/42/pay`, segment 0 is `orders` and segment 1 is `42`),
/// percent-decoded, after an optional prefix. A shorter path passes unlocked.
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
}

impl<B> KeyExtractor<B> for PathSegment {
    fn extract(&self, request: &Request<B>) -> Option<String> {
        let path = request.uri().path();
        let segment = path
            .strip_prefix('/')
            .unwrap_or(path)
            .split('/')
            .nth(self.index)?;
        let mut key = self.prefix.clone();
        key.push_str(&percent_decode(segment));
        Some(key)
    }
}

/// Decodes `%XX` escapes; malformed escapes stay as they are, and bytes that
/// are not UTF-8 are replaced, so every segment gives a key.
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
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
