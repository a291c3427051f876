//! A prompt's messages in OpenAI's chat shape, serialized straight from the
//! prompt: texts, call ids and arguments are borrowed, so a long dialogue's
//! history goes into the request body without being copied first (into
//! `serde_json::Value`s) — its cost is the bytes written upstream.

use crate::dialogue::content::{joined_text as joined, tool_calls, transcript};
use crate::dialogue::model::{ContentPart, Image, ImageDetail, ImageSource, PromptMessage, Role};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use std::borrow::Cow;

/// One OpenAI message.
#[derive(Serialize)]
pub struct WireMessage<'a> {
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
    content: WireContent<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<WireCall<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum WireContent<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<WirePart<'a>>),
    /// An assistant message of tool calls alone.
    Null,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WirePart<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: WireImage<'a> },
}

#[derive(Serialize)]
struct WireImage<'a> {
    url: Cow<'a, str>,
    detail: &'static str,
}

#[derive(Serialize)]
struct WireCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

#[derive(Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// The prompt's messages: tool results become one `tool` message each
/// (before any text of the same turn); an assistant turn carries its calls
/// in `tool_calls`.
pub fn messages(prompt: &[PromptMessage]) -> Vec<WireMessage<'_>> {
    let mut out = Vec::with_capacity(prompt.len());
    for message in prompt {
        push_message(message, &mut out);
    }
    out
}

fn push_message<'a>(message: &'a PromptMessage, out: &mut Vec<WireMessage<'a>>) {
    let parts: &'a [ContentPart] = &message.content;
    for part in parts {
        if let ContentPart::ToolResult(result) = part {
            // Tool messages carry text: images in a result are noted.
            let mut text = transcript(&result.content);
            if result.is_error {
                text = format!("[error] {text}");
            }
            out.push(WireMessage {
                role: "tool",
                tool_call_id: Some(&result.call_id),
                content: WireContent::Text(Cow::Owned(text)),
                tool_calls: Vec::new(),
            });
        }
    }
    let message_of = |role, content| WireMessage {
        role,
        tool_call_id: None,
        content,
        tool_calls: Vec::new(),
    };
    let rest = || {
        parts
            .iter()
            .filter(|p| !matches!(p, ContentPart::ToolResult(_)))
    };
    match message.role {
        Role::System => out.push(message_of("system", WireContent::Text(joined(parts)))),
        Role::User | Role::Tool if rest().next().is_some() => {
            out.push(message_of("user", user_content(parts)))
        }
        Role::User | Role::Tool => {}
        Role::Assistant => {
            let text = joined(parts);
            let calls: Vec<WireCall> = tool_calls(parts)
                .map(|call| WireCall {
                    id: &call.id,
                    kind: "function",
                    function: WireFunction {
                        name: &call.name,
                        arguments: &call.arguments,
                    },
                })
                .collect();
            let content = match text.is_empty() && !calls.is_empty() {
                true => WireContent::Null,
                false => WireContent::Text(text),
            };
            out.push(WireMessage {
                tool_calls: calls,
                ..message_of("assistant", content)
            });
        }
    }
}

/// A user message's content: a string when it is text alone, else parts
/// (tool results went as messages of their own).
fn user_content(parts: &[ContentPart]) -> WireContent<'_> {
    let rest = || {
        parts
            .iter()
            .filter(|p| !matches!(p, ContentPart::ToolResult(_)))
    };
    if rest().all(|p| p.as_text().is_some()) {
        return WireContent::Text(joined(parts));
    }
    WireContent::Parts(
        rest()
            .filter_map(|part| match part {
                ContentPart::Text(text) => Some(WirePart::Text { text }),
                ContentPart::Image(image) => Some(WirePart::ImageUrl {
                    image_url: image_url(image),
                }),
                _ => None,
            })
            .collect(),
    )
}

/// An image: its URL, or its bytes as a `data:` URL.
fn image_url(image: &Image) -> WireImage<'_> {
    let url = match &image.source {
        ImageSource::Url(url) => Cow::Borrowed(url.as_str()),
        ImageSource::Inline(i) => Cow::Owned(format!(
            "data:{};base64,{}",
            i.mime_type,
            STANDARD.encode(&i.data)
        )),
    };
    let detail = match image.detail {
        ImageDetail::Auto => "auto",
        ImageDetail::Low => "low",
        ImageDetail::High => "high",
    };
    WireImage { url, detail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialogue::model::{ToolCall, ToolResult};
    use serde_json::json;

    fn text(t: &str) -> ContentPart {
        ContentPart::Text(t.into())
    }

    #[test]
    fn a_single_text_is_borrowed_and_several_are_joined() {
        let one = [text("hello")];
        assert!(matches!(joined(&one), Cow::Borrowed("hello")));
        assert_eq!(joined(&[text("a"), text("b")]), "ab");
        assert_eq!(joined(&[]), "");
    }

    #[test]
    fn every_role_takes_the_openai_shape() {
        let prompt = vec![
            PromptMessage {
                role: Role::System,
                content: vec![text("be "), text("brief")].into(),
            },
            PromptMessage {
                role: Role::Assistant,
                content: vec![
                    text("checking"),
                    ContentPart::ToolCall(ToolCall {
                        id: "c1".into(),
                        name: "f".into(),
                        arguments: "{\"x\":1}".into(),
                    }),
                ]
                .into(),
            },
            PromptMessage {
                role: Role::Tool,
                content: vec![
                    ContentPart::ToolResult(ToolResult {
                        call_id: "c1".into(),
                        content: vec![text("boom")],
                        is_error: true,
                    }),
                    text("and also"),
                ]
                .into(),
            },
        ];
        assert_eq!(
            serde_json::to_value(messages(&prompt)).unwrap(),
            json!([
                {"role": "system", "content": "be brief"},
                {"role": "assistant", "content": "checking", "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}}
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "[error] boom"},
                {"role": "user", "content": "and also"},
            ])
        );
    }
}
