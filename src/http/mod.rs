//! The HTTP front, served on the gRPC port (HTTP/1.1 and HTTP/2): the
//! OpenAI-compatible routes, gRPC-Web (translated to gRPC before our
//! layers) and, for every HTTP call, the same middleware as gRPC —
//! authentication, rate limits, audit, metrics, request IDs — which knows
//! each route by a method name of its own (`call_name`).

pub mod error;
pub mod grpc_web;
pub mod openai;

use crate::dialogue::Engine;
use axum::routing::{get, post};
use std::sync::Arc;

/// Whether a request speaks gRPC (gRPC-Web arrives here translated).
pub fn is_grpc<B>(request: &http::Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The method name an HTTP route goes by in access rules, metrics, audit
/// and logs, like a gRPC method's path.
pub fn call_name(method: &http::Method, path: &str) -> &'static str {
    match (method.as_str(), path) {
        ("POST", "/v1/chat/completions") => "/http.OpenAi/ChatCompletions",
        ("GET", "/v1/models") => "/http.OpenAi/ListModels",
        _ => "/http.Unknown/Route",
    }
}

/// The HTTP routes merged with the gRPC services' router; what neither
/// serves answers UNIMPLEMENTED to gRPC callers and 404 to HTTP ones.
pub fn router(grpc: tonic::service::Routes, engine: Arc<Engine>) -> tonic::service::Routes {
    let http = axum::Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::list_models))
        .with_state(engine);
    grpc.into_axum_router()
        .merge(http)
        .fallback(unknown_route)
        .into()
}

async fn unknown_route(request: axum::extract::Request) -> http::Response<tonic::body::Body> {
    if is_grpc(&request) {
        return tonic::Status::unimplemented("").into_http();
    }
    let status = tonic::Status::not_found(format!(
        "no route {} {}",
        request.method(),
        request.uri().path()
    ));
    error::response(error::ErrorShape::for_path(request.uri().path()), &status)
}
