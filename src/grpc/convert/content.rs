//! Content parts between protobuf and the domain: text, images (inline
//! bytes left out of BASIC reads), tool calls and tool results.

use crate::dialogue::model::{
    ContentPart, Image, ImageDetail, ImageSource, InlineImage, ToolCall, ToolResult, TurnView,
};
use crate::failure::Violations;
use crate::grpc::pb::dialogue::v1 as pb;
use pb::content_part::Kind;
use sha2::{Digest, Sha256};

/// Parts of a request's `path` (e.g. `content`); shape errors go to `v`.
pub fn content_from_pb(
    parts: Vec<pb::ContentPart>,
    path: &str,
    v: &mut Violations,
) -> Vec<ContentPart> {
    parts
        .into_iter()
        .enumerate()
        .filter_map(|(i, part)| part_from_pb(part, &format!("{path}[{i}]"), v))
        .collect()
}

fn part_from_pb(part: pb::ContentPart, field: &str, v: &mut Violations) -> Option<ContentPart> {
    match part.kind {
        Some(Kind::Text(text)) => Some(ContentPart::Text(text)),
        Some(Kind::Image(image)) => {
            image_from_pb(image, &format!("{field}.image"), v).map(ContentPart::Image)
        }
        Some(Kind::ToolCall(call)) => Some(ContentPart::ToolCall(ToolCall {
            id: call.id,
            name: call.name,
            arguments: call.arguments,
        })),
        Some(Kind::ToolResult(result)) => {
            let inner = format!("{field}.tool_result.content");
            if result.content.is_empty() {
                v.add(&inner, "must have at least one part");
            }
            Some(ContentPart::ToolResult(ToolResult {
                call_id: result.call_id,
                content: content_from_pb(result.content, &inner, v),
                is_error: result.is_error,
            }))
        }
        None => {
            v.add(field, "has no content set");
            None
        }
    }
}

fn image_from_pb(image: pb::Image, field: &str, v: &mut Violations) -> Option<Image> {
    let detail = match image.detail() {
        pb::ImageDetail::Unspecified => ImageDetail::Auto,
        pb::ImageDetail::Low => ImageDetail::Low,
        pb::ImageDetail::High => ImageDetail::High,
    };
    let source = match image.source {
        Some(pb::image::Source::Url(url)) => ImageSource::Url(url),
        Some(pb::image::Source::Inline(inline)) => {
            // Output-only fields a client copies from a read must match.
            if inline.size_bytes != 0 && inline.size_bytes != inline.data.len() as i64 {
                v.add(
                    format!("{field}.inline.size_bytes"),
                    "does not match the size of data",
                );
            }
            if !inline.sha256.is_empty()
                && !inline
                    .sha256
                    .eq_ignore_ascii_case(&sha256_hex(&inline.data))
            {
                v.add(
                    format!("{field}.inline.sha256"),
                    "does not match the SHA-256 of data",
                );
            }
            ImageSource::Inline(InlineImage {
                mime_type: inline.mime_type,
                data: inline.data,
            })
        }
        None => {
            v.add(format!("{field}.source"), "needs a url or inline bytes");
            return None;
        }
    };
    Some(Image { source, detail })
}

pub fn content_to_pb(parts: &[ContentPart], view: TurnView) -> Vec<pb::ContentPart> {
    parts
        .iter()
        .map(|part| pb::ContentPart {
            kind: Some(part_to_pb(part, view)),
        })
        .collect()
}

fn part_to_pb(part: &ContentPart, view: TurnView) -> Kind {
    match part {
        ContentPart::Text(text) => Kind::Text(text.clone()),
        ContentPart::Image(image) => Kind::Image(image_to_pb(image, view)),
        ContentPart::ToolCall(call) => Kind::ToolCall(pb::ToolCall {
            id: call.id.clone(),
            name: call.name.clone(),
            arguments: call.arguments.clone(),
        }),
        ContentPart::ToolResult(result) => Kind::ToolResult(pb::ToolResult {
            call_id: result.call_id.clone(),
            content: content_to_pb(&result.content, view),
            is_error: result.is_error,
        }),
    }
}

fn image_to_pb(image: &Image, view: TurnView) -> pb::Image {
    let detail = match image.detail {
        ImageDetail::Auto => pb::ImageDetail::Unspecified,
        ImageDetail::Low => pb::ImageDetail::Low,
        ImageDetail::High => pb::ImageDetail::High,
    };
    let source = match &image.source {
        ImageSource::Url(url) => pb::image::Source::Url(url.clone()),
        ImageSource::Inline(inline) => pb::image::Source::Inline(pb::InlineImage {
            mime_type: inline.mime_type.clone(),
            data: match view {
                TurnView::Full => inline.data.clone(),
                TurnView::Basic => bytes::Bytes::new(),
            },
            size_bytes: i64::try_from(inline.data.len()).unwrap_or(i64::MAX),
            sha256: sha256_hex(&inline.data),
        }),
    };
    pb::Image {
        source: Some(source),
        detail: detail as i32,
    }
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
