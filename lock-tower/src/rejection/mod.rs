//! [`Rejection`]: why a request did not run under its lock (or this
//! server's leadership), and the response it gets instead;
//! [`RejectionKind`]: the reasons and their default answers.

mod kind;

use std::time::Duration;

use bytes::Bytes;
use distlock::LockError;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use crate::grpc::{self, GrpcCode};
use crate::leader::LEADER_HEADER;

pub use kind::RejectionKind;

/// A request the layer answered itself: its kind, key, the underlying
/// [`LockError`], the status and gRPC code it is answered with, whether
/// it came from a gRPC client, and, for a follower of a
/// [`LeaderOnly`](crate::LeaderOnly) route, the [leader](Rejection::leader).
///
/// [`default_response`](Rejection::default_response) is what the layer sends
/// unless [`LockLayer::on_rejection`](crate::LockLayer::on_rejection) says
/// otherwise. Its status is the kind's (see
/// [`RejectionKind`](RejectionKind#default-answers) for the table and the
/// reasons), or the layer's override
/// ([`status_for`](crate::LockLayer::status_for),
/// [`grpc_code_for`](crate::LockLayer::grpc_code_for)).
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
/// assert_eq!(response.status(), 429);
/// assert_eq!(response.headers()["retry-after"], "1");
/// ```
#[derive(Debug)]
pub struct Rejection {
    kind: RejectionKind,
    key: String,
    error: LockError,
    pub(crate) grpc: bool,
    pub(crate) retry_after: Duration,
    pub(crate) status: StatusCode,
    pub(crate) grpc_code: GrpcCode,
    pub(crate) leader: Option<Vec<u8>>,
}

