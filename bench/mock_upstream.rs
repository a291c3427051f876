//! A fast OpenAI-shaped upstream for benchmarks: `POST
//! /v1/chat/completions`, unary or SSE (`stream: true`), replying with a
//! configurable number of tokens and delay per token (the first token goes
//! out at once, so time to first token is the server's own).

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct MockSettings {
    /// Tokens in every reply.
    pub tokens: usize,
    /// Pause before each streamed token after the first (and, unary,
    /// before answering: tokens - 1 pauses).
    pub token_delay: Duration,
}

async fn completions(State(s): State<Arc<MockSettings>>, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let stream = request["stream"].as_bool().unwrap_or(false);
    let prompt_tokens = request["messages"].as_array().map_or(0, |m| m.len() * 8);
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": s.tokens,
        "total_tokens": prompt_tokens + s.tokens
    });
    if !stream {
        if !s.token_delay.is_zero() && s.tokens > 1 {
            tokio::time::sleep(s.token_delay * (s.tokens as u32 - 1)).await;
        }
        let text = "tok ".repeat(s.tokens);
        return axum::Json(json!({
            "id": "bench",
            "object": "chat.completion",
            "model": "mock",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop"
            }],
            "usage": usage
        }))
        .into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        for i in 0..s.tokens {
            if i > 0 && !s.token_delay.is_zero() {
                tokio::time::sleep(s.token_delay).await;
            }
            let chunk = json!({
                "id": "bench", "object": "chat.completion.chunk", "model": "mock",
                "choices": [{"index": 0, "delta": {"content": "tok "}, "finish_reason": null}]
            });
            if tx
                .send(Ok(Bytes::from(format!("data: {chunk}\n\n"))))
                .await
                .is_err()
            {
                return;
            }
        }
        let last = json!({
            "id": "bench", "object": "chat.completion.chunk", "model": "mock",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": usage
        });
        let _ = tx
            .send(Ok(Bytes::from(format!("data: {last}\n\ndata: [DONE]\n\n"))))
            .await;
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap_or_else(|_| axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Serves until the process is killed; prints `listening on ADDR` first.
pub async fn serve(listen: SocketAddr, settings: MockSettings) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on {addr}");
    // Small SSE chunks must not wait on Nagle and delayed ACKs.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(completions))
        .with_state(Arc::new(settings));
    axum::serve(listener, app).await.map_err(|e| e.to_string())
}
