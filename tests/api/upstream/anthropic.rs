//! The fake's Anthropic shape: `POST /v1/messages`, unary and SSE, with
//! `tool_use` blocks (streamed as `input_json_delta` fragments).

use super::{FakeUpstream, early_fault, sse_body};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;

pub async fn messages(
    State(fake): State<Arc<FakeUpstream>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let fault = fake.next_fault(body.clone(), headers);
    if let Some(response) = early_fault(&fault).await {
        return response;
    }
    let planned = fake.next_reply(&body);
    let words = planned.words();
    let model = format!("{}-v2", body["model"].as_str().unwrap_or(""));
    let stop = if planned.calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };
    let input = |args: &str| serde_json::from_str::<Value>(args).unwrap_or(json!({}));
    if body["stream"] != true {
        let mut content = Vec::new();
        if !planned.text.is_empty() {
            content.push(json!({"type": "text", "text": words.concat()}));
        }
        for (id, name, args) in &planned.calls {
            content.push(json!({"type": "tool_use", "id": id, "name": name, "input": input(args)}));
        }
        return axum::Json(json!({
            "id": "msg_1", "type": "message", "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop,
            "usage": {"input_tokens": 13, "output_tokens": words.len()},
        }))
        .into_response();
    }
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut events = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {"model": model, "usage": {"input_tokens": 13, "output_tokens": 1}}}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        event("ping", json!({"type": "ping"})),
    ];
    events.extend(words.iter().map(|w| {
        event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}),
        )
    }));
    events.push(event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    for (i, (id, name, args)) in planned.calls.iter().enumerate() {
        let index = i + 1;
        events.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
        ));
        // The arguments re-serialized, as Anthropic streams its `input`.
        let json = input(args).to_string();
        let middle = (0..=json.len() / 2)
            .rev()
            .find(|&m| json.is_char_boundary(m))
            .unwrap_or(0);
        for piece in [&json[..middle], &json[middle..]] {
            events.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}}),
            ));
        }
        events.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
    }
    events.push(event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": words.len()}}),
    ));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    sse_body(fake, events, fault)
}
