//! Builders and readers of rich turns for the tests: tools, tool results,
//! images, the calls of a turn, and a model served by a fake upstream of
//! either shape.

#![allow(dead_code)]

use crate::backends::{anthropic, openai, with_model};
use crate::upstream::FakeUpstream;
use dialogd::config::Settings;
use dialogd::pb::dialogue::v1 as pb;
use pb::content_part::Kind;
use serde_json::{Value, json};

/// The upstream shapes dialogd speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    OpenAi,
    Anthropic,
}

pub const SHAPES: [Shape; 2] = [Shape::OpenAi, Shape::Anthropic];

/// Model `m` on `fake`, spoken to in `shape`.
pub fn serve(s: &mut Settings, fake: &FakeUpstream, shape: Shape) {
    let backend = match shape {
        Shape::OpenAi => openai(fake, None),
        Shape::Anthropic => anthropic(fake, None),
    };
    with_model(s, vec![("up", backend)], &[("up", 1)]);
}

/// The settings of model `m` (see `serve`).
pub fn model_m(s: &mut Settings) -> &mut dialogd::config::ModelSettings {
    s.models
        .iter_mut()
        .find(|m| m.name == "m")
        .expect("model m")
}

pub fn json_struct(value: Value) -> pbjson_types::Struct {
    serde_json::from_value(value).expect("a JSON object")
}

pub fn weather_schema() -> Value {
    json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
}

pub fn tool(name: &str) -> pb::Tool {
    pb::Tool {
        name: name.into(),
        description: format!("{name} of a city"),
        parameters: Some(json_struct(weather_schema())),
        strict: false,
    }
}

/// Generation settings declaring `tools`.
pub fn with_tools(tools: &[&str]) -> pb::GenerationConfig {
    pb::GenerationConfig {
        tools: tools.iter().map(|t| tool(t)).collect(),
        ..Default::default()
    }
}

pub fn tool_result(call_id: &str, text: &str) -> pb::ContentPart {
    pb::ContentPart {
        kind: Some(Kind::ToolResult(pb::ToolResult {
            call_id: call_id.into(),
            content: vec![crate::helpers::text(text)],
            is_error: false,
        })),
    }
}

pub fn image_url(url: &str, detail: pb::ImageDetail) -> pb::ContentPart {
    pb::ContentPart {
        kind: Some(Kind::Image(pb::Image {
            source: Some(pb::image::Source::Url(url.into())),
            detail: detail as i32,
        })),
    }
}

pub fn inline_image(mime_type: &str, data: &[u8]) -> pb::ContentPart {
    pb::ContentPart {
        kind: Some(Kind::Image(pb::Image {
            source: Some(pb::image::Source::Inline(pb::InlineImage {
                mime_type: mime_type.into(),
                data: data.to_vec().into(),
                ..Default::default()
            })),
            detail: 0,
        })),
    }
}

/// A request of `parts` to dialogue `id` with `generation`.
pub fn request(
    id: &str,
    parts: Vec<pb::ContentPart>,
    generation: pb::GenerationConfig,
) -> pb::ConverseRequest {
    pb::ConverseRequest {
        name: crate::helpers::name(id),
        content: parts,
        generation: Some(generation),
        create_if_missing: true,
        ..Default::default()
    }
}

/// The tool calls of a turn, as (id, name, arguments).
pub fn calls_of(turn: &pb::Turn) -> Vec<(String, String, String)> {
    turn.content
        .iter()
        .filter_map(|p| match &p.kind {
            Some(Kind::ToolCall(c)) => Some((c.id.clone(), c.name.clone(), c.arguments.clone())),
            _ => None,
        })
        .collect()
}

/// The messages dialogd sent in the upstream request `body`, as (role,
/// what they hold) in the upstream's own shape.
pub fn forwarded(body: &Value) -> Vec<Value> {
    body["messages"].as_array().cloned().unwrap_or_default()
}
