//! The request body of OpenAI's chat completions, from a model call:
//! messages with image parts, assistant tool calls and tool results, and
//! the tools, tool choice, response format and log-probability settings.

use super::wire_messages::{WireMessage, messages};
use crate::backend::{ModelRequest, RequestBody};
use crate::dialogue::model::{ResponseFormat, ToolChoice};
use serde_json::{Map, Value, json};

/// The body of `POST {chat_path}`: the messages serialized from the
/// prompt where it is (`wire_messages`), then the call's settings.
pub type Body<'a> = RequestBody<Vec<WireMessage<'a>>>;

/// The body of `POST {chat_path}` for `model`.
pub fn body<'a>(model: &str, request: &'a ModelRequest, stream: bool) -> Body<'a> {
    let mut settings = settings(request, stream);
    settings.insert("model".into(), Value::from(model));
    settings.insert("stream".into(), Value::Bool(stream));
    RequestBody {
        messages: messages(&request.messages),
        settings,
    }
}

/// The call's settings that are set (small: no history in them).
fn settings(request: &ModelRequest, stream: bool) -> Map<String, Value> {
    let p = &request.params;
    let tools: Vec<Value> = p
        .tools
        .iter()
        .map(|t| {
            let mut function = json!({ "name": t.name });
            if !t.description.is_empty() {
                function["description"] = Value::from(t.description.clone());
            }
            if let Some(parameters) = &t.parameters {
                function["parameters"] = Value::Object(parameters.clone());
            }
            if t.strict {
                function["strict"] = Value::Bool(true);
            }
            json!({ "type": "function", "function": function })
        })
        .collect();
    let fields = [
        ("temperature", p.temperature.map(Value::from)),
        ("top_p", p.top_p.map(Value::from)),
        ("max_tokens", p.max_tokens.map(Value::from)),
        ("presence_penalty", p.presence_penalty.map(Value::from)),
        ("frequency_penalty", p.frequency_penalty.map(Value::from)),
        ("seed", p.seed.map(Value::from)),
        (
            "stop",
            (!p.stop.is_empty()).then(|| Value::from(p.stop.clone())),
        ),
        ("tools", (!tools.is_empty()).then_some(Value::Array(tools))),
        ("tool_choice", p.tool_choice.as_ref().map(tool_choice)),
        (
            "parallel_tool_calls",
            p.parallel_tool_calls.map(Value::Bool),
        ),
        ("response_format", response_format(&p.response_format)),
        ("logprobs", p.logprobs.then_some(Value::Bool(true))),
        (
            "top_logprobs",
            p.top_logprobs.filter(|_| p.logprobs).map(Value::from),
        ),
        (
            "stream_options",
            stream.then(|| json!({ "include_usage": true })),
        ),
    ];
    fields
        .into_iter()
        .filter_map(|(key, value)| Some((key.to_owned(), value?)))
        .collect()
}

fn tool_choice(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => Value::from("auto"),
        ToolChoice::None => Value::from("none"),
        ToolChoice::Required => Value::from("required"),
        ToolChoice::Function(name) => json!({ "type": "function", "function": { "name": name } }),
    }
}

