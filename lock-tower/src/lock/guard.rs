//! The hold a request runs under, whatever the layer's mode: a lock, a
//! permit, a side of a read-write lock, or this server's leadership of an
//! election ([`Guard`]); and [`HoldKind`], which of them, as handlers see it.

use std::future::Future;
use std::sync::Arc;

use distlock::{Leadership, LockGuard, OwnerScope, Permit, ReadGuard, WriteGuard};

/// Which kind of hold a request runs under ([`HeldLock::kind`](super::HeldLock::kind)):
/// it follows from the layer's [mode](crate::mode) and, for a read-write
/// layer, from the request; behind [`LeaderOnly`](crate::LeaderOnly) it is
/// [`Leader`](HoldKind::Leader).
///
/// New kinds may be added, so matches need a `_` arm.
///
/// ```
/// use distlock_tower::{Header, HeldLock, HoldKind, LockLayer};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let service = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-doc").prefix("doc:"))
///     .read_write()
///     .layer(service_fn(|req: http::Request<String>| async move {
///         let kind = req.extensions().get::<HeldLock>().unwrap().kind();
///         assert_eq!(kind, HoldKind::Read); // a GET
///         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
///     }));
/// let get = http::Request::get("/").header("x-doc", "7").body(String::new()).unwrap();
/// assert_eq!(service.oneshot(get).await.unwrap().status(), 200);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HoldKind {
    /// The key's lock ([`mode::Exclusive`](crate::mode::Exclusive)).
    Lock,
    /// A permit of the key's semaphore ([`mode::Permits`](crate::mode::Permits)).
    Permit,
    /// The read side of the key's read-write lock ([`mode::ReadWrite`](crate::mode::ReadWrite)).
    Read,
    /// The write side of the key's read-write lock ([`mode::ReadWrite`](crate::mode::ReadWrite)).
    Write,
    /// This server's leadership of an election ([`LeaderOnly`](crate::LeaderOnly)):
    /// the key is the election's name, the fencing token the leadership's.
    Leader,
}

impl HoldKind {
    /// What the hold is, for messages: "{what} `key` was lost".
    pub(crate) fn what(self) -> &'static str {
        match self {
            HoldKind::Lock => "lock",
            HoldKind::Permit => "a permit of semaphore",
            HoldKind::Read => "the read lock of",
            HoldKind::Write => "the write lock of",
            HoldKind::Leader => "leadership of election",
        }
    }
}

/// A request's guard, of whichever kind; released when dropped (a
/// leadership is shared by the requests it serves and its
/// [`Candidacy`](crate::Candidacy): dropping one share resigns nothing).
#[derive(Debug)]
pub(crate) enum Guard {
    Lock(LockGuard),
    Permit(Permit),
    Read(ReadGuard),
    Write(WriteGuard),
    Leader(Arc<Leadership>),
}

impl Guard {
    pub(crate) fn kind(&self) -> HoldKind {
        match self {
            Guard::Lock(_) => HoldKind::Lock,
            Guard::Permit(_) => HoldKind::Permit,
            Guard::Read(_) => HoldKind::Read,
            Guard::Write(_) => HoldKind::Write,
            Guard::Leader(_) => HoldKind::Leader,
        }
    }

    pub(crate) fn fencing_token(&self) -> u64 {
        match self {
            Guard::Lock(g) => g.fencing_token(),
            Guard::Permit(g) => g.fencing_token(),
            Guard::Read(g) => g.fencing_token(),
            Guard::Write(g) => g.fencing_token(),
            Guard::Leader(g) => g.fencing_token(),
        }
    }

    /// Resolves when the hold is lost (or released).
    pub(crate) fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        // One future type for every kind: each `lost()` is a distinct opaque type.
        let lost: super::future::BoxFuture<()> = match self {
            Guard::Lock(g) => Box::pin(g.lost()),
            Guard::Permit(g) => Box::pin(g.lost()),
            Guard::Read(g) => Box::pin(g.lost()),
            Guard::Write(g) => Box::pin(g.lost()),
            Guard::Leader(g) => Box::pin(g.lost()),
        };
        lost
    }

    /// The owner scope the request's handler runs in. A permit has none: it
    /// is one of `n`, not a lock that code inside the request could
    /// re-enter, so the handler runs in the scope around the request, if any
    /// (normally none: `distlock::current_lock()` is `None` there).
    pub(crate) fn scope(&self) -> Option<OwnerScope> {
        match self {
            Guard::Lock(g) => Some(g.scope()),
            Guard::Permit(_) => None,
            Guard::Read(g) => Some(g.scope()),
            Guard::Write(g) => Some(g.scope()),
            Guard::Leader(g) => Some(g.scope()),
        }
    }
}
