//! A `GenerationConfig` into generation parameters: sampling, cache,
//! tools, tool choice, response format and log probabilities. Shapes are
//! checked here (a schema that is not JSON, a oneof left empty); the
//! engine checks the rules.

use super::json::object_from_pb;
use crate::dialogue::model::{CachePolicy, GenerationParams, ResponseFormat, ToolChoice, ToolSpec};
use crate::failure::Violations;
use crate::grpc::pb::dialogue::v1 as pb;

pub fn params_from_pb(g: Option<pb::GenerationConfig>, v: &mut Violations) -> GenerationParams {
    let g = g.unwrap_or_default();
    let cache = match g.cache() {
        pb::CachePolicy::Unspecified => CachePolicy::Deterministic,
        pb::CachePolicy::Use => CachePolicy::Use,
        pb::CachePolicy::Bypass => CachePolicy::Bypass,
    };
    let tools = g
        .tools
        .into_iter()
        .enumerate()
        .map(|(i, tool)| ToolSpec {
            name: tool.name,
            description: tool.description,
            parameters: tool.parameters.and_then(|p| {
                object_from_pb(p, 1)
                    .map_err(|e| v.add(format!("generation.tools[{i}].parameters"), e))
                    .ok()
            }),
            strict: tool.strict,
        })
        .collect();
    GenerationParams {
        model: g.model.filter(|m| !m.is_empty()),
        temperature: g.temperature,
        top_p: g.top_p,
        // Negative values become 0, which the engine rejects with the field.
        max_tokens: g.max_tokens.map(|m| u32::try_from(m).unwrap_or(0)),
        stop: g.stop,
        presence_penalty: g.presence_penalty,
        frequency_penalty: g.frequency_penalty,
        seed: g.seed,
        cache,
        tools,
        tool_choice: g.tool_choice.and_then(|c| tool_choice_from_pb(c, v)),
        parallel_tool_calls: g.parallel_tool_calls,
        response_format: g
            .response_format
            .map_or(ResponseFormat::Text, |f| response_format_from_pb(f, v)),
        logprobs: g.logprobs,
        // Out of range becomes 21, which the engine rejects with the field.
        top_logprobs: g.top_logprobs.map(|n| u32::try_from(n).unwrap_or(21)),
    }
}

fn tool_choice_from_pb(choice: pb::ToolChoice, v: &mut Violations) -> Option<ToolChoice> {
    use pb::tool_choice::Choice;
    let field = "generation.tool_choice";
    match choice.choice {
        Some(Choice::Auto(true)) => Some(ToolChoice::Auto),
        Some(Choice::None(true)) => Some(ToolChoice::None),
        Some(Choice::Required(true)) => Some(ToolChoice::Required),
        Some(Choice::Function(name)) if !name.is_empty() => Some(ToolChoice::Function(name)),
        Some(Choice::Function(_)) => {
            v.add(format!("{field}.function"), "must name a tool");
            None
        }
        Some(Choice::Auto(false) | Choice::None(false) | Choice::Required(false)) | None => {
            v.add(field, "set one of auto, none, required (true) or function");
            None
        }
    }
}

fn response_format_from_pb(format: pb::ResponseFormat, v: &mut Violations) -> ResponseFormat {
    use pb::response_format::Format;
    let field = "generation.response_format";
    match format.format {
        Some(Format::Text(true)) | None => ResponseFormat::Text,
        Some(Format::JsonObject(true)) => ResponseFormat::JsonObject,
        Some(Format::JsonSchema(schema)) => {
            let body = match schema.schema.map(|s| object_from_pb(s, 1)) {
                Some(Ok(body)) => body,
                Some(Err(e)) => {
                    v.add(format!("{field}.json_schema.schema"), e);
                    Default::default()
                }
                None => {
                    v.add(format!("{field}.json_schema.schema"), "is required");
                    Default::default()
                }
            };
            ResponseFormat::JsonSchema {
                name: schema.name,
                description: schema.description,
                schema: body,
                strict: schema.strict,
            }
        }
        Some(Format::Text(false) | Format::JsonObject(false)) => {
            v.add(
                field,
                "set one of text or json_object (true), or json_schema",
            );
            ResponseFormat::Text
        }
    }
}
