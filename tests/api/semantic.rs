//! `POST /v1/embeddings` routed to an embeddings model, and the semantic
//! cache: a paraphrase of a cached prompt is answered without a model
//! call, over gRPC (unary and streamed) and the OpenAI front; unrelated
//! prompts, other tenants, other system prompts and sampled requests are
//! not; erasing a dialogue erases what it cached. The embeddings come from
//! a fake upstream whose vectors put paraphrases close together: each word
//! of a topic adds to that topic's axis, other words add a little noise.

use crate::backends::{openai, with_model};
use crate::helpers::*;
use crate::security::with_auth;
use crate::upstream::FakeUpstream;
use dialogd::auth::keys;
use dialogd::config::{ApiKeySettings, AuthMode, ModelSettings, SemanticCacheSettings};
use dialogd::pb::dialogue::v1 as pb;
use pb::converse_stream_response::Event;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const TOPICS: [&[&str]; 4] = [
    &["open", "opening", "hours", "close", "closing"],
    &["refund", "money", "back", "return"],
    &["rain", "weather", "sunny", "forecast"],
    &["price", "cost", "expensive", "cheap"],
];

/// A topic vector of `text`: 4 topic axes, 4 noise axes.
fn embed(text: &str) -> Vec<f32> {
    let mut v = vec![0.0f32; 8];
    for word in text
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        match TOPICS.iter().position(|t| t.contains(&word)) {
            Some(topic) => v[topic] += 1.0,
            None => v[4 + word.len() % 4] += 0.1,
        }
    }
    v
}

