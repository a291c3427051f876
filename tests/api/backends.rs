//! Real model backends against fake upstream servers with injected faults:
//! each test checks the client-visible status, the stored history, the
//! number of upstream calls and, where it matters, the circuit state.

use crate::helpers::*;
use crate::upstream::{FakeUpstream, Fault};
use dialogd::config::{BackendSettings, ModelSettings, Settings, TargetSettings, TimeoutSettings};
use dialogd::pb::dialogue::v1 as pb;
use pb::converse_stream_response::Event;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tonic::Code;

fn fast_timeouts() -> TimeoutSettings {
    TimeoutSettings {
        connect_ms: 1_000,
        request_ms: 2_000,
        first_token_ms: 1_000,
        idle_ms: 500,
    }
}

pub(crate) fn openai(fake: &FakeUpstream, key_env: Option<&str>) -> BackendSettings {
    BackendSettings::Openai {
        base_url: fake.openai_url(),
        api_key_env: key_env.map(str::to_owned),
        chat_path: "/chat/completions".into(),
        api_key_header: None,
        headers: BTreeMap::from([("x-team".to_string(), "search".to_string())]),
        timeouts: fast_timeouts(),
    }
}

pub(crate) fn anthropic(fake: &FakeUpstream, key_env: Option<&str>) -> BackendSettings {
    BackendSettings::Anthropic {
        base_url: fake.anthropic_url(),
        api_key_env: key_env.map(str::to_owned),
        version: "2023-06-01".into(),
        default_max_tokens: 512,
        headers: BTreeMap::new(),
        timeouts: fast_timeouts(),
    }
}

/// A model `m` served by `targets` (backend name, weight), with quick
/// backoff and a breaker that opens after 3 failures in a row.
pub(crate) fn with_model(
    s: &mut Settings,
    backends: Vec<(&str, BackendSettings)>,
    targets: &[(&str, u32)],
) {
    for (name, backend) in backends {
        s.backends.insert(name.into(), backend);
    }
    s.models.push(ModelSettings {
        name: "m".into(),
        backend: None,
        upstream_model: None,
        targets: targets
            .iter()
            .map(|(backend, weight)| TargetSettings {
                backend: backend.to_string(),
                upstream_model: Some(format!("{backend}-upstream")),
                weight: *weight,
                capabilities: None,
            })
            .collect(),
        context_tokens: 8192,
        max_history_turns: 1000,
        summarize_after_tokens: None,
        summary_max_tokens: 512,
        capabilities: None,
        embeddings: false,
        semantic_cache: None,
    });
    s.default_model = "m".into();
    s.routing.backoff_base_ms = 10;
    s.routing.backoff_max_ms = 50;
    s.routing.breaker.consecutive_failures = 3;
    s.routing.breaker.cooldown_secs = 1;
}

async fn circuit_states(app: &TestApp) -> Vec<(String, i32)> {
    let models = app.list_models(pb::ListModelsRequest {}).await.unwrap();
    let m = models
        .models
        .into_iter()
        .find(|m| m.model_id == "m")
        .unwrap();
    m.targets
        .into_iter()
        .map(|t| (t.backend, t.circuit_state))
        .collect()
}

fn closed() -> i32 {
    pb::CircuitState::Closed as i32
}

fn open() -> i32 {
    pb::CircuitState::Open as i32
}

