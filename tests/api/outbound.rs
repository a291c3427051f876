//! What leaves the server stays where it should: callbacks never reach
//! internal addresses unless allowed, and upstream URLs (with whatever
//! their query holds) never reach clients.

use crate::backends::with_model;
use crate::helpers::*;
use crate::operations::{Hook, SECRET, SECRET_ENV, start_hook, submit, wait_done};
use crate::upstream::{FakeUpstream, Fault};
use dialogd::config::{BackendSettings, TimeoutSettings};
use dialogd::pb::dialogue::v1 as pb;
use std::collections::BTreeMap;
use tonic::Code;

#[tokio::test]
async fn callbacks_never_reach_internal_addresses_unless_allowed() {
    unsafe { std::env::set_var(SECRET_ENV, SECRET) };
    let hook = Hook::default();
    let url = start_hook(hook.clone()).await;
    let port = url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let app = spawn_app_with(|s| {
        s.webhooks.secret_env = Some(SECRET_ENV.into());
        s.webhooks.initial_backoff_ms = 50;
    })
    .await;
    // Address literals, however written, are refused at once.
    for literal in [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://0x7f000001:{port}/hook"),
        format!("http://2130706433:{port}/hook"),
        format!("http://[::1]:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.7/hook".to_string(),
    ] {
        let refused = app
            .submit_turn(submit("hooked", "x", &literal))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{literal}");
        assert_eq!(violated_fields(&refused), ["callback_url"], "{literal}");
    }
    // A name is checked on what it resolves to when called: localhost is
    // never reached, and the callback is given up at once.
    let op = app
        .submit_turn(submit(
            "hooked",
            "x",
            &format!("http://localhost:{port}/hook"),
        ))
        .await
        .unwrap();
    let done = wait_done(&app.api, &op.name).await;
    assert_eq!(done.callback_state(), pb::CallbackState::Failed);
    assert_eq!(done.callback_attempts, 1);
    assert!(
        hook.calls.lock().unwrap().is_empty(),
        "nothing reached the hook"
    );

    // An explicit allow-list opens a host.
    let allowed = spawn_app_with(|s| {
        s.webhooks.secret_env = Some(SECRET_ENV.into());
        s.webhooks.initial_backoff_ms = 50;
        s.webhooks.allowed_hosts = vec!["localhost".into()];
    })
    .await;
    let op = allowed
        .submit_turn(submit(
            "hooked",
            "x",
            &format!("http://localhost:{port}/hook"),
        ))
        .await
        .unwrap();
    let done = wait_done(&allowed.api, &op.name).await;
    assert_eq!(done.callback_state(), pb::CallbackState::Delivered);
}

fn keyed_openai(base_url: String) -> BackendSettings {
    BackendSettings::Openai {
        base_url,
        api_key_env: None,
        chat_path: "/chat/completions?key=SECRET-IN-QUERY".into(),
        api_key_header: None,
        headers: BTreeMap::new(),
        timeouts: TimeoutSettings {
            connect_ms: 500,
            request_ms: 2_000,
            first_token_ms: 1_000,
            idle_ms: 500,
        },
    }
}

fn assert_hides_the_url(status: &tonic::Status, host: &str) {
    let shown = format!("{} {:?}", status.message(), status.details());
    for secret in ["SECRET-IN-QUERY", "chat/completions", host] {
        assert!(!shown.contains(secret), "{secret} shown: {shown}");
    }
    assert!(
        status.message().contains("up"),
        "names the backend: {}",
        status.message()
    );
}

#[tokio::test]
async fn upstream_urls_never_reach_clients() {
    // Nothing listens here: the connection is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let app = spawn_app_with(|s| {
        with_model(
            s,
            vec![("up", keyed_openai(format!("http://{closed}/v1")))],
            &[("up", 1)],
        );
        s.routing.max_attempts = 1;
    })
    .await;
    app.create("u").await;
    let failed = app.converse("u", "hi").await.unwrap_err();
    assert_eq!(failed.code(), Code::Unavailable);
    assert_hides_the_url(&failed, &closed.to_string());

    // A stream that breaks after it started.
    let fake = FakeUpstream::start("gpt").await;
    fake.set_default(Fault::ResetAfter(2));
    let app = spawn_app_with(|s| {
        with_model(
            s,
            vec![("up", keyed_openai(fake.openai_url()))],
            &[("up", 1)],
        );
    })
    .await;
    app.create("s").await;
    let (_, error) = app.stream(converse_request("s", "one two three")).await;
    let error = error.expect("the stream broke");
    assert_eq!(error.code(), Code::Unavailable);
    assert_hides_the_url(&error, &fake.addr.to_string());
}

#[tokio::test]
async fn a_machine_without_a_ca_bundle_still_starts_and_serves() {
    // As in an image FROM scratch: no system CA certificates to be found
    // (rustls-native-certs reads these variables instead of the usual
    // places). The HTTP clients fall back to the built-in roots.
    let dir = tempfile::tempdir().unwrap();
    let server = crate::process::ServerProcess::start_with_env(
        &dir.path().join("data"),
        &[],
        &[
            ("SSL_CERT_FILE", "/nonexistent/ca-certificates.crt"),
            ("SSL_CERT_DIR", "/nonexistent/certs"),
        ],
    )
    .await;
    let api = server.api().await;
    api.create("no-ca").await;
    let reply = api.converse("no-ca", "hello").await.unwrap();
    assert!(reply.turn.is_some());
    server.kill9().await;
}
