//! OpenAI-compatible `POST /v1/chat/completions` (unary, and SSE with
//! `stream: true`) and `GET /v1/models`, so OpenAI SDKs work unchanged with
//! `base_url` pointed at dialogd. The wire types here are OpenAI's, not
//! ours; the work is the engine's, as for gRPC.
//!
//! Without a dialogue the call is stateless: the request's messages are the
//! prompt. With `X-Dialogue-Id` (or the body field `dialogue_id`) the call
//! is a turn of that stored dialogue: only the last (user) message is sent,
//! history comes from the store, and a missing dialogue is created with the
//! request's system message as its system prompt.

use super::Front;
use super::error::{self, ErrorShape};
use crate::auth::{AuthError, Principal};
use crate::dialogue::model::PromptMessage;
use crate::dialogue::model::{
    CachePolicy, CompletionRequest, ContentPart, DialogueId, DialogueSpec, Expiration,
    FinishReason, GenerationParams, Role, StreamEvent, TurnOutcome, TurnRequest,
};
use crate::router::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use std::convert::Infallible;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// Names the stored dialogue a call belongs to.
pub const DIALOGUE_HEADER: &str = "x-dialogue-id";

#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    stop: Option<Stop>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    seed: Option<i64>,
    n: Option<u32>,
    /// dialogd's extension: the stored dialogue (like `X-Dialogue-Id`).
    dialogue_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    content: Option<Content>,
}

/// A message's content: a string or text parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

fn invalid(field: &str, description: impl Into<String>) -> Status {
    crate::failure::Failure::invalid(field, description).into()
}

fn openai_error(status: &Status) -> Response {
    error::response(ErrorShape::OpenAi, status).into_response()
}

impl ChatRequest {
    fn prompt(&self) -> Result<Vec<PromptMessage>, Status> {
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let role = match m.role.as_str() {
                    "system" | "developer" => Role::System,
                    "user" => Role::User,
                    "assistant" => Role::Assistant,
                    other => {
                        return Err(invalid(
                            &format!("messages[{i}].role"),
                            format!(
                                "{other:?} is not supported (system, developer, user, assistant)"
                            ),
                        ));
                    }
                };
                let text = match &m.content {
                    None => String::new(),
                    Some(Content::Text(t)) => t.clone(),
                    Some(Content::Parts(parts)) => {
                        let mut text = String::new();
                        for (j, part) in parts.iter().enumerate() {
                            match (part.kind.as_str(), &part.text) {
                                ("text", Some(t)) => text.push_str(t),
                                _ => {
                                    return Err(invalid(
                                        &format!("messages[{i}].content[{j}]"),
                                        "only text parts are supported",
                                    ));
                                }
                            }
                        }
                        text
                    }
                };
                Ok(PromptMessage { role, text })
            })
            .collect()
    }

    fn params(&self) -> Result<GenerationParams, Status> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(invalid("n", "only 1 choice per request is supported"));
        }
        Ok(GenerationParams {
            model: Some(self.model.clone()).filter(|m| !m.is_empty()),
            temperature: self.temperature,
            top_p: self.top_p,
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            stop: match &self.stop {
                None => Vec::new(),
                Some(Stop::One(s)) => vec![s.clone()],
                Some(Stop::Many(s)) => s.clone(),
            },
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            seed: self.seed,
            cache: CachePolicy::Deterministic,
        })
    }
}

/// What the engine is asked to do for one request.
enum Call {
    Stateless(CompletionRequest),
    Turn(TurnRequest),
}

fn plan(caller: Principal, headers: &HeaderMap, request: &ChatRequest) -> Result<Call, Status> {
    let messages = request.prompt()?;
    let params = request.params()?;
    let dialogue = headers
        .get(DIALOGUE_HEADER)
        .map(|v| v.to_str().map(str::to_owned))
        .transpose()
        .map_err(|_| invalid(DIALOGUE_HEADER, "must be ASCII"))?
        .or_else(|| request.dialogue_id.clone());
    let Some(dialogue) = dialogue else {
        return Ok(Call::Stateless(CompletionRequest {
            caller,
            messages,
            params,
            deadline: None,
        }));
    };
    let dialogue_id =
        DialogueId::parse(&dialogue).map_err(|e| invalid("dialogue_id", e.to_string()))?;
    let Some(last) = messages.last().filter(|m| m.role == Role::User) else {
        return Err(invalid("messages", "must end with a user message"));
    };
    let system_prompt = messages
        .iter()
        .find(|m| m.role == Role::System)
        .map(|m| m.text.clone())
        .unwrap_or_default();
    Ok(Call::Turn(TurnRequest {
        caller,
        dialogue_id,
        content: vec![ContentPart::Text(last.text.clone())],
        create_if_missing: Some(DialogueSpec {
            model: request.model.clone(),
            system_prompt,
            labels: Default::default(),
            state: None,
            expiration: Expiration::Never,
        }),
        params,
        request_id: None,
        deadline: None,
        resumable: false,
    }))
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
    let body = axum::body::to_bytes(body, front.max_body)
        .await
        .map_err(|_| {
            invalid(
                "body",
                format!("is unreadable or larger than {} bytes", front.max_body),
            )
        })?;
    let request = serde_json::from_slice(&body)
        .map_err(|e| invalid("body", format!("is not a valid request: {e}")))?;
    Ok((caller, parts.headers, request))
}

