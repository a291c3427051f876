//! A streamed response in the Responses API's event order, each event with
//! its increasing `sequence_number`: `response.created`,
//! `response.in_progress`; per output item `response.output_item.added`,
//! then for text `response.content_part.added`, `response.output_text.delta`…,
//! `response.output_text.done`, `response.content_part.done`, or for a call
//! `response.function_call_arguments.delta`…, `….done`; then
//! `response.output_item.done`; finally `response.completed` (or
//! `response.failed` if the turn fails after it started). The response ID
//! in the stream is the one GET reads back.

use super::render::{self, Echo};
use crate::dialogue::model::StreamEvent;
use crate::engine::EngineError;
use axum::response::sse::Event;
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
use std::convert::Infallible;
use tonic::Status;

/// The item being streamed.
enum Open {
    None,
    Text {
        text: String,
    },
    Call {
        index: u32,
        call_id: String,
        name: String,
        arguments: String,
    },
}

struct Streamer {
    echo: Echo,
    /// Whether the response ID comes from the stream's start (stored).
    stored: bool,
    sequence: u64,
    output: Vec<Value>,
    open: Open,
}

impl Streamer {
    fn event(&mut self, kind: &str, mut data: Value) -> Event {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        Event::default().event(kind).data(data.to_string())
    }

    fn snapshot(&self, status: &str) -> Value {
        render::response(&self.echo, status, self.output.clone(), None, None)
    }

    fn close(&mut self, out: &mut Vec<Event>) {
        let index = self.output.len();
        match std::mem::replace(&mut self.open, Open::None) {
            Open::None => {}
            Open::Text { text } => {
                let item_id = render::message_id(&self.echo.id);
                let part = json!({"type": "output_text", "text": text, "annotations": []});
                let e = json!({"item_id": item_id, "output_index": index, "content_index": 0, "text": text});
                out.push(self.event("response.output_text.done", e));
                let e = json!({"item_id": item_id, "output_index": index, "content_index": 0, "part": part});
                out.push(self.event("response.content_part.done", e));
                let item = render::message_item(&item_id, &text, "completed");
                out.push(self.event(
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                ));
                self.output.push(item);
            }
            Open::Call {
                call_id,
                name,
                arguments,
                ..
            } => {
                let item = render::function_call_item(&call_id, &name, &arguments, "completed");
                let e = json!({"item_id": format!("fc_{call_id}"), "output_index": index, "arguments": arguments});
                out.push(self.event("response.function_call_arguments.done", e));
                out.push(self.event(
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                ));
                self.output.push(item);
            }
        }
    }

    fn events(&mut self, item: Result<StreamEvent, EngineError>) -> Vec<Event> {
        let mut out = Vec::new();
        match item {
            Ok(StreamEvent::Start {
                dialogue_id,
                turn_index,
                model,
            }) => {
                if self.stored {
                    self.echo.id = render::response_id(&dialogue_id, turn_index);
                }
                self.echo.model = model;
                let snapshot = self.snapshot("in_progress");
                out.push(self.event("response.created", json!({"response": snapshot.clone()})));
                out.push(self.event("response.in_progress", json!({"response": snapshot})));
            }
            Ok(StreamEvent::Delta { text, .. }) if !text.is_empty() => {
                if !matches!(self.open, Open::Text { .. }) {
                    self.close(&mut out);
                    let index = self.output.len();
                    let item_id = render::message_id(&self.echo.id);
                    let item = render::message_item(&item_id, "", "in_progress");
                    out.push(self.event(
                        "response.output_item.added",
                        json!({"output_index": index, "item": item}),
                    ));
                    let part = json!({"type": "output_text", "text": "", "annotations": []});
                    let e = json!({"item_id": item_id, "output_index": index, "content_index": 0, "part": part});
                    out.push(self.event("response.content_part.added", e));
                    self.open = Open::Text {
                        text: String::new(),
                    };
                }
                if let Open::Text { text: all } = &mut self.open {
                    all.push_str(&text);
                }
                let item_id = render::message_id(&self.echo.id);
                let index = self.output.len();
                let e = json!({"item_id": item_id, "output_index": index, "content_index": 0, "delta": text, "logprobs": []});
                out.push(self.event("response.output_text.delta", e));
            }
            Ok(StreamEvent::Delta { .. }) => {}
            Ok(StreamEvent::ToolCallDelta {
                index: call,
                id,
                name,
                arguments,
            }) => {
                if !matches!(&self.open, Open::Call { index, .. } if *index == call) {
                    self.close(&mut out);
                    let (call_id, name) = (id.unwrap_or_default(), name.unwrap_or_default());
                    let item = render::function_call_item(&call_id, &name, "", "in_progress");
                    let index = self.output.len();
                    out.push(self.event(
                        "response.output_item.added",
                        json!({"output_index": index, "item": item}),
                    ));
                    self.open = Open::Call {
                        index: call,
                        call_id,
                        name,
                        arguments: String::new(),
                    };
                }
                if let Open::Call {
                    call_id,
                    arguments: all,
                    ..
                } = &mut self.open
                {
                    all.push_str(&arguments);
                    let item_id = format!("fc_{call_id}");
                    let index = self.output.len();
                    if !arguments.is_empty() {
                        let e =
                            json!({"item_id": item_id, "output_index": index, "delta": arguments});
                        out.push(self.event("response.function_call_arguments.delta", e));
                    }
                }
            }
            Ok(StreamEvent::End(outcome)) => {
                self.close(&mut out);
                let response = render::response(
                    &self.echo,
                    "completed",
                    self.output.clone(),
                    Some(&outcome.usage),
                    Some(outcome.finish_reason),
                );
                out.push(self.event("response.completed", json!({"response": response})));
            }
            Err(e) => {
                let status = Status::from(e);
                let mut response = self.snapshot("failed");
                response["error"] = json!({"code": "server_error", "message": status.message()});
                out.push(self.event("response.failed", json!({"response": response})));
            }
        }
        out
    }
}

/// Engine events as the Responses API's stream.
pub fn sse_events(
    events: impl Stream<Item = Result<StreamEvent, EngineError>> + Send + 'static,
    echo: Echo,
    stored: bool,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let mut streamer = Streamer {
        echo,
        stored,
        sequence: 0,
        output: Vec::new(),
        open: Open::None,
    };
    events
        .map(move |item| streamer.events(item))
        .flat_map(|events| futures_util::stream::iter(events.into_iter().map(Ok)))
}
