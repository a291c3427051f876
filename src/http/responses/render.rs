//! The `response` object of OpenAI's Responses API, built from a turn: its
//! output items (a `message` with `output_text`, and `function_call`s),
//! usage, status, and the request's own fields echoed back. A stored
//! response's ID names its dialogue and assistant turn
//! (`resp_{dialogue}~{turn index}`), so it can be read back, chained and
//! continued through any other front.

use crate::dialogue::content::{Image, ImageSource};
use crate::dialogue::content::{join_text, tool_calls};
use crate::dialogue::model::{ContentPart, DialogueId, FinishReason, Role, Turn, Usage};
use serde_json::{Map, Value, json};

const SEPARATOR: char = '~';

pub fn response_id(dialogue: &DialogueId, assistant_turn: u64) -> String {
    format!("resp_{}{SEPARATOR}{assistant_turn}", dialogue.public())
}

/// The dialogue and assistant turn a stored response's ID names.
pub fn parse_response_id(id: &str) -> Option<(DialogueId, u64)> {
    let (dialogue, turn) = id.strip_prefix("resp_")?.rsplit_once(SEPARATOR)?;
    Some((DialogueId::parse(dialogue).ok()?, turn.parse().ok()?))
}

/// What a response says about its request, whatever its output.
#[derive(Clone)]
pub struct Echo {
    pub id: String,
    pub created_at: i64,
    pub model: String,
    pub instructions: Option<String>,
    pub previous_response_id: Option<String>,
    pub store: bool,
    pub metadata: Map<String, Value>,
    /// tools, tool_choice, parallel_tool_calls, text, temperature, top_p,
    /// max_output_tokens, as the request set them.
    pub fields: Map<String, Value>,
}

pub fn message_item(id: &str, text: &str, status: &str) -> Value {
    let content = match text.is_empty() && status == "in_progress" {
        true => json!([]),
        false => json!([{"type": "output_text", "text": text, "annotations": []}]),
    };
    json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": content})
}

pub fn function_call_item(call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({
        "type": "function_call", "id": format!("fc_{call_id}"), "call_id": call_id,
        "name": name, "arguments": arguments, "status": status,
    })
}

/// The output items of an assistant turn.
pub fn output(turn: &Turn, response_id: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let text = join_text(&turn.content);
    if !text.is_empty() {
        items.push(message_item(&message_id(response_id), &text, "completed"));
    }
    for call in tool_calls(&turn.content) {
        items.push(function_call_item(
            &call.id,
            &call.name,
            &call.arguments,
            "completed",
        ));
    }
    items
}

pub fn message_id(response_id: &str) -> String {
    format!("msg_{}", response_id.trim_start_matches("resp_"))
}

/// The whole `response` object.
pub fn response(
    echo: &Echo,
    status: &str,
    output: Vec<Value>,
    usage: Option<&Usage>,
    finish: Option<FinishReason>,
) -> Value {
    let field = |key: &str, default: Value| echo.fields.get(key).cloned().unwrap_or(default);
    let incomplete = matches!(finish, Some(FinishReason::Length));
    let status = if incomplete && status == "completed" {
        "incomplete"
    } else {
        status
    };
    json!({
        "id": echo.id,
        "object": "response",
        "created_at": echo.created_at,
        "status": status,
        "error": null,
        "incomplete_details": if incomplete { json!({"reason": "max_output_tokens"}) } else { Value::Null },
        "instructions": echo.instructions,
        "max_output_tokens": field("max_output_tokens", Value::Null),
        "model": echo.model,
        "output": output,
        "parallel_tool_calls": field("parallel_tool_calls", json!(true)),
        "previous_response_id": echo.previous_response_id,
        "store": echo.store,
        "temperature": field("temperature", json!(1.0)),
        "text": field("text", json!({"format": {"type": "text"}})),
        "tool_choice": field("tool_choice", json!("auto")),
        "tools": field("tools", json!([])),
        "top_p": field("top_p", json!(1.0)),
        "truncation": "auto",
        "usage": usage.map(|u| json!({
            "input_tokens": u.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": u.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": u.prompt_tokens + u.completion_tokens,
        })),
        "metadata": echo.metadata,
    })
}

/// A turn as Responses items: its text and images as one `message`
/// (`msg_{turn}`; `output_text` for a reply, `input_text` / `input_image`
/// otherwise), its tool calls as `function_call`s and tool results as
/// `function_call_output`s. An inline image read without its bytes (the
/// basic view) has no `image_url`.
pub fn turn_items(turn: &Turn) -> Vec<Value> {
    let assistant = turn.role == Role::Assistant;
    let mut out = Vec::new();
    let mut parts = Vec::new();
    for part in &turn.content {
        match part {
            ContentPart::Text(text) if assistant => {
                parts.push(json!({"type": "output_text", "text": text, "annotations": []}));
            }
            ContentPart::Text(text) => parts.push(json!({"type": "input_text", "text": text})),
            ContentPart::Image(image) => {
                parts.push(json!({"type": "input_image", "image_url": image_url(image), "detail": "auto"}));
            }
            ContentPart::ToolCall(call) => out.push(function_call_item(
                &call.id,
                &call.name,
                &call.arguments,
                "completed",
            )),
            ContentPart::ToolResult(result) => out.push(json!({
                "type": "function_call_output", "id": format!("fco_{}", result.call_id),
                "call_id": result.call_id, "output": join_text(&result.content), "status": "completed",
            })),
        }
    }
    if !parts.is_empty() {
        let role = match turn.role {
            Role::Assistant => "assistant",
            Role::System => "system",
            _ => "user",
        };
        let id = format!("msg_{}", turn.index);
        out.insert(
            0,
            json!({"type": "message", "id": id, "status": "completed", "role": role, "content": parts}),
        );
    }
    out
}

fn image_url(image: &Image) -> Option<String> {
    use base64::Engine as _;
    match &image.source {
        ImageSource::Url(url) => Some(url.clone()),
        ImageSource::Inline(inline) if inline.data.is_empty() => None,
        ImageSource::Inline(inline) => Some(format!(
            "data:{};base64,{}",
            inline.mime_type,
            base64::engine::general_purpose::STANDARD.encode(&inline.data)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_id_names_its_dialogue_and_turn() {
        let d = DialogueId::parse("chain-1.a_b").unwrap();
        let id = response_id(&d, 7);
        assert_eq!(id, "resp_chain-1.a_b~7");
        let (back, turn) = parse_response_id(&id).unwrap();
        assert_eq!((back.public(), turn), ("chain-1.a_b", 7));
        assert!(parse_response_id("resp_x").is_none());
        assert!(parse_response_id("chatcmpl-1").is_none());
    }
}
