//! A fake model server for tests: OpenAI-shaped (`/v1/chat/completions`,
//! `/v1/models`, see `openai.rs`) and Anthropic-shaped (`/v1/messages`,
//! `anthropic.rs`), unary and SSE, with scripted faults. It replies
//! `<name>: <last user message>` word by word (or `<name>: tool said
//! <result>` after tool results), or a planned reply with tool calls;
//! records every request, and counts streams whose client went away.

#![allow(dead_code)]

mod anthropic;
mod openai;

use axum::Router;
use axum::body::{Body, Bytes};
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
    /// Answer `status` to a random `percent` of requests, normally to
    /// the rest.
    Flaky { status: u16, percent: u32 },
}

/// A reply the fake gives instead of its echo: text (may be empty) and
/// tool calls `(id, name, arguments)`.
#[derive(Debug, Clone, Default)]
pub struct Planned {
    pub text: String,
    pub calls: Vec<(String, String, String)>,
}

impl Planned {
    pub fn calls(calls: &[(&str, &str, &str)]) -> Planned {
        Planned {
            text: String::new(),
            calls: calls
                .iter()
                .map(|(id, name, args)| (id.to_string(), name.to_string(), args.to_string()))
                .collect(),
        }
    }

    pub fn text(text: &str) -> Planned {
        Planned {
            text: text.into(),
            calls: Vec::new(),
        }
    }

    /// The text as streamed pieces: a word each.
    fn words(&self) -> Vec<String> {
        self.text.split_inclusive(' ').map(str::to_owned).collect()
    }
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Fault>,
    replies: VecDeque<Planned>,
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
            .route("/v1/chat/completions", post(openai::chat))
            .route("/v1/models", get(models))
            .route("/v1/messages", post(anthropic::messages))
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

    /// Replies for the next answered requests, in order; then the echo.
    pub fn plan_replies(&self, replies: impl IntoIterator<Item = Planned>) {
        self.inner.lock().unwrap().replies.extend(replies);
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

    /// The texts of the messages of the last request (OpenAI shape), a
    /// string or the first part's text each.
    pub fn last_prompt(&self) -> Vec<String> {
        let requests = self.requests();
        let Some(last) = requests.last() else {
            return Vec::new();
        };
        last["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| match &m["content"] {
                Value::String(s) => s.clone(),
                parts => parts[0]["text"].as_str().unwrap_or_default().to_owned(),
            })
            .collect()
    }

    /// The headers of the `n`th request (from 0).
    pub fn headers_of(&self, n: usize) -> HeaderMap {
        self.inner
            .lock()
            .unwrap()
            .headers
            .get(n)
            .cloned()
            .unwrap_or_default()
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
        let fault = inner
            .script
            .pop_front()
            .unwrap_or_else(|| self.default.lock().unwrap().clone());
        match fault {
            Fault::Flaky { status, percent } if rand::random_range(0..100) < percent => {
                Fault::Status(status)
            }
            Fault::Flaky { .. } => Fault::None,
            fault => fault,
        }
    }

    /// The planned reply, else the echo of the last user message (or of
    /// the tool results it carries).
    fn next_reply(&self, body: &Value) -> Planned {
        if let Some(planned) = self.inner.lock().unwrap().replies.pop_front() {
            return planned;
        }
        Planned::text(&format!("{}: {}", self.name, last_user_text(body)))
    }
}

/// The text of the last user or tool message: a string, or its text
/// parts; tool results (OpenAI `tool` messages, Anthropic `tool_result`
/// blocks) as `tool said <text>`.
fn last_user_text(body: &Value) -> String {
    let Some(messages) = body["messages"].as_array() else {
        return String::new();
    };
    let Some(last) = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user" || m["role"] == "tool")
    else {
        return String::new();
    };
    let said = content_text(&last["content"]);
    if last["role"] == "tool" {
        return format!("tool said {said}");
    }
    said
}

fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p["type"].as_str() {
                Some("text") => p["text"].as_str().unwrap_or("").to_owned(),
                Some("tool_result") => format!("tool said {}", content_text(&p["content"])),
                _ => String::new(),
            })
            .collect(),
        _ => String::new(),
    }
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
