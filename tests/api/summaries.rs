//! History summarizing: once dropped history passes the threshold, a summary
//! turn is stored and stands in for the old turns in later prompts.

use crate::helpers::*;
use crate::upstream::FakeUpstream;
use dialogd::config::{BackendSettings, ModelSettings, TimeoutSettings};
use dialogd::pb::dialogue::v1 as pb;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

async fn app_with_summaries(fake: &FakeUpstream) -> TestApp {
    let url = fake.openai_url();
    spawn_app_with(move |s| {
        s.backends.insert(
            "gpt".into(),
            BackendSettings::Openai {
                base_url: url,
                api_key_env: None,
                chat_path: "/chat/completions".into(),
                api_key_header: None,
                headers: BTreeMap::new(),
                timeouts: TimeoutSettings::default(),
            },
        );
        s.models.push(ModelSettings {
            name: "m".into(),
            backend: Some("gpt".into()),
            upstream_model: None,
            targets: Vec::new(),
            context_tokens: 400,
            max_history_turns: 1000,
            summarize_after_tokens: Some(40),
            summary_max_tokens: 150,
            capabilities: None,
            embeddings: false,
            semantic_cache: None,
        });
        s.default_model = "m".into();
    })
    .await
}

fn is_summary_call(request: &serde_json::Value) -> bool {
    request["messages"][0]["content"]
        .as_str()
        .is_some_and(|c| c.starts_with("You keep the memory"))
}

#[tokio::test]
async fn dropped_history_is_summarized_into_a_stored_summary_turn() {
    let fake = FakeUpstream::start("gpt").await;
    let app = app_with_summaries(&fake).await;
    app.create("long").await;
    for i in 0..24 {
        app.converse("long", &format!("fact {i}: the code word is alpha{i}"))
            .await
            .unwrap();
    }
    let turns = app.all_turns("long").await;
    let summaries: Vec<&pb::Turn> = turns.iter().filter(|t| t.summary.is_some()).collect();
    assert!(!summaries.is_empty(), "no summary after 12 exchanges");
    for s in &summaries {
        assert_eq!(s.role, pb::Role::System as i32);
        let range = s.summary.unwrap();
        assert_eq!(range.first_index, 0);
        assert!(range.last_index < s.index);
    }
    // The first fact fell out of the window long ago but lives on in the
    // (cumulative) summary.
    let latest = summaries.last().unwrap();
    assert!(
        turn_text(latest).contains("alpha0"),
        "{}",
        turn_text(latest)
    );

    // History stays whole and in order: every message is still stored,
    // each followed by its reply.
    let exchanges: Vec<&pb::Turn> = turns.iter().filter(|t| t.summary.is_none()).collect();
    assert_eq!(exchanges.len(), 48);
    for pair in exchanges.chunks(2) {
        assert_eq!(turn_text(pair[1]), format!("gpt: {}", turn_text(pair[0])));
    }
    let indexes: Vec<i64> = turns.iter().map(|t| t.index).collect();
    assert_eq!(indexes, (0..turns.len() as i64).collect::<Vec<_>>());

    // The last model call carried the summary, not the old turns.
    let requests = fake.requests();
    assert!(requests.iter().any(is_summary_call));
    let last = requests.iter().rev().find(|r| !is_summary_call(r)).unwrap();
    let messages = last["messages"].as_array().unwrap();
    let first = messages[0]["content"].as_str().unwrap();
    assert!(
        first.starts_with("Summary of the earlier conversation:"),
        "{first}"
    );
    assert!(
        !messages[1..]
            .iter()
            .any(|m| m["content"].as_str().unwrap().contains("alpha0")),
        "old turns are not sent verbatim"
    );
}

#[tokio::test]
async fn a_failed_summary_does_not_fail_the_turn() {
    let fake = FakeUpstream::start("gpt").await;
    fake.fail_summaries.store(true, Ordering::SeqCst);
    let app = app_with_summaries(&fake).await;
    app.create("nosum").await;
    for i in 0..24 {
        app.converse("nosum", &format!("fact {i}: the code word is alpha{i}"))
            .await
            .unwrap();
    }
    let turns = app.all_turns("nosum").await;
    assert_eq!(turns.len(), 48);
    assert!(turns.iter().all(|t| t.summary.is_none()));
    assert!(
        fake.requests().iter().any(is_summary_call),
        "summaries were attempted"
    );
}

#[tokio::test]
async fn a_summary_keeps_tool_activity_as_text() {
    let fake = FakeUpstream::start("gpt").await;
    let app = app_with_summaries(&fake).await;
    let tools = crate::rich::with_tools(&["get_weather"]);
    fake.plan_replies([crate::upstream::Planned::calls(&[(
        "call_1",
        "get_weather",
        r#"{"city":"Paris"}"#,
    )])]);
    for content in [
        text("Weather in Paris?"),
        crate::rich::tool_result("call_1", "18C"),
    ] {
        app.converse_with(crate::rich::request("tools", vec![content], tools.clone()))
            .await
            .unwrap();
    }
    for i in 0..24 {
        app.converse("tools", &format!("fact {i}: the code word is alpha{i}"))
            .await
            .unwrap();
    }
    let summary_calls: Vec<serde_json::Value> = fake
        .requests()
        .into_iter()
        .filter(is_summary_call)
        .collect();
    let first = summary_calls.first().expect("a summary was written");
    let conversation = first["messages"][1]["content"].as_str().unwrap();
    assert!(
        conversation.contains(r#"[call call_1 get_weather({"city":"Paris"})]"#)
            && conversation.contains("[call call_1 returned: 18C]"),
        "{conversation}"
    );
}
