//! [`IntoRejectionResponse`]: what a rejection handler may return, and the
//! body a rejection is sent with.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;

/// The error type of response bodies the layer sends.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a handler given to [`LockLayer::on_rejection`](crate::LockLayer::on_rejection)
/// may return:
///
/// - `http::Response<bytes::Bytes>`, as
///   [`Rejection::default_response`](crate::Rejection::default_response)
///   gives it;
/// - with the `axum` feature, anything that implements axum's
///   `IntoResponse`: `(StatusCode, Json<MyError>)`, `Response<Body>`, an
///   application's own error type, ...;
/// - without it, any `http::Response<B>` whose body `B` is an
///   `http_body::Body` of `Bytes` (a `String`, axum's or hyper's body types).
///
/// The type parameter only tells these cases apart; it is inferred. The
/// trait is sealed.
///
/// # Example
///
/// ```
/// use axum::{http::StatusCode, Json};
/// use distlock_tower::{Header, LockLayer, Rejection, RejectionKind};
///
/// #[derive(serde::Serialize)]
/// struct ApiError {
///     code: &'static str,
///     message: &'static str,
/// }
///
/// let layer = LockLayer::new(distlock::LockManager::in_memory(), Header::new("x-key").prefix("k:"))
///     .on_rejection(|r: &Rejection| {
///         let code = match r.kind() {
///             RejectionKind::Timeout | RejectionKind::QueueFull => "busy",
///             _ => "lock_failed",
///         };
///         (r.status(), Json(ApiError { code, message: r.message() }))
///     });
/// # let _ = layer;
/// ```
pub trait IntoRejectionResponse<M>: sealed::Convert<M> {}

impl<T: sealed::Convert<M>, M> IntoRejectionResponse<M> for T {}

pub(crate) mod sealed {
    use super::*;

    /// The conversion behind [`IntoRejectionResponse`]; not nameable outside
    /// the crate, so the trait cannot be implemented elsewhere.
    pub trait Convert<M> {
        /// The response, with its body boxed when it is not plain bytes.
        fn convert(self) -> Response<RejectionBody>;
    }

    /// Markers telling the implementations apart.
    #[derive(Debug)]
    pub enum PlainBytes {}
    #[cfg(not(feature = "axum"))]
    #[derive(Debug)]
    pub enum AnyBody {}
    #[cfg(feature = "axum")]
    #[derive(Debug)]
    pub enum AxumResponse {}

    impl Convert<PlainBytes> for Response<Bytes> {
        fn convert(self) -> Response<RejectionBody> {
            self.map(RejectionBody::full)
        }
    }

    // With the `axum` feature every such response is also `IntoResponse`,
    // which the impl below covers: the two must not both apply.
    #[cfg(not(feature = "axum"))]
    impl<B> Convert<AnyBody> for Response<B>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        fn convert(self) -> Response<RejectionBody> {
            self.map(RejectionBody::boxed)
        }
    }

    #[cfg(feature = "axum")]
    impl<T: axum::response::IntoResponse> Convert<AxumResponse> for T {
        fn convert(self) -> Response<RejectionBody> {
            self.into_response().map(RejectionBody::boxed)
        }
    }
}

/// The body of a rejection: bytes (the default responses), or the boxed
/// body of a handler's response.
///
/// `pub` only so that the sealed [`Convert`](sealed::Convert) may name it;
/// this module is private, so no other crate can.
#[derive(Debug)]
pub enum RejectionBody {
    Full(Option<Bytes>),
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl RejectionBody {
    pub(crate) fn full(data: Bytes) -> Self {
        RejectionBody::Full((!data.is_empty()).then_some(data))
    }

    fn boxed<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        RejectionBody::Boxed(body.map_err(Into::into).boxed_unsync())
    }
}

impl Body for RejectionBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RejectionBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            RejectionBody::Boxed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RejectionBody::Full(data) => data.is_none(),
            RejectionBody::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RejectionBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            RejectionBody::Boxed(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    async fn text<M>(response: impl IntoRejectionResponse<M>) -> (StatusCode, String) {
        let response = response.convert();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn bytes_strings_and_axum_responses_convert() {
        let bytes = Response::new(Bytes::from_static(b"raw"));
        assert_eq!(text(bytes).await, (StatusCode::OK, "raw".into()));
        let string = Response::builder()
            .status(StatusCode::CONFLICT)
            .body(String::from("s"))
            .unwrap();
        assert_eq!(text(string).await, (StatusCode::CONFLICT, "s".into()));
        let tuple = (StatusCode::TOO_MANY_REQUESTS, "busy");
        assert_eq!(
            text(tuple).await,
            (StatusCode::TOO_MANY_REQUESTS, "busy".into())
        );
        let json = (
            StatusCode::IM_A_TEAPOT,
            axum::Json(serde_json::json!({"e": 1})),
        );
        assert_eq!(
            text(json).await,
            (StatusCode::IM_A_TEAPOT, r#"{"e":1}"#.into())
        );
    }
}
