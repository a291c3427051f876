//! What Anthropic's SDKs read back: a `message` (text and `tool_use`
//! blocks, `stop_reason`, usage), or its stream — `message_start`, per
//! block `content_block_start` / `content_block_delta` (`text_delta`,
//! `input_json_delta`) / `content_block_stop`, `message_delta` with the
//! stop reason and usage, `message_stop`; an `error` event if the turn
//! fails after it started.

use super::super::error::{self, ErrorShape};
use crate::dialogue::content::{join_text, tool_calls};
use crate::dialogue::model::{DialogueId, FinishReason, StreamEvent, TurnOutcome};
use crate::engine::EngineError;
use axum::response::sse::Event;
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
use std::convert::Infallible;
use tonic::Status;

fn stop_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop | FinishReason::ContentFilter => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
    }
}

fn message_id(dialogue: &DialogueId, turn_index: u64) -> String {
    format!("msg_{}_{turn_index}", dialogue.public())
}

/// A tool call's arguments as the JSON object Anthropic's `input` is
/// (arguments that are not an object are wrapped, never dropped).
fn input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => value,
        Ok(other) => json!({"value": other}),
        Err(_) => json!({"arguments": arguments}),
    }
}

/// The message of `outcome`.
pub fn message(outcome: &TurnOutcome) -> Value {
    let parts = &outcome.assistant_turn.content;
    let mut content = Vec::new();
    let text = join_text(parts);
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in tool_calls(parts) {
        content.push(json!({
            "type": "tool_use", "id": call.id, "name": call.name, "input": input(&call.arguments),
        }));
    }
    json!({
        "id": message_id(&outcome.dialogue_id, outcome.assistant_turn.index),
        "type": "message",
        "role": "assistant",
        "model": outcome.metadata.model,
        "content": content,
        "stop_reason": stop_reason(outcome.finish_reason),
        "stop_sequence": null,
        "usage": {
            "input_tokens": outcome.usage.prompt_tokens,
            "output_tokens": outcome.usage.completion_tokens,
        },
    })
}

fn event(name: &str, data: Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

/// Which block is open in the stream.
#[derive(PartialEq)]
enum Open {
    None,
    Text,
    /// The tool call with this engine index.
    Tool(u32),
}

struct Streamer {
    /// Index of the next block.
    next: usize,
    open: Open,
}

impl Streamer {
    fn close(&mut self, out: &mut Vec<Event>) {
        if self.open != Open::None {
            out.push(event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": self.next - 1}),
            ));
            self.open = Open::None;
        }
    }

    fn start(&mut self, block: Value, open: Open, out: &mut Vec<Event>) {
        self.close(out);
        out.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": self.next, "content_block": block}),
        ));
        self.next += 1;
        self.open = open;
    }

    fn delta(&self, delta: Value) -> Event {
        event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": self.next - 1, "delta": delta}),
        )
    }

    fn events(&mut self, item: Result<StreamEvent, EngineError>) -> Vec<Event> {
        let mut out = Vec::new();
        match item {
            Ok(StreamEvent::Start {
                dialogue_id,
                turn_index,
                model,
            }) => out.push(event(
                "message_start",
                json!({"type": "message_start", "message": {
                    "id": message_id(&dialogue_id, turn_index), "type": "message",
                    "role": "assistant", "model": model, "content": [],
                    "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                }}),
            )),
            Ok(StreamEvent::Delta { text, .. }) => {
                if text.is_empty() {
                    return out;
                }
                if self.open != Open::Text {
                    self.start(json!({"type": "text", "text": ""}), Open::Text, &mut out);
                }
                out.push(self.delta(json!({"type": "text_delta", "text": text})));
            }
            Ok(StreamEvent::ToolCallDelta {
                index,
                id,
                name,
                arguments,
            }) => {
                if self.open != Open::Tool(index) {
                    let block = json!({
                        "type": "tool_use", "id": id.unwrap_or_default(),
                        "name": name.unwrap_or_default(), "input": {},
                    });
                    self.start(block, Open::Tool(index), &mut out);
                }
                if !arguments.is_empty() {
                    out.push(
                        self.delta(json!({"type": "input_json_delta", "partial_json": arguments})),
                    );
                }
            }
            Ok(StreamEvent::End(outcome)) => {
                self.close(&mut out);
                out.push(event(
                    "message_delta",
                    json!({"type": "message_delta",
                        "delta": {"stop_reason": stop_reason(outcome.finish_reason), "stop_sequence": null},
                        "usage": {"input_tokens": outcome.usage.prompt_tokens,
                                  "output_tokens": outcome.usage.completion_tokens}}),
                ));
                out.push(event("message_stop", json!({"type": "message_stop"})));
            }
            Err(e) => out.push(event(
                "error",
                error::body(ErrorShape::Anthropic, &Status::from(e)),
            )),
        }
        out
    }
}

/// Engine events as Anthropic's stream (see the module's comment).
pub fn sse_events(
    events: impl Stream<Item = Result<StreamEvent, EngineError>> + Send + 'static,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let mut streamer = Streamer {
        next: 0,
        open: Open::None,
    };
    events
        .map(move |item| streamer.events(item))
        .flat_map(|events| futures_util::stream::iter(events.into_iter().map(Ok)))
}
