//! What a [`LockLayer`] takes for each key: its mode, the type parameter `M`
//! of `LockLayer<E, M>`.
//!
//! | mode | made by | a request takes | requests with one key at once, fleet-wide |
//! |---|---|---|---|
//! | [`Exclusive`] (default) | [`LockLayer::new`] | the key's lock | one |
//! | [`Permits`] | [`.permits(n)`](crate::LockLayer::permits) | a permit of the key's semaphore | at most `n` |
//! | [`ReadWrite`] | [`.read_write()`](crate::LockLayer::read_write) | the read or the write side of the key's read-write lock | any number of readers, or one writer |
//!
//! Everything else is the same in every mode: the extractor and its prefix
//! name the lock, semaphore or read-write lock; `wait`, `max_waiters`,
//! `max_hold`, `require_key`, the rejections and their answers; the
//! [`HeldLock`](crate::HeldLock) in the request's extensions (its fencing
//! token is the hold's); the response body carrying the hold until it ends;
//! a lost hold cancelling the handler.
//!
//! A layer has one mode. `.permits(n)` and `.read_write()` exist on a layer
//! whose mode is not chosen yet ([`Unchosen`]), so choosing a second one is a
//! compile error, not a surprise at run time:
//!
//! ```compile_fail,E0277
//! use distlock_tower::{Header, LockLayer};
//!
//! let layer = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key").prefix("k:"))
//!     .permits(4)
//!     .unwrap()
//!     .read_write(); // error: this layer's mode is already chosen
//! ```
//!
//! The mode is part of the layer's type, but not of the services it makes:
//! a [`LockService`](crate::LockService) is the same type in every mode.
//!
//! ```
//! use distlock_tower::mode::{Permits, ReadWrite};
//! use distlock_tower::{Header, LockLayer};
//!
//! let manager = distlock::LockManager::in_memory();
//! let limit: LockLayer<Header, Permits> =
//!     LockLayer::new(manager.clone(), Header::new("x-tenant").prefix("tenant:")).permits(8)?;
//! let rw: LockLayer<Header, ReadWrite> =
//!     LockLayer::new(manager, Header::new("x-doc").prefix("doc:")).read_write();
//! # let _ = (limit, rw);
//! # Ok::<(), distlock::LockError>(())
//! ```
//!
//! [`LockLayer`]: crate::LockLayer
//! [`LockLayer::new`]: crate::LockLayer::new

use std::fmt;
use std::sync::Arc;

use distlock::{ErrorCode, LockError};
use http::request::Parts;
use http::{Method, Request};

use crate::lock::Take;
use crate::LockLayer;

/// The default mode: each request takes its key's lock, so requests with
/// one key run one at a time across the fleet (and exclude every other
/// holder of that lock: a background job's [`Lock`](distlock::Lock), a
/// `#[distributed_lock]` call, the write side of a read-write lock of that
/// name).
///
/// ```
/// use distlock_tower::{mode::Exclusive, Header, LockLayer};
///
/// let layer: LockLayer<Header, Exclusive> =
///     LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-order").prefix("order:"));
/// # let _ = layer;
/// ```
#[derive(Debug)]
pub enum Exclusive {}

/// Made by [`LockLayer::permits`](crate::LockLayer::permits): each request
/// takes a permit of its key's [`Semaphore`](distlock::Semaphore), so at
/// most `n` requests with one key run at once across the fleet.
///
/// ```
/// use distlock_tower::{mode::Permits, Header, LockLayer};
///
/// let layer: LockLayer<Header, Permits> =
///     LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-tenant").prefix("tenant:"))
///         .permits(4)?;
/// # let _ = layer;
/// # Ok::<(), distlock::LockError>(())
/// ```
#[derive(Debug)]
pub enum Permits {}

