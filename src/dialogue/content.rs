//! What a turn holds: ordered parts — text, images, the model's tool calls
//! and the caller's tool results. Every front and backend translates to and
//! from these; nothing is dropped on the way.
//!
//! Stored as JSON, each part tagged by its kind (`{"text": ...}`,
//! `{"image": ...}`, `{"tool_call": ...}`, `{"tool_result": ...}`), inline
//! image bytes in base64: turns written before parts other than text
//! existed read back unchanged, and a kind added later is a new tag.

use super::tokenizer::count_tokens;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One piece of a message's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentPart {
    Text(String),
    Image(Image),
    /// The model asks the caller to run a tool.
    ToolCall(ToolCall),
    /// The caller's answer to a tool call.
    ToolResult(ToolResult),
}

/// An image, by URL or inline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    pub source: ImageSource,
    #[serde(default, skip_serializing_if = "ImageDetail::is_auto")]
    pub detail: ImageDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageSource {
    /// An `https` or `http` URL the model fetches.
    Url(String),
    Inline(InlineImage),
}

/// An image's bytes, kept with the turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InlineImage {
    /// `image/png`, `image/jpeg`, `image/gif` or `image/webp`.
    pub mime_type: String,
    #[serde(with = "base64_bytes")]
    pub data: Bytes,
}

/// How closely the model looks at an image (and what it costs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageDetail {
    #[default]
    Auto,
    Low,
    High,
}

impl ImageDetail {
    fn is_auto(&self) -> bool {
        *self == ImageDetail::Auto
    }
}

/// A call of one of the request's tools, as the model wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The model's ID of the call; a result names it.
    pub id: String,
    pub name: String,
    /// The arguments as a JSON text, exactly as the model wrote it.
    pub arguments: String,
}

/// What a tool returned, for the call it answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolResult {
    pub call_id: String,
    /// Text and image parts.
    pub content: Vec<ContentPart>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
}

/// Tokens an image costs in a prompt, estimated as OpenAI bills them: 85
/// at low detail; otherwise 85 plus 170 per 512-pixel tile of the image
/// scaled into 768 x 2048, taken as 4 tiles (a 1024 x 1024 image) since
/// dialogd does not decode images.
pub const LOW_DETAIL_IMAGE_TOKENS: u64 = 85;
pub const IMAGE_TOKENS: u64 = 85 + 4 * 170;

impl ContentPart {
    pub fn as_text(&self) -> Option<&str> {
        match self {
            ContentPart::Text(t) => Some(t),
            _ => None,
        }
    }

    /// The part as a transcript line: what summaries and token estimates see.
    fn transcribe(&self, out: &mut String) {
        match self {
            ContentPart::Text(t) => out.push_str(t),
            ContentPart::Image(image) => match &image.source {
                ImageSource::Url(url) => out.push_str(&format!("[image {url}]")),
                ImageSource::Inline(i) => {
                    out.push_str(&format!("[image {}, {} bytes]", i.mime_type, i.data.len()))
                }
            },
            ContentPart::ToolCall(call) => out.push_str(&format!(
                "[call {} {}({})]",
                call.id, call.name, call.arguments
            )),
            ContentPart::ToolResult(result) => {
                let status = if result.is_error {
                    "failed"
                } else {
                    "returned"
                };
                out.push_str(&format!("[call {} {status}: ", result.call_id));
                for part in &result.content {
                    part.transcribe(out);
                }
                out.push(']');
            }
        }
    }
}

/// The text parts joined: what the model said or was told in words.
pub fn join_text(parts: &[ContentPart]) -> String {
    parts.iter().filter_map(ContentPart::as_text).collect()
}

/// `join_text`, borrowed when there is one text part (the usual case):
/// for writing a message out without copying it.
pub fn joined_text(parts: &[ContentPart]) -> std::borrow::Cow<'_, str> {
    let mut texts = parts.iter().filter_map(ContentPart::as_text);
    match (texts.next(), texts.next()) {
        (None, _) => std::borrow::Cow::Borrowed(""),
        (Some(only), None) => std::borrow::Cow::Borrowed(only),
        (Some(_), Some(_)) => std::borrow::Cow::Owned(join_text(parts)),
    }
}

/// Every part as text (images, tool calls and results as bracketed notes):
/// what a summary keeps of tool activity, and what is counted as text.
pub fn transcript(parts: &[ContentPart]) -> String {
    let mut out = String::new();
    for part in parts {
        if !out.is_empty() && !matches!(part, ContentPart::Text(_)) {
            out.push('\n');
        }
        part.transcribe(&mut out);
    }
    out
}

/// The images of `parts`, those inside tool results included.
pub fn images(parts: &[ContentPart]) -> Vec<&Image> {
    let mut found = Vec::new();
    for part in parts {
        match part {
            ContentPart::Image(image) => found.push(image),
            ContentPart::ToolResult(result) => found.extend(images(&result.content)),
            _ => {}
        }
    }
    found
}

