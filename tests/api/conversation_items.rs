//! Conversation items changed without a model call, as the model sees
//! them: added items are in the next prompt, a deleted message is not,
//! and a branch that shared the deleted message keeps it.
//! Runs on sled and, with DIALOGD_TEST_STORE=redis, on Redis.

use crate::backends::{openai, with_model};
use crate::helpers::{TestApp, plain_http, spawn_app_with};
use crate::upstream::FakeUpstream;
use serde_json::{Value, json};

async fn call(app: &TestApp, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut request = plain_http()
        .build()
        .unwrap()
        .request(method, format!("http://{}/v1/{path}", app.addr));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.unwrap();
    assert_eq!(answer.status(), 200, "{path}");
    answer.json().await.unwrap()
}

#[tokio::test]
async fn added_items_reach_the_model_and_a_deleted_one_does_not() {
    use reqwest::Method;
    let fake = FakeUpstream::start("gpt").await;
    let app =
        spawn_app_with(|s| with_model(s, vec![("up", openai(&fake, None))], &[("up", 1)])).await;
    let conversation = call(
        &app,
        Method::POST,
        "conversations",
        Some(json!({"items": [
            {"type": "message", "role": "user", "content": "my name is Ada"},
            {"type": "message", "role": "assistant", "content": "hello Ada"},
        ]})),
    )
    .await;
    let id = conversation["id"].as_str().unwrap().to_owned();
    call(
        &app,
        Method::POST,
        &format!("conversations/{id}/items"),
        Some(json!({"items": [{"type": "message", "role": "user", "content": "I like tea"}]})),
    )
    .await;
    let first = call(
        &app,
        Method::POST,
        "responses",
        Some(json!({"model": "m", "input": "who am I?", "conversation": id})),
    )
    .await;
    assert_eq!(
        fake.last_prompt(),
        ["my name is Ada", "hello Ada", "I like tea", "who am I?"]
    );
    call(
        &app,
        Method::POST,
        "responses",
        Some(json!({"model": "m", "input": "and now?", "conversation": id})),
    )
    .await;
    // A branch from the older response shares the items by reference.
    let branch = call(
        &app,
        Method::POST,
        "responses",
        Some(json!({"model": "m", "input": "more?", "previous_response_id": first["id"]})),
    )
    .await;
    let branch_id = branch["id"].as_str().unwrap();
    assert!(
        !branch_id.starts_with(&format!("resp_{id}~")),
        "{branch_id} is a new dialogue's"
    );

    // Deleting "I like tea": the conversation's next prompt lacks it...
    call(
        &app,
        Method::DELETE,
        &format!("conversations/{id}/items/msg_2"),
        None,
    )
    .await;
    call(
        &app,
        Method::POST,
        "responses",
        Some(json!({"model": "m", "input": "last?", "conversation": id})),
    )
    .await;
    assert_eq!(
        fake.last_prompt(),
        [
            "my name is Ada",
            "hello Ada",
            "who am I?",
            "gpt: who am I?",
            "and now?",
            "gpt: and now?",
            "last?"
        ]
    );
    // ...while the branch, which shared it, still has it.
    call(
        &app,
        Method::POST,
        "responses",
        Some(json!({"model": "m", "input": "again?", "previous_response_id": branch["id"]})),
    )
    .await;
    assert_eq!(
        fake.last_prompt(),
        [
            "my name is Ada",
            "hello Ada",
            "I like tea",
            "who am I?",
            "gpt: who am I?",
            "more?",
            "gpt: more?",
            "again?"
        ]
    );
}
