//! Streams that only watch state (health, an operation) hold no work, so a
//! drain does not wait for them: when it starts they get what is ready (the
//! NOT_SERVING health update) for a moment, then end UNAVAILABLE (reason
//! SHUTTING_DOWN), and the server stops as soon as the real work is done.

use super::call::Resolved;
use crate::failure::{ErrorKind, Failure};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// How long a watch stream may still deliver what is ready once the drain
/// starts (the NOT_SERVING update).
const LAST_WORDS: Duration = Duration::from_millis(100);

/// Ends watch streams when `stop` is cancelled (see the module).
#[derive(Clone)]
pub struct EndWatchesOnDrain(pub CancellationToken);

impl super::Around for EndWatchesOnDrain {
    fn around<B, E, Next, Fut>(
        &self,
        request: http::Request<B>,
        next: Next,
    ) -> super::LayerFuture<E>
    where
        B: Send + 'static,
        E: Send + 'static,
        Next: FnOnce(http::Request<B>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<super::Response, E>> + Send + 'static,
    {
        let watches = Resolved::of(&request)
            .rpc
            .is_some_and(|rpc| rpc.only_watches());
        let stop = self.0.clone();
        let response = next(request);
        Box::pin(async move {
            let response = response.await?;
            if !watches {
                return Ok(response);
            }
            Ok(response.map(|inner| {
                tonic::body::Body::new(DrainedBody {
                    inner,
                    stop: Box::pin(stop.cancelled_owned()),
                    grace: None,
                })
            }))
        })
    }
}

struct DrainedBody {
    inner: tonic::body::Body,
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Set once the drain started: the end of the stream's last words.
    grace: Option<Pin<Box<Sleep>>>,
}

impl Body for DrainedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.grace.is_none() {
            if this.stop.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.grace = Some(Box::pin(tokio::time::sleep(LAST_WORDS)));
        }
        match this.grace.as_mut().map(|g| g.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => {
                let ending = Failure::new(
                    ErrorKind::Unavailable,
                    "SHUTTING_DOWN",
                    "the server is shutting down; watch another replica",
                );
                let status: tonic::Status = ending.into();
                let mut trailers = http::HeaderMap::new();
                let _ = status.add_header(&mut trailers);
                // Ended: the inner stream is not polled again.
                this.inner = tonic::body::Body::empty();
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            _ => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream() && self.grace.is_some()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
