//! Typed errors: [`LockError`] and its [`ErrorCode`].

use std::error::Error as StdError;
use std::fmt;

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
    /// The lock name is not acceptable (empty, longer than 1 KiB, or contains NUL).
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
    transient: bool,
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
            transient: false,
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
            transient: false,
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
            transient,
            ..LockError::with_source(ErrorCode::Backend, message, source)
        }
    }

    /// Whether retrying the same backend call later may succeed.
    pub(crate) fn is_transient(&self) -> bool {
        self.transient
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
