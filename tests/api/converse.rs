//! Unary Converse: replies, stored history, idempotency, parameters and
//! every error path.

use crate::helpers::*;
use dialogd::pb::dialogue::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn a_turn_stores_the_message_and_the_reply() {
    let app = spawn_app().await;
    app.create("chat").await;
    let reply = app.converse("chat", "hello there").await.unwrap();
    assert_eq!(reply.name, "dialogues/chat");
    let user = reply.user_turn.unwrap();
    let turn = reply.turn.unwrap();
    assert_eq!((user.index, user.role), (0, pb::Role::User as i32));
    assert_eq!((turn.index, turn.role), (1, pb::Role::Assistant as i32));
    assert_eq!(turn_text(&turn), "echo: hello there");
    assert_eq!(turn.name, "dialogues/chat/turns/1");
    assert_eq!(reply.finish_reason, pb::FinishReason::Stop as i32);
    let usage = reply.usage.unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (2, 3, 5)
    );
    let meta = reply.metadata.unwrap();
    assert_eq!(
        (meta.model.as_str(), meta.backend.as_str()),
        ("echo", "echo")
    );
    assert!(!meta.cached && !meta.replayed);
    assert!(meta.latency_ms > 0.0);

    app.converse("chat", "second").await.unwrap();
    let turns = app.all_turns("chat").await;
    let texts: Vec<String> = turns.iter().map(turn_text).collect();
    assert_eq!(
        texts,
        ["hello there", "echo: hello there", "second", "echo: second"]
    );
    assert_eq!(turns[3], app.get("chat", 1).await.unwrap().recent_turns[0]);
}

#[tokio::test]
async fn history_reaches_the_model_within_the_context_window() {
    // A 60-token window: only the most recent turns fit.
    let app = spawn_app_with(|s| s.models[0].context_tokens = 60).await;
    app.create("window").await;
    let mut last_prompt = 0;
    for i in 0..12 {
        let reply = app
            .converse("window", &format!("message number {i}"))
            .await
            .unwrap();
        last_prompt = reply.usage.unwrap().prompt_tokens;
    }
    // Without a window the prompt would hold all 22 earlier turns (~70 words).
    assert!(
        last_prompt > 3 && last_prompt < 30,
        "prompt words: {last_prompt}"
    );
    assert_eq!(
        app.get("window", 0).await.unwrap().turn_count,
        24,
        "nothing dropped from storage"
    );
}

#[tokio::test]
async fn unknown_dialogue_is_not_found_unless_asked_to_create_it() {
    let app = spawn_app().await;
    let err = app.converse("fresh", "hi").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        app.get("fresh", 0).await.unwrap_err().code(),
        Code::NotFound
    );

    let mut request = converse_request("fresh", "hi");
    request.create_if_missing = true;
    request.dialogue_defaults = Some(pb::Dialogue {
        system_prompt: "be nice".into(),
        labels: [("source".to_string(), "auto".to_string())].into(),
        ..Default::default()
    });
    let reply = app.converse_with(request.clone()).await.unwrap();
    assert_eq!(turn_text(reply.turn.as_ref().unwrap()), "echo: hi");
    let got = app.get("fresh", 0).await.unwrap();
    assert_eq!((got.system_prompt.as_str(), got.turn_count), ("be nice", 2));
    assert_eq!(got.labels["source"], "auto");

    // Defaults are ignored once the dialogue exists.
    request.dialogue_defaults = Some(pb::Dialogue {
        system_prompt: "other".into(),
        ..Default::default()
    });
    app.converse_with(request).await.unwrap();
    assert_eq!(app.get("fresh", 0).await.unwrap().system_prompt, "be nice");
}

