//! Rules of message content: text within `limits.max_message_bytes`,
//! images by `http(s)` URL or inline of a known type within
//! `limits.max_request_media_bytes`, tool results naming a call; tool calls
//! come from the model, never in a caller's message.

use crate::config::LimitSettings;
use crate::dialogue::content::{media_bytes, tool_calls};
use crate::dialogue::model::{ContentPart, ImageSource, PromptMessage, Role};
use crate::failure::Violations;
use std::collections::HashSet;

/// Image types models take inline.
pub const IMAGE_TYPES: &[&str] = &["image/png", "image/jpeg", "image/gif", "image/webp"];
const MAX_URL_BYTES: usize = 8192;
const MAX_CALL_ID_BYTES: usize = 128;

/// Messages of one stateless completion, at most.
pub const MAX_PROMPT_MESSAGES: usize = 1024;

/// Checks a caller's message (a turn request's content).
pub fn check_message(limits: &LimitSettings, content: &[ContentPart], v: &mut Violations) {
    check_item(limits, content, false, "content", v);
}

/// Checks a message's `content` at `path`; only a reply (`reply`) may
/// hold tool calls. Conversation items are checked so, replies included.
pub fn check_item(
    limits: &LimitSettings,
    content: &[ContentPart],
    reply: bool,
    path: &str,
    v: &mut Violations,
) {
    if content.is_empty() {
        v.add(path, "must have at least one part");
        return;
    }
    let text = check_parts(content, path, reply, v);
    if text > limits.max_message_bytes {
        v.add(
            path,
            format!(
                "is {text} bytes of text; at most {} are allowed",
                limits.max_message_bytes
            ),
        );
    }
    check_media(limits, content, path, v);
}

/// Checks `parts` at `path`: each part well formed; returns their text
/// bytes. Tool calls are allowed only in the model's (assistant) messages.
fn check_parts(
    parts: &[ContentPart],
    path: &str,
    calls_allowed: bool,
    v: &mut Violations,
) -> usize {
    let mut text = 0;
    for (i, part) in parts.iter().enumerate() {
        let field = format!("{path}[{i}]");
        match part {
            ContentPart::Text(t) if t.is_empty() => {
                v.add(format!("{field}.text"), "must not be empty")
            }
            ContentPart::Text(t) => text += t.len(),
            ContentPart::Image(image) => match &image.source {
                ImageSource::Url(url) => check_url(url, &format!("{field}.image.url"), v),
                ImageSource::Inline(inline) => {
                    if !IMAGE_TYPES.contains(&inline.mime_type.as_str()) {
                        v.add(
                            format!("{field}.image.mime_type"),
                            format!("must be one of {}", IMAGE_TYPES.join(", ")),
                        );
                    }
                    if inline.data.is_empty() {
                        v.add(format!("{field}.image.data"), "must not be empty");
                    }
                }
            },
            ContentPart::ToolCall(_) if !calls_allowed => v.add(
                format!("{field}.tool_call"),
                "tool calls come from the model; answer one with a tool_result",
            ),
            ContentPart::ToolCall(call) => {
                if call.id.is_empty() || call.name.is_empty() {
                    v.add(format!("{field}.tool_call"), "needs an id and a name");
                }
            }
            ContentPart::ToolResult(result) => {
                if result.call_id.is_empty() || result.call_id.len() > MAX_CALL_ID_BYTES {
                    v.add(
                        format!("{field}.tool_result.call_id"),
                        format!("must be 1 to {MAX_CALL_ID_BYTES} bytes"),
                    );
                }
                let inner = format!("{field}.tool_result.content");
                for (j, nested) in result.content.iter().enumerate() {
                    if matches!(
                        nested,
                        ContentPart::ToolCall(_) | ContentPart::ToolResult(_)
                    ) {
                        v.add(format!("{inner}[{j}]"), "must be text or an image");
                    }
                }
                text += check_parts(&result.content, &inner, false, v);
            }
        }
    }
    text
}

fn check_url(url: &str, field: &str, v: &mut Violations) {
    let ok = url.len() <= MAX_URL_BYTES
        && url::Url::parse(url)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
    if !ok {
        v.add(
            field,
            format!("must be an http or https URL of at most {MAX_URL_BYTES} bytes"),
        );
    }
}