/// Made by [`LockLayer::read_write`](crate::LockLayer::read_write): each
/// request takes the read or the write side of its key's
/// [`RwLock`](distlock::RwLock), as the layer's rule says (by default: `GET`,
/// `HEAD` and `OPTIONS` read; see [`LockLayer::read_if`](crate::LockLayer::read_if)).
///
/// ```
/// use distlock_tower::{mode::ReadWrite, Header, LockLayer};
///
/// let layer: LockLayer<Header, ReadWrite> =
///     LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-doc").prefix("doc:"))
///         .read_write();
/// # let _ = layer;
/// ```
#[derive(Debug)]
pub enum ReadWrite {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Exclusive {}
}

/// The mode of a layer on which no mode has been chosen yet: only
/// [`Exclusive`], the default. [`LockLayer::permits`](crate::LockLayer::permits)
/// and [`LockLayer::read_write`](crate::LockLayer::read_write) require it,
/// so a layer cannot be given two modes (nor one twice).
///
/// ```
/// fn unchosen<M: distlock_tower::mode::Unchosen>() {}
/// unchosen::<distlock_tower::mode::Exclusive>();
/// ```
#[diagnostic::on_unimplemented(
    message = "this `LockLayer`'s mode is already chosen: `.permits(n)` and `.read_write()` exclude each other",
    label = "called on a `LockLayer<_, {Self}>`",
    note = "a layer takes one kind of hold per key: a permit of a semaphore (`.permits(n)`) or a side of a read-write lock (`.read_write()`); choose one"
)]
pub trait Unchosen: sealed::Sealed {}

impl Unchosen for Exclusive {}