#[tokio::test]
async fn openai_unary_sends_the_prompt_and_stores_the_reply() {
    let fake = FakeUpstream::start("gpt").await;
    // Unique per test: the process environment is shared by parallel tests.
    unsafe { std::env::set_var("DIALOGD_TEST_KEY_OPENAI_UNARY", "sk-test-123") };
    let app = spawn_app_with(|s| {
        with_model(
            s,
            vec![(
                "openai",
                openai(&fake, Some("DIALOGD_TEST_KEY_OPENAI_UNARY")),
            )],
            &[("openai", 1)],
        )
    })
    .await;
    app.create_with(pb::Dialogue {
        dialogue_id: "oa".into(),
        system_prompt: "Be brief.".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut request = converse_request("oa", "first question");
    request.generation = Some(pb::GenerationConfig {
        temperature: Some(0.25),
        max_tokens: Some(64),
        ..Default::default()
    });
    let first = app.converse_with(request).await.unwrap();
    assert_eq!(
        turn_text(first.turn.as_ref().unwrap()),
        "gpt: first question"
    );
    let usage = first.usage.unwrap();
    assert_eq!(
        (usage.prompt_tokens, usage.completion_tokens),
        (11, 3),
        "usage comes from upstream"
    );
    let meta = first.metadata.unwrap();
    assert_eq!((meta.backend.as_str(), meta.attempts), ("openai", 1));
    assert_eq!(
        meta.upstream_model, "openai-upstream-v2",
        "the version the server reported"
    );

    app.converse("oa", "second question").await.unwrap();
    let sent = fake.requests();
    assert_eq!(sent.len(), 2);
    let body = &sent[0];
    assert_eq!(body["model"], "openai-upstream");
    assert_eq!(body["temperature"], 0.25);
    assert_eq!(body["max_tokens"], 64);
    assert_eq!(body["stream"], false);
    // The second call carries the system prompt and the whole history.
    let roles: Vec<&str> = sent[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(sent[1]["messages"][2]["content"], "gpt: first question");
    let headers = fake.last_headers();
    assert_eq!(headers["authorization"], "Bearer sk-test-123");
    assert_eq!(headers["x-team"], "search");
}

#[tokio::test]
async fn openai_stream_relays_tokens_and_usage_from_the_final_chunk() {
    let fake = FakeUpstream::start("gpt").await;
    let app =
        spawn_app_with(|s| with_model(s, vec![("openai", openai(&fake, None))], &[("openai", 1)]))
            .await;
    let mut request = converse_request("st", "stream this please");
    request.create_if_missing = true;
    let (events, error) = app.stream(request).await;
    assert!(error.is_none(), "{error:?}");
    let deltas: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Delta(d) => Some(d.text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(deltas, ["gpt: ", "stream ", "this ", "please"]);
    let Some(Event::End(end)) = events.last() else {
        panic!("no end event")
    };
    assert_eq!(end.usage.unwrap().prompt_tokens, 11);
    assert_eq!(fake.requests()[0]["stream"], true);
    assert_eq!(fake.requests()[0]["stream_options"]["include_usage"], true);
    assert_eq!(
        turn_text(app.all_turns("st").await.last().unwrap()),
        "gpt: stream this please"
    );
}

#[tokio::test]
async fn anthropic_unary_and_stream_map_onto_the_same_api() {
    let fake = FakeUpstream::start("claude").await;
    unsafe { std::env::set_var("DIALOGD_TEST_KEY_ANTHROPIC", "ak-test-9") };
    let app = spawn_app_with(|s| {
        with_model(
            s,
            vec![(
                "anthropic",
                anthropic(&fake, Some("DIALOGD_TEST_KEY_ANTHROPIC")),
            )],
            &[("anthropic", 1)],
        )
    })
    .await;
    app.create_with(pb::Dialogue {
        dialogue_id: "an".into(),
        system_prompt: "You are Claude.".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let unary = app.converse("an", "hello").await.unwrap();
    assert_eq!(turn_text(unary.turn.as_ref().unwrap()), "claude: hello");
    assert_eq!(unary.usage.unwrap().prompt_tokens, 13);
    let (events, error) = app.stream(converse_request("an", "and again")).await;
    assert!(error.is_none(), "{error:?}");
    let Some(Event::End(end)) = events.last() else {
        panic!("no end event")
    };
    assert_eq!(turn_text(end.turn.as_ref().unwrap()), "claude: and again");
    assert_eq!(
        end.metadata.as_ref().unwrap().upstream_model,
        "anthropic-upstream-v2"
    );
    assert_eq!(end.finish_reason, pb::FinishReason::Stop as i32);
    let sent = fake.requests();
    assert_eq!(sent[0]["system"], "You are Claude.");
    assert_eq!(sent[0]["max_tokens"], 512);
    assert_eq!(sent[1]["messages"].as_array().unwrap().len(), 3);
    let headers = fake.last_headers();
    assert_eq!(headers["x-api-key"], "ak-test-9");
    assert_eq!(headers["anthropic-version"], "2023-06-01");
}

#[tokio::test]
async fn server_errors_are_retried_and_the_turn_is_stored_once() {
    let fake = FakeUpstream::start("gpt").await;
    fake.script([Fault::Status(500), Fault::Status(503)]);
    let app =
        spawn_app_with(|s| with_model(s, vec![("openai", openai(&fake, None))], &[("openai", 1)]))
            .await;
    app.create("r").await;
    let reply = app.converse("r", "retry me").await.unwrap();
    assert_eq!(reply.metadata.unwrap().attempts, 3);
    assert_eq!(fake.request_count(), 3);
    assert_eq!(app.all_turns("r").await.len(), 2);
    assert_eq!(
        circuit_states(&app).await,
        [("openai".to_string(), closed())]
    );
}

#[tokio::test]
async fn rate_limits_honour_retry_after_then_surface_as_resource_exhausted() {
    let fake = FakeUpstream::start("gpt").await;
    fake.script([Fault::RateLimit {
        retry_after_secs: 1,
    }]);
    let app =
        spawn_app_with(|s| with_model(s, vec![("openai", openai(&fake, None))], &[("openai", 1)]))
            .await;
    app.create("rl").await;
    let started = Instant::now();
    let reply = app.converse("rl", "patience").await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "retried before Retry-After: {:?}",
        started.elapsed()
    );
    assert_eq!(reply.metadata.unwrap().attempts, 2);

    // A long Retry-After is not waited out: the client learns when to retry.
    fake.set_default(Fault::RateLimit {
        retry_after_secs: 30,
    });
    let err = app.converse("rl", "again").await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    use tonic_types::StatusExt;
    let retry = err
        .get_details_retry_info()
        .expect("retry info")
        .retry_delay
        .unwrap();
    assert_eq!(retry, Duration::from_secs(30));
    assert_eq!(
        app.all_turns("rl").await.len(),
        2,
        "the refused turn stored nothing"
    );
    // Rate limits say nothing about health: the circuit stays closed.
    assert_eq!(
        circuit_states(&app).await,
        [("openai".to_string(), closed())]
    );
}

#[tokio::test]
async fn a_failing_target_falls_back_then_its_circuit_opens() {
    let primary = FakeUpstream::start("primary").await;
    let backup = FakeUpstream::start("backup").await;
    primary.set_default(Fault::Status(500));
    let app = spawn_app_with(|s| {
        with_model(
            s,
            vec![
                ("primary", openai(&primary, None)),
                ("backup", openai(&backup, None)),
            ],
            &[("primary", 1), ("backup", 0)],
        )
    })
    .await;
    app.create("fb").await;
    for i in 0..3 {
        let reply = app.converse("fb", &format!("q{i}")).await.unwrap();
        assert_eq!(
            turn_text(reply.turn.as_ref().unwrap()),
            format!("backup: q{i}")
        );
        assert_eq!(reply.metadata.unwrap().attempts, 2);
    }
    assert_eq!(primary.request_count(), 3);
    assert_eq!(
        circuit_states(&app).await,
        [
            ("primary".to_string(), open()),
            ("backup".to_string(), closed())
        ]
    );
    // While open, the primary is skipped without a call.
    let reply = app.converse("fb", "skip").await.unwrap();
    assert_eq!(reply.metadata.unwrap().attempts, 1);
    assert_eq!(primary.request_count(), 3);

    // After the cool-down one probe goes through; success closes the circuit.
    primary.set_default(Fault::None);
    eventually(
        "the primary's circuit half-opening",
        Duration::from_secs(5),
        async || circuit_states(&app).await[0].1 == pb::CircuitState::HalfOpen as i32,
    )
    .await;
    let reply = app.converse("fb", "probe").await.unwrap();
    assert_eq!(turn_text(reply.turn.as_ref().unwrap()), "primary: probe");
    assert_eq!(
        circuit_states(&app).await[0],
        ("primary".to_string(), closed())
    );
    assert_eq!(app.all_turns("fb").await.len(), 10);
}

#[tokio::test]
async fn when_every_target_is_down_the_client_gets_unavailable_with_retry_info() {
    let fake = FakeUpstream::start("gpt").await;
    fake.set_default(Fault::Status(502));
    // The only target opens on a sustained outage: min_calls calls, all failed.
    let app = spawn_app_with(|s| {
        with_model(s, vec![("openai", openai(&fake, None))], &[("openai", 1)]);
        s.routing.breaker.min_calls = 3;
    })
    .await;
    app.create("down").await;
    let err = app.converse("down", "anyone?").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(fake.request_count(), 3, "max_attempts calls");
    // The breaker is open now: the next call fails fast, without a request.
    let err = app.converse("down", "still?").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(error_reason(&err).as_deref(), Some("NO_BACKEND_AVAILABLE"));
    use tonic_types::StatusExt;
    assert!(err.get_details_retry_info().is_some());
    assert_eq!(fake.request_count(), 3);
    assert!(app.all_turns("down").await.is_empty());
}

#[tokio::test]
async fn a_slow_first_byte_times_out_and_falls_back() {
    let slow = FakeUpstream::start("slow").await;
    let quick = FakeUpstream::start("quick").await;
    slow.set_default(Fault::SlowFirstByte(Duration::from_secs(5)));
    let app = spawn_app_with(|s| {
        with_model(
            s,
            vec![
                ("slow", openai(&slow, None)),
                ("quick", openai(&quick, None)),
            ],
            &[("slow", 1), ("quick", 0)],
        )
    })
    .await;
    let mut request = converse_request("sf", "hurry");
    request.create_if_missing = true;
    let started = Instant::now();
    let (events, error) = app.stream(request.clone()).await;
    assert!(error.is_none(), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "first-token limit applied: {:?}",
        started.elapsed()
    );
    let Some(Event::End(end)) = events.last() else {
        panic!("no end")
    };
    assert_eq!(turn_text(end.turn.as_ref().unwrap()), "quick: hurry");
    assert_eq!(end.metadata.as_ref().unwrap().attempts, 2);

    // Unary calls are bounded by request_ms the same way.
    let reply = app.converse("sf", "again").await.unwrap();
    assert_eq!(turn_text(reply.turn.as_ref().unwrap()), "quick: again");
}

#[tokio::test]
async fn a_reset_mid_stream_is_an_error_not_a_clean_end_and_is_not_retried() {
    let fake = FakeUpstream::start("gpt").await;
    fake.script([Fault::ResetAfter(3)]);
    // Paced, so the first tokens are flushed to dialogd before the reset.
    fake.set_token_delay(Duration::from_millis(50));
    let app =
        spawn_app_with(|s| with_model(s, vec![("openai", openai(&fake, None))], &[("openai", 1)]))
            .await;
    app.create("reset").await;
    let (events, error) = app
        .stream(converse_request("reset", "one two three four five"))
        .await;
    let error = error.expect("the stream must end with an error status");
    assert_eq!(error.code(), Code::Unavailable);
    assert!(
        events.iter().any(|e| matches!(e, Event::Delta(_))),
        "tokens were relayed before the reset"
    );
    assert!(!events.iter().any(|e| matches!(e, Event::End(_))));
    assert_eq!(
        fake.request_count(),
        1,
        "never retried after tokens reached the client"
    );
    assert!(
        app.all_turns("reset").await.is_empty(),
        "no partial reply stored"
    );
    // The dialogue works on.
    app.converse("reset", "next").await.unwrap();
}

#[tokio::test]
async fn malformed_sse_before_any_token_is_retried() {
    let fake = FakeUpstream::start("gpt").await;
    fake.script([Fault::MalformedSse]);
    let app =
        spawn_app_with(|s| with_model(s, vec![("openai", openai(&fake, None))], &[("openai", 1)]))
            .await;
    app.create("bad").await;
    let (events, error) = app.stream(converse_request("bad", "hi")).await;
    assert!(error.is_none(), "{error:?}");
    let Some(Event::End(end)) = events.last() else {
        panic!("no end")
    };
    assert_eq!(end.metadata.as_ref().unwrap().attempts, 2);
    assert_eq!(fake.request_count(), 2);

    fake.set_default(Fault::MalformedSse);
    let (_, error) = app.stream(converse_request("bad", "again")).await;
    assert_eq!(error.unwrap().code(), Code::Unavailable);
    assert_eq!(app.all_turns("bad").await.len(), 2);
}

#[tokio::test]
async fn a_stalled_stream_ends_with_an_error_after_the_idle_limit() {
    let fake = FakeUpstream::start("gpt").await;
    fake.script([Fault::StallAfter(2)]);
    let app =
        spawn_app_with(|s| with_model(s, vec![("openai", openai(&fake, None))], &[("openai", 1)]))
            .await;
    app.create("stall").await;
    let started = Instant::now();
    let (events, error) = app.stream(converse_request("stall", "one two three")).await;
    assert_eq!(
        error.expect("stalled stream fails").code(),
        Code::Unavailable
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "idle limit (500 ms) applied: {:?}",
        started.elapsed()
    );
    assert!(events.iter().any(|e| matches!(e, Event::Delta(_))));
    assert!(app.all_turns("stall").await.is_empty());
}

#[tokio::test]
async fn a_hung_server_is_bounded_by_the_clients_deadline() {
    let fake = FakeUpstream::start("gpt").await;
    fake.set_default(Fault::Hang);
    let app = spawn_app_with(|s| {
        let mut backend = openai(&fake, None);
        if let BackendSettings::Openai { timeouts, .. } = &mut backend {
            timeouts.request_ms = 60_000;
        }
        with_model(s, vec![("openai", backend)], &[("openai", 1)])
    })
    .await;
    app.create("hang").await;
    let mut request = tonic::Request::new(converse_request("hang", "hello?"));
    request.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let err = app.converse_with(request).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(fake.request_count(), 1, "no retry past the deadline");
    // The dialogue is free again and nothing was stored: the turn ended
    // with the error the caller got.
    assert_eq!(app.get("hang", 0).await.unwrap().turn_count, 0);
}

#[tokio::test]
async fn an_upstream_context_error_is_failed_precondition() {
    let fake = FakeUpstream::start("gpt").await;
    fake.set_default(Fault::ContextTooLong);
    let app =
        spawn_app_with(|s| with_model(s, vec![("openai", openai(&fake, None))], &[("openai", 1)]))
            .await;
    app.create("ctx").await;
    let err = app.converse("ctx", "too much").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(error_reason(&err).as_deref(), Some("CONTEXT_TOO_LONG"));
    assert_eq!(fake.request_count(), 1, "not retried");
}

#[tokio::test]
async fn the_retry_budget_caps_retries() {
    let fake = FakeUpstream::start("gpt").await;
    fake.set_default(Fault::Status(500));
    let app = spawn_app_with(|s| {
        with_model(s, vec![("openai", openai(&fake, None))], &[("openai", 1)]);
        s.routing.retry_budget_ratio = 0.0;
        s.routing.retry_budget_reserve = 1;
        s.routing.breaker.consecutive_failures = 100;
    })
    .await;
    app.create("budget").await;
    assert_eq!(
        app.converse("budget", "a").await.unwrap_err().code(),
        Code::Unavailable
    );
    assert_eq!(fake.request_count(), 2, "one retry from the reserve");
    assert_eq!(
        app.converse("budget", "b").await.unwrap_err().code(),
        Code::Unavailable
    );
    assert_eq!(fake.request_count(), 3, "budget spent: no retry");
}

#[tokio::test]
async fn a_client_leaving_a_stream_cancels_the_upstream_request() {
    let fake = FakeUpstream::start("gpt").await;
    fake.set_token_delay(Duration::from_millis(200));
    let app =
        spawn_app_with(|s| with_model(s, vec![("openai", openai(&fake, None))], &[("openai", 1)]))
            .await;
    app.create("gone").await;
    let mut stream = app
        .converse_stream(converse_request("gone", "a b c d e f g h"))
        .await
        .unwrap();
    assert!(matches!(
        stream.message().await.unwrap().unwrap().event,
        Some(Event::Start(_))
    ));
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake
        .abandoned_streams
        .load(std::sync::atomic::Ordering::SeqCst)
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "the upstream stream was never cancelled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(app.all_turns("gone").await.is_empty());
}

#[tokio::test]
async fn weights_spread_first_attempts_across_targets() {
    let a = FakeUpstream::start("a").await;
    let b = FakeUpstream::start("b").await;
    let app = spawn_app_with(|s| {
        with_model(
            s,
            vec![("a", openai(&a, None)), ("b", openai(&b, None))],
            &[("a", 3), ("b", 1)],
        )
    })
    .await;
    let mut request = converse_request("w", "x");
    request.create_if_missing = true;
    for _ in 0..80 {
        app.converse_with(request.clone()).await.unwrap();
    }
    let (na, nb) = (a.request_count(), b.request_count());
    assert_eq!(na + nb, 80);
    // Expect ~60/20; allow wide random variation.
    assert!((45..=75).contains(&na), "a got {na}, b got {nb}");
}

#[tokio::test]
async fn a_missing_api_key_variable_stops_start_up_with_a_clear_error() {
    let fake = FakeUpstream::start("gpt").await;
    let mut settings = Settings::default();
    with_model(
        &mut settings,
        vec![("openai", openai(&fake, Some("DIALOGD_TEST_KEY_NEVER_SET")))],
        &[("openai", 1)],
    );
    let err = settings.validate().unwrap_err().to_string();
    assert!(err.contains("DIALOGD_TEST_KEY_NEVER_SET"), "{err}");
}

#[tokio::test]
async fn list_models_probes_each_backend() {
    let up = FakeUpstream::start("up").await;
    let mut down = openai(&up, None);
    if let BackendSettings::Openai { base_url, .. } = &mut down {
        // Nothing listens on port 1 of loopback.
        *base_url = "http://127.0.0.1:1/v1".into();
    }
    let app = spawn_app_with(|s| {
        with_model(
            s,
            vec![("up", openai(&up, None)), ("down", down)],
            &[("up", 1), ("down", 1)],
        )
    })
    .await;
    let models = app.list_models(pb::ListModelsRequest {}).await.unwrap();
    let m = models.models.iter().find(|m| m.model_id == "m").unwrap();
    let reach: Vec<(&str, bool)> = m
        .targets
        .iter()
        .map(|t| (t.backend.as_str(), t.reachable))
        .collect();
    assert_eq!(reach, [("up", true), ("down", false)]);
    let echo = models.models.iter().find(|m| m.model_id == "echo").unwrap();
    assert!(echo.targets[0].reachable);
}
