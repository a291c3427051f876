//! Adaptive concurrency per target: calls over the limit are shed at once
//! with UNAVAILABLE and a retry hint (gRPC) or 503 + Retry-After (OpenAI
//! front); and against an upstream whose latency grows past a knee (it
//! serves 4 calls at a time and queues the rest), the limit settles near
//! the knee and the p99 of answered calls stays low while the same load
//! without the limit queues at the upstream.

use crate::backends::{openai, with_model};
use crate::helpers::*;
use crate::upstream::{FakeUpstream, Fault};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::Code;

#[tokio::test]
async fn calls_over_the_limit_are_shed_with_a_retry_hint() {
    let fake = FakeUpstream::start("slow").await;
    fake.set_default(Fault::SlowFirstByte(Duration::from_millis(1500)));
    let app = spawn_app_with(|s| {
        with_model(s, vec![("up", openai(&fake, None))], &[("up", 1)]);
        let limit = &mut s.routing.adaptive_concurrency;
        (
            limit.enabled,
            limit.min_limit,
            limit.initial_limit,
            limit.max_limit,
        ) = (true, 1, 1, 1);
    })
    .await;
    let api = app.api.clone();
    let first = tokio::spawn(async move {
        let mut request = converse_request("held", "hello");
        request.create_if_missing = true;
        api.converse_with(request).await
    });
    eventually(
        "the first call reached the upstream",
        Duration::from_secs(5),
        async || fake.request_count() == 1,
    )
    .await;
    let mut request = converse_request("shed", "hello");
    request.create_if_missing = true;
    let started = Instant::now();
    let shed = app.converse_with(request.clone()).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "shed at once"
    );
    assert_eq!(shed.code(), Code::Unavailable);
    assert_eq!(error_reason(&shed).as_deref(), Some("NO_BACKEND_AVAILABLE"));
    let details = tonic_types::StatusExt::get_error_details(&shed);
    assert!(details.retry_info().and_then(|r| r.retry_delay).is_some());
    let response = plain_http()
        .build()
        .unwrap()
        .post(format!("http://{}/v1/chat/completions", app.addr))
        .json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        fake.request_count(),
        1,
        "shed calls never reach the upstream"
    );
    first.await.unwrap().unwrap();
    fake.set_default(Fault::None);
    app.converse_with(request).await.unwrap();
}

