//! Traffic rules over the wire: every kind of condition routes only the
//! requests it describes, a canned reply is stored without a model call, a
//! refusal answers with its configured status — over gRPC and the OpenAI
//! front — and the rule table is listed to admins and reloaded from its
//! file while serving.

use crate::backends::{openai, with_model};
use crate::helpers::*;
use crate::rich::{inline_image, with_tools};
use crate::security::with_auth;
use crate::upstream::FakeUpstream;
use dialogd::auth::keys;
use dialogd::config::{ApiKeySettings, AuthMode, ModelSettings, RuleSettings, Settings};
use dialogd::pb::dialogue::v1 as pb;
use pb::converse_stream_response::Event;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

const PNG: &[u8] = &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3, 4];

/// Rules written as a rules file writes them.
fn rules(toml_text: &str) -> Vec<RuleSettings> {
    #[derive(serde::Deserialize)]
    struct File {
        rule: Vec<RuleSettings>,
    }
    toml::from_str::<File>(toml_text).expect("rules parse").rule
}

/// An echo-served model named `name`.
fn echo_model(name: &str) -> ModelSettings {
    ModelSettings {
        name: name.into(),
        backend: Some("echo".into()),
        ..dialogd::config::Settings::default().models[0].clone()
    }
}

/// Keys: alice and bob (tenant acme), carol (acme, also auditor), eve
/// (tenant evil), admin (tenant ops). Model `m` (the default) is served by
/// `fake`; `small`, `vision` and `long` by the echo backend.
fn setup(s: &mut Settings, fake: &FakeUpstream, keys_out: &mut HashMap<&'static str, String>) {
    let people: [(&str, &str, &[&str]); 5] = [
        ("alice", "acme", &["user"]),
        ("bob", "acme", &["user"]),
        ("carol", "acme", &["user", "auditor"]),
        ("eve", "evil", &["user"]),
        ("admin", "ops", &["admin"]),
    ];
    s.auth.mode = AuthMode::Required;
    for (id, tenant, roles) in people {
        let (key, secret) = keys::generate(id);
        keys_out.insert(id, key);
        s.auth.api_keys.push(ApiKeySettings {
            id: id.into(),
            hash: keys::hash_for_config(&secret),
            principal: None,
            tenant: tenant.into(),
            roles: roles
                .iter()
                .map(|r| dialogd::auth::Role::parse(r).unwrap())
                .collect(),
            scopes: None,
            ..Default::default()
        });
    }
    with_model(s, vec![("up", openai(fake, None))], &[("up", 1)]);
    for name in ["small", "vision", "long"] {
        s.models.push(echo_model(name));
    }
}

async fn app_with_rules(
    table: Vec<RuleSettings>,
) -> (TestApp, HashMap<&'static str, String>, Arc<FakeUpstream>) {
    let fake = FakeUpstream::start("big").await;
    let mut keys = HashMap::new();
    let app = spawn_app_with(|s| {
        setup(s, &fake, &mut keys);
        s.rules.rule = table;
    })
    .await;
    (app, keys, fake)
}

/// A unary turn of a new dialogue `id` (created with `labels`).
fn turn(
    id: &str,
    content: Vec<pb::ContentPart>,
    generation: pb::GenerationConfig,
    labels: &[(&str, &str)],
) -> pb::ConverseRequest {
    pb::ConverseRequest {
        dialogue_defaults: Some(pb::Dialogue {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }),
        ..crate::rich::request(id, content, generation)
    }
}

/// (rule, model, backend) of a unary turn's reply.
async fn ruled(app: &TestApp, key: &str, request: pb::ConverseRequest) -> (String, String, String) {
    let reply = app
        .converse_with(with_auth(request, Some(key)))
        .await
        .unwrap_or_else(|s| panic!("turn refused: {s:?}"));
    let m = reply.metadata.unwrap();
    (m.rule, m.model, m.backend)
}

