//! The engine against the in-memory store and the built-in echo model:
//! what each job of the engine promises, without a transport.

use super::{Engine, EngineError};
use crate::auth::{Principal, Role as CallerRole};
use crate::config::{BackendSettings, Settings};
use crate::dialogue::content_filter::ContentFilter;
use crate::dialogue::model::{
    CompletionRequest, ContentPart, DialogueId, DialogueSpec, Expiration, FinishReason,
    GenerationParams, PromptMessage, Role, StreamEvent, TurnOutcome, TurnRequest, UpdateMask,
};
use crate::dialogue::ports::DialogueStore;
use crate::router::Router;
use crate::store::memory::MemoryStore;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::task::TaskTracker;

struct Fixture {
    engine: Arc<Engine>,
    store: MemoryStore,
}

fn engine_with(customize: impl FnOnce(&mut Settings)) -> Fixture {
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

fn engine() -> Fixture {
    engine_with(|_| {})
}

fn slow_echo(settings: &mut Settings, delay_ms: u64) {
    settings
        .backends
        .insert("echo".into(), BackendSettings::Echo { delay_ms });
}

fn caller(name: &str) -> Principal {
    Principal::new(name.into(), "acme".into(), [CallerRole::User].into(), None)
}

fn id(raw: &str) -> DialogueId {
    DialogueId::parse(raw).unwrap()
}

fn spec() -> DialogueSpec {
    DialogueSpec {
        model: String::new(),
        system_prompt: "be brief".into(),
        labels: Default::default(),
        state: None,
        expiration: Expiration::Never,
    }
}

fn turn(who: &str, dialogue: &str, text: &str) -> TurnRequest {
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

fn deterministic(mut request: TurnRequest) -> TurnRequest {
    request.params.temperature = Some(0.0);
    request
}

/// Every event of a stream, and its error if it ended with one.
async fn events(
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
fn bad_field(error: EngineError) -> String {
    match error {
        EngineError::InvalidArgument(invalid) => invalid.0[0].field.clone(),
        other => panic!("not INVALID_ARGUMENT: {other:?}"),
    }
}

/// Waits (a few seconds at most) until `state` holds.
async fn until(state: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !state() {
        assert!(Instant::now() < deadline, "the state never came");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn streamed_text(events: &[StreamEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Delta { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

fn end_of(events: &[StreamEvent]) -> &TurnOutcome {
    match events.last() {
        Some(StreamEvent::End(outcome)) => outcome,
        other => panic!("the stream did not end with its outcome: {other:?}"),
    }
}

async fn stored_texts(f: &Fixture, who: &str, dialogue: &str) -> Vec<String> {
    let scoped = id(dialogue).scoped_to(&crate::dialogue::model::Owner::of(&caller(who)));
    f.store
        .list_turns(&scoped, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|t| t.text())
        .collect()
}

#[tokio::test]
async fn dialogues_are_created_read_updated_and_deleted_by_their_owner_only() {
    let f = engine();
    let alice = caller("alice");
    let created = f
        .engine
        .create_dialogue(&alice, Some(id("chat")), spec())
        .await
        .unwrap();
    assert_eq!((created.model.as_str(), created.turn_count), ("echo", 0));
    let err = f
        .engine
        .create_dialogue(&alice, Some(id("chat")), spec())
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::AlreadyExists(_)), "{err:?}");

    let mut changed = spec();
    changed.system_prompt = "be kind".into();
    let mask = UpdateMask {
        system_prompt: true,
        ..UpdateMask::default()
    };
    let updated = f
        .engine
        .update_dialogue(&alice, &id("chat"), changed, mask)
        .await
        .unwrap();
    assert_eq!(updated.system_prompt, "be kind");

    // Bob has a namespace of his own: alice's dialogue is not his.
    let bob = caller("bob");
    for result in [
        f.engine
            .get_dialogue(&bob, &id("chat"), None, 0)
            .await
            .map(|_| ()),
        f.engine.delete_dialogue(&bob, &id("chat")).await,
    ] {
        assert!(
            matches!(result, Err(EngineError::NotFound(_))),
            "{result:?}"
        );
    }
    let (read, _) = f
        .engine
        .get_dialogue(&alice, &id("chat"), None, 0)
        .await
        .unwrap();
    assert_eq!(read.system_prompt, "be kind");
    f.engine.delete_dialogue(&alice, &id("chat")).await.unwrap();
    let gone = f.engine.get_dialogue(&alice, &id("chat"), None, 0).await;
    assert!(matches!(gone, Err(EngineError::NotFound(_))));
}

#[tokio::test]
async fn lists_go_page_by_page_and_refuse_a_foreign_token() {
    let f = engine();
    let alice = caller("alice");
    for n in 0..5 {
        f.engine
            .create_dialogue(&alice, Some(id(&format!("d{n}"))), spec())
            .await
            .unwrap();
    }
    let mut seen = 0;
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = f.engine.list_dialogues(&alice, 2, &token).await.unwrap();
        seen += page.items.len();
        pages += 1;
        match page.next_page_token {
            Some(next) => token = next,
            None => break,
        }
    }
    assert_eq!((seen, pages), (5, 3));
    let turns_token = {
        f.engine.converse(turn("alice", "d0", "one")).await.unwrap();
        f.engine.converse(turn("alice", "d0", "two")).await.unwrap();
        let page = f.engine.list_turns(&alice, &id("d0"), 1, "").await.unwrap();
        page.next_page_token.unwrap()
    };
    let err = f
        .engine
        .list_dialogues(&alice, 2, &turns_token)
        .await
        .unwrap_err();
    assert_eq!(bad_field(err), "page_token");
}

#[tokio::test]
async fn a_turn_stores_the_exchange_and_a_repeated_request_replays_it() {
    let f = engine();
    let mut request = turn("alice", "chat", "hello");
    request.request_id = Some("req-1".into());
    let first = f.engine.converse(request.clone()).await.unwrap();
    assert_eq!(first.assistant_turn.text(), "echo: hello");
    assert_eq!((first.user_turn.index, first.assistant_turn.index), (0, 1));
    assert!(!first.metadata.replayed);

    let again = f.engine.converse(request.clone()).await.unwrap();
    assert!(again.metadata.replayed);
    assert_eq!(again.assistant_turn, first.assistant_turn);
    assert_eq!(stored_texts(&f, "alice", "chat").await.len(), 2);

    request.content = vec![ContentPart::Text("something else".into())];
    let err = f.engine.converse(request).await.unwrap_err();
    assert_eq!(bad_field(err), "request_id");
    assert_eq!(f.engine.busy_dialogues(), 0, "every lock was given back");
}

#[tokio::test]
async fn a_streamed_turn_sends_start_deltas_and_end_with_what_was_stored() {
    let f = engine();
    let rx = f
        .engine
        .converse_stream(turn("alice", "chat", "one two three"));
    let (events, error) = events(rx).await;
    assert!(error.is_none(), "{error:?}");
    assert!(matches!(
        events[0],
        StreamEvent::Start { turn_index: 1, .. }
    ));
    assert!(events.len() > 3, "the echo model streams word by word");
    let end = end_of(&events);
    assert_eq!(streamed_text(&events), end.assistant_turn.text());
    assert_eq!(
        stored_texts(&f, "alice", "chat").await,
        ["one two three", "echo: one two three"]
    );
}

#[tokio::test]
async fn a_cached_reply_serves_unary_and_streamed_turns_without_a_model_call() {
    let f = engine();
    let first = f
        .engine
        .converse(deterministic(turn("alice", "a", "same")))
        .await
        .unwrap();
    assert!(!first.metadata.cached);
    // The prompt of a new dialogue is the same: its reply comes from the cache.
    let unary = f
        .engine
        .converse(deterministic(turn("alice", "b", "same")))
        .await
        .unwrap();
    assert!(unary.metadata.cached);
    let rx = f
        .engine
        .converse_stream(deterministic(turn("alice", "c", "same")));
    let (events, error) = events(rx).await;
    assert!(error.is_none(), "{error:?}");
    let end = end_of(&events);
    assert!(end.metadata.cached);
    assert_eq!(streamed_text(&events), "echo: same");
    assert_eq!(stored_texts(&f, "alice", "c").await, ["same", "echo: same"]);
}

#[tokio::test]
async fn a_passed_deadline_and_the_end_of_the_drain_stop_a_turn_storing_nothing() {
    let f = engine_with(|s| slow_echo(s, 200));
    let mut late = turn("alice", "chat", "a b c");
    late.deadline = Some(Instant::now() + Duration::from_millis(50));
    let err = f.engine.converse(late).await.unwrap_err();
    assert!(matches!(err, EngineError::DeadlineExceeded), "{err:?}");

    let running = tokio::spawn({
        let engine = f.engine.clone();
        async move { engine.converse(turn("alice", "chat", "a b c")).await }
    });
    until(|| f.engine.busy_dialogues() == 1).await;
    f.engine.cut_running_turns();
    let err = running.await.unwrap().unwrap_err();
    assert!(matches!(err, EngineError::ShuttingDown), "{err:?}");
    assert!(stored_texts(&f, "alice", "chat").await.is_empty());
}

#[tokio::test]
async fn a_dialogue_refuses_turns_beyond_its_limit() {
    let f = engine_with(|s| s.limits.max_turns_per_dialogue = 3);
    f.engine
        .converse(turn("alice", "chat", "one"))
        .await
        .unwrap();
    let err = f
        .engine
        .converse(turn("alice", "chat", "two"))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "DIALOGUE_TURN_LIMIT");
}

#[tokio::test]
async fn a_stateless_completion_stores_nothing() {
    let f = engine();
    let alice = caller("alice");
    let request = CompletionRequest {
        caller: alice.clone(),
        messages: vec![
            PromptMessage {
                role: Role::System,
                text: "be brief".into(),
            },
            PromptMessage {
                role: Role::User,
                text: "hi".into(),
            },
        ],
        params: GenerationParams::default(),
        deadline: None,
    };
    let outcome = f.engine.complete(request).await.unwrap();
    assert_eq!(outcome.assistant_turn.text(), "echo: hi");
    let page = f.engine.list_dialogues(&alice, 10, "").await.unwrap();
    assert!(page.items.is_empty());
}

#[tokio::test]
async fn blocked_terms_refuse_messages_and_cut_replies() {
    let f =
        engine_with(|s| s.content_filter.blocked_terms = vec!["forbidden".into(), "echo".into()]);
    let err = f
        .engine
        .converse(turn("alice", "chat", "a forbidden word"))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::ContentBlocked));
    // The echo model's reply starts with a blocked term: nothing of it is shown.
    let outcome = f
        .engine
        .converse(turn("alice", "chat", "hi"))
        .await
        .unwrap();
    assert_eq!(
        (
            outcome.assistant_turn.text().as_str(),
            outcome.finish_reason
        ),
        ("", FinishReason::ContentFilter)
    );
    let (events, _) = events(f.engine.converse_stream(turn("alice", "s", "hi"))).await;
    assert_eq!(streamed_text(&events), "");
    assert_eq!(end_of(&events).finish_reason, FinishReason::ContentFilter);
}

#[tokio::test]
async fn a_batch_runs_independent_turns_and_refuses_two_on_one_dialogue() {
    let f = engine();
    let results = f
        .engine
        .converse_batch(vec![
            Ok(turn("alice", "a", "one")),
            Err(EngineError::invalid("requests[1].name", "is required")),
            Ok(turn("alice", "b", "two")),
        ])
        .await
        .unwrap();
    assert_eq!(
        results[0].as_ref().unwrap().assistant_turn.text(),
        "echo: one"
    );
    assert!(results[1].is_err());
    assert_eq!(
        results[2].as_ref().unwrap().assistant_turn.text(),
        "echo: two"
    );
    let err = f
        .engine
        .converse_batch(vec![
            Ok(turn("alice", "a", "x")),
            Ok(turn("alice", "a", "y")),
        ])
        .await
        .unwrap_err();
    assert_eq!(bad_field(err), "requests[1].name");
}

#[tokio::test]
async fn a_caller_over_its_stream_slots_is_refused_and_an_abandoned_stream_frees_all() {
    let f = engine_with(|s| {
        s.limits.max_streams_per_principal = 1;
        slow_echo(s, 100);
    });
    let open = f.engine.converse_stream(turn("alice", "a", "a b c d"));
    let (_, error) = events(f.engine.converse_stream(turn("alice", "b", "x"))).await;
    assert_eq!(error.unwrap().reason(), "STREAM_LIMIT");
    // Someone else is not affected.
    let (_, error) = events(f.engine.converse_stream(turn("bob", "b", "x"))).await;
    assert!(error.is_none(), "{error:?}");
    drop(open);
    // The abandoned turn stores nothing and gives back its lock and slot.
    until(|| f.engine.busy_dialogues() == 0).await;
    assert!(stored_texts(&f, "alice", "a").await.is_empty());
    let (_, error) = events(f.engine.converse_stream(turn("alice", "c", "x"))).await;
    assert!(error.is_none(), "{error:?}");
}

#[tokio::test]
async fn a_finished_reply_is_resumed_from_the_store_at_an_offset() {
    let f = engine();
    f.engine
        .converse(turn("alice", "chat", "hello world"))
        .await
        .unwrap();
    let alice = caller("alice");
    let rx = f
        .engine
        .resume_stream(&alice, &id("chat"), 1, 6)
        .await
        .unwrap();
    let (events, error) = events(rx).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(streamed_text(&events), "hello world");
    for (index, offset) in [(0, 0), (3, 0), (1, 99)] {
        let result = f
            .engine
            .resume_stream(&alice, &id("chat"), index, offset)
            .await;
        assert!(result.is_err(), "turn {index} at {offset}");
    }
}

#[tokio::test]
async fn the_sweep_erases_expired_dialogues_only() {
    let f = engine();
    let alice = caller("alice");
    for name in ["old", "new"] {
        f.engine
            .create_dialogue(&alice, Some(id(name)), spec())
            .await
            .unwrap();
    }
    // "old" expired a moment ago.
    let owner = crate::dialogue::model::Owner::of(&alice);
    let mut old = f
        .store
        .get_dialogue(&id("old").scoped_to(&owner))
        .await
        .unwrap()
        .unwrap();
    old.expire_time = Some(crate::dialogue::model::Time(1));
    f.store.update_dialogue(&old).await.unwrap();
    assert_eq!(f.engine.sweep_expired().await.unwrap(), 1);
    let page = f.engine.list_dialogues(&alice, 10, "").await.unwrap();
    let ids: Vec<&str> = page.items.iter().map(|d| d.id.public()).collect();
    assert_eq!(ids, ["new"]);
}