impl Rejection {
    /// A rejection of an HTTP (not gRPC) request with the kind's default
    /// status and gRPC code, advising a retry after 1 s; for testing a
    /// [rejection handler](crate::LockLayer::on_rejection).
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
            status: kind.default_status(),
            grpc_code: kind.default_grpc_code(),
            leader: None,
        }
    }

    /// The same rejection naming the leader by its proclaimed `value`, as a
    /// follower's [`NotLeader`](RejectionKind::NotLeader) rejection does; for
    /// testing a [rejection handler](crate::LeaderOnly::on_rejection).
    ///
    /// ```
    /// use distlock::{ErrorCode, LockError};
    /// use distlock_tower::{Rejection, RejectionKind};
    ///
    /// let err = LockError::new(ErrorCode::NotHeld, "not the leader");
    /// let r = Rejection::new(RejectionKind::NotLeader, "writer", err).with_leader("10.0.0.7:8080");
    /// let response = r.default_response();
    /// assert_eq!(response.status(), 421);
    /// assert_eq!(response.headers()["x-distlock-leader"], "10.0.0.7:8080");
    /// ```
    pub fn with_leader(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.leader = Some(value.into());
        self
    }

    /// For a [`NotLeader`](RejectionKind::NotLeader) rejection, the value
    /// the current leader proclaimed (as this server last observed it): an
    /// address, a URL, whatever the leader's [`Candidacy`](crate::Candidacy)
    /// campaigns with. `None` for the other kinds.
    ///
    /// ```
    /// # use distlock::{ErrorCode, LockError};
    /// # use distlock_tower::{Rejection, RejectionKind};
    /// let r = Rejection::new(RejectionKind::NotLeader, "writer", LockError::new(ErrorCode::NotHeld, "follower"))
    ///     .with_leader("10.0.0.7:8080");
    /// assert_eq!(r.leader(), Some(&b"10.0.0.7:8080"[..]));
    /// ```
    pub fn leader(&self) -> Option<&[u8]> {
        self.leader.as_deref()
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

    /// The lock name the request needed (behind
    /// [`LeaderOnly`](crate::LeaderOnly): the election's name).
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
    /// [`retry_after`](crate::LockLayer::retry_after)); sent only for kinds
    /// that [advise a retry](RejectionKind::advises_retry).
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

    /// The HTTP status of the default response: the kind's
    /// [default](RejectionKind::default_status), or the layer's
    /// [override](crate::LockLayer::status_for).
    ///
    /// ```
    /// # use distlock::{ErrorCode, LockError};
    /// # use distlock_tower::{Rejection, RejectionKind};
    /// let r = Rejection::new(RejectionKind::Timeout, "k", LockError::new(ErrorCode::Timeout, "slow"));
    /// assert_eq!(r.status(), http::StatusCode::TOO_MANY_REQUESTS);
    /// ```
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The gRPC code of the default response to a gRPC call: the kind's
    /// [default](RejectionKind::default_grpc_code), or the layer's
    /// [override](crate::LockLayer::grpc_code_for).
    ///
    /// ```
    /// # use distlock::{ErrorCode, LockError};
    /// # use distlock_tower::{GrpcCode, Rejection, RejectionKind};
    /// let r = Rejection::new(RejectionKind::QueueFull, "k", LockError::new(ErrorCode::Timeout, "full"));
    /// assert_eq!(r.grpc_code(), GrpcCode::ResourceExhausted);
    /// ```
    pub fn grpc_code(&self) -> GrpcCode {
        self.grpc_code
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
        self.kind.message()
    }

    /// The response the layer sends by default: the [status](Rejection::status)
    /// with the [message](Rejection::message) as a text body, and
    /// `Retry-After` in whole seconds (rounded up) when the kind
    /// [advises a retry](RejectionKind::advises_retry). For a gRPC call, a
    /// trailers-only response with the [gRPC code](Rejection::grpc_code) and
    /// `grpc-retry-pushback-ms` (the retry advice in milliseconds, or `-1`,
    /// "do not retry", after a [lost lock](RejectionKind::Lost) or
    /// [`max_hold`](RejectionKind::MaxHold)). A [`NotLeader`](RejectionKind::NotLeader)
    /// answer carries the [leader's value](Rejection::leader) in
    /// [`x-distlock-leader`](crate::LEADER_HEADER), as a header or in the
    /// gRPC metadata, when it is a valid header value (visible ASCII, spaces,
    /// tabs, bytes from 0x80; not control characters); otherwise it is left
    /// out, and only [`Rejection::leader`] has it.
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
        let mut response = Response::new(Bytes::from_static(self.message().as_bytes()));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if self.kind.advises_retry() {
            headers.insert(header::RETRY_AFTER, retry_after_value(self.retry_after));
        }
        self.leader_header(headers);
        response
    }

    /// The rejection as a `tonic::Status` (the [gRPC code](Rejection::grpc_code),
    /// the [message](Rejection::message), and `grpc-retry-pushback-ms` and
    /// `x-distlock-leader` in its metadata, as in the default response), e.g. to answer from a tonic interceptor or a handler the
    /// same way the layer does. Needs the `tonic` feature.
    ///
    /// ```
    /// use distlock::{ErrorCode, LockError};
    /// use distlock_tower::{Rejection, RejectionKind};
    ///
    /// let r = Rejection::new(RejectionKind::QueueFull, "order:42", LockError::new(ErrorCode::Timeout, "queue full"));
    /// let status = r.to_status();
    /// assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    /// assert_eq!(status.metadata().get("grpc-retry-pushback-ms").unwrap(), "1000");
    /// ```
    #[cfg(feature = "tonic")]
    pub fn to_status(&self) -> tonic::Status {
        let mut headers = HeaderMap::new();
        self.retry_pushback(&mut headers);
        self.leader_header(&mut headers);
        tonic::Status::with_metadata(
            tonic::Code::from(self.grpc_code),
            self.message(),
            tonic::metadata::MetadataMap::from_headers(headers),
        )
    }

    /// A trailers-only gRPC response: HTTP 200, `content-type:
    /// application/grpc`, `grpc-status` and `grpc-message` (what
    /// `tonic::Status::into_http` makes), `grpc-retry-pushback-ms`, and
    /// `Retry-After` when retrying helps.
    fn grpc_response(&self) -> Response<Bytes> {
        let mut response = Response::new(Bytes::new());
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        grpc::status_headers(headers, self.grpc_code, self.message());
        self.retry_pushback(headers);
        if self.kind.advises_retry() {
            headers.insert(header::RETRY_AFTER, retry_after_value(self.retry_after));
        }
        self.leader_header(headers);
        response
    }

    /// `x-distlock-leader`: the leader's value, if there is one and it is a
    /// valid header value.
    fn leader_header(&self, headers: &mut HeaderMap) {
        let value = self
            .leader
            .as_deref()
            .and_then(|v| HeaderValue::from_bytes(v).ok());
        if let Some(value) = value {
            headers.insert(LEADER_HEADER, value);
        }
    }

    /// `grpc-retry-pushback-ms`: the retry advice, or "do not retry" after
    /// work was interrupted.
    fn retry_pushback(&self, headers: &mut HeaderMap) {
        if self.kind.advises_retry() {
            let ms = u64::try_from(self.retry_after.as_millis()).unwrap_or(u64::MAX);
            headers.insert(grpc::RETRY_PUSHBACK, HeaderValue::from(ms));
        } else if self.kind.interrupted() {
            headers.insert(grpc::RETRY_PUSHBACK, HeaderValue::from_static("-1"));
        }
    }
}