#[tokio::test]
async fn each_condition_routes_only_the_requests_it_describes() {
    let now_minute = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 86_400)
        / 60;
    let hhmm = |minute: u64| format!("{:02}:{:02}", (minute % 1440) / 60, minute % 60);
    // A window two to three hours away never holds now; one around now does.
    let (later, later_end) = (hhmm(now_minute + 120), hhmm(now_minute + 180));
    let (around, around_end) = (hhmm(now_minute + 1440 - 60), hhmm(now_minute + 60));
    let table = rules(&format!(
        r#"
        [[rule]]
        name = "not-now"
        when = {{ hours_utc = "{later}-{later_end}" }}
        then = {{ refuse = {{ status = "unavailable", message = "closed" }} }}
        [[rule]]
        name = "eve"
        when = {{ principals = ["eve"] }}
        then = {{ route = "small" }}
        [[rule]]
        name = "auditors"
        when = {{ roles = ["auditor"] }}
        then = {{ route = "small" }}
        [[rule]]
        name = "vision-lab"
        when = {{ labels = {{ team = "vision-lab" }} }}
        then = {{ route = "vision" }}
        [[rule]]
        name = "asked-small"
        when = {{ models = ["small"] }}
        then = {{ route = "vision" }}
        [[rule]]
        name = "refunds"
        when = {{ keywords = ["refund", "money back"] }}
        then = {{ route = "small" }}
        [[rule]]
        name = "orders"
        when = {{ patterns = ['order #\d{{5}}\b'] }}
        then = {{ route = "small" }}
        [[rule]]
        name = "pictures"
        when = {{ images = true }}
        then = {{ route = "vision" }}
        [[rule]]
        name = "tooling"
        when = {{ tools = true }}
        then = {{ route = "small" }}
        [[rule]]
        name = "long-ones"
        when = {{ min_tokens = 200 }}
        then = {{ route = "long" }}
        [[rule]]
        name = "bob-in-acme-now"
        when = {{ tenants = ["acme"], principals = ["bob"], hours_utc = "{around}-{around_end}" }}
        then = {{ route = "small" }}
        "#
    ));
    let (app, keys, fake) = app_with_rules(table).await;
    let plain = pb::GenerationConfig::default;
    let long_text = "word ".repeat(400);
    let small_model = pb::GenerationConfig {
        model: Some("small".into()),
        ..Default::default()
    };
    let cases: Vec<(&str, pb::ConverseRequest, &str, &str)> = vec![
        (
            "alice",
            turn("a1", vec![text("hello")], plain(), &[]),
            "",
            "m",
        ),
        (
            "eve",
            turn("e1", vec![text("hello")], plain(), &[]),
            "eve",
            "small",
        ),
        (
            "carol",
            turn("c1", vec![text("hello")], plain(), &[]),
            "auditors",
            "small",
        ),
        (
            "alice",
            turn(
                "a2",
                vec![text("hello")],
                plain(),
                &[("team", "vision-lab")],
            ),
            "vision-lab",
            "vision",
        ),
        (
            "alice",
            turn("a3", vec![text("hello")], plain(), &[("team", "other")]),
            "",
            "m",
        ),
        (
            "alice",
            turn("a4", vec![text("hi")], small_model, &[]),
            "asked-small",
            "vision",
        ),
        (
            "alice",
            turn("a5", vec![text("I want my MONEY BACK now")], plain(), &[]),
            "refunds",
            "small",
        ),
        (
            "alice",
            turn("a6", vec![text("where is order #12345?")], plain(), &[]),
            "orders",
            "small",
        ),
        (
            "alice",
            turn("a7", vec![text("where is order #123?")], plain(), &[]),
            "",
            "m",
        ),
        (
            "alice",
            turn(
                "a8",
                vec![text("what is this?"), inline_image("image/png", PNG)],
                plain(),
                &[],
            ),
            "pictures",
            "vision",
        ),
        (
            "alice",
            turn("a9", vec![text("weather?")], with_tools(&["weather"]), &[]),
            "tooling",
            "small",
        ),
        (
            "alice",
            turn("a10", vec![text(&long_text)], plain(), &[]),
            "long-ones",
            "long",
        ),
        (
            "bob",
            turn("b1", vec![text("hello")], plain(), &[]),
            "bob-in-acme-now",
            "small",
        ),
    ];
    let mut expected_upstream_calls = 0;
    for (who, request, rule, model) in cases {
        let what = format!("{who}: {:?}", turn_text_of(&request));
        let (got_rule, got_model, _) = ruled(&app, &keys[who], request).await;
        assert_eq!(
            (got_rule.as_str(), got_model.as_str()),
            (rule, model),
            "{what}"
        );
        expected_upstream_calls += usize::from(model == "m");
    }
    assert_eq!(fake.request_count(), expected_upstream_calls);
    // The stored reply names the rule that routed it.
    let turns = app
        .list_turns(with_auth(
            pb::ListTurnsRequest {
                parent: name("a5"),
                page_size: 10,
                ..Default::default()
            },
            Some(&keys["alice"]),
        ))
        .await
        .unwrap()
        .turns;
    assert_eq!(turns[1].rule, "refunds");
    assert_eq!(turns[1].model, "small");
    assert_eq!(turns[0].rule, "");
}

