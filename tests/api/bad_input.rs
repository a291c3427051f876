//! Slow and malformed input is the caller's fault, answered as such: the
//! bearer scheme in any case, oversized credentials refused (and audited),
//! malformed protobuf as INVALID_ARGUMENT, refusals of streams before they
//! start, request bodies that trickle in cut off.

use crate::helpers::*;
use crate::security::secured_app;
use dialogd::pb::dialogue::v1 as pb;
use futures_util::StreamExt;
use std::time::{Duration, Instant};
use tonic::Code;

fn with_header<T>(message: T, value: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", value.parse().unwrap());
    request
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_on_grpc_and_http() {
    let (app, key) = secured_app().await;
    let http = plain_http().build().unwrap();
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let value = format!("{scheme} {}", key["alice"]);
        let models = app
            .list_models(with_header(pb::ListModelsRequest {}, &value))
            .await;
        assert!(models.is_ok(), "{scheme}: {models:?}");
        let status = http
            .get(format!("http://{}/v1/models", app.addr))
            .header("authorization", &value)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{scheme}");
    }
    let basic = app
        .list_models(with_header(pb::ListModelsRequest {}, "Basic YWxpY2U6eA=="))
        .await
        .unwrap_err();
    assert_eq!(basic.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn an_oversized_credential_is_unauthenticated_not_a_broken_connection() {
    let (app, _) = secured_app().await;
    let huge = format!("Bearer {}", "x".repeat(60 * 1024));
    let refused = app
        .list_models(with_header(pb::ListModelsRequest {}, &huge))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let http = plain_http().http1_only().build().unwrap();
    let response = http
        .get(format!("http://{}/v1/models", app.addr))
        .header("authorization", &huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // The connection (and the server) are fine afterwards.
    let models = app.list_models(pb::ListModelsRequest {}).await.unwrap_err();
    assert_eq!(models.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_refused_rest_stream_is_an_http_error_before_any_event() {
    let app = spawn_app().await;
    let http = plain_http().build().unwrap();
    let response = http
        .post(format!(
            "http://{}/v1/dialogues/missing:converseStream",
            app.addr
        ))
        .json(&serde_json::json!({"content": [{"text": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "an error body, not an event stream"
    );
}

/// A gRPC call with `payload` as its one message, over plain HTTP/2; the
/// answer's `grpc-status` and `grpc-message`.
async fn raw_grpc(app: &TestApp, path: &str, payload: &[u8]) -> (String, String) {
    let mut body = vec![0u8];
    body.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    body.extend_from_slice(payload);
    let http = plain_http().http2_prior_knowledge().build().unwrap();
    let response = http
        .post(format!("http://{}{path}", app.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    (header("grpc-status"), header("grpc-message"))
}

#[tokio::test]
async fn malformed_protobuf_is_invalid_argument_not_internal() {
    let app = spawn_app().await;
    let (status, message) = raw_grpc(
        &app,
        "/dialogue.v1.DialogueService/CreateDialogue",
        &[0xff, 0xff, 0xff, 0xff, 0x0f, 0x01],
    )
    .await;
    assert_eq!(status, "3", "{message}");
    // A state nested past the decoder's recursion limit: the caller's
    // fault too, and nothing is created.
    let mut state = serde_json::json!({"leaf": true});
    for _ in 0..40 {
        state = serde_json::json!({"nested": state});
    }
    let deep = app
        .create_with(pb::Dialogue {
            dialogue_id: "deep".into(),
            state: Some(serde_json::from_value(state).unwrap()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(deep.code(), Code::InvalidArgument, "{deep:?}");
    assert_eq!(app.get("deep", 0).await.unwrap_err().code(), Code::NotFound);
}

/// `head` at once, then `rest` a byte every 200 ms: a caller trickling
/// its request body.
fn trickle(head: Vec<u8>, rest: usize) -> reqwest::Body {
    let bytes =
        futures_util::stream::iter(std::iter::once(head).chain((0..rest).map(|_| vec![b' '])))
            .enumerate()
            .then(|(i, chunk)| async move {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok::<_, std::io::Error>(chunk)
            });
    reqwest::Body::wrap_stream(bytes)
}

/// A gRPC CreateDialogue whose body trickles in (a byte every 200 ms, 20 s
/// in all), with `grpc_timeout` if given: its `grpc-status` and the answer.
async fn trickling_create(
    app: &TestApp,
    grpc_timeout: Option<&str>,
) -> (Option<String>, reqwest::Response) {
    let mut head = vec![0u8];
    head.extend_from_slice(&100u32.to_be_bytes());
    let h2 = plain_http().http2_prior_knowledge().build().unwrap();
    let mut request = h2
        .post(format!(
            "http://{}/dialogue.v1.DialogueService/CreateDialogue",
            app.addr
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(timeout) = grpc_timeout {
        request = request.header("grpc-timeout", timeout);
    }
    let response = request.body(trickle(head, 100)).send().await.unwrap();
    let status = response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, response)
}

#[tokio::test]
async fn a_request_body_that_trickles_in_is_cut_off_at_the_read_timeout() {
    let app = spawn_app_with(|s| s.server.request_read_timeout_secs = 1).await;
    let started = Instant::now();
    // HTTP: 408 with the reason, after about the limit.
    let http = plain_http().http1_only().build().unwrap();
    let response = http
        .post(format!("http://{}/v1/dialogues", app.addr))
        .header("content-type", "application/json")
        .header("content-length", "40")
        .body(trickle(b"{\"dialogueId\": \"slow\"".to_vec(), 19))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 408);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["details"][0]["reason"],
        "REQUEST_READ_TIMEOUT"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // gRPC: DEADLINE_EXCEEDED, not a call held open.
    let started = Instant::now();
    let (status, response) = trickling_create(&app, None).await;
    assert_eq!(status.as_deref(), Some("4"), "{:?}", response.headers());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Nothing was created, and a prompt caller is unaffected.
    assert_eq!(app.get("slow", 0).await.unwrap_err().code(), Code::NotFound);
    app.create("fast").await;
}

/// The caller's `grpc-timeout` bounds the server's work on a call, not only
/// the engine's turns: a call stuck before its handler answers (here, on a
/// trickling body, well inside the 30 s read limit) is answered
/// DEADLINE_EXCEEDED at the caller's deadline.
#[tokio::test]
async fn a_grpc_call_is_answered_at_its_deadline() {
    let app = spawn_app().await;
    let started = Instant::now();
    let (status, response) = trickling_create(&app, Some("400m")).await;
    assert_eq!(status.as_deref(), Some("4"), "{:?}", response.headers());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(2),
        "{took:?}"
    );
}
