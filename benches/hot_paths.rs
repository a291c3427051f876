//! criterion micro-benchmarks of the per-turn hot paths:
//! prompt assembly from stored history, the store's exchange append, and
//! OpenAI SSE decoding (framing plus chunk JSON).
//!
//!     cargo bench --bench hot_paths

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dialogd::backend::{ChunkDecoder, SseDecoder};
use dialogd::config::{Durability, Settings, StoreSettings};
use dialogd::dialogue::model::{
    ContentPart, Dialogue, DialogueId, FinishReason, Owner, PromptMessage, Role, Time, Turn,
};
use dialogd::dialogue::ports::{DialogueStore, ExchangeCommit};
use dialogd::dialogue::tokenizer::count_tokens;
use dialogd::engine::history::History;
use dialogd::engine::prompt::PromptBuilder;
use dialogd::router::Router;
use dialogd::store::sled::SledStore;
use dialogd::store::tail_cache::TailCachedStore;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use std::hint::black_box;

const TEXT: &str = "What is the weather like in Lisbon today, and should I bring a coat?";

fn turn(index: u64, role: Role) -> Turn {
    Turn {
        index,
        role,
        content: vec![ContentPart::Text(TEXT.into())],
        create_time: Time::now(),
        finish_reason: (role == Role::Assistant).then_some(FinishReason::Stop),
        model: String::new(),
        usage: None,
        request_id: None,
        tokens: 16,
        summary: None,
        added: false,
        rule: None,
    }
}

fn dialogue(name: &str) -> Dialogue {
    let now = Time::now();
    Dialogue {
        id: DialogueId::parse(name)
            .unwrap()
            .scoped_to(&Owner::default()),
        owner: Owner::default(),
        model: "echo".into(),
        system_prompt: "You are brief.".into(),
        labels: Default::default(),
        state: None,
        expire_time: None,
        create_time: now,
        update_time: now,
        turn_count: 0,
        latest_summary: None,
        media_bytes: 0,
        system_prompt_tokens: 4,
        fork: None,
        branches: Vec::new(),
    }
}

fn store(dir: &std::path::Path) -> SledStore {
    SledStore::open(&StoreSettings {
        data_dir: dir.to_path_buf(),
        durability: Durability::Relaxed,
        ..StoreSettings::default()
    })
    .unwrap()
}

/// `store` with encryption at rest (a one-key ring beside the data), and
/// with per-dialogue keys if `dialogue_keys`.
fn sealed_store(dir: &std::path::Path, dialogue_keys: bool) -> SledStore {
    let key_file = dir.join("keys");
    std::fs::write(&key_file, dialogd::store::sealing::KeyRing::new_entry("k1")).unwrap();
    SledStore::open(&StoreSettings {
        data_dir: dir.join("data"),
        durability: Durability::Relaxed,
        encryption: dialogd::config::EncryptionSettings {
            key_file: Some(key_file),
            keys_env: None,
            primary: Some("k1".into()),
            dialogue_key_file: dialogue_keys.then(|| dir.join("dialogue-keys")),
        },
        ..StoreSettings::default()
    })
    .unwrap()
}

/// Appends `exchanges` exchanges to `d`, returning its new turn count.
async fn fill(store: &dyn DialogueStore, d: &Dialogue, from: u64, exchanges: u64) -> u64 {
    for i in (from..from + exchanges * 2).step_by(2) {
        let (user, reply) = (turn(i, Role::User), turn(i + 1, Role::Assistant));
        store
            .commit_exchange(ExchangeCommit {
                create: (i == 0).then_some(d),
                dialogue_id: &d.id,
                expected_turn_count: i,
                turns: &[&user, &reply],
                idempotency: None,
            })
            .await
            .unwrap();
    }
    from + exchanges * 2
}

/// Prompt assembly from sled itself, and through the recent-turns cache
/// the server puts in front of it.
fn prompt_assembly(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::TempDir::new().unwrap();
    let cached_dir = tempfile::TempDir::new().unwrap();
    let sealed_dir = tempfile::TempDir::new().unwrap();
    let sled = store(dir.path());
    let sealed = sealed_store(sealed_dir.path(), false);
    let keyed_dir = tempfile::TempDir::new().unwrap();
    let keyed = sealed_store(keyed_dir.path(), true);
    let cached = TailCachedStore::new(store(cached_dir.path()), 64 << 20);
    let router = Router::from_settings(&Settings::default()).unwrap();
    let route = router.route("echo").unwrap().clone();
    let stores: [(&str, &dyn DialogueStore); 4] = [
        ("sled", &sled),
        ("sled_sealed", &sealed),
        ("sled_dialogue_keys", &keyed),
        ("cached", &cached),
    ];
    let mut group = c.benchmark_group("prompt_assembly");
    for ((name, store), turns) in stores
        .into_iter()
        .flat_map(|s| [10u64, 1000, 10_000].map(|n| (s, n)))
    {
        let mut d = dialogue(&format!("p{turns}"));
        d.turn_count = rt.block_on(fill(store, &d, 0, turns / 2));
        let builder = PromptBuilder {
            history: History(store),
            router: &router,
            route: &route,
            deadline: None,
        };
        group.bench_with_input(BenchmarkId::new(name, turns), &d, |b, d| {
            b.iter(|| {
                let message = PromptMessage::text(Role::User, TEXT);
                rt.block_on(builder.build(d, message, count_tokens(TEXT), None))
                    .unwrap()
                    .tokens
            })
        });
    }
    group.finish();
}

