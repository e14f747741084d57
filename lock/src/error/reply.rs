//! How a failed lock call answers a service's client: the HTTP status and
//! gRPC code of each [`ErrorCode`] (the status table of [`LockError`]), and
//! the conversions into a `tonic::Status` (feature `tonic`) and an axum
//! response (feature `axum`).

use super::{ErrorCode, LockError};

impl ErrorCode {
    /// The HTTP status a service answers with when a lock call fails with
    /// this code: what `impl IntoResponse for LockError` (feature `axum`)
    /// sends, and the status table of [`LockError`].
    ///
    /// ```
    /// use distlock::ErrorCode;
    /// assert_eq!(ErrorCode::Timeout.http_status(), 429);
    /// assert_eq!(ErrorCode::Backend.http_status(), 503);
    /// assert_eq!(ErrorCode::InvalidKey.http_status(), 400);
    /// ```
    pub fn http_status(self) -> u16 {
        self.reply().http
    }

    /// The gRPC status code (its number: `tonic::Code::from_i32` takes it)
    /// a service answers with when a lock call fails with this code: what
    /// `impl From<LockError> for tonic::Status` (feature `tonic`) makes.
    ///
    /// ```
    /// use distlock::ErrorCode;
    /// assert_eq!(ErrorCode::Timeout.grpc_code(), 10); // ABORTED
    /// assert_eq!(ErrorCode::Backend.grpc_code(), 14); // UNAVAILABLE
    /// ```
    pub fn grpc_code(self) -> i32 {
        self.reply().grpc
    }

    /// How a failure with this code answers a client, in one place: the
    /// status table of [`LockError`].
    pub(super) fn reply(self) -> Reply {
        use ErrorCode as C;
        let (http, grpc) = match self {
            C::Timeout => (429, GRPC_ABORTED),
            C::Backend | C::Closed => (503, GRPC_UNAVAILABLE),
            C::Expired => (503, GRPC_ABORTED),
            C::InvalidKey => (400, GRPC_INVALID_ARGUMENT),
            C::NotHeld => (409, GRPC_FAILED_PRECONDITION),
            C::PermissionDenied | C::InvalidOptions | C::AlreadyHeld => (500, GRPC_INTERNAL),
        };
        let message = match self {
            C::Timeout => "resource busy: its lock was not acquired in time; retry later",
            C::Backend => "the lock service is unavailable; retry later",
            C::Closed => "the lock service is unavailable; retry later",
            C::Expired => {
                "the resource's lock was lost while handling the request; \
                 it may have been partly carried out"
            }
            C::InvalidKey => "invalid lock key for this request",
            C::NotHeld => "the resource's lock is not held",
            C::PermissionDenied | C::InvalidOptions | C::AlreadyHeld => {
                "the server cannot lock the resource as configured"
            }
        };
        Reply {
            http,
            grpc,
            // A busy resource or an unavailable service: nothing ran, retry later.
            retry_later: matches!(self, C::Timeout | C::Backend | C::Closed),
            message,
        }
    }
}

/// gRPC status codes (google.rpc.Code), as numbers: the base layer names
/// no tonic type outside the `tonic` feature.
const GRPC_INVALID_ARGUMENT: i32 = 3;
const GRPC_FAILED_PRECONDITION: i32 = 9;
const GRPC_ABORTED: i32 = 10;
const GRPC_INTERNAL: i32 = 13;
const GRPC_UNAVAILABLE: i32 = 14;

/// The retry advice of answers whose call may succeed later: 1 s, the
/// layer's default (`LockLayer::retry_after`), as HTTP's `Retry-After` (s)
/// and gRPC's `grpc-retry-pushback-ms` (gRPC's retry design, A6).
#[cfg(any(feature = "axum", feature = "tonic"))]
const RETRY_AFTER: (&str, &str) = ("1", "1000");

/// How a failure answers a client (see [`ErrorCode::reply`]).
#[cfg_attr(not(any(feature = "axum", feature = "tonic")), allow(dead_code))]
pub(super) struct Reply {
    pub(super) http: u16,
    pub(super) grpc: i32,
    /// Whether the answer advises a retry later (`Retry-After`, a gRPC
    /// pushback): the call did not run, and may succeed later.
    pub(super) retry_later: bool,
    /// For the client: names neither the lock nor backend details (the
    /// error itself goes to the log and stays attached to the answer).
    pub(super) message: &'static str,
}

