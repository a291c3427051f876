//! Anthropic's Messages API on the same port: `POST /v1/messages` (unary,
//! and SSE with `stream: true` in Anthropic's event sequence) and
//! `POST /v1/messages/count_tokens`, so Anthropic SDKs work unchanged with
//! `base_url` pointed at dialogd. Any configured model answers — an OpenAI
//! upstream serves an Anthropic-shaped call and the other way round — and
//! the call is stateless or bound to a stored dialogue exactly as on the
//! OpenAI front (`X-Dialogue-Id`, see `binding`), so a dialogue continues
//! across fronts. Errors use Anthropic's shape and status codes.

pub(crate) mod request;
mod response;

use super::Front;
use super::binding::{DIALOGUE_HEADER, plan};
use super::error::{self, ErrorShape};
use crate::auth::{AuthError, Principal};
use crate::dialogue::content::estimate_tokens;
use crate::dialogue::tokenizer::count_tokens;
use crate::engine::EngineError;
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::sse::Sse;
use axum::response::{IntoResponse, Response};
use request::MessagesRequest;
use serde_json::json;
use tonic::Status;

fn anthropic_error(status: &Status) -> Response {
    error::response(ErrorShape::Anthropic, status).into_response()
}

/// The caller, the headers and the request.
async fn read(
    front: &Front,
    request: Request,
    counting: bool,
) -> Result<(Principal, HeaderMap, MessagesRequest), Status> {
    let (parts, body) = request.into_parts();
    let caller = parts
        .extensions
        .get::<Principal>()
        .cloned()
        .ok_or(AuthError::Missing)?;
    let body = super::read_body(body, front.max_body).await?;
    Ok((caller, parts.headers, request::parse(&body, counting)?))
}

/// `POST /v1/messages`.
pub async fn messages(front: &Front, request: Request) -> Response {
    let (caller, headers, request) = match read(front, request, false).await {
        Ok(read) => read,
        Err(status) => return anthropic_error(&status),
    };
    let stream = request.stream;
    let call = match plan(
        caller,
        &headers,
        request.dialogue_id,
        request.model,
        request.messages,
        request.params,
    ) {
        Ok(call) => call,
        Err(status) => return anthropic_error(&status),
    };
    let dialogue_header = call.dialogue_header();
    let engine = &front.engine;
    let mut response = if stream {
        let events = call.stream(engine);
        // Refusals come before the stream starts, as HTTP errors.
        match crate::engine::started(events).await {
            Ok(events) => Sse::new(response::sse_events(events)).into_response(),
            Err(e) => return engine_error(e),
        }
    } else {
        let outcome = call.run(engine).await;
        match outcome {
            Ok(outcome) => axum::Json(response::message(&outcome)).into_response(),
            Err(e) => return engine_error(e),
        }
    };
    if let Some(id) = dialogue_header {
        response.headers_mut().insert(DIALOGUE_HEADER, id);
    }
    response
}

/// `POST /v1/messages/count_tokens`: the prompt's tokens as dialogd counts
/// them for context windows (o200k_base; images and tools estimated).
pub async fn count_tokens_route(front: &Front, request: Request) -> Response {
    let (_, _, request) = match read(front, request, true).await {
        Ok(read) => read,
        Err(status) => return anthropic_error(&status),
    };
    if front.models.route(&request.model).is_none() {
        return engine_error(EngineError::InvalidArgument(
            crate::failure::Invalid::field(
                "model",
                format!("{:?} is not a configured model", request.model),
            ),
        ));
    }
    let messages: u64 = request
        .messages
        .iter()
        .map(|m| estimate_tokens(&m.content))
        .sum();
    let tools: u64 = request
        .params
        .tools
        .iter()
        .map(|t| {
            let schema = t
                .parameters
                .as_ref()
                .map(|p| serde_json::Value::Object(p.clone()));
            count_tokens(&format!(
                "{} {} {}",
                t.name,
                t.description,
                schema.unwrap_or_default()
            ))
        })
        .sum();
    axum::Json(json!({"input_tokens": messages + tools})).into_response()
}

fn engine_error(e: EngineError) -> Response {
    anthropic_error(&Status::from(e))
}