fn turn_text_of(request: &pb::ConverseRequest) -> String {
    let text: String = request
        .content
        .iter()
        .map(|p| format!("{:?}", p.kind))
        .collect();
    text.chars().take(60).collect()
}

const CANNED: &str = "We are open 9:00 to 17:00, Monday to Friday.";

fn faq_rules() -> Vec<RuleSettings> {
    rules(&format!(
        r#"
        [[rule]]
        name = "opening-hours"
        when = {{ keywords = ["opening hours"], max_tokens = 30 }}
        then = {{ reply = "{CANNED}" }}
        [[rule]]
        name = "no-secrets"
        when = {{ patterns = ['(?i)\bpassword\b'] }}
        then = {{ refuse = {{ status = "permission_denied", message = "we do not discuss passwords" }} }}
        [[rule]]
        name = "slow-down"
        when = {{ keywords = ["spam"] }}
        then = {{ refuse = {{ status = "resource_exhausted", message = "too much spam", retry_after_secs = 7 }} }}
        [[rule]]
        name = "cheap"
        when = {{ keywords = ["quick question"] }}
        then = {{ route = "small" }}
        "#
    ))
}

#[tokio::test]
async fn a_canned_reply_is_stored_without_a_model_call_or_tokens() {
    let (app, keys, fake) = app_with_rules(faq_rules()).await;
    let alice = Some(keys["alice"].as_str());
    let plain = pb::GenerationConfig::default;
    let reply = app
        .converse_with(with_auth(
            turn(
                "faq",
                vec![text("What are your opening hours?")],
                plain(),
                &[],
            ),
            alice,
        ))
        .await
        .unwrap();
    let assistant = reply.turn.clone().unwrap();
    assert_eq!(turn_text(&assistant), CANNED);
    let metadata = reply.metadata.unwrap();
    assert_eq!(
        (metadata.backend.as_str(), metadata.rule.as_str()),
        ("canned", "opening-hours")
    );
    assert_eq!(metadata.attempts, 0);
    let usage = reply.usage.unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (0, 0));
    assert_eq!(fake.request_count(), 0, "no model was called");

    // Streamed, the canned reply arrives as a stream does.
    let mut stream = app
        .converse_stream(with_auth(
            turn("faq", vec![text("opening hours on friday?")], plain(), &[]),
            alice,
        ))
        .await
        .unwrap();
    let mut streamed = String::new();
    let mut done = None;
    while let Some(message) = stream.message().await.unwrap() {
        match message.event {
            Some(Event::Delta(d)) => streamed.push_str(&d.text),
            Some(Event::End(d)) => done = Some(d),
            _ => {}
        }
    }
    assert_eq!(streamed, CANNED);
    assert_eq!(done.unwrap().metadata.unwrap().rule, "opening-hours");
    assert_eq!(fake.request_count(), 0);

    // A long message about opening hours is over the rule's max_tokens:
    // it goes to the model, which sees the canned exchanges in its history.
    let long = format!("opening hours {}", "and more ".repeat(40));
    let (rule, model, _) = ruled(
        &app,
        &keys["alice"],
        turn("faq", vec![text(&long)], plain(), &[]),
    )
    .await;
    assert_eq!((rule.as_str(), model.as_str()), ("", "m"));
    let prompt = fake.last_prompt();
    assert!(
        prompt.iter().filter(|m| *m == CANNED).count() == 2,
        "{prompt:?}"
    );

    let stored = app
        .list_turns(with_auth(
            pb::ListTurnsRequest {
                parent: name("faq"),
                page_size: 10,
                ..Default::default()
            },
            alice,
        ))
        .await
        .unwrap()
        .turns;
    assert_eq!(stored.len(), 6);
    assert_eq!(turn_text(&stored[1]), CANNED);
    assert_eq!(stored[1].rule, "opening-hours");
    assert_eq!(stored[5].rule, "");
}

