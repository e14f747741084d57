//! Typed errors: [`LockError`] and its [`ErrorCode`].

use std::error::Error as StdError;
use std::fmt;

// How a failure answers a client: HTTP status, gRPC code, and the
// tonic / axum conversions.
mod reply;

/// What went wrong, as a stable code to match on.
///
/// New codes may be added, so matches need a `_` arm.
///
/// # Example
///
/// ```
/// use distlock::{ErrorCode, LockError};
///
/// let err = LockError::new(ErrorCode::Timeout, "waited 10s for lock `order:42`");
/// match err.code() {
///     ErrorCode::Timeout => println!("busy, try later"),
///     _ => println!("failed: {err}"),
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The lock was not acquired within the allowed wait.
    Timeout,
    /// The lock is not held by the caller.
    NotHeld,
    /// The calling task (or owner scope) already holds the lock and re-entry
    /// is off ([`LockOptions::reentrant`](crate::LockOptions::reentrant)).
    AlreadyHeld,
    /// The lock (or the wait for it) was lost: its lease expired or its key was deleted.
    Expired,
    /// The name (of a lock, semaphore, read-write lock or election) is not
    /// acceptable (empty, longer than 1 KiB, or contains NUL).
    InvalidKey,
    /// The [`LockOptions`](crate::LockOptions) are inconsistent.
    InvalidOptions,
    /// The backend (etcd) failed or could not be reached.
    Backend,
    /// The [`LockManager`](crate::LockManager) was closed.
    Closed,
    /// etcd refused the request for good: the user's roles do not grant
    /// access to the key (e.g. a lock outside the namespace the user may
    /// write), or the user name or password is wrong. Retrying does not help.
    PermissionDenied,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorCode::Timeout => "timeout",
            ErrorCode::NotHeld => "not held",
            ErrorCode::AlreadyHeld => "already held",
            ErrorCode::Expired => "expired",
            ErrorCode::InvalidKey => "invalid key",
            ErrorCode::InvalidOptions => "invalid options",
            ErrorCode::Backend => "backend error",
            ErrorCode::Closed => "closed",
            ErrorCode::PermissionDenied => "permission denied",
        })
    }
}

/// The error type of every fallible distlock operation.
///
/// It carries an [`ErrorCode`], a message, and (for backend failures) the
/// underlying error as its [`source`](std::error::Error::source).
/// [`is_retryable`](LockError::is_retryable) says whether the same call may
/// succeed later.
///
/// # In services: HTTP and gRPC answers
///
/// With the features `axum` and `tonic`, a `LockError` is an axum response
/// (`impl IntoResponse`) and converts into a `tonic::Status` (`impl From`),
/// so handlers and `#[distributed_lock]` methods can return it with `?`.
/// Both answer as `distlock_tower::LockLayer` rejects requests by default:
///
/// | [`ErrorCode`] | HTTP | gRPC | why |
/// |---|---|---|---|
/// | `Timeout` | 429 Too Many Requests + `Retry-After` | `ABORTED` + pushback | the resource is busy: retry later; not a server failure |
/// | `Backend` | 503 Service Unavailable + `Retry-After` | `UNAVAILABLE` + pushback | etcd is failing or unreachable |
/// | `Closed` | 503 + `Retry-After` | `UNAVAILABLE` + pushback | the server is shutting down |
/// | `Expired` | 503 | `ABORTED`, pushback `-1` | the lock was lost mid-request, whose work may be partly done: not transparently retryable, retry at a higher level |
/// | `InvalidKey` | 400 Bad Request | `INVALID_ARGUMENT` | the request named a lock that cannot exist |
/// | `NotHeld` | 409 Conflict | `FAILED_PRECONDITION` | the call does not fit the lock's state |
/// | `PermissionDenied`, `InvalidOptions`, `AlreadyHeld` | 500 Internal Server Error | `INTERNAL` | the server is misconfigured (`AlreadyHeld` comes from non-reentrant options: the same owner locked twice) |
///
/// `Retry-After` is 1 s (the layer's default); "pushback" is the gRPC
/// retry advice `grpc-retry-pushback-ms: 1000` in the status's metadata,
/// and `-1` asks retry policies not to re-send. The client gets a short
/// message that names neither the lock nor backend details; the full error
/// is logged (`tracing`: warn for the 500s, debug
/// otherwise) and stays attached (the response's extensions hold an
/// `Arc<LockError>`; the status's `source()` is the error).
/// [`ErrorCode::http_status`] and [`ErrorCode::grpc_code`] give the mapping
/// for other frameworks.
///
/// # Example
///
/// ```
/// use distlock::{ErrorCode, LockManager, LockOptions};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let manager = LockManager::in_memory();
/// let err = manager.new_lock("", LockOptions::default()).unwrap_err();
/// assert_eq!(err.code(), ErrorCode::InvalidKey);
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct LockError {
    code: ErrorCode,
    message: String,
    #[source]
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
    /// What the backend said about retrying; `None` when nobody classified
    /// the error (see [`LockError::is_retryable`]).
    transient: Option<bool>,
}

