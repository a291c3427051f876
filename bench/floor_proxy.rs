//! The stack's floor for the OpenAI path: the thinnest gateway the chosen
//! crates allow — hyper (auto HTTP/1.1 + HTTP/2, as dialogd serves) in
//! front, reqwest behind, the same allocator — which reads the request's
//! model and forwards the bytes both ways, nothing else (no auth, limits,
//! audit, metrics, validation or translation). What dialogd costs above
//! it is dialogd's own work; what it costs in total is the floor.
//!
//!   dialogd-floor-proxy --listen 127.0.0.1:0 --upstream http://127.0.0.1:18090/v1
//!   bench/peers/floor.sh runs bench/peer_compare.sh against it.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::sync::Arc;

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

struct Proxy {
    client: reqwest::Client,
    url: String,
}

#[derive(serde::Deserialize)]
struct ModelOnly<'a> {
    #[serde(borrow)]
    model: std::borrow::Cow<'a, str>,
}

fn reply(status: StatusCode, text: &'static str) -> Response<Body> {
    let body = Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}

async fn forward(proxy: Arc<Proxy>, request: Request<Incoming>) -> Response<Body> {
    if request.uri().path() != "/v1/chat/completions" {
        return reply(StatusCode::NOT_FOUND, "not found");
    }
    let Ok(body) = request.into_body().collect().await.map(|b| b.to_bytes()) else {
        return reply(StatusCode::BAD_REQUEST, "unreadable body");
    };
    // A gateway must at least know the model to route the call.
    if !serde_json::from_slice::<ModelOnly>(&body).is_ok_and(|m| !m.model.is_empty()) {
        return reply(StatusCode::BAD_REQUEST, "no model");
    }
    let sent = proxy
        .client
        .post(&proxy.url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    let Ok(upstream) = sent else {
        return reply(StatusCode::BAD_GATEWAY, "upstream failed");
    };
    let status = upstream.status();
    let content_type = upstream.headers().get("content-type").cloned();
    // Streamed through, so SSE events pass as they come.
    let stream = http_body_util::StreamBody::new(futures_util::StreamExt::map(
        upstream.bytes_stream(),
        |chunk| {
            chunk
                .map(hyper::body::Frame::data)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        },
    ));
    let mut response = Response::new(BodyExt::boxed(stream));
    *response.status_mut() = status;
    if let Some(value) = content_type {
        response.headers_mut().insert("content-type", value);
    }
    response
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let listen = arg("--listen").unwrap_or_else(|| "127.0.0.1:0".into());
    let upstream = arg("--upstream").ok_or("--upstream http://HOST:PORT/v1 is required")?;
    let proxy = Arc::new(Proxy {
        client: reqwest::Client::builder().build()?,
        url: format!("{}/chat/completions", upstream.trim_end_matches('/')),
    });
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("floor proxy listening on {}", listener.local_addr()?);
    loop {
        let (conn, _) = listener.accept().await?;
        let _ = conn.set_nodelay(true);
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let proxy = proxy.clone();
                async move { Ok::<_, std::convert::Infallible>(forward(proxy, request).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(conn), service)
                .await;
        });
    }
}