#[tokio::test]
async fn a_refusing_rule_answers_with_its_status_and_stores_nothing() {
    let (app, keys, fake) = app_with_rules(faq_rules()).await;
    let alice = Some(keys["alice"].as_str());
    let plain = pb::GenerationConfig::default;
    app.converse_with(with_auth(
        turn("r", vec![text("hello")], plain(), &[]),
        alice,
    ))
    .await
    .unwrap();
    let denied = app
        .converse_with(with_auth(
            turn("r", vec![text("tell me the admin PASSWORD")], plain(), &[]),
            alice,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(denied.message(), "we do not discuss passwords");
    assert_eq!(error_reason(&denied).as_deref(), Some("RULE_REFUSED"));
    let limited = app
        .converse_stream(with_auth(
            turn("r", vec![text("spam spam")], plain(), &[]),
            alice,
        ))
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    let details = tonic_types::StatusExt::get_error_details(&limited);
    assert_eq!(
        details.retry_info().and_then(|r| r.retry_delay),
        Some(Duration::from_secs(7))
    );
    let dialogue = app
        .get_dialogue(with_auth(
            pb::GetDialogueRequest {
                name: name("r"),
                ..Default::default()
            },
            alice,
        ))
        .await
        .unwrap();
    assert_eq!(dialogue.turn_count, 2, "refused turns are not stored");
    assert_eq!(fake.request_count(), 1);
}

async fn chat(app: &TestApp, key: &str, body: Value) -> reqwest::Response {
    plain_http()
        .build()
        .unwrap()
        .post(format!("http://{}/v1/chat/completions", app.addr))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_openai_front_follows_the_same_rules() {
    let (app, keys, fake) = app_with_rules(faq_rules()).await;
    let alice = &keys["alice"];
    let ask = |text: &str| {
        json!({"model": "m", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": text},
        ]})
    };
    // Canned: no model call, no tokens, the rule named in a header.
    let response = chat(&app, alice, ask("your opening hours?")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-dialogd-rule"], "opening-hours");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], CANNED);
    assert_eq!(body["usage"]["total_tokens"], 0);
    assert_eq!(fake.request_count(), 0);
    // Streamed canned reply.
    let mut streamed = ask("opening hours please");
    streamed["stream"] = json!(true);
    let text = chat(&app, alice, streamed).await.text().await.unwrap();
    let deltas: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(deltas, CANNED);
    // Routed: the small model answers (echo), the upstream is not called.
    let response = chat(&app, alice, ask("quick question: 2+2?")).await;
    assert_eq!(response.headers()["x-dialogd-rule"], "cheap");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["model"], "small");
    assert_eq!(fake.request_count(), 0);
    // No rule: the requested model, no header.
    let response = chat(&app, alice, ask("hello")).await;
    assert!(response.headers().get("x-dialogd-rule").is_none());
    assert_eq!(fake.request_count(), 1);
    // Refused, in OpenAI's error shape.
    let response = chat(&app, alice, ask("my password is hunter2")).await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["message"], "we do not discuss passwords");
    let response = chat(&app, alice, ask("spam")).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn admins_list_the_rules_with_their_hits() {
    let (app, keys, _fake) = app_with_rules(faq_rules()).await;
    let alice = Some(keys["alice"].as_str());
    for message in ["opening hours?", "opening hours!", "quick question"] {
        app.converse_with(with_auth(
            turn(
                "h",
                vec![text(message)],
                pb::GenerationConfig::default(),
                &[],
            ),
            alice,
        ))
        .await
        .unwrap();
    }
    let listed = app
        .list_rules(with_auth(pb::ListRulesRequest {}, Some(&keys["admin"])))
        .await
        .unwrap();
    let summary: Vec<(&str, &str, i64)> = listed
        .rules
        .iter()
        .map(|r| (r.name.as_str(), r.action.as_str(), r.hits))
        .collect();
    assert_eq!(
        summary,
        [
            ("opening-hours", "reply", 2),
            ("no-secrets", "refuse", 0),
            ("slow-down", "refuse", 0),
            ("cheap", "route", 1),
        ]
    );
    assert_eq!(listed.source, "config");
    let definition: Value = serde_json::from_str(&listed.rules[3].definition_json).unwrap();
    assert_eq!(definition["then"]["route"], "small");
    let refused = app
        .list_rules(with_auth(pb::ListRulesRequest {}, alice))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_bad_rule_stops_the_start_naming_the_rule() {
    let fake = FakeUpstream::start("big").await;
    for (table, expected) in [
        (
            "[[rule]]\nname = 'to-nowhere'\nthen = { route = 'gpt-9' }",
            "rule \"to-nowhere\" (#1): then.route: unknown model \"gpt-9\"",
        ),
        (
            "[[rule]]\nname = 'ok'\nthen = { route = 'small' }\n[[rule]]\nname = 'broken'\nwhen = { patterns = ['a(b'] }\nthen = { reply = 'x' }",
            "rule \"broken\" (#2): when.patterns[0]",
        ),
    ] {
        let dir = tempfile::TempDir::new().unwrap();
        let mut settings = test_settings(dir.path());
        setup(&mut settings, &fake, &mut HashMap::new());
        settings.rules.rule = rules(table);
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains(expected), "{error}");
        let error = match dialogd::startup::Application::build(settings).await {
            Ok(_) => panic!("started with a bad rule"),
            Err(e) => e.to_string(),
        };
        assert!(error.contains(expected), "{error}");
    }
}

#[tokio::test]
async fn a_changed_rules_file_changes_the_routes_while_serving() {
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("rules.toml");
    let write = |model: &str, extra: &str| {
        std::fs::write(
            &file,
            format!(
                "[[rule]]\nname = 'support'\nwhen = {{ keywords = ['help'] }}\nthen = {{ route = '{model}' }}\n{extra}"
            ),
        )
        .unwrap();
    };
    write("small", "");
    let fake = FakeUpstream::start("big").await;
    let mut keys = HashMap::new();
    let path = file.to_string_lossy().into_owned();
    let app = spawn_app_with(|s| {
        setup(s, &fake, &mut keys);
        s.rules.file = Some(path.clone());
        s.rules.reload_check_secs = 1;
    })
    .await;
    let ask = async |id: &str| {
        let request = turn(
            id,
            vec![text("help me")],
            pb::GenerationConfig::default(),
            &[],
        );
        ruled(&app, &keys["alice"], request).await.1
    };
    assert_eq!(ask("f1").await, "small");
    // A file that does not validate leaves the rules in force on.
    std::fs::write(&file, "[[rule]]\nname = 'bad'\nthen = { route = 'nope' }\n").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(ask("f2").await, "small");
    write("vision", "");
    let admin = keys["admin"].clone();
    eventually(
        "the new rules are in force",
        Duration::from_secs(10),
        async || {
            let listed = app
                .list_rules(with_auth(pb::ListRulesRequest {}, Some(&admin)))
                .await
                .unwrap();
            listed.rules[0].definition_json.contains("vision")
        },
    )
    .await;
    assert_eq!(ask("f3").await, "vision");
    let listed = app
        .list_rules(with_auth(pb::ListRulesRequest {}, Some(&admin)))
        .await
        .unwrap();
    assert_eq!(listed.source, path);
    assert_eq!(listed.rules[0].hits, 3, "hits carry over a reload");
}

#[tokio::test]
async fn sighup_reloads_the_rules_file_of_a_running_process() {
    let dir = tempfile::TempDir::new().unwrap();
    let rules_file = dir.path().join("rules.toml");
    let config = dir.path().join("dialogd.toml");
    std::fs::write(
        &rules_file,
        "[[rule]]\nname = 'hello'\nwhen = { keywords = ['hello'] }\nthen = { reply = 'first' }\n",
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "[[models]]\nname = 'echo'\nbackend = 'echo'\n[rules]\nfile = '{}'\nreload_check_secs = 3600\n",
            rules_file.display()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start_with(&data, &["--config", config.to_str().unwrap()]).await;
    let api = server.api().await;
    let reply = async |id: &str| {
        let mut request = converse_request(id, "hello there");
        request.create_if_missing = true;
        let reply = api.converse_with(request).await.unwrap();
        turn_text(&reply.turn.unwrap())
    };
    assert_eq!(reply("s1").await, "first");
    std::fs::write(
        &rules_file,
        "[[rule]]\nname = 'hello'\nwhen = { keywords = ['hello'] }\nthen = { reply = 'second' }\n",
    )
    .unwrap();
    // The file check is an hour away: only the signal reloads it.
    let pid = server.child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    eventually(
        "SIGHUP reloaded the rules",
        Duration::from_secs(10),
        async || {
            api.list_rules(pb::ListRulesRequest {})
                .await
                .is_ok_and(|l| l.rules[0].definition_json.contains("second"))
        },
    )
    .await;
    assert_eq!(reply("s2").await, "second");
    // reqwest is built without a default crypto provider (plain HTTP here).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = reqwest::get(format!("http://{}/metrics", server.metrics_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "dialogd_rule_hits_total{rule=\"hello\",action=\"reply\"} 2",
        "dialogd_rule_reloads_total{result=\"ok\"} 1",
    ] {
        assert!(metrics.contains(series), "{series} missing from\n{metrics}");
    }
    server.kill9().await;
}
