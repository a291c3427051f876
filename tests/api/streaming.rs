//! ConverseStream: event order, deltas that add up to the stored reply, and
//! a client that leaves mid-generation.

use crate::helpers::*;
use dialogd::pb::dialogue::v1 as pb;
use pb::converse_stream_response::Event;
use std::time::Duration;
use tonic::Code;

#[tokio::test]
async fn a_stream_sends_start_deltas_then_end_with_the_stored_turn() {
    let app = spawn_app().await;
    app.create("s").await;
    let (events, error) = app
        .stream(converse_request("s", "stream these words"))
        .await;
    assert!(error.is_none(), "{error:?}");

    let Some(Event::Start(start)) = events.first() else {
        panic!("first event must be start: {events:?}")
    };
    assert_eq!(
        (
            start.turn_index,
            start.turn_id.as_str(),
            start.model.as_str()
        ),
        (1, "1", "echo")
    );
    let Some(Event::End(end)) = events.last() else {
        panic!("last event must be end")
    };

    let mut joined = String::new();
    for event in &events[1..events.len() - 1] {
        let Event::Delta(delta) = event else {
            panic!("only deltas between start and end")
        };
        assert_eq!(
            delta.offset as usize,
            joined.len(),
            "offsets are contiguous"
        );
        joined.push_str(&delta.text);
    }
    assert_eq!(events.len() - 2, 4, "one delta per word");
    let turn = end.turn.as_ref().unwrap();
    assert_eq!(joined, "echo: stream these words");
    assert_eq!(turn_text(turn), joined);
    assert_eq!(end.finish_reason, pb::FinishReason::Stop as i32);
    assert_eq!(end.usage.unwrap().completion_tokens, 4);
    assert_eq!(app.all_turns("s").await.last(), Some(turn));
}

