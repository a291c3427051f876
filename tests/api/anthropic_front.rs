//! The Anthropic Messages front against upstreams of both shapes: an
//! OpenAI-shaped upstream answers an Anthropic-shaped call (tool calls
//! included, unary and streamed in Anthropic's event order), `x-api-key`
//! authenticates like a bearer credential, and errors come in Anthropic's
//! shape before any stream starts.

use crate::helpers::*;
use crate::rich::{SHAPES, serve};
use crate::security::secured_app;
use crate::upstream::{FakeUpstream, Planned};
use serde_json::{Value, json};

const ARGS: &str = r#"{"city":"Paris"}"#;

fn weather_tool() -> Value {
    json!({"name": "get_weather", "description": "The weather",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}})
}

async fn post(app: &TestApp, body: Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = plain_http()
        .build()
        .unwrap()
        .post(format!("http://{}/v1/messages", app.addr))
        .json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// `(event name, data)` of an SSE body.
fn events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|frame| {
            let name = frame.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = frame.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((name.to_owned(), serde_json::from_str(data).unwrap()))
        })
        .collect()
}

#[tokio::test]
async fn either_upstream_answers_an_anthropic_call_with_its_tool_calls() {
    for shape in SHAPES {
        let fake = FakeUpstream::start("gpt").await;
        let app = spawn_app_with(|s| serve(s, &fake, shape)).await;
        let ask = json!({"model": "m", "max_tokens": 100, "tools": [weather_tool()],
                         "messages": [{"role": "user", "content": "weather?"}]});

        fake.plan_replies([Planned::calls(&[("call_1", "get_weather", ARGS)])]);
        let response = post(&app, ask.clone(), &[]).await;
        assert_eq!(response.status(), 200, "{shape:?}");
        let message: Value = response.json().await.unwrap();
        assert_eq!(message["stop_reason"], "tool_use", "{shape:?}: {message}");
        assert_eq!(
            message["content"],
            json!([{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}])
        );

        fake.plan_replies([Planned::calls(&[("call_2", "get_weather", ARGS)])]);
        let mut streamed = ask.clone();
        streamed["stream"] = json!(true);
        let body = post(&app, streamed, &[]).await.text().await.unwrap();
        let events = events(&body);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.first(), Some(&"message_start"), "{shape:?}: {body}");
        assert_eq!(names.last(), Some(&"message_stop"));
        let (_, start) = events
            .iter()
            .find(|(n, _)| n == "content_block_start")
            .unwrap();
        assert_eq!(start["content_block"]["type"], "tool_use");
        assert_eq!(start["content_block"]["name"], "get_weather");
        let json: String = events
            .iter()
            .filter(|(n, _)| n == "content_block_delta")
            .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&json).unwrap(),
            json!({"city": "Paris"})
        );
        let (_, delta) = events.iter().find(|(n, _)| n == "message_delta").unwrap();
        assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    }
}

#[tokio::test]
async fn x_api_key_authenticates_and_refusals_are_in_anthropics_shape() {
    let (app, keys) = secured_app().await;
    let body = json!({"model": "echo", "max_tokens": 50,
                      "messages": [{"role": "user", "content": "hi"}]});
    let response = post(&app, body.clone(), &[("x-api-key", keys["alice"].as_str())]).await;
    assert_eq!(response.status(), 200);
    let message: Value = response.json().await.unwrap();
    assert_eq!(message["content"][0]["text"], "echo: hi");

    let response = post(&app, body.clone(), &[("x-api-key", "dk_alice_wrong")]).await;
    assert_eq!(response.status(), 401);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "authentication_error");

    // Validation comes first, even for a stream, naming the field.
    let mut missing = body.clone();
    missing.as_object_mut().unwrap().remove("max_tokens");
    missing["stream"] = json!(true);
    let response = post(&app, missing, &[("x-api-key", keys["alice"].as_str())]).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens"),
        "{error}"
    );
}
