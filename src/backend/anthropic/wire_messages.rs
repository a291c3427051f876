//! A prompt's messages in Anthropic's shape, serialized straight from the
//! prompt: texts, ids and image URLs are borrowed, so a long dialogue's
//! history goes into the request body without being copied first.

use crate::dialogue::model::{ContentPart, Image, ImageSource, PromptMessage, Role};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde_json::{Value, json};

/// One Anthropic message: a role and its content blocks.
#[derive(Serialize)]
pub struct WireMessage<'a> {
    role: &'static str,
    content: Vec<Block<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: &'a str,
    },
    Image {
        source: ImageBlockSource<'a>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        /// Parsed from the call's arguments (small): Anthropic wants an
        /// object.
        input: Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: Vec<Block<'a>>,
        is_error: bool,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageBlockSource<'a> {
    Url { url: &'a str },
    Base64 { media_type: &'a str, data: String },
}

fn image_block(image: &Image) -> Block<'_> {
    let source = match &image.source {
        ImageSource::Url(url) => ImageBlockSource::Url { url },
        ImageSource::Inline(i) => ImageBlockSource::Base64 {
            media_type: &i.mime_type,
            data: STANDARD.encode(&i.data),
        },
    };
    Block::Image { source }
}

/// A content part as a block (`None` for parts that are not blocks).
fn block(part: &ContentPart) -> Option<Block<'_>> {
    Some(match part {
        ContentPart::Text(text) if text.is_empty() => return None,
        ContentPart::Text(text) => Block::Text { text },
        ContentPart::Image(image) => image_block(image),
        ContentPart::ToolCall(call) => {
            // `input` is an object; arguments that are not one travel as text.
            let input = match serde_json::from_str::<Value>(&call.arguments) {
                Ok(Value::Object(object)) => Value::Object(object),
                _ => json!({ "arguments": call.arguments }),
            };
            Block::ToolUse {
                id: &call.id,
                name: &call.name,
                input,
            }
        }
        ContentPart::ToolResult(result) => Block::ToolResult {
            tool_use_id: &result.call_id,
            content: result.content.iter().filter_map(block).collect(),
            is_error: result.is_error,
        },
    })
}

/// Anthropic wants the system text apart and user/assistant messages that
/// alternate, starting with the user: system turns join the system text,
/// tool results are the user's, neighbours of one role are merged, a
/// leading reply is dropped.
pub fn to_messages(prompt: &[PromptMessage]) -> (Vec<String>, Vec<WireMessage<'_>>) {
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<WireMessage> = Vec::new();
    for m in prompt {
        let role = match m.role {
            Role::System => {
                system.push(m.joined_text());
                continue;
            }
            Role::User | Role::Tool => "user",
            Role::Assistant => "assistant",
        };
        let parts: &[ContentPart] = &m.content;
        let is_result = |p: &&ContentPart| matches!(p, ContentPart::ToolResult(_));
        // Tool results come first in a user message.
        let mut blocks: Vec<Block> = parts
            .iter()
            .filter(is_result)
            .chain(parts.iter().filter(|p| !is_result(p)))
            .filter_map(block)
            .collect();
        match messages.last_mut() {
            Some(last) if last.role == role => last.content.append(&mut blocks),
            None if role == "assistant" => {}
            _ => messages.push(WireMessage {
                role,
                content: blocks,
            }),
        }
    }
    (system, messages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialogue::model::{ImageDetail, InlineImage};

    #[test]
    fn images_go_as_url_or_base64_blocks_and_empty_texts_are_left_out() {
        let image = |source| {
            ContentPart::Image(Image {
                source,
                detail: ImageDetail::Auto,
            })
        };
        let prompt = [PromptMessage {
            role: Role::User,
            content: vec![
                ContentPart::Text(String::new()),
                image(ImageSource::Url("https://example.com/a.png".into())),
                image(ImageSource::Inline(InlineImage {
                    mime_type: "image/png".into(),
                    data: bytes::Bytes::from_static(&[1, 2, 3]),
                })),
            ]
            .into(),
        }];
        let (_, messages) = to_messages(&prompt);
        assert_eq!(
            serde_json::to_value(messages).unwrap(),
            json!([{"role": "user", "content": [
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AQID"}},
            ]}])
        );
    }
}
