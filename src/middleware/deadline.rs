//! A gRPC call's `grpc-timeout` bounds the server's work on it: past the
//! deadline the call is answered DEADLINE_EXCEEDED and its handler dropped
//! (for a stream: until its first message; the engine bounds the rest of a
//! turn itself, a little earlier). tonic's own server did this; the port's
//! connection loop (which serves WebSocket upgrades) does it here.

use crate::failure::{ErrorKind, Failure};
use std::future::Future;

/// Cuts gRPC calls at their `grpc-timeout`.
#[derive(Clone)]
pub struct GrpcDeadline;

impl super::Around for GrpcDeadline {
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
        let timeout = super::protocol::is_grpc(&request)
            .then(|| super::protocol::grpc_timeout(request.headers()))
            .flatten();
        let response = next(request);
        let Some(timeout) = timeout else {
            return Box::pin(response);
        };
        Box::pin(async move {
            match tokio::time::timeout(timeout, response).await {
                Ok(answered) => answered,
                Err(_) => {
                    let failure = Failure::new(
                        ErrorKind::DeadlineExceeded,
                        "DEADLINE_EXCEEDED",
                        "the call's deadline (grpc-timeout) passed",
                    );
                    Ok(tonic::Status::from(failure).into_http())
                }
            }
        })
    }
}