impl LockError {
    /// An error with a code and a message.
    ///
    /// ```
    /// use distlock::{ErrorCode, LockError};
    /// let err = LockError::new(ErrorCode::NotHeld, "nothing to release");
    /// assert_eq!(err.to_string(), "not held: nothing to release");
    /// ```
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        LockError {
            code,
            message: message.into(),
            source: None,
            transient: None,
        }
    }

    /// An error caused by another error, kept as the [`source`](std::error::Error::source).
    ///
    /// ```
    /// use distlock::{ErrorCode, LockError};
    /// use std::error::Error;
    /// let io = std::io::Error::other("connection reset");
    /// let err = LockError::with_source(ErrorCode::Backend, "put failed", io);
    /// assert_eq!(err.source().unwrap().to_string(), "connection reset");
    /// ```
    pub fn with_source(
        code: ErrorCode,
        message: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> Self {
        LockError {
            code,
            message: message.into(),
            source: Some(source.into()),
            transient: None,
        }
    }

    /// The error's code.
    ///
    /// ```
    /// use distlock::{ErrorCode, LockError};
    /// assert_eq!(LockError::new(ErrorCode::Closed, "bye").code(), ErrorCode::Closed);
    /// ```
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The human-readable message, without the code.
    ///
    /// ```
    /// use distlock::{ErrorCode, LockError};
    /// assert_eq!(LockError::new(ErrorCode::Closed, "bye").message(), "bye");
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn closed() -> Self {
        LockError::new(ErrorCode::Closed, "the lock manager is closed")
    }

    /// A backend failure; `transient` says whether the same call may succeed
    /// later (an unreachable or leaderless cluster) or never will (a denied
    /// permission, a malformed request).
    pub(crate) fn backend(
        message: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
        transient: bool,
    ) -> Self {
        LockError {
            transient: Some(transient),
            ..LockError::with_source(ErrorCode::Backend, message, source)
        }
    }

    /// A backend failure that no retry can fix (an unsupported server, a
    /// client whose runtime is gone): `is_retryable()` is false for it.
    pub(crate) fn backend_for_good(message: impl Into<String>) -> Self {
        LockError {
            transient: Some(false),
            ..LockError::new(ErrorCode::Backend, message)
        }
    }

    /// Whether the backend classified this very error as transient: the
    /// internal retry loops retry exactly these, at once and within their
    /// policy. Errors nobody classified (a wait that ran out during an
    /// outage, a retry policy that gave up) are not retried internally;
    /// [`is_retryable`](Self::is_retryable) is what callers ask.
    pub(crate) fn is_transient(&self) -> bool {
        self.transient == Some(true)
    }

    /// Whether retrying the same call later may succeed — what a client, a
    /// job runner or a retry middleware asks before trying again.
    ///
    /// - [`Timeout`](ErrorCode::Timeout): **yes**, a busy lock may be free later.
    /// - [`Backend`](ErrorCode::Backend): **yes**, unless etcd's answer says
    ///   the same request will always fail (a malformed request, a token
    ///   that re-authenticating did not renew). An outage — no leader, no
    ///   connection, no answer in time, a retry policy that ran out, a wait
    ///   that ended while etcd was failing — is retryable. The error itself
    ///   is asked first, then the errors in its
    ///   [`source`](std::error::Error::source) chain.
    /// - Every other code: **no**, the same call fails the same way:
    ///   [`Expired`](ErrorCode::Expired) (the lock was lost: work done under
    ///   it may have run in part, so retrying is a decision for the caller's
    ///   level — gRPC's `ABORTED` says the same), [`Closed`](ErrorCode::Closed)
    ///   (this manager stays closed), [`PermissionDenied`](ErrorCode::PermissionDenied),
    ///   [`InvalidOptions`](ErrorCode::InvalidOptions), [`InvalidKey`](ErrorCode::InvalidKey),
    ///   [`NotHeld`](ErrorCode::NotHeld), [`AlreadyHeld`](ErrorCode::AlreadyHeld).
    ///
    /// distlock's own retries (`LockOptions::retry_interval`/`max_retries`)
    /// have already run when an error reaches you: retry *later*, with backoff.
    ///
    /// ```
    /// use distlock::{ErrorCode, LockError};
    ///
    /// assert!(LockError::new(ErrorCode::Timeout, "lock `a` busy").is_retryable());
    /// assert!(LockError::new(ErrorCode::Backend, "etcd did not answer").is_retryable());
    /// assert!(!LockError::new(ErrorCode::Expired, "lease gone").is_retryable());
    /// assert!(!LockError::new(ErrorCode::InvalidKey, "empty name").is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self.code {
            ErrorCode::Timeout => true,
            ErrorCode::Backend => self.classified().unwrap_or(true),
            _ => false,
        }
    }

    /// The first transience classification in this error and its source
    /// chain, if any.
    fn classified(&self) -> Option<bool> {
        let mut next: Option<&(dyn StdError + 'static)> = Some(self);
        while let Some(err) = next {
            if let Some(lock) = err.downcast_ref::<LockError>() {
                if let Some(transient) = lock.transient {
                    return Some(transient);
                }
            }
            next = err.source();
        }
        None
    }

    /// The same failure for another caller of a shared request (a batch):
    /// same code and transience, named for `what`, the cause kept as text.
    pub(crate) fn duplicate(&self, what: &str) -> Self {
        LockError {
            code: self.code,
            message: format!("{what}: {}", self.message),
            source: Some(self.to_string().into()),
            transient: self.transient,
        }
    }
}