fn check_media(limits: &LimitSettings, parts: &[ContentPart], field: &str, v: &mut Violations) {
    let bytes = media_bytes(parts);
    if bytes > limits.max_request_media_bytes {
        v.add(
            field,
            format!(
                "holds {bytes} bytes of inline images; at most {} are allowed per request",
                limits.max_request_media_bytes
            ),
        );
    }
}

/// Checks that a turn's tool results answer the calls of the dialogue's
/// previous turn (`pending`, their IDs): each call once, and no other. A
/// turn after tool calls must answer them all — models refuse a prompt
/// with unanswered calls.
pub fn check_answers(content: &[ContentPart], pending: &[&str], v: &mut Violations) {
    let mut answered: HashSet<&str> = HashSet::new();
    for (i, part) in content.iter().enumerate() {
        let ContentPart::ToolResult(result) = part else {
            continue;
        };
        let field = format!("content[{i}].tool_result.call_id");
        let id = result.call_id.as_str();
        if !pending.contains(&id) {
            v.add(
                field,
                format!("{id:?} answers no tool call of the previous turn"),
            );
        } else if !answered.insert(id) {
            v.add(field, format!("{id:?} is answered twice"));
        }
    }
    let missing: Vec<&str> = pending
        .iter()
        .filter(|id| !answered.contains(*id))
        .copied()
        .collect();
    if !missing.is_empty() {
        v.add(
            "content",
            format!(
                "must answer the previous turn's tool calls; no tool_result for {}",
                missing.join(", ")
            ),
        );
    }
}