impl LockError {
    /// Logs the error that becomes a client's answer: server faults (500)
    /// as warnings, the rest at debug level.
    #[cfg(any(feature = "axum", feature = "tonic"))]
    fn log_reply(&self, reply: &Reply) {
        if reply.http == 500 {
            tracing::warn!(error = %self, status = reply.http, "lock error answered as a server fault");
        } else {
            tracing::debug!(error = %self, status = reply.http, "lock error answered");
        }
    }
}

/// A failed lock call as a gRPC status (feature `tonic`), so that a tonic
/// service method returning `Result<Response<T>, Status>` can `?` a
/// [`LockError`] and carry `#[distributed_lock]` without glue. The code
/// follows the table of [`LockError`]; the message is a short one for the
/// client (no lock name, no backend details); the `LockError` is the
/// status's [`source`](std::error::Error::source) and is logged. Its
/// metadata carries gRPC's retry advice, as the layer's answers do:
/// `grpc-retry-pushback-ms: 1000` where a retry later may help, `-1` (do not
/// re-send) for a lock lost while the work ran.
///
/// ```
/// use distlock::{ErrorCode, LockError};
///
/// let status = tonic::Status::from(LockError::new(ErrorCode::Timeout, "lock `order:42` busy"));
/// assert_eq!(status.code(), tonic::Code::Aborted);
/// assert_eq!(status.metadata().get("grpc-retry-pushback-ms").unwrap(), "1000");
/// let status = tonic::Status::from(LockError::new(ErrorCode::Expired, "lease gone"));
/// assert_eq!(status.code(), tonic::Code::Aborted);
/// assert_eq!(status.metadata().get("grpc-retry-pushback-ms").unwrap(), "-1");
/// let status = tonic::Status::from(LockError::new(ErrorCode::InvalidKey, "empty name"));
/// assert_eq!(status.code(), tonic::Code::InvalidArgument);
/// ```
#[cfg(feature = "tonic")]
impl From<LockError> for tonic::Status {
    fn from(err: LockError) -> Self {
        let reply = err.code.reply();
        err.log_reply(&reply);
        let mut status = tonic::Status::new(tonic::Code::from_i32(reply.grpc), reply.message);
        let pushback = match err.code {
            _ if reply.retry_later => Some(RETRY_AFTER.1),
            ErrorCode::Expired => Some("-1"), // do not re-send
            _ => None,
        };
        if let Some(ms) = pushback {
            let value = tonic::metadata::MetadataValue::from_static(ms);
            status
                .metadata_mut()
                .insert("grpc-retry-pushback-ms", value);
        }
        status.set_source(std::sync::Arc::new(err));
        status
    }
}

/// A failed lock call as an HTTP response (feature `axum`), so that an axum
/// handler returning `Result<_, LockError>` (or an error type that delegates
/// to this) answers as the table of [`LockError`] says: the status, a short
/// `text/plain` message for the client (no lock name, no backend details),
/// `Retry-After: 1` where a retry later may help (429, and 503 but for a
/// lost lock). The error is logged and
/// kept in the response's extensions as an `Arc<LockError>`, for middleware
/// that logs or reshapes errors.
///
/// ```
/// use axum::response::IntoResponse;
/// use distlock::{ErrorCode, LockError};
/// use std::sync::Arc;
///
/// let response = LockError::new(ErrorCode::Timeout, "lock `order:42` busy").into_response();
/// assert_eq!(response.status(), 429);
/// assert_eq!(response.headers()["retry-after"], "1");
/// let err = response.extensions().get::<Arc<LockError>>().unwrap();
/// assert_eq!(err.code(), ErrorCode::Timeout);
/// ```
#[cfg(feature = "axum")]
impl axum::response::IntoResponse for LockError {
    fn into_response(self) -> axum::response::Response {
        use axum::http::{header, HeaderValue, StatusCode};
        let reply = self.code.reply();
        self.log_reply(&reply);
        let status = StatusCode::from_u16(reply.http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, reply.message).into_response();
        if reply.retry_later {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER.0));
        }
        response.extensions_mut().insert(std::sync::Arc::new(self));
        response
    }
}