#[tokio::test]
async fn stream_errors_arrive_as_statuses_before_any_event() {
    let app = spawn_app().await;
    let (events, error) = app.stream(converse_request("missing", "hi")).await;
    assert!(events.is_empty());
    assert_eq!(error.unwrap().code(), Code::NotFound);
    let (_, error) = app.stream(converse_request("missing", "")).await;
    assert_eq!(error.unwrap().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_client_leaving_mid_stream_stores_nothing_and_frees_the_dialogue() {
    let app = spawn_app_with(|s| set_echo_delay(s, 200)).await;
    app.create("left").await;
    let mut stream = app
        .converse_stream(converse_request(
            "left",
            "a long answer with many many words in it",
        ))
        .await
        .unwrap();
    // Read the start and the first word, then hang up.
    assert!(matches!(
        stream.message().await.unwrap().unwrap().event,
        Some(Event::Start(_))
    ));
    assert!(matches!(
        stream.message().await.unwrap().unwrap().event,
        Some(Event::Delta(_))
    ));
    drop(stream);

    // The turn is abandoned: the dialogue is free at once (well before the
    // ~2 s the full reply would take) and holds no half-written turn.
    let started = std::time::Instant::now();
    let mut quick = converse_request("left", "x");
    quick.generation = Some(pb::GenerationConfig {
        max_tokens: Some(1),
        ..Default::default()
    });
    let reply = tokio::time::timeout(Duration::from_secs(5), app.converse_with(quick))
        .await
        .expect("the dialogue's lock was released")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        reply.user_turn.unwrap().index,
        0,
        "the abandoned turn left nothing behind"
    );
    let turns = app.all_turns("left").await;
    assert_eq!(turns.len(), 2);
    assert_eq!(turn_text(&turns[0]), "x");
}

#[tokio::test]
async fn a_stream_waiting_for_the_dialogue_can_be_abandoned_too() {
    let app = spawn_app_with(|s| set_echo_delay(s, 100)).await;
    app.create("queue").await;
    // A slow turn holds the dialogue (once it has started its reply)...
    let mut holding = app
        .converse_stream(converse_request("queue", "one two three four five"))
        .await
        .unwrap();
    holding.message().await.unwrap();
    let slow = tokio::spawn(async move {
        while holding.message().await?.is_some() {}
        Ok::<_, tonic::Status>(())
    });
    // ...a queued stream gives up while waiting...
    let client = app.api.clone();
    let queued = client.converse_stream(converse_request("queue", "never stored"));
    let _ = tokio::time::timeout(Duration::from_millis(100), queued).await;
    // ...and only the slow turn is stored.
    slow.await.unwrap().unwrap();
    // A change takes the dialogue's lock after every turn queued for it:
    // had the abandoned one gone on, it would be stored by then.
    let mask = pbjson_types::FieldMask {
        paths: vec!["labels".into()],
    };
    app.update_dialogue(pb::UpdateDialogueRequest {
        dialogue: Some(pb::Dialogue {
            name: name("queue"),
            ..Default::default()
        }),
        update_mask: Some(mask),
    })
    .await
    .unwrap();
    let texts: Vec<String> = app.all_turns("queue").await.iter().map(turn_text).collect();
    assert!(!texts.contains(&"never stored".to_string()), "{texts:?}");
    assert_eq!(texts.len(), 2);
}

/// Reads a stream until it ends: the text of its deltas (checking each
/// delta's offset continues the text from `from`) and its end.
async fn rest_of(
    stream: &mut tonic::Streaming<pb::ConverseStreamResponse>,
    from: usize,
) -> (String, Option<pb::StreamEnd>) {
    let mut text = String::new();
    while let Some(message) = stream.message().await.unwrap() {
        match message.event.unwrap() {
            Event::Delta(d) => {
                assert_eq!(d.offset as usize, from + text.len(), "offsets continue");
                text.push_str(&d.text);
            }
            Event::End(end) => return (text, Some(end)),
            Event::Start(_) => panic!("one start per stream"),
            Event::ToolCallDelta(_) => panic!("no tools were declared"),
        }
    }
    (text, None)
}

fn resume(name: String, offset: usize) -> pb::ResumeStreamRequest {
    pb::ResumeStreamRequest {
        name,
        offset: offset as i64,
    }
}

#[tokio::test]
async fn a_resumable_stream_goes_on_without_its_client_and_resumes_from_its_offset() {
    // 30 ms a word: the 41-word reply takes over a second.
    let app = spawn_app_with(|s| set_echo_delay(s, 30)).await;
    let message = (0..40)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut request = converse_request("r", &message);
    request.create_if_missing = true;
    request.resumable = true;
    let mut first = app.converse_stream(request).await.unwrap();
    let Some(Event::Start(start)) = first.message().await.unwrap().unwrap().event else {
        panic!("start first")
    };
    let mut received = String::new();
    while received.split_whitespace().count() < 3 {
        let Some(Event::Delta(d)) = first.message().await.unwrap().unwrap().event else {
            panic!("deltas next")
        };
        received.push_str(&d.text);
    }
    // The client is gone; the turn is not.
    drop(first);

    let turn = format!("dialogues/r/turns/{}", start.turn_id);
    let mut resumed = app
        .resume_stream(resume(turn.clone(), received.len()))
        .await
        .unwrap();
    let Some(Event::Start(again)) = resumed.message().await.unwrap().unwrap().event else {
        panic!("a resumed stream starts with start")
    };
    assert_eq!(again.turn_id, start.turn_id);
    let (rest, end) = rest_of(&mut resumed, received.len()).await;
    let end = end.expect("the resumed stream ends with end");
    let full = format!("echo: {message}");
    assert_eq!(
        format!("{received}{rest}"),
        full,
        "nothing lost, nothing twice"
    );
    assert_eq!(turn_text(end.turn.as_ref().unwrap()), full);
    assert_eq!(
        app.all_turns("r").await.len(),
        2,
        "stored though its client left"
    );

    // Once over it replays, from any offset.
    let mut again = app.resume_stream(resume(turn.clone(), 6)).await.unwrap();
    again.message().await.unwrap();
    let (rest, end) = rest_of(&mut again, 6).await;
    assert_eq!(rest, full[6..]);
    assert!(end.is_some());
}

#[tokio::test]
async fn any_stored_reply_can_be_replayed_and_bad_resumes_are_refused() {
    let app = spawn_app().await;
    let mut request = converse_request("stored", "just a unary turn");
    request.create_if_missing = true;
    app.converse_with(request).await.unwrap();
    let mut replay = app
        .resume_stream(resume("dialogues/stored/turns/1".into(), 6))
        .await
        .unwrap();
    replay.message().await.unwrap();
    let (rest, end) = rest_of(&mut replay, 6).await;
    assert_eq!(rest, "just a unary turn");
    assert!(end.unwrap().metadata.unwrap().replayed);

    let refused = |name: &str, offset: usize| {
        let client = app.api.clone();
        let request = resume(name.into(), offset);
        async move { client.resume_stream(request).await.unwrap_err().code() }
    };
    assert_eq!(
        refused("dialogues/stored/turns/0", 0).await,
        Code::NotFound,
        "a user turn"
    );
    assert_eq!(refused("dialogues/stored/turns/9", 0).await, Code::NotFound);
    assert_eq!(refused("dialogues/other/turns/1", 0).await, Code::NotFound);
    assert_eq!(
        refused("dialogues/stored/turns/1", 999).await,
        Code::InvalidArgument
    );
    assert_eq!(refused("dialogues/stored", 0).await, Code::InvalidArgument);
}
