//! Tower layers around every gRPC service, outermost first: request ID,
//! metrics, audit, auth, rate limits.

pub mod audit;
pub mod auth;
pub mod metrics;
pub mod outcome;
pub mod protocol;
pub mod rate_limit;
pub mod request_id;

use std::future::Future;
use std::pin::Pin;
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

/// The method a call goes by: its gRPC path, or the name the HTTP front
/// gives an HTTP route.
pub fn call_path<B>(request: &http::Request<B>) -> &str {
    if protocol::is_grpc(request) {
        request.uri().path()
    } else {
        crate::http::call_name(request.method(), request.uri().path())
    }
}

/// An error answer in the caller's protocol.
fn refusal<B>(request: &http::Request<B>, status: tonic::Status) -> Response {
    if protocol::is_grpc(request) {
        status.into_http()
    } else {
        let shape = crate::http::error::ErrorShape::for_path(request.uri().path());
        crate::http::error::response(shape, &status)
    }
}

/// Answers at once with `refusal`, without calling the inner service.
fn refuse<B, E: Send + 'static>(
    request: &http::Request<B>,
    status: tonic::Status,
) -> LayerFuture<E> {
    Box::pin(std::future::ready(Ok(refusal(request, status))))
}
