//! The response cache over the wire, with a real fake upstream counting
//! the calls that reach it: identical deterministic requests are answered
//! once, other tenants never share a reply, opting in and out works, and
//! deleting a dialogue erases what it cached.

use crate::backends::{openai, with_model};
use crate::helpers::*;
use crate::upstream::FakeUpstream;
use dialogd::auth::keys;
use dialogd::config::{ApiKeySettings, AuthMode};
use dialogd::pb::dialogue::v1 as pb;
use pb::converse_stream_response::Event;
use std::collections::HashMap;

/// alice and bob in tenant acme, eve in tenant evil; model gpt on `fake`.
async fn app_with_tenants(fake: &FakeUpstream) -> (TestApp, HashMap<&'static str, String>) {
    let mut bearer = HashMap::new();
    let mut entries = Vec::new();
    for (id, tenant) in [("alice", "acme"), ("bob", "acme"), ("eve", "evil")] {
        let (key, secret) = keys::generate(id);
        bearer.insert(id, key);
        entries.push(ApiKeySettings {
            id: id.into(),
            hash: keys::hash_for_config(&secret),
            principal: None,
            tenant: tenant.into(),
            roles: [dialogd::auth::Role::User].into(),
            scopes: None,
            ..Default::default()
        });
    }
    let backend = openai(fake, None);
    let app = spawn_app_with(move |s| {
        s.auth.mode = AuthMode::Required;
        s.auth.api_keys = entries;
        with_model(s, vec![("up", backend)], &[("up", 1)]);
    })
    .await;
    (app, bearer)
}

