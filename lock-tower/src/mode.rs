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

use http::request::Parts;
use http::{Method, Request};

use crate::lock::Take;

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
