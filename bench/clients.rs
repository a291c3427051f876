//! The calls the load generator makes: gRPC to dialogd (or the bare echo
//! server) over several HTTP/2 connections, and plain HTTP to the mock
//! upstream for the "upstream alone" baselines.

use crate::loadgen::Observed;
use dialogd::pb::dialogue::v1 as pb;
use dialogd::pb::dialogue::v1::dialogue_service_client::DialogueServiceClient;
use futures_util::StreamExt;
use std::net::SocketAddr;
use std::time::Instant;
use tonic::transport::Channel;

/// `n` separate HTTP/2 connections to `addr`.
pub async fn connections(
    addr: SocketAddr,
    n: usize,
) -> Result<Vec<DialogueServiceClient<Channel>>, String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        out.push(DialogueServiceClient::new(channel));
    }
    Ok(out)
}

/// Exchanges each load dialogue takes before its caller moves on to a new
/// one: the "short dialogues (<= 20 turns)". Long dialogues are
/// scenario (e)'s subject.
pub const EXCHANGES_PER_DIALOGUE: u64 = 10;

/// The dialogue a load call goes to: caller `slot` (one at a time per
/// slot) on its `round`-th call.
pub fn dialogue_of(prefix: &str, slot: u64, round: u64) -> String {
    format!("{prefix}-{slot}-{}", round / EXCHANGES_PER_DIALOGUE)
}

pub fn request(dialogue: &str, text: &str) -> pb::ConverseRequest {
    pb::ConverseRequest {
        name: format!("dialogues/{dialogue}"),
        content: vec![pb::ContentPart {
            kind: Some(pb::content_part::Kind::Text(text.to_owned())),
        }],
        create_if_missing: true,
        ..Default::default()
    }
}

pub async fn converse(
    mut client: DialogueServiceClient<Channel>,
    request: pb::ConverseRequest,
) -> Result<Observed, String> {
    client
        .converse(request)
        .await
        .map(|_| Observed::default())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

/// A ConverseStream to its end event: time to the first delta, deltas.
pub async fn converse_stream(
    mut client: DialogueServiceClient<Channel>,
    request: pb::ConverseRequest,
) -> Result<Observed, String> {
    let sent = Instant::now();
    let mut stream = client
        .converse_stream(request)
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    let mut seen = Observed::default();
    let mut ended = false;
    while let Some(event) = stream
        .message()
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
    {
        match event.event {
            Some(pb::converse_stream_response::Event::Delta(_)) => {
                seen.first_token.get_or_insert(sent.elapsed());
                seen.tokens += 1;
            }
            Some(pb::converse_stream_response::Event::End(_)) => ended = true,
            _ => {}
        }
    }
    if !ended {
        return Err("stream ended without an end event".into());
    }
    Ok(seen)
}

/// The mock upstream called directly, as dialogd would call it.
#[derive(Clone)]
pub struct Upstream {
    http: reqwest::Client,
    url: String,
    model: String,
    api_key: Option<String>,
}

impl Upstream {
    /// The mock upstream or dialogd at `addr`, model `mock`.
    pub fn new(addr: SocketAddr) -> Result<Upstream, String> {
        Upstream::at(&format!("http://{addr}/v1"), "mock", None)
    }

    /// Any OpenAI-compatible base URL (`http://host:port/v1`).
    pub fn at(base_url: &str, model: &str, api_key: Option<&str>) -> Result<Upstream, String> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1024)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Upstream {
            http,
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            model: model.to_owned(),
            api_key: api_key.map(str::to_owned),
        })
    }

    fn post(&self, stream: bool) -> reqwest::RequestBuilder {
        let body = serde_json::json!({
            "model": self.model,
            "stream": stream,
            "messages": [{"role": "user", "content": "hello from the benchmark"}]
        });
        let request = self.http.post(&self.url).json(&body);
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    pub async fn unary(&self) -> Result<Observed, String> {
        let response = self.post(false).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        response.bytes().await.map_err(|e| e.to_string())?;
        Ok(Observed::default())
    }

    pub async fn stream(&self) -> Result<Observed, String> {
        let sent = Instant::now();
        let response = self.post(true).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let mut body = response.bytes_stream();
        let mut seen = Observed::default();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            seen.first_token.get_or_insert(sent.elapsed());
            seen.tokens += chunk.windows(6).filter(|w| w == b"data: ").count() as u64;
        }
        Ok(seen)
    }
}
