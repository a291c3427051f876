//! A bound on reading a request: its whole body must arrive within the
//! read timeout of the request's start (`server.request_read_timeout_secs`),
//! so a caller trickling bytes cannot hold a call (and its memory) open.
//! Slow headers are cut by the HTTP server itself. The late body ends with
//! DEADLINE_EXCEEDED (reason REQUEST_READ_TIMEOUT; HTTP 408 on the HTTP
//! front), which gRPC's decoder and the HTTP front both report as is.

use crate::failure::{ErrorKind, Failure};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

/// The reason a late request body ends with.
pub const REQUEST_READ_TIMEOUT: &str = "REQUEST_READ_TIMEOUT";

#[derive(Clone, Copy)]
pub struct ReadDeadlineLayer(pub Duration);

impl<S> Layer<S> for ReadDeadlineLayer {
    type Service = ReadDeadline<S>;

    fn layer(&self, inner: S) -> ReadDeadline<S> {
        ReadDeadline {
            inner,
            limit: self.0,
        }
    }
}

#[derive(Clone)]
pub struct ReadDeadline<S> {
    inner: S,
    limit: Duration,
}

impl<S> Service<http::Request<tonic::body::Body>> for ReadDeadline<S>
where
    S: Service<http::Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let limit = self.limit;
        let request = request.map(|inner| {
            if inner.is_end_stream() {
                return inner;
            }
            tonic::body::Body::new(DeadlineBody {
                inner,
                deadline: Box::pin(tokio::time::sleep_until(Instant::now() + limit)),
                limit,
            })
        });
        self.inner.call(request)
    }
}

struct DeadlineBody {
    inner: tonic::body::Body,
    deadline: Pin<Box<Sleep>>,
    limit: Duration,
}

impl Body for DeadlineBody {
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
        match this.deadline.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                let failure = Failure::new(
                    ErrorKind::DeadlineExceeded,
                    REQUEST_READ_TIMEOUT,
                    format!(
                        "the request was not received within {} s",
                        this.limit.as_secs()
                    ),
                );
                Poll::Ready(Some(Err(failure.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
