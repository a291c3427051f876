//! The RPC metrics layer, outermost: counts every call as started and in
//! flight, and when it ends (answer, error or cancellation, learnt by
//! `outcome::watch`) records its status code and handling time. The
//! in-flight gauge is released exactly once, by a guard.

use super::outcome::{self, OnEnd};
use crate::meter;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::{Layer, Service};

#[derive(Clone, Copy)]
pub struct RpcMetricsLayer;

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics { inner }
    }
}

#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for RpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = super::LayerFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (service, method) = meter::rpc_labels(request.uri().path());
        let in_flight = meter::rpc_started(service, method);
        let started = Instant::now();
        let mut inner = super::take_ready(&mut self.inner);
        let response = inner.call(request);
        Box::pin(outcome::watch(
            response,
            OnEnd::new(move |code| {
                meter::rpc_handled(service, method, code, started.elapsed());
                drop(in_flight);
            }),
        ))
    }
}
