//! What OpenAI's SDKs read back: a `chat.completion` (message with text
//! and `tool_calls`, log probabilities, usage), or its streamed form —
//! `chat.completion.chunk`s whose first carries the role, then content and
//! `tool_calls` deltas (id, type and name on a call's first), a finish
//! chunk, a usage chunk with `choices: []` when asked for, then `[DONE]`.

use super::super::error::{self, ErrorShape};
use crate::dialogue::content::{join_text, tool_calls};
use crate::dialogue::model::{DialogueId, FinishReason, StreamEvent, TokenLogprob, TurnOutcome};
use crate::engine::EngineError;
use axum::response::sse::Event;
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
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

/// A completion of `outcome`.
pub fn completion(outcome: &TurnOutcome, wants_logprobs: bool) -> Value {
    let content = &outcome.assistant_turn.content;
    let text = join_text(content);
    let calls: Vec<Value> = tool_calls(content)
        .map(|c| {
            json!({
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            })
        })
        .collect();
    let mut message = json!({"role": "assistant", "content": text, "refusal": null});
    if !calls.is_empty() {
        if text.is_empty() {
            message["content"] = Value::Null;
        }
        message["tool_calls"] = Value::Array(calls);
    }
    json!({
        "id": completion_id(&outcome.dialogue_id, outcome.assistant_turn.index),
        "object": "chat.completion",
        "created": outcome.assistant_turn.create_time.0 / 1_000_000_000,
        "model": outcome.metadata.model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason(outcome.finish_reason),
            "logprobs": if wants_logprobs { logprobs(&outcome.logprobs) } else { Value::Null },
        }],
        "usage": usage(outcome),
        "system_fingerprint": null,
    })
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
