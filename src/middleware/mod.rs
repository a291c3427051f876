//! Tower layers around every gRPC service, outermost first: request ID,
//! metrics, audit, auth, rate limits.

pub mod audit;
pub mod auth;
pub mod metrics;
pub mod outcome;
pub mod rate_limit;
pub mod request_id;
pub mod shared_limiter;

use std::future::Future;
use std::pin::Pin;

/// The future every layer here returns.
pub type LayerFuture<E> =
    Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, E>> + Send>>;

/// The inner service that was polled ready, leaving a fresh clone in its
/// place (tower's rule: the clone that said ready must serve the call).
fn take_ready<S: Clone>(slot: &mut S) -> S {
    let fresh = slot.clone();
    std::mem::replace(slot, fresh)
}

/// Answers at once with a gRPC error, without calling the inner service.
fn refuse<E: Send + 'static>(status: tonic::Status) -> LayerFuture<E> {
    Box::pin(std::future::ready(Ok(status.into_http())))
}
