//! How both stores (sled and Redis) encode a turn: JSON led by its format
//! version, `{"v":2,"index":...}`.
//!
//! - Format 1 (no `v`, written before rich turns): text parts only.
//! - Format 2: parts of every kind (`dialogue::content`), inline image
//!   bytes in base64.
//!
//! Every format a release knows reads back; a turn of a newer format (a
//! later release's, after a rollback) is refused loudly as
//! `StoreError::Corrupt`, never misread or served without its new parts.

use crate::dialogue::model::Turn;
use crate::dialogue::ports::StoreError;

/// The format this release writes, and the newest it reads.
pub const TURN_FORMAT: u32 = 2;

const VERSION_PREFIX: &[u8] = b"{\"v\":";

pub fn encode_turn(turn: &Turn) -> Result<Vec<u8>, StoreError> {
    let json =
        serde_json::to_vec(turn).map_err(|e| StoreError::Io(format!("encoding a turn: {e}")))?;
    // A turn is a JSON object with at least one field: put `v` first.
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(VERSION_PREFIX);
    out.extend_from_slice(TURN_FORMAT.to_string().as_bytes());
    out.push(b',');
    out.extend_from_slice(json.get(1..).unwrap_or_default());
    Ok(out)
}

/// `encode_turn` as text (Redis values are strings).
pub fn encode_turn_text(turn: &Turn) -> Result<String, StoreError> {
    String::from_utf8(encode_turn(turn)?)
        .map_err(|e| StoreError::Io(format!("encoding a turn: {e}")))
}

/// Reads a turn of any format up to `TURN_FORMAT`; `what` names it in errors.
pub fn decode_turn(bytes: &[u8], what: &str) -> Result<Turn, StoreError> {
    let format = match bytes.strip_prefix(VERSION_PREFIX) {
        None => 1,
        Some(rest) => {
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            std::str::from_utf8(&rest[..digits])
                .ok()
                .and_then(|d| d.parse::<u32>().ok())
                .ok_or_else(|| StoreError::Corrupt(format!("{what}: unreadable format version")))?
        }
    };
    if format > TURN_FORMAT {
        return Err(StoreError::Corrupt(format!(
            "{what} is in format {format}, written by a newer release; this release reads formats up to {TURN_FORMAT}"
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialogue::model::{
        ContentPart, Image, ImageDetail, ImageSource, InlineImage, Role, Time, ToolCall, ToolResult,
    };

    fn rich_turn() -> Turn {
        Turn {
            index: 3,
            role: Role::Tool,
            content: vec![
                ContentPart::ToolResult(ToolResult {
                    call_id: "call_1".into(),
                    content: vec![ContentPart::Text("18C".into())],
                    is_error: false,
                }),
                ContentPart::Image(Image {
                    source: ImageSource::Inline(InlineImage {
                        mime_type: "image/png".into(),
                        data: bytes::Bytes::from_static(&[0x89, b'P', b'N', b'G', 0, 255]),
                    }),
                    detail: ImageDetail::High,
                }),
                ContentPart::ToolCall(ToolCall {
                    id: "c".into(),
                    name: "f".into(),
                    arguments: "{\"a\": [1, 2]}".into(),
                }),
            ],
            create_time: Time(5),
            finish_reason: None,
            model: String::new(),
            usage: None,
            request_id: None,
            tokens: 9,
            summary: None,
            added: false,
            rule: None,
        }
    }

    #[test]
    fn a_rich_turn_reads_back_as_written() {
        let turn = rich_turn();
        let bytes = encode_turn(&turn).unwrap();
        assert!(bytes.starts_with(b"{\"v\":2,\"index\":3"));
        assert_eq!(decode_turn(&bytes, "turn").unwrap(), turn);
    }

    #[test]
    fn a_format_1_turn_still_reads() {
        let old =
            br#"{"index":0,"role":"user","content":[{"text":"hi"}],"create_time":7,"tokens":1}"#;
        let turn = decode_turn(old, "turn").unwrap();
        assert_eq!(turn.content, [ContentPart::Text("hi".into())]);
    }

    #[test]
    fn a_newer_format_is_refused_not_misread() {
        let newer = br#"{"v":3,"index":0,"role":"user","content":[{"text":"hi"}],"create_time":7}"#;
        let err = decode_turn(newer, "turn 0").unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt(m) if m.contains("format 3")),
            "{err:?}"
        );
        // An unknown part kind of the same format is refused too.
        let unknown =
            br#"{"v":2,"index":0,"role":"user","content":[{"audio":{}}],"create_time":7}"#;
        assert!(decode_turn(unknown, "turn 0").is_err());
    }
}