fn ask(
    id: &str,
    message: &str,
    g: pb::GenerationConfig,
    key: &str,
) -> tonic::Request<pb::ConverseRequest> {
    let mut request = converse_request(id, message);
    request.create_if_missing = true;
    request.generation = Some(g);
    let mut request = tonic::Request::new(request);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

fn temperature(t: f32) -> pb::GenerationConfig {
    pb::GenerationConfig {
        temperature: Some(t),
        ..Default::default()
    }
}

/// (reply text, cached?) of a unary turn.
async fn converse(app: &TestApp, request: tonic::Request<pb::ConverseRequest>) -> (String, bool) {
    let reply = app.converse_with(request).await.unwrap();
    (
        turn_text(&reply.turn.unwrap()),
        reply.metadata.unwrap().cached,
    )
}

#[tokio::test]
async fn identical_deterministic_turns_reach_the_model_once_per_tenant() {
    let fake = FakeUpstream::start("gpt").await;
    let (app, key) = app_with_tenants(&fake).await;
    let first = converse(&app, ask("d1", "hello", temperature(0.0), &key["alice"])).await;
    assert_eq!(first, ("gpt: hello".into(), false));
    // Another dialogue of the same tenant with the very same prompt.
    let again = converse(&app, ask("d2", "hello", temperature(0.0), &key["bob"])).await;
    assert_eq!(again, ("gpt: hello".into(), true));
    assert_eq!(fake.request_count(), 1);
    // The cached reply is stored in the dialogue like any other.
    let turns = app
        .list_turns({
            let mut r = tonic::Request::new(pb::ListTurnsRequest {
                parent: name("d2"),
                ..Default::default()
            });
            r.metadata_mut().insert(
                "authorization",
                format!("Bearer {}", key["bob"]).parse().unwrap(),
            );
            r
        })
        .await
        .unwrap()
        .turns;
    assert_eq!(turns.len(), 2);
    // Another tenant never gets acme's reply.
    let other = converse(&app, ask("d1", "hello", temperature(0.0), &key["eve"])).await;
    assert_eq!(other, ("gpt: hello".into(), false));
    assert_eq!(fake.request_count(), 2);
    // Any other parameter or prompt is another key.
    converse(&app, ask("d3", "hello", temperature(0.0), &key["alice"])).await;
    assert_eq!(fake.request_count(), 2, "same prompt again: cached");
    converse(&app, ask("d4", "hello!", temperature(0.0), &key["alice"])).await;
    converse(
        &app,
        ask(
            "d5",
            "hello",
            pb::GenerationConfig {
                temperature: Some(0.0),
                max_tokens: Some(5),
                ..Default::default()
            },
            &key["alice"],
        ),
    )
    .await;
    assert_eq!(fake.request_count(), 4);
}

#[tokio::test]
async fn sampling_turns_skip_the_cache_unless_they_opt_in() {
    let fake = FakeUpstream::start("gpt").await;
    let (app, key) = app_with_tenants(&fake).await;
    let alice = &key["alice"];
    for id in ["a", "b"] {
        let (_, cached) = converse(&app, ask(id, "hi", temperature(0.8), alice)).await;
        assert!(!cached);
    }
    assert_eq!(fake.request_count(), 2);
    let opt_in = || pb::GenerationConfig {
        temperature: Some(0.8),
        cache: pb::CachePolicy::Use.into(),
        ..Default::default()
    };
    assert!(!converse(&app, ask("c", "hi", opt_in(), alice)).await.1);
    assert!(converse(&app, ask("d", "hi", opt_in(), alice)).await.1);
    // A seed makes a turn deterministic; BYPASS refuses the cache.
    let seeded = |cache: pb::CachePolicy| pb::GenerationConfig {
        seed: Some(7),
        cache: cache.into(),
        ..Default::default()
    };
    assert!(
        !converse(
            &app,
            ask("e", "hi", seeded(pb::CachePolicy::Unspecified), alice)
        )
        .await
        .1
    );
    assert!(
        converse(
            &app,
            ask("f", "hi", seeded(pb::CachePolicy::Unspecified), alice)
        )
        .await
        .1
    );
    assert!(
        !converse(&app, ask("g", "hi", seeded(pb::CachePolicy::Bypass), alice))
            .await
            .1
    );
    assert_eq!(fake.request_count(), 5);
}

#[tokio::test]
async fn streamed_turns_use_the_cache_too() {
    let fake = FakeUpstream::start("gpt").await;
    let backend = openai(&fake, None);
    let app = spawn_app_with(|s| with_model(s, vec![("up", backend)], &[("up", 1)])).await;
    let mut texts = Vec::new();
    for id in ["s1", "s2"] {
        let mut request = converse_request(id, "stream me");
        request.create_if_missing = true;
        request.generation = Some(temperature(0.0));
        let (events, error) = app.stream(request).await;
        assert!(error.is_none(), "{error:?}");
        let text: String = events
            .iter()
            .filter_map(|e| match e {
                Event::Delta(d) => Some(d.text.clone()),
                _ => None,
            })
            .collect();
        let Some(Event::End(end)) = events.last() else {
            panic!("no end event")
        };
        texts.push((text, end.metadata.as_ref().unwrap().cached));
    }
    assert_eq!(
        texts,
        [
            ("gpt: stream me".to_string(), false),
            ("gpt: stream me".to_string(), true)
        ]
    );
    assert_eq!(fake.request_count(), 1);
}

#[tokio::test]
async fn deleting_a_dialogue_erases_its_cached_replies() {
    let fake = FakeUpstream::start("gpt").await;
    let (app, key) = app_with_tenants(&fake).await;
    let alice = &key["alice"];
    converse(&app, ask("private", "my secret", temperature(0.0), alice)).await;
    let mut delete = tonic::Request::new(pb::DeleteDialogueRequest {
        name: name("private"),
    });
    delete
        .metadata_mut()
        .insert("authorization", format!("Bearer {alice}").parse().unwrap());
    app.delete_dialogue(delete).await.unwrap();
    // The same request again is not answered from the erased dialogue's reply.
    let (_, cached) = converse(&app, ask("other", "my secret", temperature(0.0), alice)).await;
    assert!(!cached);
    assert_eq!(fake.request_count(), 2);
}
