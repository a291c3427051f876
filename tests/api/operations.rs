//! Asynchronous turns: SubmitTurn answers at once, GetOperation and
//! WatchOperation follow the turn, the callback is POSTed signed and
//! retried, and a pending operation survives a killed server.

use crate::helpers::*;
use dialogd::pb::dialogue::v1 as pb;
use hmac::{Hmac, Mac};
use pb::operation::Result as Outcome;
use sha2::Sha256;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tonic::Code;

pub(crate) const SECRET_ENV: &str = "DIALOGD_TEST_WEBHOOK_SECRET";
pub(crate) const SECRET: &str = "webhook-secret-for-tests";

pub(crate) fn submit(id: &str, text: &str, callback_url: &str) -> pb::SubmitTurnRequest {
    let mut turn = converse_request(id, text);
    turn.create_if_missing = true;
    pb::SubmitTurnRequest {
        turn: Some(turn),
        callback_url: callback_url.into(),
        priority: 0,
    }
}

pub(crate) async fn wait_done(client: &Api, name: &str) -> pb::Operation {
    let start = Instant::now();
    loop {
        let op = client
            .get_operation(pb::GetOperationRequest { name: name.into() })
            .await
            .unwrap();
        if op.done && op.callback_state() != pb::CallbackState::Pending {
            return op;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{name} never settled: {op:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn reply_text(op: &pb::Operation) -> String {
    match &op.result {
        Some(Outcome::Response(r)) => turn_text(r.turn.as_ref().unwrap()),
        other => panic!("no reply: {other:?}"),
    }
}

#[tokio::test]
async fn a_submitted_turn_answers_at_once_and_can_be_polled_and_watched() {
    // 500 ms a word: the reply takes about 1.5 s.
    let app = spawn_app_with(|s| set_echo_delay(s, 500)).await;
    let client = app.api.clone();
    let op = client
        .submit_turn(submit("async-1", "hello later", ""))
        .await
        .unwrap();
    assert!(!op.done);
    // Answered while the turn still runs (not after it).
    let running = client
        .get_operation(pb::GetOperationRequest {
            name: op.name.clone(),
        })
        .await
        .unwrap();
    assert!(!running.done, "submit did not wait for the turn");
    assert!(op.name.starts_with("operations/op-"));
    assert_eq!(op.callback_state(), pb::CallbackState::None);

    let mut watched = client
        .watch_operation(pb::GetOperationRequest {
            name: op.name.clone(),
        })
        .await
        .unwrap();
    let mut states = Vec::new();
    while let Some(state) = watched.message().await.unwrap() {
        states.push(state.done);
    }
    assert_eq!(states.first(), Some(&false));
    assert_eq!(
        states.last(),
        Some(&true),
        "the watch ends with the done operation"
    );

    let done = wait_done(&client, &op.name).await;
    assert_eq!(reply_text(&done), "echo: hello later");
    assert_eq!(app.all_turns("async-1").await.len(), 2);

    // A turn that fails is a done operation with the error.
    let failed = client
        .submit_turn(pb::SubmitTurnRequest {
            turn: Some(converse_request("never-created", "hi")),
            callback_url: String::new(),
            priority: 0,
        })
        .await
        .unwrap();
    let failed = wait_done(&client, &failed.name).await;
    let Some(Outcome::Error(error)) = failed.result else {
        panic!("{failed:?}")
    };
    assert_eq!(error.code, Code::NotFound as i32);

    // Refused up front: a bad turn, a bad URL, a callback without a secret.
    let mut empty = submit("x", "", "");
    empty.turn.as_mut().unwrap().content.clear();
    let refused = client.submit_turn(empty).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let refused = client
        .submit_turn(submit("x", "hi", "not a url"))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&refused), vec!["callback_url".to_string()]);
    let refused = client
        .submit_turn(submit("x", "hi", "http://127.0.0.1:9/hook"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let missing = client
        .get_operation(pb::GetOperationRequest {
            name: "operations/op-nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

/// Callbacks received: signature header and body. Answers 500 to the first.
#[derive(Clone, Default)]
pub(crate) struct Hook {
    pub calls: Arc<Mutex<Vec<(String, bytes::Bytes)>>>,
}

pub(crate) async fn start_hook(hook: Hook) -> String {
    use axum::http::{HeaderMap, StatusCode};
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                async |axum::extract::State(hook): axum::extract::State<Hook>,
                       headers: HeaderMap,
                       body: bytes::Bytes| {
                    let signature = headers
                        .get("x-dialogd-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let mut calls = hook.calls.lock().unwrap();
                    calls.push((signature, body));
                    if calls.len() == 1 {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                },
            ),
        )
        .with_state(hook);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/hook")
}

#[tokio::test]
async fn the_callback_is_signed_and_retried_until_taken() {
    unsafe { std::env::set_var(SECRET_ENV, SECRET) };
    let app = spawn_app_with(|s| {
        s.webhooks.secret_env = Some(SECRET_ENV.into());
        s.webhooks.initial_backoff_ms = 50;
        s.webhooks.allowed_hosts = vec!["127.0.0.1".into()];
    })
    .await;
    let hook = Hook::default();
    let url = start_hook(hook.clone()).await;
    let client = app.api.clone();
    // Only the allowed hosts.
    let elsewhere = client
        .submit_turn(submit("hooked", "x", "http://localhost:9/hook"))
        .await
        .unwrap_err();
    assert_eq!(
        violated_fields(&elsewhere),
        vec!["callback_url".to_string()]
    );
    let op = client
        .submit_turn(submit("hooked", "call me back", &url))
        .await
        .unwrap();
    assert_eq!(op.callback_state(), pb::CallbackState::Pending);
    let done = wait_done(&client, &op.name).await;
    assert_eq!(done.callback_state(), pb::CallbackState::Delivered);
    assert_eq!(done.callback_attempts, 2, "refused once, then taken");

    let calls = hook.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    let (signature, body) = &calls[1];
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(signature, &format!("sha256={expected}"));
    let posted: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(posted["name"], op.name);
    assert_eq!(posted["done"], true);
    assert_eq!(
        posted["response"]["turn"]["content"][0]["text"],
        "echo: call me back"
    );
}

#[tokio::test]
async fn a_pending_operation_survives_a_killed_server() {
    let dir = TempDir::new().unwrap();
    let config = dir.path().join("slow.toml");
    // 100 ms a word: a 21-word reply takes about two seconds.
    std::fs::write(
        &config,
        "[backends.echo]\nkind = \"echo\"\ndelay_ms = 100\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let args = ["--config", config.to_str().unwrap()];
    let server = ServerProcess::start_with(&data, &args).await;
    let client = server.api().await;
    let words = (0..20)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let op = client
        .submit_turn(submit("survivor", &words, ""))
        .await
        .unwrap();
    // Not a wait for a state: the kill should land while the two-second
    // turn runs, and no call tells that it has begun.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill9().await;

    let server = ServerProcess::start_with(&data, &args).await;
    let client = server.api().await;
    let done = wait_done(&client, &op.name).await;
    assert_eq!(reply_text(&done), format!("echo: {words}"));
    let turns = client
        .list_turns(pb::ListTurnsRequest {
            parent: name("survivor"),
            ..Default::default()
        })
        .await
        .unwrap()
        .turns;
    assert_eq!(turns.len(), 2, "run once, whatever the restart");
    server.kill9().await;
}

#[tokio::test]
async fn an_operation_is_erased_with_its_dialogue() {
    let app = spawn_app().await;
    let op = app
        .submit_turn(submit("erase-ops", "remember me", ""))
        .await
        .unwrap();
    let done = wait_done(&app, &op.name).await;
    assert!(done.done);
    app.delete("erase-ops").await.unwrap();
    let err = app
        .get_operation(pb::GetOperationRequest {
            name: op.name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
}
