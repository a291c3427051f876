//! The engine against the in-memory store and the built-in echo model:
//! what each job of the engine promises, without a transport. This file
//! holds the fixture; `dialogues` and `turns` the tests.

mod dialogues;
mod turns;

use super::{Engine, EngineError};
use crate::auth::{Principal, Role as CallerRole};
use crate::config::{BackendSettings, Settings};
use crate::dialogue::content_filter::ContentFilter;
use crate::dialogue::model::{
    CompletionRequest, ContentPart, DialogueId, DialogueSpec, Expiration, FinishReason,
    GenerationParams, PromptMessage, Role, StreamEvent, TurnOutcome, TurnRequest, TurnView,
    UpdateMask,
};
use crate::dialogue::ports::DialogueStore;
use crate::router::Router;
use crate::store::memory::MemoryStore;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::task::TaskTracker;

pub(super) struct Fixture {
    pub engine: Arc<Engine>,
    pub store: MemoryStore,
}

pub(super) fn engine_with(customize: impl FnOnce(&mut Settings)) -> Fixture {
    let mut settings = Settings::default();
    customize(&mut settings);
    let store = MemoryStore::new();
    let filter = ContentFilter::new(
        &settings.content_filter.blocked_terms,
        settings.content_filter.check_output,
    )
    .unwrap();
    let engine = Engine::new(
        Arc::new(store.clone()),
        Arc::new(Router::from_settings(&settings).unwrap()),
        settings.limits.clone(),
        filter,
        super::reply_cache::ReplyCache::new(&settings.cache),
        TaskTracker::new(),
    );
    Fixture {
        engine: Arc::new(engine),
        store,
    }
}

pub(super) fn engine() -> Fixture {
    engine_with(|_| {})
}

pub(super) fn slow_echo(settings: &mut Settings, delay_ms: u64) {
    settings
        .backends
        .insert("echo".into(), BackendSettings::Echo { delay_ms });
}

pub(super) fn caller(name: &str) -> Principal {
    Principal::new(name.into(), "acme".into(), [CallerRole::User].into(), None)
}

pub(super) fn id(raw: &str) -> DialogueId {
    DialogueId::parse(raw).unwrap()
}

pub(super) fn spec() -> DialogueSpec {
    DialogueSpec {
        model: String::new(),
        system_prompt: "be brief".into(),
        labels: Default::default(),
        state: None,
        expiration: Expiration::Never,
    }
}

pub(super) fn turn(who: &str, dialogue: &str, text: &str) -> TurnRequest {
    TurnRequest {
        caller: caller(who),
        dialogue_id: id(dialogue),
        content: vec![ContentPart::Text(text.into())],
        params: GenerationParams::default(),
        request_id: None,
        create_if_missing: Some(spec()),
        deadline: None,
        resumable: false,
    }
}

pub(super) fn deterministic(mut request: TurnRequest) -> TurnRequest {
    request.params.temperature = Some(0.0);
    request
}

/// Every event of a stream, and its error if it ended with one.
pub(super) async fn events(
    mut rx: tokio::sync::mpsc::Receiver<Result<StreamEvent, EngineError>>,
) -> (Vec<StreamEvent>, Option<EngineError>) {
    let mut seen = Vec::new();
    while let Some(event) = rx.recv().await {
        match event {
            Ok(e) => seen.push(e),
            Err(e) => return (seen, Some(e)),
        }
    }
    (seen, None)
}

/// The first bad field an INVALID_ARGUMENT names.
pub(super) fn bad_field(error: EngineError) -> String {
    match error {
        EngineError::InvalidArgument(invalid) => invalid.0[0].field.clone(),
        other => panic!("not INVALID_ARGUMENT: {other:?}"),
    }
}

/// Waits (a few seconds at most) until `state` holds.
pub(super) async fn until(state: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !state() {
        assert!(Instant::now() < deadline, "the state never came");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub(super) fn streamed_text(events: &[StreamEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Delta { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

pub(super) fn end_of(events: &[StreamEvent]) -> &TurnOutcome {
    match events.last() {
        Some(StreamEvent::End(outcome)) => outcome,
        other => panic!("the stream did not end with its outcome: {other:?}"),
    }
}

pub(super) async fn stored_texts(f: &Fixture, who: &str, dialogue: &str) -> Vec<String> {
    let scoped = id(dialogue).scoped_to(&crate::dialogue::model::Owner::of(&caller(who)));
    f.store
        .list_turns(&scoped, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|t| t.text())
        .collect()
}
