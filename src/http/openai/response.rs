//! What OpenAI's SDKs read back: a `chat.completion` (message with text
//! and `tool_calls`, log probabilities, usage), or its streamed form —
//! `chat.completion.chunk`s whose first carries the role, then content and
//! `tool_calls` deltas (id, type and name on a call's first), a finish
//! chunk, a usage chunk with `choices: []` when asked for, then `[DONE]`.

use super::super::error::{self, ErrorShape};
use crate::dialogue::content::{joined_text, tool_calls};
use crate::dialogue::model::{DialogueId, FinishReason, StreamEvent, TokenLogprob, TurnOutcome};
use crate::engine::EngineError;
use axum::response::sse::Event;
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use serde_json::{Value, json};
use std::borrow::Cow;
use std::convert::Infallible;
use tonic::Status;

fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::ToolCalls => "tool_calls",
    }
}

fn completion_id(dialogue: &DialogueId, turn_index: u64) -> String {
    format!("chatcmpl-{}-{turn_index}", dialogue.public())
}

fn usage(outcome: &TurnOutcome) -> Value {
    json!({
        "prompt_tokens": outcome.usage.prompt_tokens,
        "completion_tokens": outcome.usage.completion_tokens,
        "total_tokens": outcome.usage.prompt_tokens + outcome.usage.completion_tokens,
    })
}

/// Log probabilities as OpenAI writes them (with each token's UTF-8 bytes).
fn logprobs(tokens: &[TokenLogprob]) -> Value {
    let entry = |token: &str, logprob: f64| json!({"token": token, "logprob": logprob, "bytes": token.as_bytes()});
    let content: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let mut e = entry(&t.token, t.logprob);
            e["top_logprobs"] = t.top.iter().map(|a| entry(&a.token, a.logprob)).collect();
            e
        })
        .collect();
    json!({"content": content, "refusal": null})
}

/// A `chat.completion`, written straight from the outcome (its texts
/// borrowed, not copied into `serde_json::Value`s first).
#[derive(Serialize)]
pub struct Completion<'a> {
    id: String,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: Usage,
    system_fingerprint: Option<()>,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: Message<'a>,
    finish_reason: &'static str,
    logprobs: Value,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    /// Null when the reply is tool calls alone.
    content: Option<Cow<'a, str>>,
    refusal: Option<()>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<Call<'a>>,
}

#[derive(Serialize)]
struct Call<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: Function<'a>,
}

#[derive(Serialize)]
struct Function<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

/// A completion of `outcome`.
pub fn completion(outcome: &TurnOutcome, wants_logprobs: bool) -> Completion<'_> {
    let content = &outcome.assistant_turn.content;
    let text = joined_text(content);
    let calls: Vec<Call> = tool_calls(content)
        .map(|c| Call {
            id: &c.id,
            kind: "function",
            function: Function {
                name: &c.name,
                arguments: &c.arguments,
            },
        })
        .collect();
    let message = Message {
        role: "assistant",
        content: (!text.is_empty() || calls.is_empty()).then_some(text),
        refusal: None,
        tool_calls: calls,
    };
    let usage = &outcome.usage;
    Completion {
        id: completion_id(&outcome.dialogue_id, outcome.assistant_turn.index),
        object: "chat.completion",
        created: outcome.assistant_turn.create_time.0 / 1_000_000_000,
        model: &outcome.metadata.model,
        choices: [Choice {
            index: 0,
            message,
            finish_reason: finish_reason(outcome.finish_reason),
            logprobs: match wants_logprobs {
                true => logprobs(&outcome.logprobs),
                false => Value::Null,
            },
        }],
        usage: Usage {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.prompt_tokens + usage.completion_tokens,
        },
        system_fingerprint: None,
    }
}

/// Builds the chunks of one streamed completion.
struct Chunker {
    id: String,
    model: String,
    created: i64,
    /// The role goes on the first delta.
    role_sent: bool,
    include_usage: bool,
}

impl Chunker {
    fn chunk(&mut self, mut delta: Value, finish: Option<&str>, logprobs: Value) -> Event {
        if !self.role_sent {
            self.role_sent = true;
            delta["role"] = Value::from("assistant");
            if delta.get("content").is_none() {
                delta["content"] = Value::Null;
            }
        }
        let chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}],
        });
        Event::default().data(chunk.to_string())
    }

    fn events(&mut self, event: Result<StreamEvent, EngineError>) -> Vec<Event> {
        match event {
            Ok(StreamEvent::Start {
                dialogue_id,
                turn_index,
                model,
            }) => {
                self.id = completion_id(&dialogue_id, turn_index);
                self.model = model;
                Vec::new()
            }
            Ok(StreamEvent::Delta {
                text, logprobs: l, ..
            }) => {
                let l = match l.is_empty() {
                    true => Value::Null,
                    false => logprobs(&l),
                };
                vec![self.chunk(json!({"content": text}), None, l)]
            }
            Ok(StreamEvent::ToolCallDelta {
                index,
                id,
                name,
                arguments,
            }) => {
                let mut call = json!({"index": index, "function": {"arguments": arguments}});
                if let Some(id) = id {
                    call["id"] = Value::from(id);
                    call["type"] = Value::from("function");
                }
                if let Some(name) = name {
                    call["function"]["name"] = Value::from(name);
                }
                vec![self.chunk(json!({"tool_calls": [call]}), None, Value::Null)]
            }
            Ok(StreamEvent::End(outcome)) => {
                let reason = finish_reason(outcome.finish_reason);
                let mut out = vec![self.chunk(json!({}), Some(reason), Value::Null)];
                if self.include_usage {
                    let chunk = json!({
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "choices": [],
                        "usage": usage(&outcome),
                    });
                    out.push(Event::default().data(chunk.to_string()));
                }
                out.push(Event::default().data("[DONE]"));
                out
            }
            // After the stream started: the error ends it as an `error`
            // object (what OpenAI's SDKs raise from).
            Err(e) => vec![
                Event::default()
                    .data(error::body(ErrorShape::OpenAi, &Status::from(e)).to_string()),
            ],
        }
    }
}

/// Engine events as OpenAI chunks (see the module's comment).
pub fn sse_chunks(
    events: impl Stream<Item = Result<StreamEvent, EngineError>> + Send + 'static,
    include_usage: bool,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let mut chunker = Chunker {
        id: String::new(),
        model: String::new(),
        created: crate::dialogue::model::Time::now().0 / 1_000_000_000,
        role_sent: false,
        include_usage,
    };
    events
        .map(move |event| chunker.events(event))
        .flat_map(|events| futures_util::stream::iter(events.into_iter().map(Ok)))
}
