//! The fake's OpenAI shape: `POST /v1/chat/completions`, unary and SSE,
//! with tool calls (streamed as OpenAI does: id and name first, arguments
//! in fragments) and log probabilities when asked for.

use super::{FakeUpstream, early_fault, sse_body};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;

/// A word's log probability (and `n` alternatives), made up but stable.
fn logprob(word: &str, i: usize, n: usize) -> Value {
    let top: Vec<Value> = (0..n)
        .map(|k| json!({"token": format!("alt{k}"), "logprob": -1.0 - k as f64, "bytes": null}))
        .collect();
    json!({"token": word, "logprob": -0.5 * i as f64, "bytes": word.as_bytes(), "top_logprobs": top})
}

pub async fn chat(
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
    let mut words = planned.words();
    // Like a real server: a word per token, at most max_tokens.
    if let Some(max) = body["max_tokens"].as_u64() {
        words.truncate(max as usize);
    }
    let with_logprobs = body["logprobs"] == true;
    let top_n = body["top_logprobs"].as_u64().unwrap_or(0) as usize;
    let finish = if planned.calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    // Servers name the exact version that answered.
    let model = format!("{}-v2", body["model"].as_str().unwrap_or(""));
    let usage =
        json!({"prompt_tokens": 11, "completion_tokens": words.len() + planned.calls.len()});
    if body["stream"] != true {
        let text = words.concat();
        let mut message = json!({"role": "assistant", "content": text});
        if !planned.calls.is_empty() {
            if text.is_empty() {
                message["content"] = Value::Null;
            }
            message["tool_calls"] = planned
                .calls
                .iter()
                .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
                .collect();
        }
        let logprobs = with_logprobs.then(|| {
            let content: Vec<Value> = words
                .iter()
                .enumerate()
                .map(|(i, w)| logprob(w, i, top_n))
                .collect();
            json!({"content": content})
        });
        return axum::Json(json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": logprobs}],
            "usage": usage,
        }))
        .into_response();
    }
    let chunk = |delta: Value, finish: Value, logprobs: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "c", "object": "chat.completion.chunk", "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}]})
        )
    };
    let mut events = vec![chunk(
        json!({"role": "assistant"}),
        Value::Null,
        Value::Null,
    )];
    events.extend(words.iter().enumerate().map(|(i, w)| {
        let logprobs = match with_logprobs {
            true => json!({"content": [logprob(w, i, top_n)]}),
            false => Value::Null,
        };
        chunk(json!({"content": w}), Value::Null, logprobs)
    }));
    for (index, (id, name, args)) in planned.calls.iter().enumerate() {
        let first = json!({"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]});
        events.push(chunk(first, Value::Null, Value::Null));
        let middle = args.len() / 2;
        let middle = (0..=middle)
            .rev()
            .find(|&m| args.is_char_boundary(m))
            .unwrap_or(0);
        for piece in [&args[..middle], &args[middle..]] {
            let delta = json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]});
            events.push(chunk(delta, Value::Null, Value::Null));
        }
    }
    events.push(chunk(json!({}), json!(finish), Value::Null));
    events.push(format!(
        "data: {}\n\n",
        json!({"id": "c", "choices": [], "usage": usage})
    ));
    events.push("data: [DONE]\n\n".into());
    sse_body(fake, events, fault)
}
