//! /metrics scraped from a real dialogd process (its own process: the
//! metrics registry is process-wide) while real calls go through it to a
//! fake upstream with injected faults: every series moves as it should,
//! in-flight gauges come back to zero after a cancelled stream, and no
//! label carries a dialogue or caller ID.

use crate::helpers::*;
use crate::upstream::{FakeUpstream, Fault};
use dialogd::pb::dialogue::v1 as pb;
use dialogd::pb::dialogue::v1::dialogue_service_client::DialogueServiceClient;
use std::time::Duration;
use tempfile::TempDir;
use tonic::Code;

/// One exposition: series (name plus labels) and their values.
struct Scrape(String);

impl Scrape {
    async fn of(server: &ServerProcess) -> Scrape {
        // reqwest is built without a default crypto provider (plain HTTP here).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = format!("http://{}/metrics", server.metrics_addr);
        let response = reqwest::get(&url).await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        Scrape(response.text().await.unwrap())
    }

    /// The value of the series `name` whose labels include all of `labels`;
    /// 0 when absent (a counter never touched), panics when ambiguous.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = self
            .0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (series_name, rest) = series.split_once('{').unwrap_or((series, ""));
                (series_name == name
                    && labels
                        .iter()
                        .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
                .then(|| value.parse().unwrap())
            })
            .collect();
        assert!(
            found.len() <= 1,
            "{name} {labels:?} is ambiguous: {found:?}"
        );
        found.first().copied().unwrap_or(0.0)
    }
}

const DIALOGUE: [(&str, &str); 1] = [("grpc_service", "dialogue.v1.DialogueService")];

fn method(m: &'static str) -> [(&'static str, &'static str); 2] {
    [DIALOGUE[0], ("grpc_method", m)]
}

fn with<'a>(base: &[(&'a str, &'a str)], extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    base.iter().chain(extra).copied().collect()
}

async fn start(fake: &FakeUpstream, dir: &TempDir) -> ServerProcess {
    start_with(fake, dir, "").await
}

async fn start_with(fake: &FakeUpstream, dir: &TempDir, extra: &str) -> ServerProcess {
    let config = dir.path().join("dialogd.toml");
    std::fs::write(
        &config,
        format!(
            r#"
default_model = "gpt"
[[models]]
name = "gpt"
backend = "up"
[backends.up]
kind = "openai"
base_url = "{}"
[routing]
backoff_base_ms = 1
backoff_max_ms = 2
[limits]
max_streams_per_principal = 1
requests_per_second = 1
request_burst = 40
{}
"#,
            fake.openai_url(),
            extra
        ),
    )
    .unwrap();
    ServerProcess::start_with(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    )
    .await
}

