//! The request body of Anthropic's Messages API, from a model call: the
//! system text apart, user and assistant messages alternating, images as
//! image blocks, tool calls as `tool_use` and results as `tool_result`
//! blocks, tools with their `input_schema`.

use super::wire_messages::{WireMessage, to_messages};
use crate::backend::{ModelRequest, RequestBody};
use crate::dialogue::model::{ResponseFormat, ToolChoice};
use serde_json::{Map, Value, json};

/// The body of `POST /v1/messages`: the messages serialized from the
/// prompt where it is (`wire_messages`), then the call's settings.
pub type Body<'a> = RequestBody<Vec<WireMessage<'a>>>;

/// The body of `POST /v1/messages` for `model`.
pub fn body<'a>(
    model: &str,
    request: &'a ModelRequest,
    default_max_tokens: u32,
    stream: bool,
) -> Body<'a> {
    let (mut system, messages) = to_messages(&request.messages);
    let p = &request.params;
    // Anthropic has no JSON response format: its documented way is to ask.
    match &p.response_format {
        ResponseFormat::Text => {}
        ResponseFormat::JsonObject => {
            system.push("Reply with a single JSON object and nothing else.".into())
        }
        ResponseFormat::JsonSchema {
            schema,
            description,
            ..
        } => {
            let purpose = match description.as_str() {
                "" => String::new(),
                d => format!(" (the reply is {d})"),
            };
            system.push(format!(
                "Reply with a single JSON object matching this JSON Schema{purpose}, and nothing else: {}",
                Value::Object(schema.clone())
            ))
        }
    }
    let mut body = json!({
        "model": model,
        "max_tokens": p.max_tokens.unwrap_or(default_max_tokens),
        "stream": stream,
    });
    if !system.is_empty() {
        body["system"] = Value::from(system.join("\n\n"));
    }
    if let Some(t) = p.temperature {
        // Anthropic's range is 0 to 1.
        body["temperature"] = Value::from(t.min(1.0));
    }
    if let Some(top_p) = p.top_p {
        body["top_p"] = Value::from(top_p);
    }
    if !p.stop.is_empty() {
        body["stop_sequences"] = Value::from(p.stop.clone());
    }
    if !p.tools.is_empty() {
        let tools: Vec<Value> = p
            .tools
            .iter()
            .map(|t| {
                let schema = t.parameters.clone().unwrap_or_else(|| {
                    Map::from_iter([("type".to_owned(), Value::from("object"))])
                });
                json!({ "name": t.name, "description": t.description, "input_schema": schema })
            })
            .collect();
        body["tools"] = Value::Array(tools);
    }
    let mut choice = match &p.tool_choice {
        None => None,
        Some(ToolChoice::Auto) => Some(json!({ "type": "auto" })),
        Some(ToolChoice::None) => Some(json!({ "type": "none" })),
        Some(ToolChoice::Required) => Some(json!({ "type": "any" })),
        Some(ToolChoice::Function(name)) => Some(json!({ "type": "tool", "name": name })),
    };
    if p.parallel_tool_calls == Some(false) && !p.tools.is_empty() {
        let c = choice.get_or_insert_with(|| json!({ "type": "auto" }));
        c["disable_parallel_tool_use"] = Value::Bool(true);
    }
    if let Some(choice) = choice.filter(|_| !p.tools.is_empty()) {
        body["tool_choice"] = choice;
    }
    let settings = match body {
        Value::Object(settings) => settings,
        _ => Map::new(),
    };
    RequestBody { messages, settings }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialogue::model::{
        ContentPart, GenerationParams, PromptMessage, Role, ToolCall, ToolResult, ToolSpec,
    };

    fn body(model: &str, request: &ModelRequest, max_tokens: u32, stream: bool) -> Value {
        serde_json::to_value(super::body(model, request, max_tokens, stream)).unwrap()
    }

    fn msg(role: Role, text: &str) -> PromptMessage {
        PromptMessage::text(role, text)
    }

    #[test]
    fn messages_alternate_and_start_with_the_user() {
        let prompt = [
            msg(Role::System, "be brief"),
            msg(Role::Assistant, "orphan reply"),
            msg(Role::User, "a"),
            msg(Role::User, "b"),
            msg(Role::Assistant, "c"),
            msg(Role::System, "summary so far"),
            msg(Role::User, "d"),
        ];
        let (system, messages) = to_messages(&prompt);
        assert_eq!(system.join("\n\n"), "be brief\n\nsummary so far");
        let messages = serde_json::to_value(messages).unwrap();
        let messages = messages.as_array().unwrap();
        let roles: Vec<_> = messages
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["user", "assistant", "user"]);
        assert_eq!(
            messages[0]["content"],
            json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])
        );
    }

    #[test]
    fn tool_use_results_and_tools_take_anthropic_shapes() {
        let request = ModelRequest {
            messages: vec![
                msg(Role::User, "weather?"),
                PromptMessage {
                    role: Role::Assistant,
                    content: vec![ContentPart::ToolCall(ToolCall {
                        id: "t1".into(),
                        name: "weather".into(),
                        arguments: r#"{"city":"Paris"}"#.into(),
                    })]
                    .into(),
                },
                PromptMessage {
                    role: Role::Tool,
                    content: vec![ContentPart::ToolResult(ToolResult {
                        call_id: "t1".into(),
                        content: vec![ContentPart::Text("sunny".into())],
                        is_error: false,
                    })]
                    .into(),
                },
            ],
            params: GenerationParams {
                tools: vec![ToolSpec {
                    name: "weather".into(),
                    description: "forecast".into(),
                    parameters: None,
                    strict: false,
                }],
                tool_choice: Some(ToolChoice::Required),
                parallel_tool_calls: Some(false),
                ..Default::default()
            },
        };
        let body = body("claude", &request, 100, false);
        let m = &body["messages"];
        assert_eq!(m[1]["content"][0]["input"], json!({"city": "Paris"}));
        assert_eq!(m[2]["role"], "user");
        assert_eq!(m[2]["content"][0]["tool_use_id"], "t1");
        assert_eq!(m[2]["content"][0]["content"][0]["text"], "sunny");
        assert_eq!(body["tools"][0]["input_schema"], json!({"type": "object"}));
        assert_eq!(
            body["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
    }
}
