//! A fake model server for tests: OpenAI-shaped (`/v1/chat/completions`,
//! `/v1/models`) and Anthropic-shaped (`/v1/messages`), unary and SSE, with
//! scripted faults. It replies `<name>: <last user message>` word by word,
//! records every request, and counts streams whose client went away.

#![allow(dead_code)]

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the server does with one request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer normally.
    None,
    /// Answer with this HTTP status and a JSON error body.
    Status(u16),
    /// 429 with `retry-after` in seconds.
    RateLimit { retry_after_secs: u64 },
    /// 400 saying the prompt is too long.
    ContextTooLong,
    /// Wait this long before sending anything.
    SlowFirstByte(Duration),
    /// Stream this many chunks, then break the connection.
    ResetAfter(usize),
    /// Stream this many chunks, then go silent forever.
    StallAfter(usize),
    /// Send a data line that is not JSON.
    MalformedSse,
    /// Never answer.
    Hang,
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Fault>,
    requests: Vec<Value>,
    headers: Vec<HeaderMap>,
}

pub struct FakeUpstream {
    pub addr: SocketAddr,
    name: String,
    default: Mutex<Fault>,
    inner: Mutex<Inner>,
    token_delay: Mutex<Duration>,
    /// Streams whose body was dropped before it was complete (client gone).
    pub abandoned_streams: AtomicUsize,
    /// Answer 400 to summary requests (recognised by their instruction).
    pub fail_summaries: std::sync::atomic::AtomicBool,
}

impl FakeUpstream {
    pub async fn start(name: &str) -> Arc<FakeUpstream> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = Arc::new(FakeUpstream {
            addr: listener.local_addr().unwrap(),
            name: name.to_owned(),
            default: Mutex::new(Fault::None),
            inner: Mutex::default(),
            token_delay: Mutex::new(Duration::ZERO),
            abandoned_streams: AtomicUsize::new(0),
            fail_summaries: std::sync::atomic::AtomicBool::new(false),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(openai))
            .route("/v1/models", get(models))
            .route("/v1/messages", post(anthropic))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        fake
    }

    /// Base URL for an `openai` backend.
    pub fn openai_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Base URL for an `anthropic` backend.
    pub fn anthropic_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Faults for the next requests, in order; then `default` applies.
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.inner.lock().unwrap().script.extend(faults);
    }

    pub fn set_default(&self, fault: Fault) {
        *self.default.lock().unwrap() = fault;
    }

    pub fn set_token_delay(&self, delay: Duration) {
        *self.token_delay.lock().unwrap() = delay;
    }

    pub fn request_count(&self) -> usize {
        self.inner.lock().unwrap().requests.len()
    }

    pub fn requests(&self) -> Vec<Value> {
        self.inner.lock().unwrap().requests.clone()
    }

    pub fn last_headers(&self) -> HeaderMap {
        self.inner
            .lock()
            .unwrap()
            .headers
            .last()
            .cloned()
            .unwrap_or_default()
    }

    fn next_fault(&self, body: Value, headers: HeaderMap) -> Fault {
        let is_summary = body["messages"][0]["content"]
            .as_str()
            .is_some_and(|c| c.starts_with("You keep the memory"));
        let mut inner = self.inner.lock().unwrap();
        if is_summary && self.fail_summaries.load(Ordering::SeqCst) {
            inner.requests.push(body);
            inner.headers.push(headers);
            return Fault::Status(400);
        }
        inner.requests.push(body);
        inner.headers.push(headers);
        inner
            .script
            .pop_front()
            .unwrap_or_else(|| self.default.lock().unwrap().clone())
    }

    fn reply_words(&self, last_user: &str) -> Vec<String> {
        format!("{}: {last_user}", self.name)
            .split_inclusive(' ')
            .map(str::to_owned)
            .collect()
    }
}

fn last_user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_owned()
}

async fn models() -> impl IntoResponse {
    axum::Json(json!({"object": "list", "data": [{"id": "fake-model"}]}))
}