/// The `grpc-status`/`grpc-message` trailers that end a gRPC response whose
/// lock was lost (or held past `max_hold`) while it streamed.
pub(crate) fn lost_trailers(kind: RejectionKind, code: GrpcCode) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    grpc::status_headers(&mut trailers, code, kind.message());
    trailers
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

    fn grpc(kind: RejectionKind) -> Response<Bytes> {
        let mut r = rejection(kind);
        r.grpc = true;
        r.default_response()
    }

    const ALL: [RejectionKind; 10] = [
        RejectionKind::Timeout,
        RejectionKind::QueueFull,
        RejectionKind::Unavailable,
        RejectionKind::Lost,
        RejectionKind::MaxHold,
        RejectionKind::Misconfigured,
        RejectionKind::InvalidKey,
        RejectionKind::MissingKey,
        RejectionKind::NotLeader,
        RejectionKind::NoLeader,
    ];

    /// The table in `RejectionKind`'s docs, kind by kind.
    #[test]
    fn each_kind_has_its_default_status_code_and_retry_advice() {
        use RejectionKind::*;
        let table = [
            (Timeout, 429, GrpcCode::Aborted, Some("1000")),
            (QueueFull, 429, GrpcCode::ResourceExhausted, Some("1000")),
            (Unavailable, 503, GrpcCode::Unavailable, Some("1000")),
            (Lost, 503, GrpcCode::Aborted, Some("-1")),
            (MaxHold, 503, GrpcCode::Aborted, Some("-1")),
            (Misconfigured, 500, GrpcCode::Internal, None),
            (InvalidKey, 400, GrpcCode::InvalidArgument, None),
            (MissingKey, 400, GrpcCode::InvalidArgument, None),
            (NotLeader, 421, GrpcCode::Unavailable, None),
            (NoLeader, 503, GrpcCode::Unavailable, Some("1000")),
        ];
        assert_eq!(table.len(), ALL.len());
        for (kind, status, code, pushback) in table {
            let http = rejection(kind).default_response();
            assert_eq!(http.status(), status, "{kind:?}");
            assert_eq!(
                http.headers().get("retry-after").is_some(),
                kind.advises_retry(),
                "{kind:?}"
            );
            assert!(!http.body().is_empty());

            let response = grpc(kind);
            assert_eq!(response.status(), 200, "{kind:?}");
            assert_eq!(response.headers()["content-type"], "application/grpc");
            assert!(response.body().is_empty());
            let status = tonic::Status::from_header_map(response.headers()).unwrap();
            assert_eq!(GrpcCode::from(status.code()), code, "{kind:?}");
            assert_eq!(status.message(), kind.message());
            assert_eq!(
                response
                    .headers()
                    .get("grpc-retry-pushback-ms")
                    .map(|v| v.to_str().unwrap()),
                pushback,
                "{kind:?}"
            );
            let to_status = rejection(kind).to_status();
            assert_eq!(GrpcCode::from(to_status.code()), code, "{kind:?}");
            assert_eq!(
                to_status
                    .metadata()
                    .get("grpc-retry-pushback-ms")
                    .map(|v| v.to_str().unwrap()),
                pushback,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_rounded_up_to_seconds_and_pushback_is_in_ms() {
        let mut r = rejection(RejectionKind::Timeout);
        r.retry_after = Duration::from_millis(2500);
        assert_eq!(r.default_response().headers()["retry-after"], "3");
        r.grpc = true;
        let response = r.default_response();
        assert_eq!(response.headers()["grpc-retry-pushback-ms"], "2500");
        assert_eq!(response.headers()["retry-after"], "3");
    }

    #[test]
    fn overridden_codes_are_used() {
        let mut r = rejection(RejectionKind::Timeout);
        r.status = StatusCode::CONFLICT;
        r.grpc_code = GrpcCode::Unavailable;
        let response = r.default_response();
        assert_eq!(response.status(), 409);
        assert!(response.headers().contains_key("retry-after"));
        r.grpc = true;
        let status = tonic::Status::from_header_map(r.default_response().headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }

    #[test]
    fn lost_trailers_carry_the_code() {
        let trailers = lost_trailers(RejectionKind::Lost, GrpcCode::Aborted);
        assert_eq!(trailers["grpc-status"], "10");
        let status = tonic::Status::from_header_map(&trailers).unwrap();
        assert_eq!(status.message(), RejectionKind::Lost.message());
    }
}
