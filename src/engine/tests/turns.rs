//! Running turns: replays, streams, the cache on both paths, deadlines and
//! the drain, limits, stateless completions, the content filter, batches,
//! stream slots and resumed streams.

use super::*;

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
        messages: [(Role::System, "be brief"), (Role::User, "hi")]
            .map(|(role, text)| PromptMessage::text(role, text))
            .to_vec(),
        params: GenerationParams::default(),
        deadline: None,
    };
    let outcome = f.engine.complete(request).await.unwrap();
    assert_eq!(outcome.assistant_turn.text(), "echo: hi");
    let page = f.engine.list_dialogues(&alice, 10, "").await.unwrap();
    assert!(page.items.is_empty());
}

#[tokio::test]
async fn a_stateless_prompt_is_tokenized_only_when_its_bytes_do_not_fit() {
    let f = engine_with(|s| s.models[0].context_tokens = 40);
    let ask = |text: String| CompletionRequest {
        caller: caller("alice"),
        messages: vec![PromptMessage::text(Role::User, &text)],
        params: GenerationParams::default(),
        deadline: None,
    };
    // 180 bytes exceed the window, but 30 tokens (+4 per message) fit.
    let outcome = f.engine.complete(ask("hello ".repeat(30))).await.unwrap();
    assert!(outcome.assistant_turn.text().starts_with("echo: hello"));
    let err = f
        .engine
        .complete(ask("hello ".repeat(50)))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("take 55 tokens") && err.to_string().contains("fits 40"),
        "{err}"
    );
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
