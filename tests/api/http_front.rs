//! The HTTP front on the gRPC port, over real HTTP/1.1 and h2c: the
//! OpenAI-compatible routes (stateless and tied to a stored dialogue,
//! unary and SSE), their errors in OpenAI's shape with the same auth,
//! limits and audit as gRPC, and gRPC-Web.

use crate::helpers::*;
use crate::security::{secured_app, with_auth};
use dialogd::pb::dialogue::v1 as pb;
use prost::Message;
use serde_json::{Value, json};

fn url(app: &TestApp, path: &str) -> String {
    format!("http://{}{path}", app.addr)
}

fn http1() -> reqwest::Client {
    plain_http().http1_only().build().unwrap()
}

async fn chat(app: &TestApp, body: Value, key: Option<&str>) -> reqwest::Response {
    let mut request = http1().post(url(app, "/v1/chat/completions")).json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

/// The `data:` payloads of an SSE body, in order.
fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_stateless_chat_completion_answers_like_openai_and_stores_nothing() {
    let app = spawn_app().await;
    let response = chat(
        &app,
        json!({"model": "echo", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there"}
        ]}),
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "echo");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "echo: hello there");
    assert_eq!(choice["finish_reason"], "stop");
    let usage = &body["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    // Nothing was stored.
    let listed = app
        .list_dialogues(pb::ListDialoguesRequest::default())
        .await
        .unwrap();
    assert!(listed.dialogues.is_empty());

    let models: Value = http1()
        .get(url(&app, "/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "echo");
}

#[tokio::test]
async fn a_streamed_chat_completion_sends_openai_chunks_then_done() {
    let app = spawn_app().await;
    // h2c as well as HTTP/1.1.
    let h2 = plain_http().http2_prior_knowledge().build().unwrap();
    let response = h2
        .post(url(&app, "/v1/chat/completions"))
        .json(
            &json!({"model": "echo", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "one two three"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let data = sse_data(&response.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "echo: one two three");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_dialogue_header_keeps_the_history_server_side() {
    let app = spawn_app().await;
    let send = |text: &'static str| {
        http1()
            .post(url(&app, "/v1/chat/completions"))
            .header("x-dialogue-id", "web-chat")
            .json(&json!({"model": "echo", "messages": [
                {"role": "system", "content": "you are terse"},
                {"role": "user", "content": text}
            ]}))
            .send()
    };
    let first = send("first question").await.unwrap();
    assert_eq!(first.headers()["x-dialogue-id"], "web-chat");
    let first: Value = first.json().await.unwrap();
    let second: Value = send("second").await.unwrap().json().await.unwrap();
    assert_eq!(second["choices"][0]["message"]["content"], "echo: second");
    // The second prompt held the first exchange: history came from the store.
    assert!(
        second["usage"]["prompt_tokens"].as_u64() > first["usage"]["prompt_tokens"].as_u64(),
        "{first} / {second}"
    );
    let turns = app.all_turns("web-chat").await;
    let texts: Vec<String> = turns.iter().map(turn_text).collect();
    assert_eq!(
        texts,
        [
            "first question",
            "echo: first question",
            "second",
            "echo: second"
        ]
    );
    let dialogue = app.get("web-chat", 0).await.unwrap();
    assert_eq!(dialogue.system_prompt, "you are terse");

    // The body field works as the header does (OpenAI SDKs' extra_body).
    let third = chat(
        &app,
        json!({"model": "echo", "dialogue_id": "web-chat",
            "messages": [{"role": "user", "content": "third"}]}),
        None,
    )
    .await;
    assert_eq!(third.status(), 200);
    assert_eq!(app.all_turns("web-chat").await.len(), 6);
}

#[tokio::test]
async fn http_errors_come_in_openai_shape_with_the_same_auth_and_audit_as_grpc() {
    let (app, key) = secured_app().await;
    let ask = json!({"model": "echo", "messages": [{"role": "user", "content": "hi"}]});

    let missing = chat(&app, ask.clone(), None).await;
    assert_eq!(missing.status(), 401);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
    assert!(body["error"]["message"].is_string());

    let wrong = chat(&app, ask.clone(), Some("dk_nobody.secret")).await;
    assert_eq!(wrong.status(), 401);

    // A key scoped to reading dialogues may not start turns.
    let read_only = chat(&app, ask.clone(), Some(&key["reader"])).await;
    assert_eq!(read_only.status(), 403);
    let body: Value = read_only.json().await.unwrap();
    assert_eq!(body["error"]["type"], "permission_error");

    let bad = chat(
        &app,
        json!({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}),
        Some(&key["alice"]),
    )
    .await;
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["param"], "model");

    let malformed = http1()
        .post(url(&app, "/v1/chat/completions"))
        .bearer_auth(&key["alice"])
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);

    let ok = chat(&app, ask.clone(), Some(&key["alice"])).await;
    assert_eq!(ok.status(), 200);

    // Outside the OpenAI routes errors take google.rpc's JSON shape.
    let unknown = http1()
        .get(url(&app, "/v1/nothing-here"))
        .bearer_auth(&key["alice"])
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"]["status"], "NOT_FOUND");

    // Audited like gRPC calls: the turn and the refusals.
    let events = app
        .list_audit_events(with_auth(
            pb::ListAuditEventsRequest {
                action: "http.OpenAi/ChatCompletions".into(),
                ..Default::default()
            },
            Some(&key["auditor"]),
        ))
        .await
        .unwrap()
        .events;
    let statuses: Vec<&str> = events.iter().map(|e| e.status.as_str()).collect();
    for expected in [
        "Unauthenticated",
        "PermissionDenied",
        "InvalidArgument",
        "Ok",
    ] {
        assert!(statuses.contains(&expected), "{expected} in {statuses:?}");
    }
}

#[tokio::test]
async fn http_callers_share_the_rate_limits_and_get_retry_after() {
    let app = spawn_app_with(|s| {
        s.limits.requests_per_second = 1;
        s.limits.request_burst = 2;
    })
    .await;
    let ask = json!({"model": "echo", "messages": [{"role": "user", "content": "hi"}]});
    // One gRPC call and one HTTP call spend the burst of the same caller.
    app.list_models(pb::ListModelsRequest {}).await.unwrap();
    assert_eq!(chat(&app, ask.clone(), None).await.status(), 200);
    let limited = chat(&app, ask, None).await;
    assert_eq!(limited.status(), 429);
    let wait: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
}

/// A gRPC-Web call as a browser makes it: HTTP/1.1, length-prefixed
/// message in the body, status in a trailer frame at the end of the body.
#[tokio::test]
async fn grpc_web_calls_work_over_http1() {
    let app = spawn_app().await;
    let message = pb::ListModelsRequest {}.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend((message.len() as u32).to_be_bytes());
    frame.extend(message);
    let response = http1()
        .post(url(&app, "/dialogue.v1.ModelService/ListModels"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(frame)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    let body = response.bytes().await.unwrap();
    let (mut at, mut models, mut trailers) = (0, None, String::new());
    while at + 5 <= body.len() {
        let flag = body[at];
        let len = u32::from_be_bytes(body[at + 1..at + 5].try_into().unwrap()) as usize;
        let payload = &body[at + 5..at + 5 + len];
        if flag & 0x80 == 0 {
            models = Some(pb::ListModelsResponse::decode(payload).unwrap());
        } else {
            trailers = String::from_utf8_lossy(payload).into_owned();
        }
        at += 5 + len;
    }
    assert!(trailers.contains("grpc-status:0"), "{trailers:?}");
    let models = models.expect("a message frame");
    assert_eq!(models.models[0].name, "models/echo");
}

async fn rest(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    key: Option<&str>,
) -> (u16, Value) {
    let mut request = http1().request(method, url(app, path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_rest_routes_mirror_the_proto_in_its_json_mapping() {
    use reqwest::Method;
    let app = spawn_app().await;
    // Proto field names are accepted as well as lowerCamelCase ones.
    let (status, created) = rest(
        &app,
        Method::POST,
        "/v1/dialogues",
        Some(json!({"dialogue_id": "rest-1", "systemPrompt": "be kind",
            "labels": {"team": "web"}, "state": {"step": 1}})),
        None,
    )
    .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["name"], "dialogues/rest-1");
    assert_eq!(created["systemPrompt"], "be kind");
    // Timestamps are RFC 3339 in UTC with Z, as proto3's JSON mapping
    // writes them; a whole number in a Struct stays whole.
    let created_at = created["createTime"].as_str().unwrap();
    assert!(
        created_at.contains('T') && created_at.ends_with('Z'),
        "{created_at}"
    );
    assert!(!created_at.contains("+00:00"), "{created_at}");
    assert_eq!(created["state"]["step"], json!(1), "{created}");

    let (status, reply) = rest(
        &app,
        Method::POST,
        "/v1/dialogues/rest-1:converse",
        Some(json!({"content": [{"text": "hello rest"}], "requestId": "r-1"})),
        None,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["turn"]["content"][0]["text"], "echo: hello rest");
    assert_eq!(reply["finishReason"], "FINISH_REASON_STOP");
    // int64 is a string in the JSON mapping.
    assert_eq!(reply["turn"]["index"], "1");

    let streamed = http1()
        .post(url(&app, "/v1/dialogues/rest-1:converseStream"))
        .json(&json!({"content": [{"text": "and a stream"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 200);
    let events: Vec<Value> = sse_data(&streamed.text().await.unwrap())
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(events[0]["start"]["turnIndex"], "3");
    let text: String = events
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "echo: and a stream");
    assert_eq!(
        events.last().unwrap()["end"]["turn"]["content"][0]["text"],
        "echo: and a stream"
    );

    let (status, patched) = rest(
        &app,
        Method::PATCH,
        "/v1/dialogues/rest-1?updateMask=systemPrompt,state",
        Some(json!({"systemPrompt": "be brief", "state": {"step": 2}, "labels": {"ignored": "x"}})),
        None,
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["systemPrompt"], "be brief");
    assert_eq!(patched["labels"], json!({"team": "web"}), "not in the mask");

    // The same dialogue over gRPC.
    let over_grpc = app.get("rest-1", 0).await.unwrap();
    assert_eq!(over_grpc.system_prompt, "be brief");
    assert_eq!(over_grpc.turn_count, 4);

    let (_, got) = rest(
        &app,
        Method::GET,
        "/v1/dialogues/rest-1?lastTurns=2",
        None,
        None,
    )
    .await;
    assert_eq!(got["turnCount"], "4");
    assert_eq!(got["recentTurns"].as_array().unwrap().len(), 2);

    let (_, page) = rest(
        &app,
        Method::GET,
        "/v1/dialogues/rest-1/turns?pageSize=3",
        None,
        None,
    )
    .await;
    assert_eq!(page["turns"].as_array().unwrap().len(), 3);
    let token = page["nextPageToken"].as_str().unwrap().to_owned();
    let (_, rest_of) = rest(
        &app,
        Method::GET,
        &format!("/v1/dialogues/rest-1/turns?pageSize=3&pageToken={token}"),
        None,
        None,
    )
    .await;
    assert_eq!(rest_of["turns"].as_array().unwrap().len(), 1);

    let (_, listed) = rest(&app, Method::GET, "/v1/dialogues", None, None).await;
    assert_eq!(listed["dialogues"][0]["dialogueId"], "rest-1");

    let (status, _) = rest(&app, Method::DELETE, "/v1/dialogues/rest-1", None, None).await;
    assert_eq!(status, 200);
    let (status, gone) = rest(&app, Method::GET, "/v1/dialogues/rest-1", None, None).await;
    assert_eq!(status, 404);
    assert_eq!(gone["error"]["status"], "NOT_FOUND");

    // Bad input: the gRPC service's field violations, in JSON.
    let (status, bad) = rest(
        &app,
        Method::POST,
        "/v1/dialogues/bad%20id:converse",
        Some(json!({"content": [{"text": "x"}]})),
        None,
    )
    .await;
    assert_eq!(status, 400);
    let violations = bad["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.BadRequest")
        .expect("a BadRequest detail");
    assert_eq!(violations["fieldViolations"][0]["field"], "name");
    let (status, _) = rest(&app, Method::POST, "/v1/dialogues/x:explode", None, None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_rest_routes_keep_the_grpc_access_rules() {
    use reqwest::Method;
    let (app, key) = secured_app().await;
    let create = json!({"dialogueId": "private"});
    let (status, _) = rest(
        &app,
        Method::POST,
        "/v1/dialogues",
        Some(create.clone()),
        None,
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = rest(
        &app,
        Method::POST,
        "/v1/dialogues",
        Some(create),
        Some(&key["alice"]),
    )
    .await;
    assert_eq!(status, 200);
    // Another caller cannot see it; a read-only key cannot converse.
    let (status, _) = rest(
        &app,
        Method::GET,
        "/v1/dialogues/private",
        None,
        Some(&key["eve"]),
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = rest(
        &app,
        Method::POST,
        "/v1/dialogues/private:converse",
        Some(json!({"content": [{"text": "x"}]})),
        Some(&key["reader"]),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
    let (status, _) = rest(
        &app,
        Method::GET,
        "/v1/dialogues/private",
        None,
        Some(&key["reader"]),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn browsers_on_allowed_origins_get_cors_for_grpc_web() {
    let app = spawn_app_with(|s| {
        s.server.cors_allowed_origins = vec!["https://app.example".into()];
    })
    .await;
    let client = http1();
    let path = "/dialogue.v1.ModelService/ListModels";
    let preflight = client
        .request(reqwest::Method::OPTIONS, url(&app, path))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-grpc-web,authorization",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let headers = preflight.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
    let allowed = headers["access-control-allow-headers"].to_str().unwrap();
    assert!(allowed.contains("x-grpc-web") && allowed.contains("authorization"));

    let mut frame = vec![0u8, 0, 0, 0, 0];
    frame.extend(pb::ListModelsRequest {}.encode_to_vec());
    let call = client
        .post(url(&app, path))
        .header("origin", "https://app.example")
        .header("content-type", "application/grpc-web+proto")
        .body(frame)
        .send()
        .await
        .unwrap();
    assert_eq!(call.status(), 200);
    assert_eq!(
        call.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let exposed = call.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(exposed.contains("grpc-status"), "{exposed}");

    // Another origin is not allowed.
    let other = client
        .request(reqwest::Method::OPTIONS, url(&app, path))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn the_wrong_protocol_or_method_is_named_not_misread() {
    let app = spawn_app().await;
    // A gRPC method as a plain HTTP POST.
    let response = http1()
        .post(url(&app, "/dialogue.v1.DialogueService/Converse"))
        .json(&json!({"name": "dialogues/x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    assert!(response.headers().get("grpc-status").is_none());
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Content-Type: application/grpc"),
        "{message}"
    );
    assert!(
        message.contains("POST /v1/dialogues/{id}:converse"),
        "{message}"
    );

    // A custom-verb route with the wrong method.
    let response = http1()
        .get(url(&app, "/v1/dialogues/x:converse"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("GET is not served on /v1/dialogues/x:converse; it takes POST"),
        "{body}"
    );
    // The plain resource route still reads a dialogue.
    let response = http1()
        .get(url(&app, "/v1/dialogues/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

/// A response belongs to its caller: another tenant's response ID is
/// NOT_FOUND, read or chained.
#[tokio::test]
async fn responses_are_private_to_their_owner() {
    let (app, keys) = secured_app().await;
    let client = http1();
    let created: Value = client
        .post(url(&app, "/v1/responses"))
        .bearer_auth(&keys["alice"])
        .json(&json!({"model": "echo", "input": "mine"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("resp_"), "{created}");
    let read = |key: String| {
        let client = client.clone();
        let url = url(&app, &format!("/v1/responses/{id}"));
        async move {
            client
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(read(keys["alice"].clone()).await, 200);
    assert_eq!(read(keys["eve"].clone()).await, 404);
    let chained = client
        .post(url(&app, "/v1/responses"))
        .bearer_auth(&keys["eve"])
        .json(&json!({"model": "echo", "input": "theirs", "previous_response_id": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(chained.status(), 404);
}