/// Faults that end the request before any reply; `None` means go on.
async fn early_fault(fault: &Fault) -> Option<Response> {
    match fault {
        Fault::Status(code) => Some(
            (
                StatusCode::from_u16(*code).unwrap(),
                axum::Json(json!({"error": {"message": "injected failure", "type": "server_error"}})),
            )
                .into_response(),
        ),
        Fault::RateLimit { retry_after_secs } => Some(
            Response::builder()
                .status(429)
                .header("retry-after", retry_after_secs.to_string())
                .body(Body::from(r#"{"error":{"message":"slow down"}}"#))
                .unwrap(),
        ),
        Fault::ContextTooLong => Some(
            (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": {"code": "context_length_exceeded", "message": "This model's maximum context length is 10 tokens"}})),
            )
                .into_response(),
        ),
        Fault::Hang => {
            std::future::pending::<()>().await;
            None
        }
        Fault::SlowFirstByte(d) => {
            tokio::time::sleep(*d).await;
            None
        }
        _ => None,
    }
}

/// Marks a stream abandoned if its body is dropped before the end.
struct EndGuard {
    fake: Arc<FakeUpstream>,
    finished: bool,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.fake.abandoned_streams.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// An SSE body from `events`, applying the stream faults.
fn sse_body(fake: Arc<FakeUpstream>, events: Vec<String>, fault: Fault) -> Response {
    let delay = *fake.token_delay.lock().unwrap();
    let (cut_after, stall) = match fault {
        Fault::ResetAfter(n) => (Some(n), false),
        Fault::StallAfter(n) => (Some(n), true),
        _ => (None, false),
    };
    let malformed = matches!(fault, Fault::MalformedSse);
    let total = events.len();
    let guard = EndGuard {
        fake,
        finished: false,
    };
    let stream = futures_util::stream::iter(events.into_iter().enumerate())
        .then(move |(i, event)| async move {
            if i > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            (i, event)
        })
        .scan(guard, move |guard, (i, event)| {
            let item: Option<Result<Bytes, std::io::Error>> = if malformed && i == 0 {
                Some(Ok(Bytes::from("data: {this is not json\n\n")))
            } else if cut_after == Some(i) {
                if stall {
                    return futures_util::future::Either::Left(async {
                        std::future::pending::<()>().await;
                        None
                    });
                }
                Some(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected reset",
                )))
            } else {
                if i + 1 == total {
                    guard.finished = true;
                }
                Some(Ok(Bytes::from(event)))
            };
            futures_util::future::Either::Right(std::future::ready(item))
        });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn openai(
    State(fake): State<Arc<FakeUpstream>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let fault = fake.next_fault(body.clone(), headers);
    if let Some(response) = early_fault(&fault).await {
        return response;
    }
    let mut words = fake.reply_words(&last_user_text(&body));
    // Like a real server: a word per token, at most max_tokens.
    if let Some(max) = body["max_tokens"].as_u64() {
        words.truncate(max as usize);
    }
    // Servers name the exact version that answered.
    let model = format!("{}-v2", body["model"].as_str().unwrap_or(""));
    let usage = json!({"prompt_tokens": 11, "completion_tokens": words.len()});
    if body["stream"] != true {
        return axum::Json(json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": words.concat()}, "finish_reason": "stop"}],
            "usage": usage,
        }))
        .into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "c", "object": "chat.completion.chunk", "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let mut events = vec![chunk(json!({"role": "assistant"}), Value::Null)];
    events.extend(
        words
            .iter()
            .map(|w| chunk(json!({"content": w}), Value::Null)),
    );
    events.push(chunk(json!({}), json!("stop")));
    events.push(format!(
        "data: {}\n\n",
        json!({"id": "c", "choices": [], "usage": usage})
    ));
    events.push("data: [DONE]\n\n".into());
    sse_body(fake, events, fault)
}

async fn anthropic(
    State(fake): State<Arc<FakeUpstream>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let fault = fake.next_fault(body.clone(), headers);
    if let Some(response) = early_fault(&fault).await {
        return response;
    }
    let words = fake.reply_words(&last_user_text(&body));
    if body["stream"] != true {
        return axum::Json(json!({
            "id": "msg_1", "type": "message", "role": "assistant",
            "model": format!("{}-v2", body["model"].as_str().unwrap_or("")),
            "content": [{"type": "text", "text": words.concat()}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 13, "output_tokens": words.len()},
        }))
        .into_response();
    }
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut events = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {"model": format!("{}-v2", body["model"].as_str().unwrap_or("")), "usage": {"input_tokens": 13, "output_tokens": 1}}}),
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
    events.push(event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": words.len()}}),
    ));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    sse_body(fake, events, fault)
}
