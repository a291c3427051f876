//! gRPC-Web for browser clients, by tonic-web — applied only to gRPC-Web
//! requests: tonic-web answers 400 to any other HTTP/1.1 request, which
//! would shut out the HTTP front's callers.

use crate::failure::{ErrorKind, Failure};
use crate::middleware::protocol::has_grpc_content;
use crate::middleware::rpc_table::Rpc;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic_web::{GrpcWebLayer, GrpcWebService};
use tower::{Layer, Service};

type Request = http::Request<tonic::body::Body>;
type Response = http::Response<tonic::body::Body>;

#[derive(Clone, Copy, Default)]
pub struct GrpcWebOnly;

impl<S: Clone> Layer<S> for GrpcWebOnly {
    type Service = GrpcWebOnlyService<S>;

    fn layer(&self, inner: S) -> GrpcWebOnlyService<S> {
        GrpcWebOnlyService {
            web: GrpcWebLayer::new().layer(inner.clone()),
            plain: inner,
        }
    }
}

#[derive(Clone)]
pub struct GrpcWebOnlyService<S> {
    web: GrpcWebService<S>,
    plain: S,
}

fn is_grpc_web(request: &Request) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc-web"))
}

impl<S> Service<Request> for GrpcWebOnlyService<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        match self.plain.poll_ready(cx) {
            Poll::Ready(Ok(())) => Service::<Request>::poll_ready(&mut self.web, cx),
            other => other,
        }
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if let Some(refused) = wrong_protocol(&request) {
            return Box::pin(std::future::ready(Ok(refused)));
        }
        if is_grpc_web(&request) {
            Box::pin(self.web.call(request))
        } else {
            Box::pin(self.plain.call(request))
        }
    }
}

/// A gRPC method's path called without a gRPC content type (a plain HTTP
/// POST): 415 saying what the route expects, instead of tonic's HTTP 200
/// with `grpc-status: 13`.
fn wrong_protocol(request: &Request) -> Option<Response> {
    let path = request.uri().path();
    if is_grpc_web(request) || has_grpc_content(request.headers()) || path.starts_with("/http.") {
        return None;
    }
    let rpc = Rpc::for_grpc_path(path)?;
    let hint = rpc
        .spec()
        .routes
        .first()
        .map(|r| format!("; over HTTP/JSON use {} {}", r.method, r.pattern))
        .unwrap_or_default();
    let failure = Failure::new(
        ErrorKind::InvalidArgument,
        "UNSUPPORTED_MEDIA_TYPE",
        format!(
            "{path} is a gRPC method: send it with Content-Type: application/grpc (or application/grpc-web){hint}"
        ),
    );
    let mut response = super::refusal(request.headers(), path, failure);
    *response.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
    Some(response)
}