fn response_format(format: &ResponseFormat) -> Option<Value> {
    match format {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some(json!({ "type": "json_object" })),
        ResponseFormat::JsonSchema {
            name,
            description,
            schema,
            strict,
        } => {
            let mut format = json!({ "name": name, "schema": schema, "strict": strict });
            if !description.is_empty() {
                format["description"] = Value::from(description.clone());
            }
            Some(json!({ "type": "json_schema", "json_schema": format }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialogue::model::{
        ContentPart, GenerationParams, Image, ImageDetail, ImageSource, InlineImage, PromptMessage,
        Role, ToolCall, ToolResult, ToolSpec,
    };

    fn body(model: &str, request: &ModelRequest, stream: bool) -> Value {
        serde_json::to_value(super::body(model, request, stream)).unwrap()
    }

    #[test]
    fn the_body_carries_messages_and_only_the_set_parameters() {
        let request = ModelRequest {
            messages: vec![
                PromptMessage::text(Role::System, "sys"),
                PromptMessage::text(Role::User, "hi"),
            ],
            params: GenerationParams {
                temperature: Some(0.5),
                stop: vec!["END".into()],
                ..Default::default()
            },
        };
        let body = body("gpt-x", &request, true);
        assert_eq!(body["model"], "gpt-x");
        assert_eq!(
            body["messages"][0],
            json!({"role": "system", "content": "sys"})
        );
        assert_eq!(
            body["messages"][1],
            json!({"role": "user", "content": "hi"})
        );
        assert_eq!(body["temperature"], 0.5);
        assert_eq!(body["stop"], json!(["END"]));
        assert_eq!(body["stream_options"]["include_usage"], true);
        for unset in [
            "max_tokens",
            "seed",
            "tools",
            "tool_choice",
            "response_format",
            "logprobs",
        ] {
            assert!(body.get(unset).is_none(), "{unset}");
        }
    }

    #[test]
    fn images_tool_calls_results_and_tools_take_openai_shapes() {
        let image = ContentPart::Image(Image {
            source: ImageSource::Inline(InlineImage {
                mime_type: "image/png".into(),
                data: bytes::Bytes::from_static(&[1, 2, 3]),
            }),
            detail: ImageDetail::Low,
        });
        let call = ToolCall {
            id: "call_1".into(),
            name: "weather".into(),
            arguments: "{}".into(),
        };
        let request = ModelRequest {
            messages: vec![
                PromptMessage {
                    role: Role::User,
                    content: vec![ContentPart::Text("what is this".into()), image].into(),
                },
                PromptMessage {
                    role: Role::Assistant,
                    content: vec![ContentPart::ToolCall(call)].into(),
                },
                PromptMessage {
                    role: Role::Tool,
                    content: vec![ContentPart::ToolResult(ToolResult {
                        call_id: "call_1".into(),
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
                    parameters: Some(serde_json::Map::new()),
                    strict: true,
                }],
                tool_choice: Some(ToolChoice::Function("weather".into())),
                logprobs: true,
                top_logprobs: Some(2),
                response_format: ResponseFormat::JsonObject,
                ..Default::default()
            },
        };
        let body = body("m", &request, false);
        let m = &body["messages"];
        assert_eq!(
            m[0]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AQID"
        );
        assert_eq!(m[0]["content"][1]["image_url"]["detail"], "low");
        assert_eq!(m[1]["content"], Value::Null);
        assert_eq!(m[1]["tool_calls"][0]["function"]["name"], "weather");
        assert_eq!(
            m[2],
            json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny"})
        );
        assert_eq!(body["tools"][0]["function"]["strict"], true);
        assert_eq!(body["tool_choice"]["function"]["name"], "weather");
        assert_eq!(
            (body["logprobs"].clone(), body["top_logprobs"].clone()),
            (json!(true), json!(2))
        );
        assert_eq!(body["response_format"], json!({"type": "json_object"}));
    }
}

/// An `/embeddings` answer.
#[derive(serde::Deserialize)]
pub struct EmbeddingsReply {
    data: Vec<EmbeddingItem>,
    #[serde(default)]
    usage: Option<EmbeddingsUsage>,
}

#[derive(serde::Deserialize)]
struct EmbeddingItem {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

#[derive(serde::Deserialize)]
struct EmbeddingsUsage {
    prompt_tokens: u64,
}

impl EmbeddingsReply {
    /// The vectors in input order; one per input or the reply is invalid.
    pub fn embedded(
        self,
        backend: &str,
        inputs: usize,
    ) -> Result<crate::backend::Embedded, crate::backend::BackendError> {
        let invalid = |detail: String| crate::backend::BackendError::InvalidReply {
            backend: backend.to_owned(),
            detail,
        };
        if self.data.len() != inputs {
            return Err(invalid(format!(
                "{} embeddings for {inputs} inputs",
                self.data.len()
            )));
        }
        let mut vectors = vec![Vec::new(); inputs];
        for (position, item) in self.data.into_iter().enumerate() {
            let index = item.index.unwrap_or(position);
            let slot = vectors
                .get_mut(index)
                .filter(|v| v.is_empty())
                .ok_or_else(|| invalid(format!("embedding index {index} is out of place")))?;
            if item.embedding.is_empty() {
                return Err(invalid(format!("embedding {index} is empty")));
            }
            *slot = item.embedding;
        }
        Ok(crate::backend::Embedded {
            vectors,
            prompt_tokens: self.usage.map(|u| u.prompt_tokens),
        })
    }
}