/// An OpenAI-shaped upstream with `workers` servers taking `service` per
/// call: calls beyond `workers` queue, so latency grows with concurrency.
async fn knee_upstream(workers: usize, service: Duration) -> SocketAddr {
    use axum::routing::post;
    let servers = Arc::new(tokio::sync::Semaphore::new(workers));
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let servers = servers.clone();
            async move {
                let _server = servers.acquire().await.unwrap();
                tokio::time::sleep(service).await;
                axum::Json(serde_json::json!({
                    "id": "c", "object": "chat.completion", "created": 0, "model": "m",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "ok"}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// p99 of the answered calls' latency, answered and shed counts, under
/// `clients` closed-loop clients for `period` (a shed client waits the
/// 100 ms its Retry-After asks, rounded up to a second in the header).
async fn load(addr: SocketAddr, clients: usize, period: Duration) -> (Duration, usize, usize) {
    let http = plain_http().http1_only().build().unwrap();
    let url = format!("http://{addr}/v1/chat/completions");
    let end = Instant::now() + period;
    let runs = (0..clients).map(|_| {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            let (mut answered, mut shed) = (Vec::new(), 0);
            while Instant::now() < end {
                let started = Instant::now();
                let response = http
                    .post(&url)
                    .json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
                    .send()
                    .await
                    .unwrap();
                match response.status().as_u16() {
                    200 => answered.push(started.elapsed()),
                    503 => {
                        shed += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    other => panic!("status {other}"),
                }
                let _ = response.bytes().await;
            }
            (answered, shed)
        })
    });
    let (mut latencies, mut shed) = (Vec::new(), 0);
    for run in futures_util::future::join_all(runs).await {
        let (answered, s) = run.unwrap();
        latencies.extend(answered);
        shed += s;
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    (p99, latencies.len(), shed)
}

async fn gauge(server: &ServerProcess, name: &str) -> f64 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let text = reqwest::get(format!("http://{}/metrics", server.metrics_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
}

#[tokio::test]
async fn the_limit_settles_near_the_knee_and_keeps_p99_bounded() {
    let upstream = knee_upstream(4, Duration::from_millis(20)).await;
    let mut runs = Vec::new();
    for adaptive in [false, true] {
        let dir = tempfile::TempDir::new().unwrap();
        let config = dir.path().join("dialogd.toml");
        std::fs::write(
            &config,
            format!(
                "default_model = 'm'\n\
                 [[models]]\nname = 'm'\nbackend = 'knee'\n\
                 [backends.knee]\nkind = 'openai'\nbase_url = 'http://{upstream}/v1'\n\
                 [routing.adaptive_concurrency]\nenabled = {adaptive}\n"
            ),
        )
        .unwrap();
        let server = ServerProcess::start_with(
            &dir.path().join("data"),
            &["--config", config.to_str().unwrap()],
        )
        .await;
        let (p99, answered, shed) = load(server.addr, 96, Duration::from_secs(4)).await;
        let limit = match adaptive {
            true => Some(gauge(&server, "dialogd_backend_concurrency_limit{").await),
            false => None,
        };
        eprintln!(
            "adaptive={adaptive}: p99 {p99:?}, {answered} answered, {shed} shed, limit {limit:?}"
        );
        runs.push((p99, answered, shed, limit));
        server.kill9().await;
    }
    let (unlimited_p99, _, unlimited_shed, _) = runs[0];
    let (limited_p99, answered, _, limit) = runs[1];
    assert_eq!(unlimited_shed, 0);
    // 96 calls queue for 4 servers: ~24 service times each.
    assert!(
        unlimited_p99 > Duration::from_millis(300),
        "{unlimited_p99:?}"
    );
    assert!(
        limited_p99 * 3 < unlimited_p99,
        "limited p99 {limited_p99:?} vs unlimited {unlimited_p99:?}"
    );
    let limit = limit.unwrap();
    // A scrape may land in a baseline probe, when the limit is min_limit (3).
    assert!(
        (3.0..=16.0).contains(&limit),
        "limit {limit} is not near the knee (4)"
    );
    assert!(answered > 100, "{answered}");
}

#[tokio::test]
async fn the_server_sheds_calls_over_its_own_adaptive_limit_but_not_probes() {
    // The server's limit held at 1: a streamed turn (300 ms a word) holds
    // the only place until its stream ends.
    let app = spawn_app_with(|s| {
        set_echo_delay(s, 300);
        let limit = &mut s.limits.adaptive_concurrency;
        (
            limit.enabled,
            limit.min_limit,
            limit.initial_limit,
            limit.max_limit,
        ) = (true, 1, 1, 1);
    })
    .await;
    let mut request = converse_request("long", "one two three");
    request.create_if_missing = true;
    let mut stream = app.converse_stream(request).await.unwrap();
    let shed = app
        .list_dialogues(dialogd::pb::dialogue::v1::ListDialoguesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(shed.code(), Code::Unavailable);
    assert_eq!(error_reason(&shed).as_deref(), Some("OVERLOADED"));
    let details = tonic_types::StatusExt::get_error_details(&shed);
    assert_eq!(
        details.retry_info().and_then(|r| r.retry_delay),
        Some(Duration::from_millis(100))
    );
    // Health checks are never shed.
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel.clone());
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    while stream.message().await.unwrap().is_some() {}
    app.list_dialogues(dialogd::pb::dialogue::v1::ListDialoguesRequest::default())
        .await
        .unwrap();
}
