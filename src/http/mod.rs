//! The HTTP front, served on the gRPC port (HTTP/1.1 and HTTP/2): the REST
//! routes of the dialogue resources, the OpenAI-compatible routes, gRPC-Web
//! (translated to gRPC before our layers) and CORS. The same layers as gRPC
//! run around every HTTP call (authentication, rate limits, audit, metrics,
//! request IDs); routing reads the one table of methods
//! (`middleware::rpc_table`), so a route is served only as a method the
//! layers know. Errors answer in the route's JSON shape (`error`).

pub mod anthropic;
pub mod binding;
pub mod compression;
pub mod conversations;
pub mod cors;
pub mod error;
pub mod grpc_web;
pub mod json_mapping;
pub mod metrics_endpoint;
pub mod openai;
pub mod openapi;
pub mod request_json;
pub mod responses;
pub mod rest;
pub mod websocket;

use crate::engine::Engine;
use crate::failure::{ErrorKind, Failure};
use crate::grpc::dialogue_calls::DialogueCalls;
use crate::middleware::call::Resolved;
use crate::middleware::protocol::has_grpc_content;
use crate::middleware::rpc_table::Rpc;
use crate::router::Router;
use axum::extract::Request;
use std::sync::Arc;
use tonic::Status;

type Response = axum::response::Response;

/// What the HTTP routes call.
#[derive(Clone)]
pub struct Front {
    pub engine: Arc<Engine>,
    pub models: Arc<Router>,
    pub dialogues: DialogueCalls,
    /// The largest body accepted (`server.max_request_bytes`, as for gRPC).
    pub max_body: usize,
    /// Cancelled when the drain starts: WebSockets close (1001).
    pub stop: tokio_util::sync::CancellationToken,
    /// How long a WebSocket client may leave a frame untaken.
    pub websocket_send_timeout: std::time::Duration,
}

/// The gRPC services' router with the HTTP routes behind it: what neither
/// serves answers UNIMPLEMENTED to gRPC callers and 404 to HTTP ones.
pub fn router(grpc: tonic::service::Routes, front: Front) -> tonic::service::Routes {
    grpc.into_axum_router()
        .fallback_service(compression::front_service(front))
        .into()
}

/// Runs the method an HTTP request names.
async fn dispatch(front: Front, request: Request) -> Response {
    let call = Resolved::of(&request);
    match call.rpc.filter(|_| !has_grpc_content(request.headers())) {
        Some(rpc) => match serve(&front, rpc, call.id.unwrap_or_default(), request).await {
            Ok(response) => response,
            Err(request) => unknown_route(&request),
        },
        None => unknown_route(&request),
    }
}

/// The HTTP handler of `rpc`; the request back for a method served over
/// gRPC only.
async fn serve(front: &Front, rpc: Rpc, id: String, request: Request) -> Result<Response, Request> {
    Ok(match rpc {
        Rpc::ChatCompletions => openai::chat_completions(front, request).await,
        Rpc::OpenAiEmbeddings => openai::embeddings(front, request).await,
        Rpc::OpenAiListModels => openai::list_models(&front.models),
        Rpc::OpenAiGetModel => openai::get_model(&front.models, &id),
        Rpc::AnthropicMessages => anthropic::messages(front, request).await,
        Rpc::ResponsesCreate => responses::create(front, request).await,
        Rpc::ConversationsCreate => conversations::create(front, request).await,
        Rpc::ConversationsGet => conversations::get(front, &id, request).await,
        Rpc::ConversationsUpdate => conversations::update(front, &id, request).await,
        Rpc::ConversationsDelete => conversations::delete(front, &id, request).await,
        Rpc::ConversationsListItems => conversations::items::list(front, &id, request).await,
        Rpc::ConversationsCreateItems => conversations::items::create(front, &id, request).await,
        Rpc::ConversationsGetItem => {
            let (conversation, item) = two_ids(&id);
            conversations::items::get(front, conversation, item, request).await
        }
        Rpc::ConversationsDeleteItem => {
            let (conversation, item) = two_ids(&id);
            conversations::items::delete(front, conversation, item, request).await
        }
        Rpc::ResponsesGet => responses::get(front, &id, request).await,
        Rpc::ResponsesInputItems => responses::input_items(front, &id, request).await,
        Rpc::ResponsesDelete => responses::delete(front, &id, request).await,
        Rpc::AnthropicCountTokens => anthropic::count_tokens_route(front, request).await,
        Rpc::CreateDialogue => rest::create(front, request).await,
        Rpc::ListDialogues => rest::list(front, request).await,
        Rpc::GetDialogue => rest::get(front, &id, request).await,
        Rpc::UpdateDialogue => rest::update(front, &id, request).await,
        Rpc::DeleteDialogue => rest::delete(front, &id, request).await,
        Rpc::ListTurns => rest::list_turns(front, &id, request).await,
        Rpc::Converse => rest::converse(front, &id, request).await,
        Rpc::ConverseStream => rest::converse_stream(front, &id, request).await,
        Rpc::DialogueConnect => websocket::connect(front, &id, request).await,
        Rpc::BatchConverse => rest::batch_converse(front, request).await,
        Rpc::OpenApi => openapi::serve(),
        Rpc::ResumeStream
        | Rpc::SubmitTurn
        | Rpc::GetOperation
        | Rpc::WatchOperation
        | Rpc::ListModels
        | Rpc::IssueToken
        | Rpc::ListAuditEvents
        | Rpc::ExportStore
        | Rpc::ListRules
        | Rpc::HealthCheck
        | Rpc::HealthWatch
        | Rpc::Reflection
        | Rpc::ReflectionV1Alpha => return Err(request),
    })
}

