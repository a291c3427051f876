//! The HTTP front, served on the gRPC port (HTTP/1.1 and HTTP/2): the
//! OpenAI-compatible routes, gRPC-Web (translated to gRPC before our
//! layers) and, for every HTTP call, the same middleware as gRPC —
//! authentication, rate limits, audit, metrics, request IDs — which knows
//! each route by a method name of its own (`call_name`).

pub mod cors;
pub mod error;
pub mod grpc_web;
pub mod openai;
pub mod rest;

use crate::dialogue::engine::Engine;
use crate::middleware::protocol::is_grpc;
use crate::router::Router;
use axum::routing::{get, post};
use std::sync::Arc;

/// The method name an HTTP route goes by in access rules, metrics, audit
/// and logs: the REST routes are the RPCs they mirror, the OpenAI routes
/// have names of their own.
pub fn call_name(method: &http::Method, path: &str) -> &'static str {
    const UNKNOWN: &str = "/http.Unknown/Route";
    let method = method.as_str();
    match (method, path) {
        ("POST", "/v1/chat/completions") => return "/http.OpenAi/ChatCompletions",
        ("GET", "/v1/models") => return "/http.OpenAi/ListModels",
        ("POST", "/v1/dialogues") => return "/dialogue.v1.DialogueService/CreateDialogue",
        ("GET", "/v1/dialogues") => return "/dialogue.v1.DialogueService/ListDialogues",
        ("POST", "/v1/dialogues:batchConverse") => {
            return "/dialogue.v1.DialogueService/BatchConverse";
        }
        _ => {}
    }
    let Some(rest) = path.strip_prefix("/v1/dialogues/") else {
        return UNKNOWN;
    };
    match (method, rest.split_once('/')) {
        ("GET", Some((_, "turns"))) => "/dialogue.v1.DialogueService/ListTurns",
        (_, Some(_)) => UNKNOWN,
        ("GET", None) => "/dialogue.v1.DialogueService/GetDialogue",
        ("PATCH", None) => "/dialogue.v1.DialogueService/UpdateDialogue",
        ("DELETE", None) => "/dialogue.v1.DialogueService/DeleteDialogue",
        ("POST", None) if rest.ends_with(":converse") => "/dialogue.v1.DialogueService/Converse",
        ("POST", None) if rest.ends_with(":converseStream") => {
            "/dialogue.v1.DialogueService/ConverseStream"
        }
        _ => UNKNOWN,
    }
}

/// The HTTP routes merged with the gRPC services' router; what neither
/// serves answers UNIMPLEMENTED to gRPC callers and 404 to HTTP ones.
pub fn router(
    grpc: tonic::service::Routes,
    engine: Arc<Engine>,
    models: Arc<Router>,
    dialogues: crate::grpc::DialogueGrpc,
    max_body: usize,
) -> tonic::service::Routes {
    let openai = axum::Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::list_models).with_state(models))
        // Bodies as large as gRPC messages may be, not axum's 2 MB.
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(engine);
    let rest = axum::Router::new()
        .route("/v1/dialogues", get(rest::list).post(rest::create))
        .route(
            "/v1/dialogues/{id}",
            get(rest::get)
                .patch(rest::update)
                .delete(rest::delete)
                .post(rest::custom_method),
        )
        .route("/v1/dialogues/{id}/turns", get(rest::list_turns))
        .route("/v1/dialogues:batchConverse", post(rest::batch_converse))
        .with_state(rest::Rest {
            service: dialogues,
            max_body,
        });
    grpc.into_axum_router()
        .merge(openai)
        .merge(rest)
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
