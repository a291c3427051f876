//! The server span of every call, when traces are exported
//! (`telemetry::traces`): named after the method, continuing the caller's
//! `traceparent`, ended with the call's status. Installed only when
//! tracing is on, so calls pay nothing for it otherwise.

use super::call::Resolved;
use super::outcome::{self, OnEnd};
use crate::telemetry::traces;
use std::future::Future;
use tracing::Instrument;

#[derive(Clone)]
pub struct Traces;

impl super::Around for Traces {
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
        let call = Resolved::of(&request);
        let grpc = super::protocol::is_grpc(&request);
        let span = traces::server_span(&call.name, grpc, request.headers());
        let ended = span.clone();
        let on_end =
            OnEnd::new(move |code: tonic::Code| traces::record_status(&ended, code as i32));
        let inner = next(request).instrument(span.clone());
        Box::pin(outcome::watch(inner, on_end).instrument(span))
    }
}