/// A request's body, at most `max` bytes. A body cut off by a layer (its
/// read deadline, say) fails with that layer's status.
pub async fn read_body(body: axum::body::Body, max: usize) -> Result<bytes::Bytes, Status> {
    axum::body::to_bytes(body, max).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if let Some(status) = err.downcast_ref::<Status>() {
                return status.clone();
            }
            source = err.source();
        }
        crate::failure::Failure::invalid(
            "body",
            format!("is unreadable or larger than {max} bytes"),
        )
        .into()
    })
}

/// The two `{id}`s of a route that has two.
fn two_ids(id: &str) -> (&str, &str) {
    id.split_once(crate::middleware::call::ID_SEPARATOR)
        .unwrap_or((id, ""))
}

/// The caller the layers authenticated.
pub(crate) fn caller_of<B>(request: &http::Request<B>) -> Result<crate::auth::Principal, Status> {
    Ok(request
        .extensions()
        .get::<crate::auth::Principal>()
        .cloned()
        .ok_or(crate::auth::AuthError::Missing)?)
}

/// What no route serves: UNIMPLEMENTED for gRPC, NOT_FOUND for HTTP, 405
/// (with `Allow`) for a route served with other methods.
fn unknown_route<B>(request: &http::Request<B>) -> Response {
    use axum::response::IntoResponse;
    let path = request.uri().path();
    let allowed = crate::middleware::call::allowed_methods(path);
    if !has_grpc_content(request.headers()) && !allowed.is_empty() {
        let message = format!(
            "{} is not served on {path}; it takes {}",
            request.method(),
            allowed.join(", ")
        );
        let failure = Failure::new(ErrorKind::InvalidArgument, "METHOD_NOT_ALLOWED", message);
        let mut response = refusal(request.headers(), path, failure).into_response();
        *response.status_mut() = http::StatusCode::METHOD_NOT_ALLOWED;
        if let Ok(allow) = http::HeaderValue::from_str(&allowed.join(", ")) {
            response.headers_mut().insert(http::header::ALLOW, allow);
        }
        return response;
    }
    let failure = if has_grpc_content(request.headers()) {
        Failure::new(ErrorKind::Unimplemented, "UNIMPLEMENTED", "")
    } else {
        let message = format!("no route {} {path}", request.method());
        Failure::new(ErrorKind::NotFound, "NOT_FOUND", message)
    };
    refusal(request.headers(), path, failure).into_response()
}

/// An answer of the layers or the front in the caller's protocol: a gRPC
/// status, or the route's error JSON (see `middleware::Refuse`).
pub fn refusal(
    headers: &http::HeaderMap,
    path: &str,
    failure: Failure,
) -> http::Response<tonic::body::Body> {
    let status = Status::from(failure);
    if has_grpc_content(headers) {
        status.into_http()
    } else {
        error::response(error::ErrorShape::for_path(path), &status)
    }
}
