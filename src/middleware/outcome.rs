//! Learning how a call ended. Errors decided before the handler come as
//! trailers-only responses (status in the headers); otherwise the status
//! arrives in the body's trailers, at the end of a stream, so the body is
//! watched. A call dropped before its end (client gone, response future or
//! body dropped) ends CANCELLED. Whatever happens, the callback runs once.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::Code;

/// Runs `F` with the call's final code once; on drop, with CANCELLED.
pub struct OnEnd<F: FnOnce(Code)>(Option<F>);

impl<F: FnOnce(Code)> OnEnd<F> {
    pub fn new(f: F) -> Self {
        OnEnd(Some(f))
    }

    fn end(&mut self, code: Code) {
        if let Some(f) = self.0.take() {
            f(code);
        }
    }
}

impl<F: FnOnce(Code)> Drop for OnEnd<F> {
    fn drop(&mut self) {
        self.end(Code::Cancelled);
    }
}

/// Awaits `response` and calls `on_end` with the call's final code: at
/// once for a trailers-only answer, else when the body's trailers pass.
pub async fn watch<F, E>(
    response: impl Future<Output = Result<http::Response<tonic::body::Body>, E>>,
    mut on_end: OnEnd<F>,
) -> Result<http::Response<tonic::body::Body>, E>
where
    F: FnOnce(Code) + Send + Unpin + 'static,
{
    let response = match response.await {
        Ok(r) => r,
        Err(e) => {
            on_end.end(Code::Unavailable);
            return Err(e);
        }
    };
    if let Some(code) = response.headers().get("grpc-status") {
        on_end.end(Code::from_bytes(code.as_bytes()));
        return Ok(response);
    }
    // An HTTP error answers in its status line; a success (an SSE stream,
    // say) ends with its body, as a gRPC stream does.
    let is_grpc = super::protocol::has_grpc_content(response.headers());
    if !is_grpc && (!response.status().is_success() || response.body().is_end_stream()) {
        on_end.end(super::protocol::code_of(response.status()));
        return Ok(response);
    }
    Ok(response.map(|inner| tonic::body::Body::new(WatchedBody { inner, on_end })))
}

struct WatchedBody<F: FnOnce(Code)> {
    inner: tonic::body::Body,
    on_end: OnEnd<F>,
}

impl<F: FnOnce(Code) + Send + Unpin + 'static> Body for WatchedBody<F> {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        // Safe to move out of the pin: nothing here is structurally pinned
        // (`tonic::body::Body` is Unpin and `OnEnd` holds no self-references).
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(|t| t.get("grpc-status")) {
                    this.on_end.end(Code::from_bytes(code.as_bytes()));
                } else if this.inner.is_end_stream() {
                    // A body without trailers (HTTP) may not be polled
                    // again once it says it has ended.
                    this.on_end.end(Code::Ok);
                }
            }
            Poll::Ready(Some(Err(status))) => this.on_end.end(status.code()),
            Poll::Ready(None) => this.on_end.end(Code::Ok),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
