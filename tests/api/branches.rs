//! Branching a Responses chain from an older response: the branch shares
//! the chain's history by reference (the model sees it, reads show it),
//! goes on alone, survives its parent's erasure and the removal of the
//! parent's later responses, and branches of branches work the same.
//! Runs on sled and, with DIALOGD_TEST_STORE=redis, on Redis.

use crate::backends::{openai, with_model};
use crate::helpers::{TestApp, plain_http, spawn_app_with};
use crate::upstream::FakeUpstream;
use serde_json::{Value, json};

async fn respond(app: &TestApp, input: &str, previous: Option<&str>) -> Value {
    let mut body = json!({"model": "m", "input": input, "instructions": "be brief"});
    if let Some(previous) = previous {
        body["previous_response_id"] = json!(previous);
    }
    let answer = plain_http()
        .build()
        .unwrap()
        .post(format!("http://{}/v1/responses", app.addr))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    answer.json().await.unwrap()
}

fn id(response: &Value) -> &str {
    response["id"].as_str().unwrap()
}

fn dialogue_of(response: &Value) -> String {
    let id = id(response).strip_prefix("resp_").unwrap();
    id.rsplit_once('~').unwrap().0.to_owned()
}

async fn rest(app: &TestApp, method: reqwest::Method, path: &str) -> (u16, Value) {
    let answer = plain_http()
        .build()
        .unwrap()
        .request(method, format!("http://{}/v1/{path}", app.addr))
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

async fn texts(app: &TestApp, dialogue: &str) -> Vec<String> {
    let (status, body) = rest(
        app,
        reqwest::Method::GET,
        &format!("dialogues/{dialogue}/turns"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t["content"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_branch_shares_history_by_reference_and_outlives_its_parent() {
    let fake = FakeUpstream::start("gpt").await;
    let app =
        spawn_app_with(|s| with_model(s, vec![("up", openai(&fake, None))], &[("up", 1)])).await;
    let first = respond(&app, "a", None).await;
    let second = respond(&app, "b", Some(id(&first))).await;
    let third = respond(&app, "c", Some(id(&second))).await;
    assert_eq!(dialogue_of(&third), dialogue_of(&first));

    // From the first response: the model sees a, its reply, then d.
    let branch = respond(&app, "d", Some(id(&first))).await;
    assert_eq!(fake.last_prompt(), ["be brief", "a", "gpt: a", "d"]);
    assert_eq!(branch["previous_response_id"], id(&first));
    let twig = dialogue_of(&branch);
    assert_ne!(twig, dialogue_of(&first));
    assert_eq!(texts(&app, &twig).await, ["a", "gpt: a", "d", "gpt: d"]);
    let (_, read) = rest(
        &app,
        reqwest::Method::GET,
        &format!("responses/{}", id(&branch)),
    )
    .await;
    assert_eq!(read["output"][0]["content"][0]["text"], "gpt: d");
    assert_eq!(read["previous_response_id"], id(&first));
    // The chain is untouched.
    let trunk = dialogue_of(&first);
    assert_eq!(
        texts(&app, &trunk).await,
        ["a", "gpt: a", "b", "gpt: b", "c", "gpt: c"]
    );

    // A branch of the branch, from its own response, and one from a
    // response it borrows.
    let deeper = respond(&app, "e", Some(id(&branch))).await;
    assert_eq!(
        dialogue_of(&deeper),
        twig,
        "the branch's latest continues it"
    );
    let borrowed_reply = format!("resp_{twig}~1");
    let sprig = respond(&app, "f", Some(&borrowed_reply)).await;
    assert_eq!(fake.last_prompt(), ["be brief", "a", "gpt: a", "f"]);
    let sprig = dialogue_of(&sprig);

    // Removing the trunk's later responses and then the trunk itself:
    // every branch keeps its whole history and goes on.
    let (status, _) = rest(
        &app,
        reqwest::Method::DELETE,
        &format!("responses/{}", id(&third)),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = rest(&app, reqwest::Method::DELETE, &format!("dialogues/{trunk}")).await;
    assert_eq!(status, 200);
    let (status, _) = rest(
        &app,
        reqwest::Method::GET,
        &format!("responses/{}", id(&first)),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        texts(&app, &twig).await,
        ["a", "gpt: a", "d", "gpt: d", "e", "gpt: e"]
    );
    assert_eq!(texts(&app, &sprig).await, ["a", "gpt: a", "f", "gpt: f"]);
    let last = format!("resp_{twig}~5");
    respond(&app, "g", Some(&last)).await;
    assert_eq!(
        fake.last_prompt(),
        ["be brief", "a", "gpt: a", "d", "gpt: d", "e", "gpt: e", "g"]
    );
    // The branch's own branch outlives it too.
    let (status, _) = rest(&app, reqwest::Method::DELETE, &format!("dialogues/{twig}")).await;
    assert_eq!(status, 200);
    assert_eq!(texts(&app, &sprig).await, ["a", "gpt: a", "f", "gpt: f"]);
}

#[tokio::test]
async fn deleting_a_branchs_borrowed_latest_response_leaves_the_parent_whole() {
    let fake = FakeUpstream::start("gpt").await;
    let app =
        spawn_app_with(|s| with_model(s, vec![("up", openai(&fake, None))], &[("up", 1)])).await;
    let first = respond(&app, "a", None).await;
    let second = respond(&app, "b", Some(id(&first))).await;
    respond(&app, "c", Some(id(&second))).await;
    // A branch at the second response, then its first own response removed:
    // its latest is then the borrowed second one, which it may remove from
    // itself alone.
    let branch = respond(&app, "x", Some(id(&second))).await;
    let twig = dialogue_of(&branch);
    let (status, _) = rest(
        &app,
        reqwest::Method::DELETE,
        &format!("responses/{}", id(&branch)),
    )
    .await;
    assert_eq!(status, 200);
    let borrowed = format!("resp_{twig}~3");
    let (status, body) = rest(
        &app,
        reqwest::Method::DELETE,
        &format!("responses/{borrowed}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(texts(&app, &twig).await, ["a", "gpt: a"]);
    assert_eq!(
        texts(&app, &dialogue_of(&first)).await,
        ["a", "gpt: a", "b", "gpt: b", "c", "gpt: c"]
    );
    // A response that is not a reply, or beyond the chain, is not found.
    let (status, _) = rest(
        &app,
        reqwest::Method::GET,
        &format!("responses/resp_{twig}~0"),
    )
    .await;
    assert_eq!(status, 404);
    let answer = plain_http()
        .build()
        .unwrap()
        .post(format!("http://{}/v1/responses", app.addr))
        .json(
            &json!({"model": "m", "input": "y", "previous_response_id": format!("resp_{twig}~0")}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
}

#[tokio::test]
async fn deleting_an_older_response_empties_it_for_its_chain_not_for_its_branches() {
    let fake = FakeUpstream::start("gpt").await;
    let app =
        spawn_app_with(|s| with_model(s, vec![("up", openai(&fake, None))], &[("up", 1)])).await;
    let first = respond(&app, "a", None).await;
    let second = respond(&app, "b", Some(id(&first))).await;
    let third = respond(&app, "c", Some(id(&second))).await;
    let branch = respond(&app, "x", Some(id(&second))).await;
    let (status, body) = rest(
        &app,
        reqwest::Method::DELETE,
        &format!("responses/{}", id(&first)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = rest(
        &app,
        reqwest::Method::GET,
        &format!("responses/{}", id(&first)),
    )
    .await;
    assert_eq!(status, 404);
    let trunk = dialogue_of(&first);
    assert_eq!(
        texts(&app, &trunk).await,
        ["", "", "b", "gpt: b", "c", "gpt: c"]
    );
    respond(&app, "d", Some(id(&third))).await;
    assert_eq!(
        fake.last_prompt(),
        ["be brief", "b", "gpt: b", "c", "gpt: c", "d"]
    );
    // The branch shared the exchange: it kept its own copy.
    respond(&app, "y", Some(id(&branch))).await;
    assert_eq!(
        fake.last_prompt(),
        ["be brief", "a", "gpt: a", "b", "gpt: b", "x", "gpt: x", "y"]
    );
}