/// Checks the messages of a stateless completion (fields named as the
/// OpenAI API names them): each within the size limits of its kind, tool
/// results answering an earlier assistant message's calls, the last one
/// the user's or tool results.
pub fn check_prompt(limits: &LimitSettings, messages: &[PromptMessage], v: &mut Violations) {
    if messages.is_empty() || messages.len() > MAX_PROMPT_MESSAGES {
        v.add(
            "messages",
            format!("must hold 1 to {MAX_PROMPT_MESSAGES} messages"),
        );
        return;
    }
    let mut calls: HashSet<&str> = HashSet::new();
    // Calls of the latest assistant message not answered yet.
    let mut open: Vec<&str> = Vec::new();
    let mut media = 0;
    for (i, message) in messages.iter().enumerate() {
        let path = format!("messages[{i}].content");
        let max = match message.role {
            Role::System => limits.max_system_prompt_bytes,
            _ => limits.max_message_bytes,
        };
        let text = check_parts(&message.content, &path, message.role == Role::Assistant, v);
        if text > max {
            v.add(&path, format!("is {text} bytes; at most {max} are allowed"));
        }
        for part in &message.content {
            if let ContentPart::ToolResult(result) = part
                && !calls.contains(result.call_id.as_str())
            {
                v.add(
                    format!("messages[{i}].tool_call_id"),
                    format!(
                        "{:?} answers no tool call of an earlier assistant message",
                        result.call_id
                    ),
                );
            }
        }
        let answered: Vec<&str> = message
            .content
            .iter()
            .filter_map(|p| match p {
                ContentPart::ToolResult(r) => Some(r.call_id.as_str()),
                _ => None,
            })
            .collect();
        open.retain(|id| !answered.contains(id));
        if !open.is_empty() && message.role != Role::Tool {
            v.add(
                format!("messages[{i}]"),
                format!(
                    "comes before tool messages answer the tool calls {}",
                    open.join(", ")
                ),
            );
            open.clear();
        }
        calls.extend(tool_calls(&message.content).map(|c| c.id.as_str()));
        open.extend(tool_calls(&message.content).map(|c| c.id.as_str()));
        media += media_bytes(&message.content);
    }
    if media > limits.max_request_media_bytes {
        v.add(
            "messages",
            format!(
                "hold {media} bytes of inline images; at most {} are allowed per request",
                limits.max_request_media_bytes
            ),
        );
    }
    if messages
        .last()
        .is_some_and(|m| !matches!(m.role, Role::User | Role::Tool))
    {
        v.add("messages", "must end with a user message or tool results");
    } else if !open.is_empty() {
        v.add(
            "messages",
            format!("must answer the tool calls {}", open.join(", ")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::fields;
    use super::*;
    use crate::dialogue::model::{Image, ImageDetail, InlineImage, ToolCall, ToolResult};

    fn inline(mime: &str, size: usize) -> ContentPart {
        ContentPart::Image(Image {
            source: ImageSource::Inline(InlineImage {
                mime_type: mime.into(),
                data: bytes::Bytes::from(vec![7; size]),
            }),
            detail: ImageDetail::Auto,
        })
    }

    #[test]
    fn messages_must_be_non_empty_and_within_the_limit() {
        let limits = LimitSettings {
            max_message_bytes: 3,
            ..LimitSettings::default()
        };
        let mut v = Violations::default();
        check_message(&limits, &[], &mut v);
        check_message(&limits, &[ContentPart::Text(String::new())], &mut v);
        check_message(&limits, &[ContentPart::Text("abcd".into())], &mut v);
        assert_eq!(fields(v), ["content", "content[0].text", "content"]);
    }

    #[test]
    fn images_tool_calls_and_results_are_checked_part_by_part() {
        let limits = LimitSettings {
            max_request_media_bytes: 10,
            ..LimitSettings::default()
        };
        let url = |u: &str| {
            ContentPart::Image(Image {
                source: ImageSource::Url(u.into()),
                detail: ImageDetail::Low,
            })
        };
        let mut v = Violations::default();
        check_message(
            &limits,
            &[
                inline("image/png", 8),
                inline("text/plain", 1),
                url("file:///etc/passwd"),
                ContentPart::ToolCall(ToolCall {
                    id: "c".into(),
                    name: "f".into(),
                    arguments: "{}".into(),
                }),
                ContentPart::ToolResult(ToolResult {
                    call_id: String::new(),
                    content: vec![inline("image/png", 4)],
                    is_error: false,
                }),
            ],
            &mut v,
        );
        assert_eq!(
            fields(v),
            [
                "content[1].image.mime_type",
                "content[2].image.url",
                "content[3].tool_call",
                "content[4].tool_result.call_id",
                "content"
            ]
        );
    }

    #[test]
    fn a_stateless_prompt_answers_only_calls_it_holds() {
        let call = PromptMessage {
            role: Role::Assistant,
            content: vec![ContentPart::ToolCall(ToolCall {
                id: "c1".into(),
                name: "f".into(),
                arguments: "{}".into(),
            })]
            .into(),
        };
        let result = |id: &str| PromptMessage {
            role: Role::Tool,
            content: vec![ContentPart::ToolResult(ToolResult {
                call_id: id.into(),
                content: vec![ContentPart::Text("ok".into())],
                is_error: false,
            })]
            .into(),
        };
        let limits = LimitSettings::default();
        let mut v = Violations::default();
        check_prompt(
            &limits,
            &[
                PromptMessage::text(Role::User, "hi"),
                call.clone(),
                result("c1"),
            ],
            &mut v,
        );
        assert!(fields(v).is_empty());
        let mut v = Violations::default();
        check_prompt(
            &limits,
            &[PromptMessage::text(Role::User, "hi"), call, result("c2")],
            &mut v,
        );
        assert_eq!(fields(v), ["messages[2].tool_call_id", "messages"]);
    }

    #[test]
    fn a_turn_after_tool_calls_answers_each_exactly_once() {
        let result = |id: &str| {
            ContentPart::ToolResult(ToolResult {
                call_id: id.into(),
                content: vec![ContentPart::Text("ok".into())],
                is_error: false,
            })
        };
        let mut v = Violations::default();
        check_answers(&[result("a"), result("b")], &["a", "b"], &mut v);
        assert!(fields(v).is_empty());
        let mut v = Violations::default();
        check_answers(
            &[result("a"), result("a"), result("x")],
            &["a", "b"],
            &mut v,
        );
        assert_eq!(
            fields(v),
            [
                "content[1].tool_result.call_id",
                "content[2].tool_result.call_id",
                "content"
            ]
        );
        let mut v = Violations::default();
        check_answers(&[ContentPart::Text("hi".into())], &["a"], &mut v);
        assert_eq!(fields(v), ["content"]);
    }
}
