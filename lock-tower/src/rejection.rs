//! [`Rejection`]: why a request did not run under its lock, and the response
//! it gets instead.

use std::time::Duration;

use bytes::Bytes;
use distlock::LockError;
use http::{header, HeaderValue, Response, StatusCode};

/// Why the layer answered a request itself instead of running it.
///
/// New kinds may be added, so matches need a `_` arm.
///
/// # Example
///
/// ```
/// use distlock_tower::RejectionKind;
///
/// fn status(kind: RejectionKind) -> u16 {
///     match kind {
///         RejectionKind::InvalidKey => 400,
///         _ => 503,
///     }
/// }
/// assert_eq!(status(RejectionKind::Timeout), 503);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// The lock was not acquired within the layer's [`wait`](crate::LockLayer::wait).
    Timeout,
    /// The extracted key is not a valid lock name (empty, longer than 1 KiB,
    /// or containing NUL).
    InvalidKey,
    /// The lock backend failed, or the manager was closed.
    Unavailable,
    /// The lock was lost (lease expired, force-unlocked) before the service
    /// produced its response; the service's future was dropped.
    Lost,
}

/// A request the layer answered itself: its kind, key, the underlying
/// [`LockError`], and whether it came from a gRPC client.
///
/// [`default_response`](Rejection::default_response) is what the layer sends
/// unless [`LockLayer::on_rejection`](crate::LockLayer::on_rejection) says
/// otherwise:
///
/// | kind | HTTP | gRPC |
/// |---|---|---|
/// | `Timeout`, `Unavailable`, `Lost` | 503 + `Retry-After` | `UNAVAILABLE` |
/// | `InvalidKey` | 400 | `INVALID_ARGUMENT` |
///
/// A request is taken for gRPC when its `content-type` starts with
/// `application/grpc`; its rejection is then a trailers-only gRPC response
/// (HTTP 200 with `grpc-status` and `grpc-message`), as `tonic::Status` makes.
///
/// # Example
///
/// ```
/// use distlock::{ErrorCode, LockError};
/// use distlock_tower::{Rejection, RejectionKind};
///
/// let err = LockError::new(ErrorCode::Timeout, "not acquired within 2s");
/// let rejection = Rejection::new(RejectionKind::Timeout, "order:42", err);
/// let response = rejection.default_response();
/// assert_eq!(response.status(), 503);
/// assert_eq!(response.headers()["retry-after"], "1");
/// ```
#[derive(Debug)]
pub struct Rejection {
    kind: RejectionKind,
    key: String,
    error: LockError,
    pub(crate) grpc: bool,
    pub(crate) retry_after: Duration,
}

impl Rejection {
    /// A rejection of an HTTP (not gRPC) request, advising a retry after 1 s;
    /// for testing a [rejection handler](crate::LockLayer::on_rejection).
    ///
    /// ```
    /// use distlock::{ErrorCode, LockError};
    /// use distlock_tower::{Rejection, RejectionKind};
    ///
    /// let r = Rejection::new(RejectionKind::InvalidKey, "", LockError::new(ErrorCode::InvalidKey, "empty"));
    /// assert_eq!(r.default_response().status(), 400);
    /// ```
    pub fn new(kind: RejectionKind, key: impl Into<String>, error: LockError) -> Self {
        Rejection {
            kind,
            key: key.into(),
            error,
            grpc: false,
            retry_after: Duration::from_secs(1),
        }
    }

    /// Why the request was rejected.
    ///
    /// ```
    /// # use distlock::{ErrorCode, LockError};
    /// # use distlock_tower::{Rejection, RejectionKind};
    /// let r = Rejection::new(RejectionKind::Lost, "k", LockError::new(ErrorCode::Expired, "lost"));
    /// assert_eq!(r.kind(), RejectionKind::Lost);
    /// ```
    pub fn kind(&self) -> RejectionKind {
        self.kind
    }