#[tokio::test]
async fn a_retried_request_id_returns_the_first_result() {
    let app = spawn_app().await;
    app.create("idem").await;
    let mut request = converse_request("idem", "pay once");
    request.request_id = "req-42".into();
    let first = app.converse_with(request.clone()).await.unwrap();
    let again = app.converse_with(request.clone()).await.unwrap();
    assert_eq!(again.turn, first.turn);
    assert_eq!(again.user_turn, first.user_turn);
    assert!(again.metadata.unwrap().replayed);
    assert_eq!(
        app.get("idem", 0).await.unwrap().turn_count,
        2,
        "no second turn"
    );
    assert_eq!(first.turn.unwrap().request_id, "req-42");

    // Streams replay too.
    let (events, error) = app.stream(request.clone()).await;
    assert!(error.is_none());
    match events.last() {
        Some(pb::converse_stream_response::Event::End(end)) => {
            assert_eq!(end.turn, again.turn);
            assert!(end.metadata.as_ref().unwrap().replayed);
        }
        other => panic!("expected an end event, got {other:?}"),
    }

    // The same key with another message is a client error, not a new turn.
    request.content = vec![text("something else")];
    let err = app.converse_with(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["request_id"]);
    assert_eq!(app.get("idem", 0).await.unwrap().turn_count, 2);

    // Keys are per dialogue.
    app.create("other").await;
    let mut elsewhere = converse_request("other", "pay once");
    elsewhere.request_id = "req-42".into();
    assert!(
        !app.converse_with(elsewhere)
            .await
            .unwrap()
            .metadata
            .unwrap()
            .replayed
    );
}