/// Shorthand for `Result<T, LockError>`.
///
/// ```
/// fn check(n: u32) -> distlock::Result<u32> { Ok(n) }
/// assert_eq!(check(1).unwrap(), 1);
/// ```
pub type Result<T, E = LockError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ErrorCode; 9] = [
        ErrorCode::Timeout,
        ErrorCode::NotHeld,
        ErrorCode::AlreadyHeld,
        ErrorCode::Expired,
        ErrorCode::InvalidKey,
        ErrorCode::InvalidOptions,
        ErrorCode::Backend,
        ErrorCode::Closed,
        ErrorCode::PermissionDenied,
    ];

    #[test]
    fn retryable_is_a_busy_lock_or_an_outage() {
        for code in ALL {
            let retryable = LockError::new(code, "x").is_retryable();
            let expected = matches!(code, ErrorCode::Timeout | ErrorCode::Backend);
            assert_eq!(retryable, expected, "{code:?}");
        }
        let io = || std::io::Error::other("reset");
        let down = LockError::backend("etcd put failed", io(), true);
        let malformed = LockError::backend("etcd put failed", io(), false);
        assert!(down.is_retryable() && down.is_transient());
        assert!(!malformed.is_retryable() && !malformed.is_transient());
        // Wrapped, as a retry policy that ran out or a wait's verdict does:
        // the classification of the cause decides; the wrapper is not
        // retried internally.
        let gave_up = LockError::with_source(ErrorCode::Backend, "still failing", down);
        assert!(gave_up.is_retryable() && !gave_up.is_transient());
        let refused = LockError::with_source(ErrorCode::Backend, "failing", malformed);
        assert!(!refused.is_retryable());
        // A copy for another caller of a batch keeps the classification.
        let copy = LockError::backend("x", io(), false).duplicate("enqueue");
        assert!(!copy.is_retryable());
        // An unclassified outage (no answer in time) is retryable.
        assert!(LockError::new(ErrorCode::Backend, "no answer").is_retryable());
    }

    #[test]
    fn every_code_has_an_answer() {
        let table: Vec<(ErrorCode, u16, i32)> = ALL
            .iter()
            .map(|&c| (c, c.http_status(), c.grpc_code()))
            .collect();
        assert_eq!(
            table,
            [
                (ErrorCode::Timeout, 429, 10),
                (ErrorCode::NotHeld, 409, 9),
                (ErrorCode::AlreadyHeld, 500, 13),
                (ErrorCode::Expired, 503, 10),
                (ErrorCode::InvalidKey, 400, 3),
                (ErrorCode::InvalidOptions, 500, 13),
                (ErrorCode::Backend, 503, 14),
                (ErrorCode::Closed, 503, 14),
                (ErrorCode::PermissionDenied, 500, 13),
            ]
        );
        for code in ALL {
            // Nothing ran and a later try may work; a lost lock's work may
            // have partly run: no advice to re-send.
            let later = matches!(
                code,
                ErrorCode::Timeout | ErrorCode::Backend | ErrorCode::Closed
            );
            assert_eq!(code.reply().retry_later, later, "{code:?}");
        }
    }

    #[cfg(feature = "tonic")]
    #[test]
    fn tonic_status_keeps_the_error_as_its_source() {
        use std::error::Error as _;
        let err = LockError::new(ErrorCode::Backend, "etcd at 10.0.0.7 refused");
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(!status.message().contains("10.0.0.7"), "{status:?}");
        assert_eq!(
            status.metadata().get("grpc-retry-pushback-ms").unwrap(),
            "1000"
        );
        let source = status
            .source()
            .unwrap()
            .downcast_ref::<LockError>()
            .unwrap();
        assert_eq!(source.code(), ErrorCode::Backend);
        let status = tonic::Status::from(LockError::new(ErrorCode::NotHeld, "x"));
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(status.metadata().get("grpc-retry-pushback-ms").is_none());
        let status = tonic::Status::from(LockError::new(ErrorCode::Expired, "x"));
        assert_eq!(
            status.metadata().get("grpc-retry-pushback-ms").unwrap(),
            "-1"
        );
        for code in ALL {
            let status = tonic::Status::from(LockError::new(code, "x"));
            assert_eq!(status.code() as i32, code.grpc_code(), "{code:?}");
        }
    }

    #[cfg(feature = "axum")]
    #[test]
    fn axum_response_has_status_retry_after_and_the_error() {
        use axum::response::IntoResponse;
        for code in ALL {
            let response = LockError::new(code, "lock `secret:1` x").into_response();
            assert_eq!(response.status().as_u16(), code.http_status(), "{code:?}");
            assert_eq!(
                response.headers().contains_key("retry-after"),
                code.reply().retry_later,
                "{code:?}"
            );
            assert_eq!(
                response.headers()["content-type"],
                "text/plain; charset=utf-8"
            );
            let kept = response.extensions().get::<std::sync::Arc<LockError>>();
            assert_eq!(kept.unwrap().code(), code);
        }
    }
}