/// Choosing a mode: [`permits`](LockLayer::permits) and
/// [`read_write`](LockLayer::read_write) on a layer whose mode is not
/// chosen yet.
impl<E, M> LockLayer<E, M> {
    /// Limits requests per key instead of serializing them: each request
    /// takes a permit of the [`Semaphore`](distlock::Semaphore) its key
    /// names (same extractor, same prefix) instead of the key's lock, so at
    /// most `n` requests with one key run at once across every server that
    /// shares the etcd namespace. A fleet-wide, per-key concurrency limit:
    /// tower's `ConcurrencyLimit` counts one server's requests, of all keys
    /// together.
    ///
    /// The rest is as for a lock: a request that finds all `n` permits held
    /// waits up to [`wait`](LockLayer::wait), then gets the busy answer
    /// ([`RejectionKind::Timeout`], 429 / `ABORTED`);
    /// [`max_waiters`](LockLayer::max_waiters),
    /// [`max_hold`](LockLayer::max_hold) and
    /// [`require_key`](LockLayer::require_key) apply; the response body
    /// carries the permit to its end; a lost permit cancels the handler
    /// ([`RejectionKind::Lost`]); the handler's [`HeldLock`](crate::HeldLock)
    /// carries the permit's fencing token (and
    /// [`HoldKind::Permit`](crate::HoldKind::Permit)).
    ///
    /// What differs:
    ///
    /// - **Its own key space.** A semaphore `k` and a lock `k` are unrelated:
    ///   a job holding `manager.new_lock("k", ..)` does not hold these
    ///   requests back. A job that should count against the limit takes a
    ///   permit itself: `manager.new_semaphore("k", n, ..)`.
    /// - **One `n` per key, fleet-wide.** Servers that disagree on a key's
    ///   `n` get [`RejectionKind::Misconfigured`] (500 / `INTERNAL`,
    ///   logged at `error`) for it while the others' permits are held: the
    ///   semaphore refuses a count that differs from its holders'.
    /// - **No owner scope.** A permit is one of `n`, not a lock that code in
    ///   the request re-enters: the handler runs in the owner scope around
    ///   the request, if any (normally none: `distlock::current_lock()` is
    ///   `None` in it). Taking the same semaphore again inside the handler
    ///   takes a second permit, and can wait for itself when all `n` are
    ///   held by such requests: don't.
    /// - **Every waiting request is a key in etcd** (a permit is not queued
    ///   in-process first, as a lock's waiters are): bound a hot key's
    ///   waiters with [`max_waiters`](LockLayer::max_waiters).
    ///
    /// Fails with [`ErrorCode::InvalidOptions`](distlock::ErrorCode::InvalidOptions),
    /// as [`ttl`](LockLayer::ttl) does, when `n` is 0 or more than
    /// [`distlock::MAX_PERMITS`]. Only on a layer whose mode is not chosen
    /// yet: with [`read_write`](LockLayer::read_write) it does not compile
    /// (see [`mode`](crate::mode)).
    ///
    /// ```
    /// use distlock::{ErrorCode, LockManager, LockOptions};
    /// use distlock_tower::{Header, HeldLock, LockLayer};
    /// use std::time::Duration;
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), distlock::LockError> {
    /// let manager = LockManager::in_memory();
    /// // At most 2 exports per tenant at once, on all servers together.
    /// let service = LockLayer::new(manager.clone(), Header::new("x-tenant").prefix("export:"))
    ///     .permits(2)?
    ///     .wait(Duration::ZERO)
    ///     .layer(service_fn(|req: http::Request<String>| async move {
    ///         let permit = req.extensions().get::<HeldLock>().unwrap();
    ///         let body = format!("exporting under token {}", permit.fencing_token());
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(body))
    ///     }));
    /// let export = || http::Request::post("/export").header("x-tenant", "7").body(String::new()).unwrap();
    /// assert_eq!(service.clone().oneshot(export()).await.unwrap().status(), 200);
    ///
    /// // Two exports of tenant 7 run elsewhere in the fleet: the third waits (here: not at all).
    /// let elsewhere = manager.peer().new_semaphore("export:7", 2, LockOptions::default())?;
    /// let (_a, _b) = (elsewhere.acquire().await?, elsewhere.acquire().await?);
    /// assert_eq!(service.oneshot(export()).await.unwrap().status(), 429);
    ///
    /// let none = LockLayer::new(manager, Header::new("x-tenant").prefix("export:")).permits(0);
    /// assert_eq!(none.unwrap_err().code(), ErrorCode::InvalidOptions);
    /// # Ok(()) }
    /// ```
    ///
    /// [`RejectionKind::Timeout`]: crate::RejectionKind::Timeout
    /// [`RejectionKind::Lost`]: crate::RejectionKind::Lost
    /// [`RejectionKind::Misconfigured`]: crate::RejectionKind::Misconfigured
    pub fn permits(self, n: u32) -> Result<LockLayer<E, Permits>, LockError>
    where
        M: Unchosen,
    {
        if n == 0 || n > distlock::MAX_PERMITS {
            return Err(LockError::new(
                ErrorCode::InvalidOptions,
                format!(
                    "a LockLayer's permits per key are 1 to {}, not {n}",
                    distlock::MAX_PERMITS
                ),
            ));
        }
        Ok(self.into_mode(Access::Permits(n)))
    }

    /// Lets requests that only read share their key: each request takes the
    /// read or the write side of the [`RwLock`](distlock::RwLock) its key
    /// names (same extractor, same prefix) instead of the key's lock.
    /// `GET`, `HEAD` and `OPTIONS` requests read, every other method
    /// writes; [`read_if`](LockLayer::read_if) sets another rule (gRPC
    /// calls are all `POST`: decide by the path there).
    ///
    /// Readers of a key run at once, fleet-wide; a writer runs alone, with
    /// no reader and no other writer. The queue is FIFO across kinds: a
    /// reader waits for the writers queued before it (a stream of `GET`s
    /// cannot starve a `POST`, and a `GET` that arrives after a `POST`
    /// waits for it), and the readers queued behind a writer start together
    /// when it is done.
    ///
    /// The write side is the key's lock: write requests and the holders of
    /// `manager.new_lock(key, ..)` (a background job, a `#[distributed_lock]`
    /// call, an exclusive `LockLayer`'s requests) exclude each other, and
    /// read requests wait for those too.
    ///
    /// Everything else is as for a lock (`wait` and the busy answer,
    /// `max_waiters`, `max_hold`, `require_key`, the body carrying the hold,
    /// loss). The handler runs in its guard's owner scope:
    /// `distlock::current_lock()` is the request's read or write lock, and
    /// locking the key inside a write request enters a child section of its
    /// hold. Inside a read request, locking the key exclusively fails at
    /// once with `AlreadyHeld` (it would wait for the request itself): writes
    /// belong in write requests. Each reader is a key in etcd
    /// (writers of one server queue in-process first, as locks do).
    ///
    /// Only on a layer whose mode is not chosen yet: with
    /// [`permits`](LockLayer::permits) it does not compile (see
    /// [`mode`](crate::mode)).
    ///
    /// ```
    /// use axum::{routing::get, Router};
    /// use distlock::LockManager;
    /// use distlock_tower::{HeldLock, HoldKind, LockLayer, PathParam};
    /// use tower::ServiceExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// async fn show(lock: HeldLock) -> String {
    ///     format!("{:?}", lock.kind())
    /// }
    /// let layer = LockLayer::new(LockManager::in_memory(), PathParam::new("id").prefix("doc:"))
    ///     .read_write();
    /// // GETs of one document run at once; a PUT runs alone.
    /// let app: Router = Router::new()
    ///     .route("/docs/{id}", get(show).put(show).route_layer(layer));
    ///
    /// let req = |method: &str| {
    ///     http::Request::builder().method(method).uri("/docs/7").body(axum::body::Body::empty()).unwrap()
    /// };
    /// let body = |r: http::Response<axum::body::Body>| async move {
    ///     axum::body::to_bytes(r.into_body(), 64).await.unwrap()
    /// };
    /// assert_eq!(body(app.clone().oneshot(req("GET")).await.unwrap()).await, "Read");
    /// assert_eq!(body(app.oneshot(req("PUT")).await.unwrap()).await, "Write");
    /// # }
    /// ```
    pub fn read_write(self) -> LockLayer<E, ReadWrite>
    where
        M: Unchosen,
    {
        self.into_mode(Access::ReadWrite(None))
    }
}

