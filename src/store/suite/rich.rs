//! The store contract for rich turns: tool calls, tool results and inline
//! images read back exactly as committed (both read paths), the
//! dialogue's image bytes counted, and all of it erased with the dialogue.

use super::{dialogue, owner};
use crate::dialogue::model::{
    ContentPart, Image, ImageDetail, ImageSource, InlineImage, Role, Time, ToolCall, ToolResult,
    Turn,
};
use crate::dialogue::ports::{DialogueStore, ExchangeCommit};

fn image(bytes: usize) -> ContentPart {
    ContentPart::Image(Image {
        source: ImageSource::Inline(InlineImage {
            mime_type: "image/png".into(),
            data: bytes::Bytes::from((0..bytes).map(|i| i as u8).collect::<Vec<_>>()),
        }),
        detail: ImageDetail::High,
    })
}

fn turn(index: u64, role: Role, content: Vec<ContentPart>) -> Turn {
    Turn {
        index,
        role,
        content,
        create_time: Time(9_000 + index as i64),
        finish_reason: None,
        model: String::new(),
        usage: None,
        request_id: None,
        tokens: 7,
        summary: None,
        added: false,
        rule: None,
    }
}

pub async fn rich_turns(store: &dyn DialogueStore) {
    let who = owner("rich");
    let d = dialogue("rich", &who, 1_000);
    let asked = turn(
        0,
        Role::User,
        vec![
            ContentPart::Text("what is on this? ünïcode".into()),
            image(300),
            ContentPart::Image(Image {
                source: ImageSource::Url("https://example.com/a.png".into()),
                detail: ImageDetail::Auto,
            }),
        ],
    );
    let calls = turn(
        1,
        Role::Assistant,
        vec![
            ContentPart::Text("Let me look.".into()),
            ContentPart::ToolCall(ToolCall {
                id: "call_1".into(),
                name: "zoom".into(),
                arguments: r#"{"factor": 2, "note": "\"quoted\""}"#.into(),
            }),
            ContentPart::ToolCall(ToolCall {
                id: "call_2".into(),
                name: "ocr".into(),
                arguments: "not json at all".into(),
            }),
        ],
    );
    let results = turn(
        2,
        Role::Tool,
        vec![
            ContentPart::ToolResult(ToolResult {
                call_id: "call_1".into(),
                content: vec![ContentPart::Text("zoomed".into()), image(20)],
                is_error: false,
            }),
            ContentPart::ToolResult(ToolResult {
                call_id: "call_2".into(),
                content: vec![ContentPart::Text("no text found".into())],
                is_error: true,
            }),
        ],
    );
    let answer = turn(3, Role::Assistant, vec![ContentPart::Text("A cat.".into())]);
    for (create, expected, pair) in [(true, 0, [&asked, &calls]), (false, 2, [&results, &answer])] {
        store
            .commit_exchange(ExchangeCommit {
                create: create.then_some(&d),
                dialogue_id: &d.id,
                expected_turn_count: expected,
                turns: &pair,
                idempotency: None,
            })
            .await
            .unwrap();
    }
    let written = [asked, calls, results, answer];
    assert_eq!(store.list_turns(&d.id, 0, 10).await.unwrap(), written);
    let newest_first: Vec<Turn> = store
        .turns_before(&d.id, 4, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|t| Turn::clone(&t))
        .collect();
    assert!(newest_first.iter().rev().eq(written.iter()));
    let stored = store.get_dialogue(&d.id).await.unwrap().unwrap();
    assert_eq!((stored.turn_count, stored.media_bytes), (4, 320));

    assert!(store.delete_dialogue(&d.id).await.unwrap());
    assert!(store.list_turns(&d.id, 0, 10).await.unwrap().is_empty());
    // A dialogue made again under the ID starts with no image bytes.
    store.create_dialogue(&d).await.unwrap();
    assert_eq!(
        store
            .get_dialogue(&d.id)
            .await
            .unwrap()
            .unwrap()
            .media_bytes,
        0
    );
}
