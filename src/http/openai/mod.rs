//! OpenAI-compatible `POST /v1/chat/completions` (unary, and SSE with
//! `stream: true`), `GET /v1/models` and `GET /v1/models/{id}`, so OpenAI
//! SDKs work unchanged with `base_url` pointed at dialogd. The wire types
//! are OpenAI's (`request`, `messages`, `response`); the work is the
//! engine's, as for gRPC.
//!
//! Without a dialogue the call is stateless: the request's messages are the
//! prompt. With `X-Dialogue-Id` (or the body field `dialogue_id`) the call
//! is a turn of that stored dialogue: the messages after the last
//! assistant message (the user's message, or tool results) are the turn,
//! history comes from the store, and a missing dialogue is created with the
//! request's system message as its system prompt.

mod embeddings;
mod messages;
pub(crate) mod request;

pub use embeddings::embeddings;
mod response;

use super::Front;
use super::binding::{DIALOGUE_HEADER, plan};
use super::error::{self, ErrorShape};
use crate::auth::{AuthError, Principal};
use crate::engine::EngineError;
use crate::failure::{ErrorKind, Failure, FieldViolation, Invalid};
use crate::router::Router;
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::sse::Sse;
use axum::response::{IntoResponse, Response};
use request::ChatRequest;
use serde_json::{Value, json};
use tonic::Status;

fn openai_error(status: &Status) -> Response {
    error::response(ErrorShape::OpenAi, status).into_response()
}

/// The caller, the headers and the request of a chat completion.
async fn read(
    front: &Front,
    request: Request,
) -> Result<(Principal, HeaderMap, ChatRequest), Status> {
    let (parts, body) = request.into_parts();
    let caller = parts
        .extensions
        .get::<Principal>()
        .cloned()
        .ok_or(AuthError::Missing)?;
    let body = super::read_body(body, front.max_body).await?;
    Ok((caller, parts.headers, request::parse(&body)?))
}

pub async fn chat_completions(front: &Front, request: Request) -> Response {
    let (caller, headers, request) = match read(front, request).await {
        Ok(read) => read,
        Err(status) => return openai_error(&status),
    };
    let (stream, include_usage) = (request.stream, request.include_usage);
    let wants_logprobs = request.params.logprobs;
    let call = match plan(
        caller,
        &headers,
        request.dialogue_id,
        request.model,
        request.messages,
        request.params,
    ) {
        Ok(c) => c,
        Err(status) => return openai_error(&status),
    };
    // A bound call answers with its dialogue's ID.
    let dialogue_header = call.dialogue_header();
    let engine = &front.engine;
    if stream {
        let events = call.stream(engine);
        // Refusals (an unknown model, a bad field, a limit) come before the
        // turn starts: answer them as errors, not as a stream.
        let events = match crate::engine::started(events).await {
            Ok(events) => events,
            Err(e) => return engine_error(e),
        };
        let mut response = Sse::new(response::sse_chunks(events, include_usage)).into_response();
        if let Some(id) = dialogue_header {
            response.headers_mut().insert(DIALOGUE_HEADER, id);
        }
        return response;
    }
    let outcome = call.run(engine).await;
    match outcome {
        Ok(outcome) => {
            let body = response::completion(&outcome, wants_logprobs);
            let mut response = axum::Json(body).into_response();
            if let Some(id) = dialogue_header {
                response.headers_mut().insert(DIALOGUE_HEADER, id);
            }
            // Rule names are configured ASCII: always a valid header value.
            if let Ok(rule) = axum::http::HeaderValue::from_str(&outcome.metadata.rule)
                && !rule.is_empty()
            {
                response.headers_mut().insert(RULE_HEADER, rule);
            }
            response
        }
        Err(e) => engine_error(e),
    }
}

/// Names the traffic rule that routed or answered a completion.
const RULE_HEADER: &str = "x-dialogd-rule";

/// An engine error as OpenAI's error, naming parameters as OpenAI does
/// (`tools[0].function.name`, not `generation.tools[0].name`).
fn engine_error(e: EngineError) -> Response {
    let e = match e {
        EngineError::InvalidArgument(Invalid(violations)) => EngineError::InvalidArgument(Invalid(
            violations
                .into_iter()
                .map(|v| FieldViolation {
                    field: openai_param(&v.field),
                    description: v.description,
                })
                .collect(),
        )),
        other => other,
    };
    openai_error(&Status::from(e))
}

/// The OpenAI parameter an engine field stands for.
fn openai_param(field: &str) -> String {
    let field = field
        .strip_prefix("generation.")
        .or_else(|| field.strip_prefix("dialogue_defaults."))
        .unwrap_or(field);
    if let Some(rest) = field.strip_prefix("tools[")
        && let Some((index, inner)) = rest.split_once("].")
    {
        return format!("tools[{index}].function.{inner}");
    }
    if field.starts_with("content") {
        // A bound call's turn is built from the trailing messages.
        return "messages".into();
    }
    if let Some((message, _)) = field.split_once(".content[")
        && field.contains(".tool_result.call_id")
    {
        return format!("{message}.tool_call_id");
    }
    field.to_owned()
}

pub fn list_models(router: &Router) -> Response {
    let data: Vec<Value> = router.models().iter().map(|m| model(&m.name)).collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// `GET /v1/models/{id}`.
pub fn get_model(router: &Router, id: &str) -> Response {
    match router.route(id) {
        Some(route) => axum::Json(model(&route.name)).into_response(),
        None => openai_error(
            &Failure::new(
                ErrorKind::NotFound,
                "MODEL_NOT_FOUND",
                format!("the model {id:?} does not exist (GET /v1/models lists them)"),
            )
            .into(),
        ),
    }
}

fn model(name: &str) -> Value {
    json!({"id": name, "object": "model", "created": 0, "owned_by": "dialogd"})
}

#[cfg(test)]
mod tests {
    use super::openai_param;

    #[test]
    fn engine_fields_are_named_as_openai_names_its_parameters() {
        for (field, param) in [
            ("generation.temperature", "temperature"),
            ("generation.tools[1].name", "tools[1].function.name"),
            (
                "generation.response_format.json_schema.name",
                "response_format.json_schema.name",
            ),
            ("content[0].tool_result.call_id", "messages"),
            (
                "messages[3].content[0].tool_result.call_id",
                "messages[3].tool_call_id",
            ),
            ("dialogue_defaults.model", "model"),
            ("messages[1].content", "messages[1].content"),
        ] {
            assert_eq!(openai_param(field), param);
        }
    }
}