/// Bytes of the inline images of `parts`.
pub fn media_bytes(parts: &[ContentPart]) -> u64 {
    images(parts)
        .iter()
        .map(|image| match &image.source {
            ImageSource::Inline(i) => i.data.len() as u64,
            ImageSource::Url(_) => 0,
        })
        .sum()
}

/// Bytes `parts` take in an answer: text, tool calls and results, and
/// with `media` the inline images' bytes.
pub fn answer_bytes(parts: &[ContentPart], media: bool) -> usize {
    let images = if media {
        media_bytes(parts) as usize
    } else {
        0
    };
    transcript_without_images(parts).len() + images
}

/// Every text a content filter reads in `parts`: text parts, tool call
/// arguments and the text of tool results.
pub fn filtered_texts(parts: &[ContentPart]) -> Vec<&str> {
    let mut texts = Vec::new();
    for part in parts {
        match part {
            ContentPart::Text(t) => texts.push(t.as_str()),
            ContentPart::ToolCall(call) => texts.push(call.arguments.as_str()),
            ContentPart::ToolResult(result) => texts.extend(filtered_texts(&result.content)),
            ContentPart::Image(_) => {}
        }
    }
    texts
}

/// The tool calls of `parts`.
pub fn tool_calls(parts: &[ContentPart]) -> impl Iterator<Item = &ToolCall> {
    parts.iter().filter_map(|p| match p {
        ContentPart::ToolCall(call) => Some(call),
        _ => None,
    })
}

/// The tool results of `parts`.
pub fn tool_results(parts: &[ContentPart]) -> impl Iterator<Item = &ToolResult> {
    parts.iter().filter_map(|p| match p {
        ContentPart::ToolResult(result) => Some(result),
        _ => None,
    })
}

/// Tokens `parts` take in a prompt: their transcript's, images at their
/// estimate (see `IMAGE_TOKENS`) instead of their note.
pub fn estimate_tokens(parts: &[ContentPart]) -> u64 {
    count_tokens(&transcript_without_images(parts)) + image_tokens(parts)
}

/// An upper bound of `estimate_tokens` without tokenizing: every token
/// covers at least one byte of the transcript.
pub fn tokens_at_most(parts: &[ContentPart]) -> u64 {
    transcript_without_images(parts).len() as u64 + image_tokens(parts)
}

/// The images' estimate (see `IMAGE_TOKENS`).
fn image_tokens(parts: &[ContentPart]) -> u64 {
    images(parts)
        .iter()
        .map(|image| match image.detail {
            ImageDetail::Low => LOW_DETAIL_IMAGE_TOKENS,
            ImageDetail::Auto | ImageDetail::High => IMAGE_TOKENS,
        })
        .sum()
}

fn transcript_without_images(parts: &[ContentPart]) -> String {
    let mut out = String::new();
    for part in parts {
        match part {
            ContentPart::Image(_) => {}
            ContentPart::ToolResult(result) => {
                out.push_str(&result.call_id);
                out.push_str(&transcript_without_images(&result.content));
            }
            other => other.transcribe(&mut out),
        }
    }
    out
}

/// Inline image bytes as base64 text in stored JSON.
mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(data))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        STANDARD
            .decode(text.as_bytes())
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inline(bytes: &[u8]) -> ContentPart {
        ContentPart::Image(Image {
            source: ImageSource::Inline(InlineImage {
                mime_type: "image/png".into(),
                data: Bytes::copy_from_slice(bytes),
            }),
            detail: ImageDetail::Low,
        })
    }

    #[test]
    fn parts_round_trip_through_their_stored_form_and_old_turns_still_read() {
        let parts = vec![
            ContentPart::Text("look".into()),
            inline(&[1, 2, 3]),
            ContentPart::ToolCall(ToolCall {
                id: "call_1".into(),
                name: "weather".into(),
                arguments: r#"{"city":"Paris"}"#.into(),
            }),
            ContentPart::ToolResult(ToolResult {
                call_id: "call_1".into(),
                content: vec![ContentPart::Text("sunny".into())],
                is_error: false,
            }),
        ];
        let json = serde_json::to_string(&parts).unwrap();
        assert!(json.contains(r#""data":"AQID""#), "{json}");
        assert_eq!(
            serde_json::from_str::<Vec<ContentPart>>(&json).unwrap(),
            parts
        );
        // What a text-only release wrote.
        let old: Vec<ContentPart> = serde_json::from_str(r#"[{"text":"hi"}]"#).unwrap();
        assert_eq!(old, [ContentPart::Text("hi".into())]);
    }

    #[test]
    fn media_bytes_tool_activity_and_estimates_see_every_part() {
        let result = ContentPart::ToolResult(ToolResult {
            call_id: "c".into(),
            content: vec![ContentPart::Text("done".into()), inline(&[0; 10])],
            is_error: true,
        });
        let parts = vec![inline(&[0; 5]), result];
        assert_eq!(media_bytes(&parts), 15);
        assert_eq!(images(&parts).len(), 2);
        let text = transcript(&parts);
        assert!(text.contains("[call c failed: done"), "{text}");
        assert!(estimate_tokens(&parts) >= 2 * LOW_DETAIL_IMAGE_TOKENS);
        assert_eq!(join_text(&parts), "");
    }
}