/// One exchange appended, plain, with encryption at rest, and with
/// per-dialogue keys.
fn store_append(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (name, sealed) in [
        ("store_append_exchange", None),
        ("store_append_exchange_sealed", Some(false)),
        ("store_append_exchange_dialogue_keys", Some(true)),
    ] {
        let dir = tempfile::TempDir::new().unwrap();
        let store = match sealed {
            Some(dialogue_keys) => sealed_store(dir.path(), dialogue_keys),
            None => store(dir.path()),
        };
        let d = dialogue("append");
        let mut count = rt.block_on(fill(&store, &d, 0, 1));
        c.bench_function(name, |b| {
            b.iter(|| {
                count = rt.block_on(fill(&store, &d, count, 1));
            })
        });
    }
}

/// A dialogue created with its first exchange: with per-dialogue keys it
/// also writes (and syncs) its key's slot first.
fn dialogue_create(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (name, sealed) in [
        ("dialogue_create", None),
        ("dialogue_create_sealed", Some(false)),
        ("dialogue_create_dialogue_keys", Some(true)),
    ] {
        let dir = tempfile::TempDir::new().unwrap();
        let store = match sealed {
            Some(dialogue_keys) => sealed_store(dir.path(), dialogue_keys),
            None => store(dir.path()),
        };
        let mut n = 0u64;
        c.bench_function(name, |b| {
            b.iter(|| {
                n += 1;
                rt.block_on(fill(&store, &dialogue(&format!("new-{n}")), 0, 1));
            })
        });
    }
}

fn sse_decoding(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut body = String::new();
    for _ in 0..100 {
        body.push_str(
            "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok \"},\"finish_reason\":null}]}\n\n",
        );
    }
    body.push_str("data: {\"id\":\"x\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":100,\"total_tokens\":109}}\n\ndata: [DONE]\n\n");
    // Arrives in network-sized pieces.
    let pieces: Vec<bytes::Bytes> = body
        .as_bytes()
        .chunks(1400)
        .map(bytes::Bytes::copy_from_slice)
        .collect();
    let mut group = c.benchmark_group("sse_decoding");
    group.throughput(Throughput::Elements(101));
    group.bench_function("openai_100_chunks", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut decoder = ChunkDecoder::new("bench");
                let mut events = futures_util::stream::iter(
                    pieces
                        .iter()
                        .cloned()
                        .map(Ok::<_, std::convert::Infallible>),
                )
                .eventsource();
                let mut chunks = 0;
                while let Some(Ok(event)) = events.next().await {
                    match decoder.decode(&event.data).unwrap() {
                        Some(c) => chunks += c.len(),
                        None => break,
                    }
                }
                black_box(chunks)
            })
        })
    });
    group.finish();
}

/// The semantic cache's lookup: a brute-force scan of one namespace of
/// 1536-dimension unit vectors (OpenAI's text-embedding-3-small), at 10k
/// and 100k entries.
fn semantic_lookup(c: &mut Criterion) {
    use dialogd::backend::{ModelReply, ModelRequest};
    use dialogd::config::SemanticCacheSettings;
    use dialogd::dialogue::model::GenerationParams;
    use dialogd::engine::semantic_cache::SemanticCache;
    use dialogd::router::ModelRoute;
    const DIMS: usize = 1536;
    // xorshift: reproducible vectors without a dependency.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut vector = move || -> Vec<f32> {
        (0..DIMS)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    };
    let mut group = c.benchmark_group("semantic_lookup");
    group.sample_size(20);
    for entries in [10_000usize, 100_000] {
        let settings = SemanticCacheSettings {
            embedding_model: "e".into(),
            threshold: 0.95,
            ttl_secs: 3600,
            max_entries: entries,
        };
        let cache = SemanticCache::new([("m".to_string(), settings)].into()).unwrap();
        let route = ModelRoute {
            name: "m".into(),
            context_tokens: 8192,
            max_history_turns: 100,
            summary: None,
            targets: Vec::new(),
            embeddings: false,
        };
        let request = ModelRequest {
            messages: vec![PromptMessage::text(Role::User, "when are you open?")],
            params: GenerationParams {
                temperature: Some(0.0),
                ..Default::default()
            },
        };
        let query = cache
            .query("tenant", &route, &request, &DialogueId::generate())
            .unwrap();
        for _ in 0..entries {
            let reply = ModelReply::text("a reply".into(), FinishReason::Stop);
            cache.insert(query.clone(), &vector(), reply, "b".into());
        }
        let probe = vector();
        group.throughput(Throughput::Elements(entries as u64));
        group.bench_with_input(BenchmarkId::from_parameter(entries), &entries, |b, _| {
            b.iter(|| black_box(cache.lookup(&query, &probe).is_some()))
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    prompt_assembly,
    store_append,
    dialogue_create,
    sse_decoding,
    semantic_lookup
);
criterion_main!(benches);
