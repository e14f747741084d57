//! [`LockBody`]: a response body that holds the request's lock until it ends.

use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::future::{ended_error, Ctx, Held};
use crate::rejection::lost_trailers;
use crate::respond::{BoxError, RejectionBody};

pin_project! {
    /// The response body of [`LockService`](super::LockService) and
    /// [`LeaderOnlyService`](crate::LeaderOnlyService): the inner service's
    /// body, holding the request's lock (if any; or its share of the
    /// leadership) until the body ends, fails or is dropped; or a rejection's
    /// body.
    ///
    /// If the lock is lost (or held for the layer's
    /// [`max_hold`](super::LockLayer::max_hold)) while the body streams, the
    /// body stops: an HTTP body ends with an error (the server then resets the
    /// stream or closes the connection, so the client cannot take the
    /// truncated body for a complete one), a gRPC body ends with `ABORTED`
    /// trailers (or the code [`grpc_code_for`](super::LockLayer::grpc_code_for)
    /// sets for the kind). A body that ends in the very poll in which the lock ends is
    /// sent complete: the work behind it is done.
    ///
    /// # Example
    ///
    /// ```
    /// use distlock_tower::{Header, LockBody, LockLayer};
    /// use http_body_util::BodyExt;
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let manager = distlock::LockManager::in_memory();
    /// let service = LockLayer::new(manager.clone(), Header::new("x-key").prefix("k:")).layer(service_fn(
    ///     |_req: http::Request<String>| async {
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(String::from("streamed")))
    ///     },
    /// ));
    /// let req = http::Request::get("/").header("x-key", "k").body(String::new()).unwrap();
    /// let body: LockBody<String> = service.oneshot(req).await.unwrap().into_body();
    ///
    /// // The body holds the lock until it has been read to its end.
    /// let other = manager.new_lock("k:k", Default::default()).unwrap();
    /// assert!(other.try_lock().await.unwrap().is_none());
    /// assert_eq!(body.collect().await.unwrap().to_bytes(), "streamed");
    /// # tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    /// assert!(other.try_lock().await.unwrap().is_some());
    /// # }
    /// ```
    pub struct LockBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        /// No key: the inner body as it is.
        Unlocked {
            #[pin]
            body: B,
        },
        /// The inner body, holding the lock until it ends.
        Locked {
            #[pin]
            body: B,
            hold: Option<Hold>,
            ended: bool,
        },
        /// A rejection's body.
        Rejected {
            #[pin]
            body: RejectionBody,
        },
    }
}

/// The lock a body holds, and its request's key and settings.
struct Hold {
    held: Held,
    ctx: Ctx,
}

impl<B> LockBody<B> {
    pub(crate) fn unlocked(body: B) -> Self {
        LockBody {
            kind: Kind::Unlocked { body },
        }
    }

    pub(crate) fn locked(body: B, held: Held, ctx: Ctx) -> Self {
        LockBody {
            kind: Kind::Locked {
                body,
                hold: Some(Hold { held, ctx }),
                ended: false,
            },
        }
    }

    pub(crate) fn rejected(body: RejectionBody) -> Self {
        LockBody {
            kind: Kind::Rejected { body },
        }
    }
}

impl<B> Body for LockBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Unlocked { body } => body.poll_frame(cx).map_err(Into::into),
            KindProj::Rejected { body } => body.poll_frame(cx),
            KindProj::Locked {
                mut body,
                hold,
                ended,
            } => {
                if *ended {
                    return Poll::Ready(None);
                }
                let end = hold.as_mut().and_then(|h| h.held.poll_end(cx));
                if let Some(kind) = end {
                    // The lock ended. A body that completes in this very poll
                    // is sent whole (its work is done); any other stops here.
                    *ended = true;
                    let Hold { held, ctx } = hold.take().expect("checked above");
                    let last = match body.as_mut().poll_frame(cx) {
                        Poll::Ready(None) => Some(None),
                        Poll::Ready(Some(Ok(frame)))
                            if frame.is_trailers() || body.is_end_stream() =>
                        {
                            Some(Some(Ok(frame)))
                        }
                        Poll::Ready(Some(Err(e))) => Some(Some(Err(e.into()))),
                        _ => None,
                    };
                    let err = ended_error(kind, &held, &ctx.key, "while the response streamed");
                    drop(held);
                    if let Some(last) = last {
                        ctx.settings.reporter.completed_anyway(kind, &ctx.key);
                        return Poll::Ready(last);
                    }
                    ctx.settings.reporter.stream_ended(kind, &ctx.key, &err);
                    return Poll::Ready(Some(if ctx.grpc {
                        let code = ctx.settings.grpc_code(kind);
                        Ok(Frame::trailers(lost_trailers(kind, code)))
                    } else {
                        Err(Box::new(err))
                    }));
                }
                let frame = ready!(body.poll_frame(cx));
                if !matches!(frame, Some(Ok(_))) {
                    // The end, or an error: release now.
                    *ended = true;
                    drop(hold.take());
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Unlocked { body } => body.is_end_stream(),
            Kind::Locked { body, ended, .. } => *ended || body.is_end_stream(),
            Kind::Rejected { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Unlocked { body } | Kind::Locked { body, .. } => body.size_hint(),
            Kind::Rejected { body } => body.size_hint(),
        }
    }
}

impl<B> fmt::Debug for LockBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("LockBody");
        match &self.kind {
            Kind::Unlocked { .. } => s.field("lock", &"none"),
            Kind::Locked { hold: Some(h), .. } => s.field("lock", &h.ctx.key),
            Kind::Locked { hold: None, .. } => s.field("lock", &"released"),
            Kind::Rejected { .. } => s.field("lock", &"rejected"),
        };
        s.finish()
    }
}