/// The rule of a read-write layer.
impl<E> LockLayer<E, ReadWrite> {
    /// Sets which requests only read (and take the read side of their
    /// key's read-write lock); the others write. `rule` sees the request's
    /// head: method, URI, headers, and extensions (axum's `MatchedPath`,
    /// for one). It replaces the default rule (`GET`, `HEAD` and `OPTIONS`
    /// read), and runs once per keyed request, before its wait; it cannot
    /// see the body.
    ///
    /// With gRPC every call is a `POST`, so decide by the path,
    /// `/package.Service/Method`, which names the method (gRPC metadata are
    /// headers too).
    ///
    /// ```
    /// use distlock_tower::{Header, HeldLock, HoldKind, LockLayer};
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// // tonic: Server::builder().layer(layer).add_service(OrdersServer::new(orders))
    /// let layer = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-order-id").prefix("order:"))
    ///     .read_write()
    ///     .read_if(|head: &http::request::Parts| {
    ///         matches!(head.uri.path(), "/shop.v1.Orders/GetOrder" | "/shop.v1.Orders/ListItems")
    ///     });
    /// let service = layer.layer(service_fn(|req: http::Request<String>| async move {
    ///     let kind = req.extensions().get::<HeldLock>().unwrap().kind();
    ///     let read = req.uri().path().ends_with("/GetOrder");
    ///     assert_eq!(kind, if read { HoldKind::Read } else { HoldKind::Write });
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    /// }));
    ///
    /// let call = |method: &str| {
    ///     http::Request::post(format!("/shop.v1.Orders/{method}"))
    ///         .header("content-type", "application/grpc")
    ///         .header("x-order-id", "42")
    ///         .body(String::new())
    ///         .unwrap()
    /// };
    /// assert_eq!(service.clone().oneshot(call("GetOrder")).await.unwrap().status(), 200);
    /// assert_eq!(service.oneshot(call("PayOrder")).await.unwrap().status(), 200);
    /// # }
    /// ```
    pub fn read_if<F>(mut self, rule: F) -> Self
    where
        F: Fn(&http::request::Parts) -> bool + Send + Sync + 'static,
    {
        self.settings().access = Access::ReadWrite(Some(Arc::new(rule)));
        self
    }
}