    /// The lock name the request needed.
    ///
    /// ```
    /// # use distlock::{ErrorCode, LockError};
    /// # use distlock_tower::{Rejection, RejectionKind};
    /// let r = Rejection::new(RejectionKind::Timeout, "order:42", LockError::new(ErrorCode::Timeout, "slow"));
    /// assert_eq!(r.key(), "order:42");
    /// ```
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The error behind the rejection (for logs: its message may name
    /// backend details not meant for clients).
    ///
    /// ```
    /// # use distlock::{ErrorCode, LockError};
    /// # use distlock_tower::{Rejection, RejectionKind};
    /// let r = Rejection::new(RejectionKind::Unavailable, "k", LockError::new(ErrorCode::Backend, "etcd down"));
    /// assert_eq!(r.error().code(), ErrorCode::Backend);
    /// ```
    pub fn error(&self) -> &LockError {
        &self.error
    }

    /// Whether the request was a gRPC call (`content-type: application/grpc...`).
    ///
    /// ```
    /// # use distlock::{ErrorCode, LockError};
    /// # use distlock_tower::{Rejection, RejectionKind};
    /// let r = Rejection::new(RejectionKind::Timeout, "k", LockError::new(ErrorCode::Timeout, "slow"));
    /// assert!(!r.is_grpc());
    /// ```
    pub fn is_grpc(&self) -> bool {
        self.grpc
    }

    /// How long the client is advised to wait before retrying (the layer's
    /// [`retry_after`](crate::LockLayer::retry_after)).
    ///
    /// ```
    /// # use distlock::{ErrorCode, LockError};
    /// # use distlock_tower::{Rejection, RejectionKind};
    /// # use std::time::Duration;
    /// let r = Rejection::new(RejectionKind::Timeout, "k", LockError::new(ErrorCode::Timeout, "slow"));
    /// assert_eq!(r.retry_after(), Duration::from_secs(1));
    /// ```
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// A short message for the client; it names neither the key nor backend
    /// details.
    ///
    /// ```
    /// # use distlock::{ErrorCode, LockError};
    /// # use distlock_tower::{Rejection, RejectionKind};
    /// let r = Rejection::new(RejectionKind::Timeout, "k", LockError::new(ErrorCode::Timeout, "slow"));
    /// assert!(r.message().contains("busy"));
    /// ```
    pub fn message(&self) -> &'static str {
        message(self.kind)
    }

    /// The response the layer sends by default (see the table above): HTTP
    /// 503 with `Retry-After` in whole seconds (rounded up) or 400, with the
    /// [`message`](Rejection::message) as a text body; for gRPC, a
    /// trailers-only response with `UNAVAILABLE` or `INVALID_ARGUMENT`.
    ///
    /// A custom handler can start from it:
    ///
    /// ```
    /// # use distlock::{ErrorCode, LockError};
    /// # use distlock_tower::{Rejection, RejectionKind};
    /// let r = Rejection::new(RejectionKind::Timeout, "k", LockError::new(ErrorCode::Timeout, "slow"));
    /// let mut response = r.default_response();
    /// response.headers_mut().insert("x-lock-key", r.key().parse().unwrap());
    /// assert_eq!(response.headers()["content-type"], "text/plain; charset=utf-8");
    /// ```
    pub fn default_response(&self) -> Response<Bytes> {
        if self.grpc {
            return self.grpc_response();
        }
        let (status, retry) = match self.kind {
            RejectionKind::InvalidKey => (StatusCode::BAD_REQUEST, false),
            _ => (StatusCode::SERVICE_UNAVAILABLE, true),
        };
        let mut response = Response::new(Bytes::from_static(self.message().as_bytes()));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if retry {
            headers.insert(header::RETRY_AFTER, retry_after_value(self.retry_after));
        }
        response
    }

    fn grpc_response(&self) -> Response<Bytes> {
        let status = match self.kind {
            RejectionKind::InvalidKey => tonic::Status::invalid_argument(self.message()),
            _ => tonic::Status::unavailable(self.message()),
        };
        let mut response = status.into_http::<()>().map(|()| Bytes::new());
        if self.kind != RejectionKind::InvalidKey {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after_value(self.retry_after));
        }
        response
    }
}

/// The `grpc-status`/`grpc-message` trailers that end a gRPC response whose
/// lock was lost while it streamed.
pub(crate) fn lost_trailers() -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    let _ = tonic::Status::unavailable(message(RejectionKind::Lost)).add_header(&mut trailers);
    trailers
}

fn message(kind: RejectionKind) -> &'static str {
    match kind {
        RejectionKind::Timeout => "resource busy: its lock was not acquired in time; retry later",
        RejectionKind::InvalidKey => "invalid lock key for this request",
        RejectionKind::Lost => "the resource's lock was lost while handling the request; retry",
        RejectionKind::Unavailable => "the lock service is unavailable; retry later",
    }
}

/// `Retry-After` in whole seconds, rounded up.
fn retry_after_value(after: Duration) -> HeaderValue {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    HeaderValue::from(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use distlock::ErrorCode;

    fn rejection(kind: RejectionKind) -> Rejection {
        Rejection::new(kind, "k", LockError::new(ErrorCode::Timeout, "x"))
    }

    #[test]
    fn http_statuses_and_retry_after() {
        let mut r = rejection(RejectionKind::Timeout);
        r.retry_after = Duration::from_millis(2500);
        let resp = r.default_response();
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["retry-after"], "3");

        let resp = rejection(RejectionKind::InvalidKey).default_response();
        assert_eq!(resp.status(), 400);
        assert!(resp.headers().get("retry-after").is_none());
    }

    #[test]
    fn grpc_rejections_are_trailers_only_statuses() {
        let mut r = rejection(RejectionKind::Lost);
        r.grpc = true;
        let resp = r.default_response();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        let status = tonic::Status::from_header_map(resp.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), r.message());
        assert!(resp.body().is_empty());

        let mut r = rejection(RejectionKind::InvalidKey);
        r.grpc = true;
        let status = tonic::Status::from_header_map(r.default_response().headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);

        let trailers = lost_trailers();
        assert_eq!(trailers["grpc-status"], "14");
        assert!(trailers.contains_key("grpc-message"));
    }
}
