//! The echo backend's replies: text, tool calls, JSON, log probabilities.

use super::*;
use crate::dialogue::model::{GenerationParams, ToolSpec};

fn request(text: &str, params: GenerationParams) -> ModelRequest {
    ModelRequest {
        messages: vec![
            PromptMessage::text(Role::System, "be brief"),
            PromptMessage::text(Role::User, text),
        ],
        params,
    }
}

fn tool(name: &str) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        description: String::new(),
        parameters: None,
        strict: false,
    }
}

#[tokio::test]
async fn streams_word_by_word_and_matches_the_unary_reply() {
    let backend = EchoBackend::new("echo", Duration::ZERO);
    let req = request("hello big world", GenerationParams::default());
    let chunks: Vec<_> = backend.stream("echo", &req).await.unwrap().collect().await;
    let texts: Vec<String> = chunks
        .iter()
        .filter_map(|c| match c {
            Ok(ReplyChunk::Text(t)) => Some(t.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["echo: ", "hello ", "big ", "world"]);
    let unary = backend.complete("echo", &req).await.unwrap();
    assert_eq!(unary.text, texts.concat());
    assert_eq!(unary.finish_reason, FinishReason::Stop);
    assert_eq!(
        unary.usage,
        Some(Usage {
            prompt_tokens: 5,
            completion_tokens: 4
        })
    );
    assert!(matches!(
        chunks.last(),
        Some(Ok(ReplyChunk::Finished { .. }))
    ));
}

#[test]
fn max_tokens_and_stop_sequences_shape_the_reply() {
    let params = GenerationParams {
        max_tokens: Some(2),
        ..Default::default()
    };
    let reply = echo(&request("one two three", params));
    assert_eq!(
        (reply.pieces.concat().as_str(), reply.finish),
        ("echo: one ", FinishReason::Length)
    );

    let params = GenerationParams {
        stop: vec!["three".into()],
        ..Default::default()
    };
    let reply = echo(&request("one two three", params));
    assert_eq!(
        (reply.pieces.concat().as_str(), reply.finish),
        ("echo: one two ", FinishReason::Stop)
    );
}

#[test]
fn naming_a_declared_tool_calls_it_with_the_arguments_that_follow() {
    let params = GenerationParams {
        tools: vec![tool("weather"), tool("time")],
        ..Default::default()
    };
    let reply = echo(&request(
        r#"please call weather {"city": "Paris"} and call time, not call nothing"#,
        params.clone(),
    ));
    assert_eq!(reply.finish, FinishReason::ToolCalls);
    let calls: Vec<(&str, &str)> = reply
        .calls
        .iter()
        .map(|c| (c.name.as_str(), c.arguments.as_str()))
        .collect();
    assert_eq!(calls, [("weather", r#"{"city": "Paris"}"#), ("time", "{}")]);
    let single = GenerationParams {
        parallel_tool_calls: Some(false),
        ..params.clone()
    };
    assert_eq!(
        echo(&request("call weather and call time", single))
            .calls
            .len(),
        1
    );
    let never = GenerationParams {
        tool_choice: Some(ToolChoice::None),
        ..params
    };
    assert!(echo(&request("call weather", never)).calls.is_empty());
}

#[test]
fn a_json_schema_gets_an_object_with_each_property() {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"answer": {"type": "string"}, "score": {"type": "number"}}
    });
    let params = GenerationParams {
        response_format: ResponseFormat::JsonSchema {
            name: "out".into(),
            description: String::new(),
            schema: schema.as_object().unwrap().clone(),
            strict: true,
        },
        ..Default::default()
    };
    let reply = echo(&request("hi", params)).pieces.concat();
    let value: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(value, serde_json::json!({"answer": "hi", "score": 0}));
}
