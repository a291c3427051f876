//! Tower layers around every call (gRPC and HTTP alike), outermost first:
//! request ID, client address, metrics, audit, auth, rate limits. Each knows the call's
//! method from the one table of methods (`rpc_table`); none depends on the
//! fronts, which depend on it.

pub mod audit;
pub mod auth;
pub mod call;
pub mod client_address;
pub mod deadline;
pub mod drain;
pub mod metrics;
pub mod outcome;
pub mod protocol;
pub mod rate_limit;
pub mod read_deadline;
pub mod request_id;
pub mod rpc_table;
pub mod traces;

use crate::failure::Failure;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

pub type Response = http::Response<tonic::body::Body>;

/// The future every layer here returns.
pub type LayerFuture<E> = Pin<Box<dyn Future<Output = Result<Response, E>> + Send>>;

/// What one of our layers does around a call; `next` runs the rest of the
/// stack (call it at most once). The tower plumbing is `AroundLayer`'s.
pub trait Around: Clone + Send + Sync + 'static {
    fn around<B, E, Next, Fut>(&self, request: http::Request<B>, next: Next) -> LayerFuture<E>
    where
        B: Send + 'static,
        E: Send + 'static,
        Next: FnOnce(http::Request<B>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Response, E>> + Send + 'static;
}

/// A tower layer running an `Around` on every call.
#[derive(Clone)]
pub struct AroundLayer<A>(pub A);

impl<S, A: Around> Layer<S> for AroundLayer<A> {
    type Service = AroundService<S, A>;

    fn layer(&self, inner: S) -> AroundService<S, A> {
        AroundService {
            inner,
            around: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AroundService<S, A> {
    inner: S,
    around: A,
}

impl<S, A, B> Service<http::Request<B>> for AroundService<S, A>
where
    S: Service<http::Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    A: Around,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = LayerFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let mut inner = take_ready(&mut self.inner);
        self.around
            .around(request, move |request| inner.call(request))
    }
}

/// The inner service that was polled ready, leaving a fresh clone in its
/// place (tower's rule: the clone that said ready must serve the call).
fn take_ready<S: Clone>(slot: &mut S) -> S {
    let fresh = slot.clone();
    std::mem::replace(slot, fresh)
}

/// Answers a refused call in the caller's protocol (a gRPC status, or the
/// HTTP front's error JSON for the route): the fronts know how, and the
/// start-up hands their answer to the layers that refuse.
pub type Refuse = Arc<dyn Fn(&http::HeaderMap, &str, Failure) -> Response + Send + Sync>;

/// Answers at once with `refuse`'s answer, without calling the inner
/// service.
fn refuse_now<B, E: Send + 'static>(
    refuse: &Refuse,
    request: &http::Request<B>,
    failure: Failure,
) -> LayerFuture<E> {
    let answer = refuse(request.headers(), request.uri().path(), failure);
    Box::pin(std::future::ready(Ok(answer)))
}
