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
    /// The request held its key for the layer's
    /// [`max_hold`](crate::LockLayer::max_hold) before the service produced
    /// its response; the service's future was dropped.
    MaxHold,
    /// [`max_waiters`](crate::LockLayer::max_waiters) requests already wait
    /// for the key on this server: the request was shed without waiting.
    QueueFull,
    /// The extractor found no key and the layer
    /// [requires one](crate::LockLayer::require_key).
    MissingKey,
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
/// | `Timeout`, `Unavailable`, `Lost`, `MaxHold`, `QueueFull` | 503 + `Retry-After` | `UNAVAILABLE` |
/// | `InvalidKey`, `MissingKey` | 400 | `INVALID_ARGUMENT` |
///
/// A request is taken for gRPC when its `content-type` starts with
/// `application/grpc`; its rejection is then a trailers-only gRPC response
/// (HTTP 200 with `grpc-status` and `grpc-message`), as `tonic::Status` makes;
/// this needs no tonic dependency. With the `tonic` feature,
/// `Rejection::to_status` gives the `tonic::Status` itself.
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
        let (status, retry) = if self.is_client_error() {
            (StatusCode::BAD_REQUEST, false)
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, true)
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

    /// Whether the request itself was at fault (400 / `INVALID_ARGUMENT`)
    /// rather than the lock service or the key's load (503 / `UNAVAILABLE`).
    fn is_client_error(&self) -> bool {
        matches!(
            self.kind,
            RejectionKind::InvalidKey | RejectionKind::MissingKey
        )
    }

    /// The gRPC status code: 3 (`INVALID_ARGUMENT`) or 14 (`UNAVAILABLE`).
    fn grpc_code(&self) -> u8 {
        if self.is_client_error() {
            GRPC_INVALID_ARGUMENT
        } else {
            GRPC_UNAVAILABLE
        }
    }

    /// The rejection as a `tonic::Status` (`UNAVAILABLE` or
    /// `INVALID_ARGUMENT`, with the [`message`](Rejection::message)), e.g. to
    /// answer from a tonic interceptor or a handler the same way the layer does.
    /// Needs the `tonic` feature.
    ///
    /// ```
    /// use distlock::{ErrorCode, LockError};
    /// use distlock_tower::{Rejection, RejectionKind};
    ///
    /// let r = Rejection::new(RejectionKind::QueueFull, "order:42", LockError::new(ErrorCode::Timeout, "queue full"));
    /// assert_eq!(r.to_status().code(), tonic::Code::Unavailable);
    /// ```
    #[cfg(feature = "tonic")]
    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::new(
            tonic::Code::from(i32::from(self.grpc_code())),
            self.message(),
        )
    }

    /// A trailers-only gRPC response: HTTP 200, `content-type:
    /// application/grpc`, `grpc-status` and `grpc-message` (what
    /// `tonic::Status::into_http` makes), plus `Retry-After` when retrying helps.
    fn grpc_response(&self) -> Response<Bytes> {
        let mut response = Response::new(Bytes::new());
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        grpc_status_headers(headers, self.grpc_code(), self.message());
        if !self.is_client_error() {
            headers.insert(header::RETRY_AFTER, retry_after_value(self.retry_after));
        }
        response
    }
}

/// gRPC status code `INVALID_ARGUMENT`.
const GRPC_INVALID_ARGUMENT: u8 = 3;
/// gRPC status code `UNAVAILABLE`.
const GRPC_UNAVAILABLE: u8 = 14;

/// Adds `grpc-status: code` and `grpc-message: message` (percent-encoded as
/// the gRPC HTTP/2 protocol asks: bytes outside printable ASCII, and `%`).
fn grpc_status_headers(headers: &mut http::HeaderMap, code: u8, message: &str) {
    headers.insert("grpc-status", HeaderValue::from(u16::from(code)));
    let mut encoded = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    if let Ok(value) = HeaderValue::try_from(encoded) {
        headers.insert("grpc-message", value);
    }
}

/// The `grpc-status`/`grpc-message` trailers that end a gRPC response whose
/// lock was lost (or held past `max_hold`) while it streamed.
pub(crate) fn lost_trailers(kind: RejectionKind) -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    grpc_status_headers(&mut trailers, GRPC_UNAVAILABLE, message(kind));
    trailers
}

fn message(kind: RejectionKind) -> &'static str {
    match kind {
        RejectionKind::Timeout => "resource busy: its lock was not acquired in time; retry later",
        RejectionKind::InvalidKey => "invalid lock key for this request",
        RejectionKind::Lost => "the resource's lock was lost while handling the request; retry",
        RejectionKind::Unavailable => "the lock service is unavailable; retry later",
        RejectionKind::MaxHold => {
            "the request held the resource's lock for as long as it may; retry"
        }
        RejectionKind::QueueFull => "resource busy: too many requests wait for it; retry later",
        RejectionKind::MissingKey => "this request must name the resource it locks",
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

        let mut r = rejection(RejectionKind::MissingKey);
        r.grpc = true;
        let status = tonic::Status::from_header_map(r.default_response().headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);

        let trailers = lost_trailers(RejectionKind::Lost);
        assert_eq!(trailers["grpc-status"], "14");
        let status = tonic::Status::from_header_map(&trailers).unwrap();
        assert_eq!(status.message(), message(RejectionKind::Lost));
    }

    #[test]
    fn grpc_messages_are_percent_encoded_like_tonic_decodes_them() {
        let mut headers = http::HeaderMap::new();
        grpc_status_headers(&mut headers, GRPC_UNAVAILABLE, "50% busy; naïve\n");
        assert_eq!(headers["grpc-message"], "50%25 busy; na%C3%AFve%0A");
        let status = tonic::Status::from_header_map(&headers).unwrap();
        assert_eq!(status.message(), "50% busy; naïve\n");
    }

    #[test]
    fn shedding_and_missing_keys() {
        let resp = rejection(RejectionKind::QueueFull).default_response();
        assert_eq!(resp.status(), 503);
        assert!(resp.headers().contains_key("retry-after"));
        assert_eq!(
            rejection(RejectionKind::MaxHold)
                .default_response()
                .status(),
            503
        );
        let resp = rejection(RejectionKind::MissingKey).default_response();
        assert_eq!(resp.status(), 400);
        assert!(resp.headers().get("retry-after").is_none());
    }
}