#[tokio::test]
async fn generation_parameters_are_checked_and_applied() {
    let app = spawn_app().await;
    app.create("params").await;
    let mut request = converse_request("params", "one two three four");
    request.generation = Some(pb::GenerationConfig {
        max_tokens: Some(2),
        temperature: Some(0.0),
        seed: Some(7),
        ..Default::default()
    });
    let reply = app.converse_with(request.clone()).await.unwrap();
    assert_eq!(reply.finish_reason, pb::FinishReason::Length as i32);
    assert_eq!(turn_text(reply.turn.as_ref().unwrap()), "echo: one ");

    request.generation = Some(pb::GenerationConfig {
        temperature: Some(3.0),
        top_p: Some(0.0),
        max_tokens: Some(-5),
        stop: vec!["a".into(), "b".into(), "c".into(), "d".into(), "e".into()],
        model: Some("nope".into()),
        ..Default::default()
    });
    let err = app.converse_with(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields = violated_fields(&err);
    for f in [
        "generation.temperature",
        "generation.top_p",
        "generation.max_tokens",
        "generation.stop",
        "generation.model",
    ] {
        assert!(
            fields.contains(&f.to_string()),
            "{f} missing from {fields:?}"
        );
    }
    assert_eq!(
        app.get("params", 0).await.unwrap().turn_count,
        2,
        "refused turns store nothing"
    );
}

#[tokio::test]
async fn malformed_messages_are_invalid_argument() {
    let app = spawn_app_with(|s| s.limits.max_message_bytes = 16).await;
    app.create("m").await;
    let cases: Vec<(pb::ConverseRequest, &str)> = vec![
        (converse_request("m", &"x".repeat(17)), "content"),
        (
            pb::ConverseRequest {
                name: name("m"),
                ..Default::default()
            },
            "content",
        ),
        (converse_request("m", ""), "content[0].text"),
        (
            pb::ConverseRequest {
                name: name("m"),
                content: vec![pb::ContentPart { kind: None }],
                ..Default::default()
            },
            "content[0]",
        ),
        (
            pb::ConverseRequest {
                name: "m".into(),
                content: vec![text("hi")],
                ..Default::default()
            },
            "name",
        ),
        (
            pb::ConverseRequest {
                request_id: "has space".into(),
                ..converse_request("m", "hi")
            },
            "request_id",
        ),
    ];
    for (request, field) in cases {
        let err = app.converse_with(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}");
        assert!(
            violated_fields(&err).contains(&field.to_string()),
            "{field}: {:?}",
            violated_fields(&err)
        );
    }
    assert_eq!(app.get("m", 0).await.unwrap().turn_count, 0);
}

#[tokio::test]
async fn a_full_dialogue_is_failed_precondition() {
    let app = spawn_app_with(|s| s.limits.max_turns_per_dialogue = 4).await;
    app.create("full").await;
    app.converse("full", "one").await.unwrap();
    app.converse("full", "two").await.unwrap();
    let err = app.converse("full", "three").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(error_reason(&err).as_deref(), Some("DIALOGUE_TURN_LIMIT"));
    assert_eq!(app.get("full", 0).await.unwrap().turn_count, 4);
}

#[tokio::test]
async fn a_message_beyond_the_context_window_is_failed_precondition() {
    let app = spawn_app_with(|s| s.models[0].context_tokens = 32).await;
    app.create("tiny").await;
    let err = app.converse("tiny", &"word ".repeat(40)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(error_reason(&err).as_deref(), Some("CONTEXT_TOO_LONG"));
    assert_eq!(app.get("tiny", 0).await.unwrap().turn_count, 0);
}

#[tokio::test]
async fn list_turns_pages_through_long_histories() {
    let app = spawn_app().await;
    app.create("long").await;
    for i in 0..30 {
        app.converse("long", &format!("m{i}")).await.unwrap();
    }
    let mut indexes = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .list_turns(pb::ListTurnsRequest {
                parent: name("long"),
                page_size: 7,
                page_token: token,
                view: 0,
            })
            .await
            .unwrap();
        assert!(page.turns.len() <= 7);
        indexes.extend(page.turns.iter().map(|t| t.index));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(indexes, (0..60).collect::<Vec<i64>>());

    // A token of one dialogue is refused for another.
    app.create("short").await;
    let first = app
        .list_turns(pb::ListTurnsRequest {
            parent: name("long"),
            page_size: 7,
            page_token: String::new(),
            view: 0,
        })
        .await
        .unwrap();
    let err = app
        .list_turns(pb::ListTurnsRequest {
            parent: name("short"),
            page_size: 7,
            page_token: first.next_page_token,
            view: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["page_token"]);

    let last = app.get("long", 4).await.unwrap();
    let idx: Vec<i64> = last.recent_turns.iter().map(|t| t.index).collect();
    assert_eq!(idx, [56, 57, 58, 59]);
}

#[tokio::test]
async fn list_models_shows_the_configured_models() {
    let app = spawn_app().await;
    let models = app
        .list_models(pb::ListModelsRequest {})
        .await
        .unwrap()
        .models;
    assert_eq!(models.len(), 1);
    let echo = &models[0];
    assert_eq!(echo.name, "models/echo");
    assert!(echo.is_default);
    assert_eq!(echo.context_tokens, 8192);
    assert_eq!(echo.targets.len(), 1);
    let target = &echo.targets[0];
    assert_eq!(
        (target.backend_kind.as_str(), target.upstream_model.as_str()),
        ("echo", "echo")
    );
    assert_eq!(target.circuit_state, pb::CircuitState::Closed as i32);
}

#[tokio::test]
async fn oversized_requests_are_refused_and_the_server_carries_on() {
    let app = spawn_app_with(|s| s.server.max_request_bytes = 64 * 1024).await;
    app.create("big").await;
    let err = app
        .converse("big", &"x".repeat(100 * 1024))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert_eq!(app.get("big", 0).await.unwrap().turn_count, 0);
    app.converse("big", "small").await.unwrap();
}

#[tokio::test]
async fn pages_of_large_turns_stay_within_what_clients_accept() {
    let app = spawn_app_with(|s| {
        s.limits.max_message_bytes = 512 * 1024;
        s.models[0].context_tokens = 1_000_000;
    })
    .await;
    app.create("heavy").await;
    let big = "y".repeat(500 * 1024);
    for _ in 0..5 {
        app.converse("heavy", &big).await.unwrap();
    }
    // 10 turns of ~500 KiB exceed a client's default 4 MiB limit in one page;
    // pages end early and the token continues where they stopped.
    let turns = app.all_turns("heavy").await;
    assert_eq!(
        turns.iter().map(|t| t.index).collect::<Vec<_>>(),
        (0..10).collect::<Vec<i64>>()
    );
    let recent = app.get("heavy", 10).await.unwrap().recent_turns;
    assert!(!recent.is_empty() && recent.len() < 10);
    assert_eq!(recent.last().unwrap().index, 9, "the newest turns are kept");
}
