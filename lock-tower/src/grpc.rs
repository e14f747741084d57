//! [`GrpcCode`]: the gRPC status codes, and the status headers the layer
//! writes for gRPC clients (without a tonic dependency).

use http::{HeaderMap, HeaderValue};

/// A gRPC status code, as sent in `grpc-status`.
///
/// The layer answers gRPC clients itself (a trailers-only response), so it
/// needs no tonic dependency; with the `tonic` feature this converts to and
/// from `tonic::Code`, so
/// [`LockLayer::grpc_code_for`](crate::LockLayer::grpc_code_for) takes either.
///
/// # Example
///
/// ```
/// use distlock_tower::GrpcCode;
///
/// assert_eq!(GrpcCode::Aborted.as_i32(), 10);
/// assert_eq!(GrpcCode::from_i32(8), Some(GrpcCode::ResourceExhausted));
/// assert_eq!(GrpcCode::from(tonic::Code::Unavailable), GrpcCode::Unavailable);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrpcCode {
    /// 0: not an error.
    Ok = 0,
    /// 1: the operation was cancelled, typically by the caller.
    Cancelled = 1,
    /// 2: an unknown error.
    Unknown = 2,
    /// 3: the client specified an invalid argument.
    InvalidArgument = 3,
    /// 4: the deadline expired before the operation could complete.
    DeadlineExceeded = 4,
    /// 5: some requested entity was not found.
    NotFound = 5,
    /// 6: some entity that we attempted to create already exists.
    AlreadyExists = 6,
    /// 7: the caller does not have permission to execute the operation.
    PermissionDenied = 7,
    /// 8: some resource has been exhausted (a quota, a queue).
    ResourceExhausted = 8,
    /// 9: the system is not in a state required for the operation.
    FailedPrecondition = 9,
    /// 10: the operation was aborted, typically due to a concurrency issue;
    /// the client should retry at a higher level (re-read, then decide).
    Aborted = 10,
    /// 11: the operation was attempted past the valid range.
    OutOfRange = 11,
    /// 12: the operation is not implemented or not supported.
    Unimplemented = 12,
    /// 13: an internal error: an invariant of the server is broken.
    Internal = 13,
    /// 14: the service is currently unavailable; a transient condition,
    /// corrected by retrying with a backoff.
    Unavailable = 14,
    /// 15: unrecoverable data loss or corruption.
    DataLoss = 15,
    /// 16: the request lacks valid authentication credentials.
    Unauthenticated = 16,
}

impl GrpcCode {
    /// The code's number, as sent in `grpc-status`.
    ///
    /// ```
    /// assert_eq!(distlock_tower::GrpcCode::Unavailable.as_i32(), 14);
    /// ```
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The code numbered `code`, if there is one (0 to 16).
    ///
    /// ```
    /// use distlock_tower::GrpcCode;
    /// assert_eq!(GrpcCode::from_i32(13), Some(GrpcCode::Internal));
    /// assert_eq!(GrpcCode::from_i32(17), None);
    /// ```
    pub fn from_i32(code: i32) -> Option<Self> {
        use GrpcCode::*;
        const ALL: [GrpcCode; 17] = [
            Ok,
            Cancelled,
            Unknown,
            InvalidArgument,
            DeadlineExceeded,
            NotFound,
            AlreadyExists,
            PermissionDenied,
            ResourceExhausted,
            FailedPrecondition,
            Aborted,
            OutOfRange,
            Unimplemented,
            Internal,
            Unavailable,
            DataLoss,
            Unauthenticated,
        ];
        usize::try_from(code).ok().and_then(|i| ALL.get(i).copied())
    }
}

impl From<GrpcCode> for i32 {
    /// ```
    /// assert_eq!(i32::from(distlock_tower::GrpcCode::Aborted), 10);
    /// ```
    fn from(code: GrpcCode) -> i32 {
        code.as_i32()
    }
}

#[cfg(feature = "tonic")]
impl From<tonic::Code> for GrpcCode {
    /// ```
    /// use distlock_tower::GrpcCode;
    /// assert_eq!(GrpcCode::from(tonic::Code::Aborted), GrpcCode::Aborted);
    /// ```
    fn from(code: tonic::Code) -> Self {
        GrpcCode::from_i32(i32::from(code)).unwrap_or(GrpcCode::Unknown)
    }
}

#[cfg(feature = "tonic")]
impl From<GrpcCode> for tonic::Code {
    /// ```
    /// use distlock_tower::GrpcCode;
    /// assert_eq!(tonic::Code::from(GrpcCode::ResourceExhausted), tonic::Code::ResourceExhausted);
    /// ```
    fn from(code: GrpcCode) -> Self {
        tonic::Code::from_i32(code.as_i32())
    }
}

/// Whether `req` is a gRPC call, by its content type (`application/grpc`,
/// `application/grpc+proto`, ...).
pub(crate) fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

/// The header (trailer, in a trailers-only response) with which a gRPC
/// server tells a client's retry policy when to retry, in milliseconds; a
/// negative value asks it not to retry at all (gRFC A6).
pub(crate) const RETRY_PUSHBACK: &str = "grpc-retry-pushback-ms";

/// Adds `grpc-status: code` and `grpc-message: message` (percent-encoded as
/// the gRPC HTTP/2 protocol asks: bytes outside printable ASCII, and `%`).
pub(crate) fn status_headers(headers: &mut HeaderMap, code: GrpcCode, message: &str) {
    headers.insert("grpc-status", HeaderValue::from(code.as_i32()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_tonic() {
        for n in 0..17 {
            let code = GrpcCode::from_i32(n).unwrap();
            assert_eq!(code.as_i32(), n);
            assert_eq!(i32::from(tonic::Code::from(code)), n);
            assert_eq!(GrpcCode::from(tonic::Code::from_i32(n)), code);
        }
        assert_eq!(GrpcCode::from_i32(-1), None);
    }

    #[test]
    fn messages_are_percent_encoded_like_tonic_decodes_them() {
        let mut headers = HeaderMap::new();
        status_headers(&mut headers, GrpcCode::Unavailable, "50% busy; naïve\n");
        assert_eq!(headers["grpc-message"], "50%25 busy; na%C3%AFve%0A");
        let status = tonic::Status::from_header_map(&headers).unwrap();
        assert_eq!(status.message(), "50% busy; naïve\n");
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }
}
