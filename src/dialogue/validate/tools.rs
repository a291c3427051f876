//! Rules of tools, tool choice, response formats and log probabilities.

use crate::dialogue::model::{GenerationParams, ResponseFormat, ToolChoice};
use crate::failure::Violations;
use std::collections::HashSet;

const MAX_TOOLS: usize = 128;
const MAX_NAME_BYTES: usize = 64;
const MAX_DESCRIPTION_BYTES: usize = 4096;
const MAX_TOP_LOGPROBS: u32 = 20;
/// Largest JSON Schema (a tool's parameters, a response format's schema).
const MAX_SCHEMA_BYTES: usize = 64 * 1024;

fn check_schema(
    schema: &serde_json::Map<String, serde_json::Value>,
    field: String,
    v: &mut Violations,
) {
    let size = serde_json::to_string(schema).map_or(usize::MAX, |s| s.len());
    if size > MAX_SCHEMA_BYTES {
        v.add(
            field,
            format!("is {size} bytes as JSON; at most {MAX_SCHEMA_BYTES} are allowed"),
        );
    }
}

fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_BYTES).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks the tool and format settings of `params`.
pub fn check(params: &GenerationParams, v: &mut Violations) {
    if params.tools.len() > MAX_TOOLS {
        v.add(
            "generation.tools",
            format!("at most {MAX_TOOLS} tools are allowed"),
        );
    }
    let mut names = HashSet::new();
    for (i, tool) in params.tools.iter().enumerate() {
        let field = format!("generation.tools[{i}]");
        if !valid_name(&tool.name) {
            v.add(
                format!("{field}.name"),
                format!("must be 1 to {MAX_NAME_BYTES} of A-Z, a-z, 0-9, '_' and '-'"),
            );
        } else if !names.insert(tool.name.as_str()) {
            v.add(
                format!("{field}.name"),
                format!("{:?} is declared twice", tool.name),
            );
        }
        if tool.description.len() > MAX_DESCRIPTION_BYTES {
            v.add(
                format!("{field}.description"),
                format!("is longer than {MAX_DESCRIPTION_BYTES} bytes"),
            );
        }
        if let Some(parameters) = &tool.parameters {
            check_schema(parameters, format!("{field}.parameters"), v);
        }
    }
    if params.tools.is_empty() && params.parallel_tool_calls.is_some() {
        v.add("generation.parallel_tool_calls", "requires tools");
    }
    match &params.tool_choice {
        Some(_) if params.tools.is_empty() => v.add("generation.tool_choice", "requires tools"),
        Some(ToolChoice::Function(name)) if !names.contains(name.as_str()) => v.add(
            "generation.tool_choice",
            format!("names {name:?}, which is not one of the tools"),
        ),
        _ => {}
    }
    if let ResponseFormat::JsonSchema {
        name,
        schema,
        description,
        ..
    } = &params.response_format
    {
        if description.len() > MAX_DESCRIPTION_BYTES {
            v.add(
                "generation.response_format.json_schema.description",
                format!("is longer than {MAX_DESCRIPTION_BYTES} bytes"),
            );
        }
        if !valid_name(name) {
            v.add(
                "generation.response_format.json_schema.name",
                format!("must be 1 to {MAX_NAME_BYTES} of A-Z, a-z, 0-9, '_' and '-'"),
            );
        }
        check_schema(
            schema,
            "generation.response_format.json_schema.schema".into(),
            v,
        );
    }
    if let Some(n) = params.top_logprobs {
        if n > MAX_TOP_LOGPROBS {
            v.add(
                "generation.top_logprobs",
                format!("must be 0 to {MAX_TOP_LOGPROBS}"),
            );
        }
        if !params.logprobs {
            v.add("generation.top_logprobs", "requires logprobs");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::fields;
    use super::*;
    use crate::dialogue::model::ToolSpec;

    fn tool(name: &str) -> ToolSpec {
        ToolSpec {
            name: name.into(),
            description: String::new(),
            parameters: None,
            strict: false,
        }
    }

    #[test]
    fn tools_choices_formats_and_logprobs_are_checked() {
        let params = GenerationParams {
            tools: vec![tool("ok"), tool("ok"), tool("bad name")],
            tool_choice: Some(ToolChoice::Function("missing".into())),
            response_format: ResponseFormat::JsonSchema {
                name: String::new(),
                description: String::new(),
                schema: serde_json::Map::new(),
                strict: false,
            },
            top_logprobs: Some(21),
            ..Default::default()
        };
        let mut v = Violations::default();
        check(&params, &mut v);
        assert_eq!(
            fields(v),
            [
                "generation.tools[1].name",
                "generation.tools[2].name",
                "generation.tool_choice",
                "generation.response_format.json_schema.name",
                "generation.top_logprobs",
                "generation.top_logprobs"
            ]
        );
        let mut v = Violations::default();
        check(
            &GenerationParams {
                tools: vec![tool("lookup")],
                tool_choice: Some(ToolChoice::Function("lookup".into())),
                logprobs: true,
                top_logprobs: Some(3),
                ..Default::default()
            },
            &mut v,
        );
        assert!(fields(v).is_empty());
    }
}
