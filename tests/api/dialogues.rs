//! Dialogue CRUD: create, get, list (paged, newest first), update with a
//! field mask, delete, expiry, and their error statuses.

use crate::helpers::*;
use dialogd::pb::dialogue::v1 as pb;
use std::time::Duration;
use tonic::Code;

fn state(json: serde_json::Value) -> pbjson_types::Struct {
    let serde_json::Value::Object(map) = json else {
        panic!("object")
    };
    pbjson_types::Struct {
        fields: map
            .into_iter()
            .map(|(k, v)| {
                let kind = match v {
                    serde_json::Value::String(s) => pbjson_types::value::Kind::StringValue(s),
                    serde_json::Value::Number(n) => {
                        pbjson_types::value::Kind::NumberValue(n.as_f64().unwrap())
                    }
                    serde_json::Value::Bool(b) => pbjson_types::value::Kind::BoolValue(b),
                    other => panic!("unsupported in test: {other}"),
                };
                (k, pbjson_types::Value { kind: Some(kind) })
            })
            .collect(),
    }
}

#[tokio::test]
async fn create_then_get_returns_what_was_stored() {
    let app = spawn_app().await;
    let created = app
        .create_with(pb::Dialogue {
            dialogue_id: "unique_session_123".into(),
            system_prompt: "You are terse.".into(),
            labels: [("team".to_string(), "search".to_string())].into(),
            state: Some(state(serde_json::json!({"step": 2, "done": false}))),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(created.name, "dialogues/unique_session_123");
    assert_eq!(created.model, "echo", "empty model means the default");
    assert!(created.create_time.is_some());
    assert_eq!(created.turn_count, 0);

    let got = app.get("unique_session_123", 0).await.unwrap();
    assert_eq!(got.system_prompt, "You are terse.");
    assert_eq!(got.labels["team"], "search");
    assert_eq!(got.state, created.state);
    assert_eq!(got.create_time, created.create_time);
}

#[tokio::test]
async fn server_generates_an_id_when_none_is_given() {
    let app = spawn_app().await;
    let a = app.create_with(pb::Dialogue::default()).await.unwrap();
    let b = app.create_with(pb::Dialogue::default()).await.unwrap();
    assert!(!a.dialogue_id.is_empty());
    assert_ne!(a.dialogue_id, b.dialogue_id);
    assert_eq!(app.get(&a.dialogue_id, 0).await.unwrap().name, a.name);
}

#[tokio::test]
async fn creating_an_existing_id_is_already_exists_and_keeps_the_original() {
    let app = spawn_app().await;
    app.create_with(pb::Dialogue {
        dialogue_id: "taken".into(),
        system_prompt: "first".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    app.converse("taken", "hello").await.unwrap();
    let err = app
        .create_with(pb::Dialogue {
            dialogue_id: "taken".into(),
            system_prompt: "second".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let got = app.get("taken", 0).await.unwrap();
    assert_eq!(got.system_prompt, "first");
    assert_eq!(got.turn_count, 2);
}

#[tokio::test]
async fn bad_create_requests_name_every_bad_field() {
    let app = spawn_app_with(|s| s.limits.max_system_prompt_bytes = 10).await;
    let err = app
        .create_with(pb::Dialogue {
            dialogue_id: "has spaces".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["dialogue.dialogue_id"]);

    let err = app
        .create_with(pb::Dialogue {
            dialogue_id: "fine".into(),
            model: "gpt-unknown".into(),
            system_prompt: "far longer than ten bytes".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields = violated_fields(&err);
    for f in ["dialogue.model", "dialogue.system_prompt"] {
        assert!(
            fields.contains(&f.to_string()),
            "{f} missing from {fields:?}"
        );
    }
    assert!(
        err.message().contains("echo"),
        "lists known models: {}",
        err.message()
    );
    assert_eq!(error_reason(&err).as_deref(), Some("INVALID_ARGUMENT"));
    assert_eq!(app.get("fine", 0).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn unknown_and_malformed_names() {
    let app = spawn_app().await;
    let err = app.get("nobody", 0).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        app.delete("nobody").await.unwrap_err().code(),
        Code::NotFound
    );

    let err = app
        .get_dialogue(pb::GetDialogueRequest {
            name: "conversations/x".into(),
            last_turns: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["name"]);
}

#[tokio::test]
async fn list_pages_newest_first_without_gaps_or_repeats() {
    let app = spawn_app().await;
    let mut ids: Vec<String> = (0..7).map(|i| format!("d{i}")).collect();
    for id in &ids {
        app.create(id).await;
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = app
            .list_dialogues(pb::ListDialoguesRequest {
                page_size: 3,
                page_token: token,
            })
            .await
            .unwrap();
        pages += 1;
        assert!(page.dialogues.len() <= 3);
        seen.extend(page.dialogues.into_iter().map(|d| d.dialogue_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ids);
    assert_eq!(pages, 3);

    let err = app
        .list_dialogues(pb::ListDialoguesRequest {
            page_size: 3,
            page_token: "not-a-token".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&err), ["page_token"]);
    let err = app
        .list_dialogues(pb::ListDialoguesRequest {
            page_size: -1,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["page_size"]);
}

#[tokio::test]
async fn update_replaces_only_masked_fields_and_keeps_history() {
    let app = spawn_app().await;
    app.create_with(pb::Dialogue {
        dialogue_id: "u".into(),
        system_prompt: "old prompt".into(),
        labels: [("a".to_string(), "1".to_string())].into(),
        ..Default::default()
    })
    .await
    .unwrap();
    app.converse("u", "before update").await.unwrap();

    let updated = app
        .update_dialogue(pb::UpdateDialogueRequest {
            dialogue: Some(pb::Dialogue {
                name: name("u"),
                system_prompt: "ignored: not in mask".into(),
                state: Some(state(serde_json::json!({"restored": true}))),
                ..Default::default()
            }),
            update_mask: Some(pbjson_types::FieldMask {
                paths: vec!["state".into()],
            }),
        })
        .await
        .unwrap();
    assert_eq!(updated.system_prompt, "old prompt");
    assert_eq!(updated.labels["a"], "1");
    assert_eq!(
        updated.state,
        Some(state(serde_json::json!({"restored": true})))
    );
    assert_eq!(updated.turn_count, 2, "history untouched");
    let time =
        |t: &Option<pbjson_types::Timestamp>| t.as_ref().map(|t| (t.seconds, t.nanos)).unwrap();
    assert!(time(&updated.update_time) > time(&updated.create_time));

    let got = app.get("u", 10).await.unwrap();
    assert_eq!(got.state, updated.state);
    assert_eq!(got.recent_turns.len(), 2);

    let no_mask = app
        .update_dialogue(pb::UpdateDialogueRequest {
            dialogue: Some(pb::Dialogue {
                name: name("u"),
                ..Default::default()
            }),
            update_mask: None,
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&no_mask), ["update_mask"]);
    let missing = app
        .update_dialogue(pb::UpdateDialogueRequest {
            dialogue: Some(pb::Dialogue {
                name: name("ghost"),
                ..Default::default()
            }),
            update_mask: Some(pbjson_types::FieldMask {
                paths: vec!["labels".into()],
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn system_prompt_injected_by_update_reaches_the_next_turn() {
    let app = spawn_app().await;
    app.create("inject").await;
    app.update_dialogue(pb::UpdateDialogueRequest {
        dialogue: Some(pb::Dialogue {
            name: name("inject"),
            system_prompt: "one two three".into(),
            ..Default::default()
        }),
        update_mask: Some(pbjson_types::FieldMask {
            paths: vec!["system_prompt".into()],
        }),
    })
    .await
    .unwrap();
    let reply = app.converse("inject", "hi").await.unwrap();
    // The echo backend counts prompt words: 3 (system) + 1 (message).
    assert_eq!(reply.usage.unwrap().prompt_tokens, 4);
}

#[tokio::test]
async fn delete_erases_the_dialogue_and_its_turns() {
    let app = spawn_app().await;
    app.create("gone").await;
    app.converse("gone", "remember me").await.unwrap();
    app.delete("gone").await.unwrap();
    assert_eq!(app.get("gone", 0).await.unwrap_err().code(), Code::NotFound);
    let err = app
        .list_turns(pb::ListTurnsRequest {
            parent: name("gone"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // The ID is free again and the new dialogue starts empty.
    app.create("gone").await;
    assert!(app.all_turns("gone").await.is_empty());
}

#[tokio::test]
async fn expired_dialogues_disappear_and_are_swept() {
    let app = spawn_app_with(|s| s.store.sweep_interval_secs = 1).await;
    let created = app
        .create_with(pb::Dialogue {
            dialogue_id: "brief".into(),
            expiration: Some(pb::dialogue::Expiration::Ttl(pbjson_types::Duration {
                seconds: 1,
                nanos: 0,
            })),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(matches!(
        created.expiration,
        Some(pb::dialogue::Expiration::ExpireTime(_))
    ));
    app.create("lasting").await;
    app.converse("brief", "quick").await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.get("brief", 0).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "dialogue never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.converse("brief", "again").await.unwrap_err().code(),
        Code::NotFound
    );
    let listed = app
        .list_dialogues(pb::ListDialoguesRequest::default())
        .await
        .unwrap();
    let ids: Vec<_> = listed
        .dialogues
        .iter()
        .map(|d| d.dialogue_id.as_str())
        .collect();
    assert_eq!(ids, ["lasting"]);
    // The ID can be reused once expired.
    app.create("brief").await;
}

#[tokio::test]
async fn past_expire_times_and_bad_state_are_rejected() {
    let app = spawn_app().await;
    let err = app
        .create_with(pb::Dialogue {
            dialogue_id: "late".into(),
            expiration: Some(pb::dialogue::Expiration::ExpireTime(
                pbjson_types::Timestamp {
                    seconds: 1,
                    nanos: 0,
                },
            )),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["dialogue.expire_time"]);

    let nan = pbjson_types::Struct {
        fields: [(
            "x".to_string(),
            pbjson_types::Value {
                kind: Some(pbjson_types::value::Kind::NumberValue(f64::NAN)),
            },
        )]
        .into(),
    };
    let err = app
        .create_with(pb::Dialogue {
            dialogue_id: "nan".into(),
            state: Some(nan),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), ["dialogue.state"]);
    assert_eq!(app.get("nan", 0).await.unwrap_err().code(), Code::NotFound);
}