pub async fn chat_completions(front: &Front, request: Request) -> Response {
    let (caller, headers, request) = match read(front, request).await {
        Ok(read) => read,
        Err(status) => return openai_error(&status),
    };
    let call = match plan(caller, &headers, &request) {
        Ok(c) => c,
        Err(status) => return openai_error(&status),
    };
    let engine = &front.engine;
    let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
    if request.stream {
        let events = match call {
            Call::Stateless(r) => engine.complete_stream(r),
            Call::Turn(r) => engine.converse_stream(r),
        };
        let chunks = sse_chunks(ReceiverStream::new(events), include_usage);
        return Sse::new(chunks).into_response();
    }
    let (outcome, bound) = match call {
        Call::Stateless(r) => (engine.complete(r).await, false),
        Call::Turn(r) => (engine.converse(r).await, true),
    };
    match outcome {
        Ok(outcome) => {
            let mut response = axum::Json(completion(&outcome)).into_response();
            if bound && let Ok(v) = HeaderValue::from_str(outcome.dialogue_id.public()) {
                response.headers_mut().insert(DIALOGUE_HEADER, v);
            }
            response
        }
        Err(e) => openai_error(&Status::from(e)),
    }
}

fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::ToolCalls => "tool_calls",
    }
}

fn completion_id(outcome_id: &DialogueId, turn_index: u64) -> String {
    format!("chatcmpl-{}-{turn_index}", outcome_id.public())
}

fn usage(outcome: &TurnOutcome) -> Value {
    json!({
        "prompt_tokens": outcome.usage.prompt_tokens,
        "completion_tokens": outcome.usage.completion_tokens,
        "total_tokens": outcome.usage.prompt_tokens + outcome.usage.completion_tokens,
    })
}

fn created(outcome: &TurnOutcome) -> i64 {
    outcome.assistant_turn.create_time.0 / 1_000_000_000
}

fn completion(outcome: &TurnOutcome) -> Value {
    let text: String = outcome
        .assistant_turn
        .content
        .iter()
        .map(|ContentPart::Text(t)| t.as_str())
        .collect();
    json!({
        "id": completion_id(&outcome.dialogue_id, outcome.assistant_turn.index),
        "object": "chat.completion",
        "created": created(outcome),
        "model": outcome.metadata.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish_reason(outcome.finish_reason),
            "logprobs": null,
        }],
        "usage": usage(outcome),
        "system_fingerprint": null,
    })
}

/// Engine events as OpenAI chunks: a role delta, content deltas, the
/// finish reason, usage if asked for, then `[DONE]`. An error ends the
/// stream as an `error` object (what OpenAI's SDKs raise from).
fn sse_chunks(
    events: impl Stream<Item = Result<StreamEvent, crate::engine::EngineError>> + Send + 'static,
    include_usage: bool,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    struct Chunking {
        id: String,
        model: String,
        created: i64,
    }
    let now = || crate::dialogue::model::Time::now().0 / 1_000_000_000;
    let mut chunking = Chunking {
        id: String::new(),
        model: String::new(),
        created: now(),
    };
    let chunk = |c: &Chunking, delta: Value, finish: Option<&str>| {
        json!({
            "id": c.id,
            "object": "chat.completion.chunk",
            "created": c.created,
            "model": c.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        })
    };
    let data = |v: Value| Event::default().data(v.to_string());
    events
        .map(move |event| -> Vec<Event> {
            match event {
                Ok(StreamEvent::Start {
                    dialogue_id,
                    turn_index,
                    model,
                }) => {
                    chunking.id = completion_id(&dialogue_id, turn_index);
                    chunking.model = model;
                    vec![data(chunk(
                        &chunking,
                        json!({"role": "assistant", "content": ""}),
                        None,
                    ))]
                }
                Ok(StreamEvent::Delta { text, .. }) if text.is_empty() => Vec::new(),
                Ok(StreamEvent::Delta { text, .. }) => {
                    vec![data(chunk(&chunking, json!({"content": text}), None))]
                }
                Ok(StreamEvent::End(outcome)) => {
                    if chunking.id.is_empty() {
                        // Replayed or cached without a start event.
                        chunking.id =
                            completion_id(&outcome.dialogue_id, outcome.assistant_turn.index);
                        chunking.model = outcome.metadata.model.clone();
                    }
                    let mut out = vec![data(chunk(
                        &chunking,
                        json!({}),
                        Some(finish_reason(outcome.finish_reason)),
                    ))];
                    if include_usage {
                        let mut last = chunk(&chunking, json!({}), None);
                        last["choices"] = json!([]);
                        last["usage"] = usage(&outcome);
                        out.push(data(last));
                    }
                    out.push(Event::default().data("[DONE]"));
                    out
                }
                Err(e) => vec![data(error::body(ErrorShape::OpenAi, &Status::from(e)))],
            }
        })
        .flat_map(|events| futures_util::stream::iter(events.into_iter().map(Ok)))
}

pub fn list_models(router: &Router) -> Response {
    let data: Vec<Value> = router
        .models()
        .iter()
        .map(|m| json!({"id": m.name, "object": "model", "created": 0, "owned_by": "dialogd"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}