#[tokio::test]
async fn metrics_move_with_calls_faults_limits_and_cancellation() {
    let fake = FakeUpstream::start("gpt").await;
    let dir = TempDir::new().unwrap();
    let server = start(&fake, &dir).await;
    let client = server.api().await;
    let before = Scrape::of(&server).await;
    assert_eq!(
        before.value("grpc_server_started_total", &method("Converse")),
        0.0
    );

    // Two unary turns; the first meets a 503 and is retried.
    fake.script([Fault::Status(503)]);
    for message in ["first", "second"] {
        let mut request = converse_request("secret-dialogue-id", message);
        request.create_if_missing = true;
        client.converse_with(request).await.unwrap();
    }
    // The same deterministic question in two new dialogues: a cache miss,
    // then a hit.
    for id in ["cache-1", "cache-2"] {
        let mut request = converse_request(id, "same question");
        request.create_if_missing = true;
        request.generation = Some(pb::GenerationConfig {
            temperature: Some(0.0),
            ..Default::default()
        });
        client.converse_with(request).await.unwrap();
    }
    // A NOT_FOUND.
    let missing = client
        .get_dialogue(pb::GetDialogueRequest {
            name: name("nobody-home"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    // One full stream.
    let mut stream = client
        .converse_stream(converse_request("secret-dialogue-id", "stream"))
        .await
        .unwrap();
    while stream.message().await.unwrap().is_some() {}

    // A slow stream the client abandons, and meanwhile a second stream
    // refused by the one-stream limit.
    fake.set_token_delay(Duration::from_millis(300));
    let mut abandoned = client
        .converse_stream(converse_request("secret-dialogue-id", "slow one"))
        .await
        .unwrap();
    abandoned.message().await.unwrap().expect("a first event");
    // Refused before the stream starts: the call's own status.
    let refused = client
        .converse_stream(converse_request("secret-dialogue-id", "second"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let during = Scrape::of(&server).await;
    assert_eq!(
        during.value("grpc_server_in_flight", &method("ConverseStream")),
        1.0
    );
    assert_eq!(during.value("dialogd_streams_in_flight", &[]), 1.0);
    drop(abandoned);
    fake.set_token_delay(Duration::ZERO);

    // Past the request rate: RESOURCE_EXHAUSTED.
    let mut limited = false;
    for _ in 0..60 {
        if let Err(e) = client
            .list_dialogues(pb::ListDialoguesRequest::default())
            .await
        {
            assert_eq!(e.code(), Code::ResourceExhausted);
            limited = true;
            break;
        }
    }
    assert!(limited, "the rate limit never answered");

    // The abandoned stream ends server-side shortly after the client left.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let after = loop {
        let s = Scrape::of(&server).await;
        if s.value("grpc_server_in_flight", &method("ConverseStream")) == 0.0
            && s.value("dialogd_streams_in_flight", &[]) == 0.0
        {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "in-flight gauges stuck:\n{}",
            s.0
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // RPC counts by method and code, and handling-time histograms.
    let handled = |m: &'static str, code: &str| {
        after.value(
            "grpc_server_handled_total",
            &with(&method(m), &[("grpc_code", code)]),
        )
    };
    assert_eq!(handled("Converse", "OK"), 4.0);
    assert_eq!(handled("GetDialogue", "NOT_FOUND"), 1.0);
    assert_eq!(handled("ConverseStream", "OK"), 1.0);
    assert_eq!(handled("ConverseStream", "CANCELLED"), 1.0);
    assert_eq!(handled("ConverseStream", "RESOURCE_EXHAUSTED"), 1.0);
    assert_eq!(
        after.value("grpc_server_started_total", &method("ConverseStream")),
        3.0
    );
    assert_eq!(
        after.value("grpc_server_handling_seconds_count", &method("Converse")),
        4.0
    );
    assert_eq!(
        after.value("grpc_server_in_flight", &method("Converse")),
        0.0
    );
    // Microsecond buckets exist, and the +Inf bucket holds every call.
    assert!(after.0.contains("le=\"0.00001\""), "no 10 µs bucket");
    assert_eq!(
        after.value(
            "grpc_server_handling_seconds_bucket",
            &with(&method("Converse"), &[("le", "+Inf")])
        ),
        4.0
    );

    // Model calls: per model and target, the 503 as an error, its retry.
    let model = [("gen_ai_request_model", "gpt"), ("target", "up")];
    let calls = |outcome: &str| {
        after.value(
            "gen_ai_client_operation_duration_seconds_count",
            &with(&model, &[("outcome", outcome)]),
        )
    };
    assert_eq!(calls("error"), 1.0);
    assert!(calls("ok") >= 4.0, "{}", calls("ok"));
    assert_eq!(after.value("dialogd_backend_retries_total", &model), 1.0);
    assert_eq!(after.value("dialogd_backend_circuit_state", &model), 0.0);
    assert!(after.value("gen_ai_server_time_to_first_token_seconds_count", &model) >= 2.0);
    assert!(after.value("gen_ai_server_time_per_output_token_seconds_count", &model) >= 1.0);
    for kind in ["input", "output"] {
        let tokens = after.value(
            "gen_ai_client_token_usage_total",
            &[("gen_ai_request_model", "gpt"), ("gen_ai_token_type", kind)],
        );
        assert!(tokens > 0.0, "{kind} tokens: {tokens}");
    }
    // The gateway's own time, once per completed turn.
    let overhead = |kind| after.value("dialogd_gateway_overhead_seconds_count", &[("kind", kind)]);
    assert_eq!((overhead("unary"), overhead("stream")), (4.0, 1.0));
    // The cache: one miss, one hit, one reply held.
    let lookups = |result| after.value("dialogd_cache_lookups_total", &[("result", result)]);
    assert_eq!((lookups("miss"), lookups("hit")), (1.0, 1.0));
    assert_eq!(after.value("dialogd_cache_entries", &[]), 1.0);
    // Limits by reason.
    let limited = |reason| after.value("dialogd_rate_limited_total", &[("reason", reason)]);
    assert_eq!(limited("streams"), 1.0);
    assert!(limited("requests") >= 1.0);
    // The store: three committed exchanges, a size on disk.
    assert_eq!(
        after.value(
            "dialogd_store_operation_duration_seconds_count",
            &[("operation", "commit_exchange")]
        ),
        5.0
    );
    assert!(after.value("dialogd_store_size_bytes", &[]) > 0.0);
    // Bounded labels: no dialogue ID, no caller.
    assert!(!after.0.contains("secret-dialogue-id") && !after.0.contains("nobody-home"));
    assert!(!after.0.contains("principal"));
    // Every series is explained.
    assert!(after.0.contains("# HELP dialogd_gateway_overhead_seconds"));
}

#[tokio::test]
async fn the_circuit_gauge_follows_the_breaker_open_half_open_closed() {
    let fake = FakeUpstream::start("gpt").await;
    let dir = TempDir::new().unwrap();
    let breaker = "[routing.breaker]\nconsecutive_failures = 2\nmin_calls = 2\ncooldown_secs = 1";
    let server = start_with(&fake, &dir, breaker).await;
    let client = server.api().await;
    let circuit = |s: &Scrape| {
        s.value(
            "dialogd_backend_circuit_state",
            &[("gen_ai_request_model", "gpt"), ("target", "up")],
        )
    };
    fake.set_default(Fault::Status(500));
    for _ in 0..2 {
        let mut request = converse_request("c", "fail");
        request.create_if_missing = true;
        assert!(client.converse_with(request).await.is_err());
    }
    assert_eq!(circuit(&Scrape::of(&server).await), 2.0, "open");
    // Time alone turns it half-open; the scrape sees it without a call.
    eventually(
        "a half-open circuit on /metrics",
        Duration::from_secs(5),
        async || circuit(&Scrape::of(&server).await) == 1.0,
    )
    .await;
    assert_eq!(circuit(&Scrape::of(&server).await), 1.0, "half-open");
    fake.set_default(Fault::None);
    let mut request = converse_request("c", "works again");
    request.create_if_missing = true;
    client.converse_with(request).await.unwrap();
    assert_eq!(circuit(&Scrape::of(&server).await), 0.0, "closed");
}

#[tokio::test]
async fn answers_carry_a_request_id_the_caller_may_choose() {
    let app = spawn_app().await;
    let mut request = tonic::Request::new(pb::ListDialoguesRequest::default());
    request
        .metadata_mut()
        .insert("x-request-id", "trace-me-42".parse().unwrap());
    // The answer's metadata is the point here: the raw client keeps it.
    let mut client = DialogueServiceClient::new(app.channel.clone());
    let answer = client.list_dialogues(request).await.unwrap();
    assert_eq!(
        answer.metadata().get("x-request-id").unwrap(),
        "trace-me-42"
    );
    let fresh = client
        .list_dialogues(pb::ListDialoguesRequest::default())
        .await
        .unwrap();
    let id = fresh
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(id.len(), 16, "{id}");
}

#[tokio::test]
async fn http_calls_are_counted_like_rpcs_with_their_outcome() {
    let fake = FakeUpstream::start("gpt").await;
    let dir = TempDir::new().unwrap();
    let server = start(&fake, &dir).await;
    let http = plain_http().build().unwrap();
    let chat = |body: serde_json::Value| {
        http.post(format!("http://{}/v1/chat/completions", server.addr))
            .json(&body)
            .send()
    };
    let ask = |stream: bool| {
        serde_json::json!({"model": "gpt", "stream": stream,
            "messages": [{"role": "user", "content": "hi"}]})
    };
    assert_eq!(chat(ask(false)).await.unwrap().status(), 200);
    let streamed = chat(ask(true)).await.unwrap();
    assert_eq!(streamed.status(), 200);
    streamed.text().await.unwrap();
    let refused = chat(serde_json::json!({"model": "gpt", "messages": []}))
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    let scrape = Scrape::of(&server).await;
    let handled = |code| {
        scrape.value(
            "grpc_server_handled_total",
            &[
                ("grpc_service", "http.OpenAi"),
                ("grpc_method", "ChatCompletions"),
                ("grpc_code", code),
            ],
        )
    };
    assert_eq!(handled("OK"), 2.0);
    assert_eq!(handled("INVALID_ARGUMENT"), 1.0);
    assert_eq!(handled("CANCELLED"), 0.0);
    server.kill9().await;
}