/// An OpenAI-shaped `/v1/embeddings` upstream; counts its calls.
async fn embeddings_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    use axum::routing::post;
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/v1/embeddings",
        post(move |axum::Json(body): axum::Json<Value>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                let inputs: Vec<String> = match &body["input"] {
                    Value::String(s) => vec![s.clone()],
                    other => serde_json::from_value(other.clone()).unwrap(),
                };
                let data: Vec<Value> = inputs
                    .iter()
                    .enumerate()
                    .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": embed(t)}))
                    .collect();
                axum::Json(json!({
                    "object": "list", "data": data, "model": body["model"],
                    "usage": {"prompt_tokens": 7 * inputs.len(), "total_tokens": 7 * inputs.len()},
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, calls)
}

struct Setup {
    app: TestApp,
    keys: HashMap<&'static str, String>,
    chat: Arc<FakeUpstream>,
    embeddings: Arc<AtomicUsize>,
}

/// Model `m` (chat, on a fake upstream) with a semantic cache over model
/// `emb` (embeddings); alice in tenant acme, eve in tenant evil.
async fn setup() -> Setup {
    let chat = FakeUpstream::start("gpt").await;
    let (embed_addr, embeddings) = embeddings_upstream().await;
    let mut keys = HashMap::new();
    let mut entries = Vec::new();
    for (id, tenant) in [("alice", "acme"), ("eve", "evil")] {
        let (key, secret) = keys::generate(id);
        keys.insert(id, key);
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
    let app = spawn_app_with(|s| {
        s.auth.mode = AuthMode::Required;
        s.auth.api_keys = entries;
        with_model(s, vec![("up", openai(&chat, None))], &[("up", 1)]);
        let mut embed_backend = openai(&chat, None);
        if let dialogd::config::BackendSettings::Openai { base_url, .. } = &mut embed_backend {
            *base_url = format!("http://{embed_addr}/v1");
        }
        s.backends.insert("embedder".into(), embed_backend);
        s.models.push(ModelSettings {
            name: "emb".into(),
            backend: Some("embedder".into()),
            embeddings: true,
            ..s.models[0].clone()
        });
        crate::rich::model_m(s).semantic_cache = Some(SemanticCacheSettings {
            embedding_model: "emb".into(),
            threshold: 0.9,
            ttl_secs: 600,
            max_entries: 100,
        });
    })
    .await;
    Setup {
        app,
        keys,
        chat,
        embeddings,
    }
}

fn deterministic() -> pb::GenerationConfig {
    pb::GenerationConfig {
        temperature: Some(0.0),
        ..Default::default()
    }
}

/// A first turn of dialogue `id` (created with `system_prompt`).
fn ask(id: &str, text: &str, system_prompt: &str, g: pb::GenerationConfig) -> pb::ConverseRequest {
    pb::ConverseRequest {
        dialogue_defaults: Some(pb::Dialogue {
            system_prompt: system_prompt.into(),
            ..Default::default()
        }),
        ..crate::rich::request(id, vec![text_part(text)], g)
    }
}

fn text_part(s: &str) -> pb::ContentPart {
    crate::helpers::text(s)
}

/// (reply text, cached?) of a unary turn.
async fn turn(s: &Setup, who: &str, request: pb::ConverseRequest) -> (String, bool) {
    let reply = s
        .app
        .converse_with(with_auth(request, Some(&s.keys[who])))
        .await
        .unwrap();
    (
        turn_text(&reply.turn.unwrap()),
        reply.metadata.unwrap().cached,
    )
}

#[tokio::test]
async fn a_paraphrase_is_answered_from_the_semantic_cache_within_its_bounds() {
    let s = setup().await;
    let first = turn(
        &s,
        "alice",
        ask("d1", "What are your opening hours?", "", deterministic()),
    )
    .await;
    assert_eq!(first, ("gpt: What are your opening hours?".into(), false));
    let calls = || s.chat.request_count();
    assert_eq!(calls(), 1);

    // A paraphrase: the cached reply, no model call.
    let again = turn(
        &s,
        "alice",
        ask("d2", "When are you open?", "", deterministic()),
    )
    .await;
    assert_eq!(again, (first.0.clone(), true));
    assert_eq!(calls(), 1);
    assert_eq!(
        s.embeddings.load(Ordering::SeqCst),
        2,
        "one embedding per turn"
    );

    // Streamed, too.
    let mut stream = s
        .app
        .converse_stream(with_auth(
            ask("d3", "Opening hours, please", "", deterministic()),
            Some(&s.keys["alice"]),
        ))
        .await
        .unwrap();
    let (mut streamed, mut cached) = (String::new(), false);
    while let Some(message) = stream.message().await.unwrap() {
        match message.event {
            Some(Event::Delta(d)) => streamed.push_str(&d.text),
            Some(Event::End(end)) => cached = end.metadata.unwrap().cached,
            _ => {}
        }
    }
    assert_eq!((streamed, cached), (first.0.clone(), true));
    assert_eq!(calls(), 1);

    // Not the same: an unrelated question, another tenant, another system
    // prompt, a sampled request.
    for (who, request) in [
        (
            "alice",
            ask("d4", "Will it rain tomorrow?", "", deterministic()),
        ),
        ("eve", ask("e1", "When are you open?", "", deterministic())),
        (
            "alice",
            ask(
                "d5",
                "When are you open?",
                "Answer in French.",
                deterministic(),
            ),
        ),
        (
            "alice",
            ask(
                "d6",
                "When are you open?",
                "",
                pb::GenerationConfig {
                    temperature: Some(0.8),
                    ..Default::default()
                },
            ),
        ),
    ] {
        let before = calls();
        let (reply, cached) = turn(&s, who, request).await;
        assert!(!cached && calls() == before + 1, "{who}: {reply}");
    }

    // Erasing the dialogue that cached the reply erases the entry.
    s.app
        .delete_dialogue(with_auth(
            pb::DeleteDialogueRequest { name: name("d1") },
            Some(&s.keys["alice"]),
        ))
        .await
        .unwrap();
    let before = calls();
    let (_, cached) = turn(
        &s,
        "alice",
        ask("d7", "When are you open?", "", deterministic()),
    )
    .await;
    assert!(!cached && calls() == before + 1);
}

async fn post(s: &Setup, path: &str, body: Value) -> reqwest::Response {
    plain_http()
        .build()
        .unwrap()
        .post(format!("http://{}{path}", s.app.addr))
        .bearer_auth(&s.keys["alice"])
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_openai_front_serves_embeddings_and_the_semantic_cache() {
    let s = setup().await;
    // Embeddings, routed to the embeddings model.
    let response = post(
        &s,
        "/v1/embeddings",
        json!({"model": "emb", "input": ["opening hours", "rain"]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "emb");
    assert_eq!(body["usage"]["prompt_tokens"], 14);
    let first: Vec<f32> = serde_json::from_value(body["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(first, embed("opening hours"));
    assert_eq!(body["data"][1]["index"], 1);
    // base64: the floats' little-endian bytes.
    let response = post(
        &s,
        "/v1/embeddings",
        json!({"model": "emb", "input": "rain", "encoding_format": "base64"}),
    )
    .await;
    let body: Value = response.json().await.unwrap();
    let bytes = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        body["data"][0]["embedding"].as_str().unwrap(),
    )
    .unwrap();
    let floats: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(floats, embed("rain"));
    // Refusals name the parameter.
    for (body, param) in [
        (json!({"model": "m", "input": "x"}), "model"),
        (json!({"model": "emb", "input": [[1, 2, 3]]}), "input[0]"),
        (
            json!({"model": "emb", "input": "x", "encoding_format": "hex"}),
            "encoding_format",
        ),
        (json!({"model": "emb"}), "input"),
    ] {
        let response = post(&s, "/v1/embeddings", body).await;
        assert_eq!(response.status(), 400);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["param"], param, "{error}");
    }
    let response = post(
        &s,
        "/v1/chat/completions",
        json!({"model": "emb", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(response.status(), 400);

    // Stateless chat: a paraphrase comes from the semantic cache.
    let chat = |text: &str| json!({"model": "m", "temperature": 0, "messages": [{"role": "user", "content": text}]});
    let first: Value = post(
        &s,
        "/v1/chat/completions",
        chat("What are your opening hours?"),
    )
    .await
    .json()
    .await
    .unwrap();
    let again: Value = post(&s, "/v1/chat/completions", chat("When do you open?"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        again["choices"][0]["message"]["content"],
        first["choices"][0]["message"]["content"]
    );
    assert_eq!(s.chat.request_count(), 1);
}
