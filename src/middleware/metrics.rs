//! The RPC metrics layer, outermost: counts every call as started and in
//! flight, and when it ends (answer, error or cancellation, learnt by
//! `outcome::watch`) records its status code and handling time, and the
//! gateway's overhead from the turn it ran (`meter::CallTiming`). The
//! in-flight gauge is released exactly once, by a guard.

use super::call::Resolved;
use super::outcome::{self, OnEnd};
use crate::meter;
use std::future::Future;
use std::time::Instant;

/// Records every call's metrics (see the module).
#[derive(Clone, Copy)]
pub struct RpcMetrics;

impl super::Around for RpcMetrics {
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
        let (service, method) = Resolved::of(&request).labels();
        let in_flight = meter::rpc_started(service, method);
        let started = Instant::now();
        let timing = std::sync::Arc::new(meter::CallTiming::default());
        // Inner layers reach the call's timing (the rate-limit layer hands
        // it the server's adaptive limit slot).
        let mut request = request;
        request.extensions_mut().insert(timing.clone());
        let response = timing.clone().scope(next(request));
        Box::pin(outcome::watch(
            response,
            OnEnd::new(move |code| {
                let elapsed = started.elapsed();
                meter::rpc_handled(service, method, super::protocol::code_name(code), elapsed);
                timing.finish(elapsed);
                drop(in_flight);
            }),
        ))
    }
}