/// A rule that says whether a request only reads (see
/// [`LockLayer::read_if`](crate::LockLayer::read_if)).
type ReadRule = dyn Fn(&Parts) -> bool + Send + Sync;

/// The mode at run time: what each request takes of its key.
#[derive(Clone)]
pub(crate) enum Access {
    Exclusive,
    Permits(u32),
    /// The read side when the rule says so (by default: a safe method).
    ReadWrite(Option<Arc<ReadRule>>),
}

impl Access {
    /// What `req` takes of its key; `req` comes back as it was.
    pub(crate) fn take<B>(&self, req: Request<B>) -> (Take, Request<B>) {
        let read = match self {
            Access::Exclusive => return (Take::Lock, req),
            Access::Permits(n) => return (Take::Permit(*n), req),
            Access::ReadWrite(None) => reads(req.method()),
            Access::ReadWrite(Some(rule)) => {
                let (parts, body) = req.into_parts();
                let read = rule(&parts);
                return (side(read), Request::from_parts(parts, body));
            }
        };
        (side(read), req)
    }
}

fn side(read: bool) -> Take {
    if read {
        Take::Read
    } else {
        Take::Write
    }
}

/// The default rule: the methods that only read (RFC 9110 §9.2.1's safe
/// methods that this layer serves; `TRACE` is answered by proxies, if at all).
pub(crate) fn reads(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Access::Exclusive => f.write_str("Exclusive"),
            Access::Permits(n) => f.debug_tuple("Permits").field(n).finish(),
            Access::ReadWrite(None) => f.write_str("ReadWrite(GET, HEAD, OPTIONS read)"),
            Access::ReadWrite(Some(_)) => f.write_str("ReadWrite(read_if)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, path: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap()
    }

    #[test]
    fn safe_methods_read_by_default_and_others_write() {
        let access = Access::ReadWrite(None);
        for (method, take) in [
            (Method::GET, Take::Read),
            (Method::HEAD, Take::Read),
            (Method::OPTIONS, Take::Read),
            (Method::POST, Take::Write),
            (Method::PUT, Take::Write),
            (Method::PATCH, Take::Write),
            (Method::DELETE, Take::Write),
        ] {
            assert_eq!(
                access.take(request(method.clone(), "/")).0,
                take,
                "{method}"
            );
        }
    }

    #[test]
    fn a_rule_decides_and_the_request_comes_back_whole() {
        let access = Access::ReadWrite(Some(Arc::new(|p: &Parts| p.uri.path().ends_with("/Get"))));
        let mut req = request(Method::POST, "/shop.v1.Orders/Get");
        req.extensions_mut().insert(7u8);
        let (take, req) = access.take(req);
        assert_eq!(take, Take::Read);
        assert_eq!(req.uri().path(), "/shop.v1.Orders/Get");
        assert_eq!(req.extensions().get::<u8>(), Some(&7));
        let (take, _) = access.take(request(Method::POST, "/shop.v1.Orders/Pay"));
        assert_eq!(take, Take::Write);
        assert_eq!(
            Access::Permits(3).take(request(Method::GET, "/")).0,
            Take::Permit(3)
        );
        assert_eq!(
            Access::Exclusive.take(request(Method::GET, "/")).0,
            Take::Lock
        );
    }
}
