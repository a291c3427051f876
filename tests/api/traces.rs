//! OpenTelemetry traces from a real dialogd process to an OTLP/HTTP
//! receiver run by the test: the span tree of one turn whose first model
//! call fails and is retried, the caller's `traceparent` continued, and
//! each attempt's context sent upstream.

use crate::process::ServerProcess;
use crate::upstream::{FakeUpstream, Fault};
use axum::body::Bytes;
use axum::extract::State;
use dialogd::pb::dialogue::v1 as pb;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Received = Arc<Mutex<Vec<Span>>>;

/// An OTLP/HTTP (protobuf) trace receiver on a free port.
async fn otlp_receiver() -> (String, Received) {
    let received: Received = Arc::default();
    async fn export(State(received): State<Received>, body: Bytes) -> Vec<u8> {
        let request = ExportTraceServiceRequest::decode(body).expect("an OTLP export");
        for resource in request.resource_spans {
            for scope in resource.scope_spans {
                received.lock().unwrap().extend(scope.spans);
            }
        }
        Vec::new() // an empty ExportTraceServiceResponse
    }
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(export))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), received)
}

fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_retried_turn_is_one_trace_continuing_the_callers_with_genai_spans() {
    let (endpoint, received) = otlp_receiver().await;
    let upstream = FakeUpstream::start("traced").await;
    upstream.script([Fault::Status(503)]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dialogd.toml");
    std::fs::write(
        &config,
        format!(
            "default_model = 'gpt'\n\
             [tracing]\notlp_endpoint = '{endpoint}'\nexport_delay_ms = 50\n\
             [routing]\nbackoff_base_ms = 1\nbackoff_max_ms = 5\n\
             [backends.up]\nkind = 'openai'\nbase_url = '{}'\n\
             [[models]]\nname = 'gpt'\ntargets = [{{ backend = 'up', upstream_model = 'gpt-test' }}]\n",
            upstream.openai_url()
        ),
    )
    .unwrap();
    let mut server = ServerProcess::start_with(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    )
    .await;
    let api = server.api().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let mut request = tonic::Request::new(pb::ConverseRequest {
        name: "dialogues/traced".into(),
        content: vec![crate::helpers::text("hello")],
        create_if_missing: true,
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01").parse().unwrap(),
    );
    let reply = api.converse_with(request).await.unwrap();
    assert_eq!(
        reply.metadata.unwrap().attempts,
        2,
        "the first call failed and was retried"
    );
    // A streamed turn: its model call runs on the stream's own task.
    let mut stream = api
        .converse_stream(pb::ConverseRequest {
            name: "dialogues/traced".into(),
            content: vec![crate::helpers::text("and streamed")],
            ..Default::default()
        })
        .await
        .unwrap();
    while stream.message().await.unwrap().is_some() {}

    // SIGTERM: the process flushes its spans before it exits.
    let pid = server.child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), server.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());

    let spans = received.lock().unwrap().clone();
    let server_span = spans
        .iter()
        .find(|s| s.name == "dialogue.v1.DialogueService/Converse")
        .unwrap_or_else(|| {
            panic!(
                "a server span in {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(
        hex(&server_span.trace_id),
        trace_id,
        "the caller's trace goes on"
    );
    assert_eq!(hex(&server_span.parent_span_id), caller_span);
    let server_attrs = attributes(server_span);
    assert_eq!(server_attrs["rpc.system"], "grpc");
    assert_eq!(server_attrs["rpc.service"], "dialogue.v1.DialogueService");
    assert_eq!(server_attrs["rpc.method"], "Converse");
    assert_eq!(server_attrs["rpc.grpc.status_code"], "0");

    let streamed = spans
        .iter()
        .find(|s| s.name == "dialogue.v1.DialogueService/ConverseStream")
        .unwrap_or_else(|| {
            let names: Vec<_> = spans
                .iter()
                .map(|s| (&s.name, hex(&s.parent_span_id)))
                .collect();
            panic!("the stream's server span in {names:?}")
        });
    let mut attempts: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "chat gpt-test" && s.parent_span_id == server_span.span_id)
        .collect();
    attempts.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(attempts.len(), 2, "one span per attempt");
    let stream_calls = spans
        .iter()
        .filter(|s| s.name == "chat gpt-test" && s.parent_span_id == streamed.span_id)
        .count();
    assert_eq!(
        stream_calls, 1,
        "the streamed turn's model call is its child"
    );
    for attempt in &attempts {
        assert_eq!(attempt.trace_id, server_span.trace_id);
        assert_eq!(
            attempt.parent_span_id, server_span.span_id,
            "attempts are children of the call"
        );
        let a = attributes(attempt);
        assert_eq!(a["gen_ai.operation.name"], "chat");
        assert_eq!(a["gen_ai.request.model"], "gpt-test");
        assert_eq!(a["gen_ai.provider.name"], "openai");
    }
    let (failed, answered) = (attributes(attempts[0]), attributes(attempts[1]));
    assert!(failed.contains_key("error.type"), "{failed:?}");
    assert_eq!(answered["dialogd.attempt"], "2");
    assert!(
        answered["gen_ai.usage.input_tokens"]
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert!(
        answered["gen_ai.usage.output_tokens"]
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert_eq!(answered["gen_ai.response.finish_reasons"], "stop");
    assert!(
        spans
            .iter()
            .all(|s| !format!("{:?}", s.attributes).contains(&upstream.openai_url())),
        "no upstream URL in spans"
    );

    // The answered attempt's context reached the upstream (the stream's
    // call came later, in its own trace).
    let sent = upstream.headers_of(1);
    let traceparent = sent["traceparent"].to_str().unwrap();
    assert_eq!(
        traceparent,
        format!("00-{trace_id}-{}-01", hex(&attempts[1].span_id))
    );
}
