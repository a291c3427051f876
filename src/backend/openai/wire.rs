//! The request body of OpenAI's chat completions, from a model call:
//! messages with image parts, assistant tool calls and tool results, and
//! the tools, tool choice, response format and log-probability settings.

use crate::backend::ModelRequest;
use crate::dialogue::content::{join_text, transcript};
use crate::dialogue::model::{
    ContentPart, Image, ImageDetail, ImageSource, PromptMessage, ResponseFormat, Role, ToolChoice,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

/// The body of `POST {chat_path}` for `model`.
pub fn body(model: &str, request: &ModelRequest, stream: bool) -> Value {
    let messages: Vec<Value> = request.messages.iter().flat_map(messages).collect();
    let p = &request.params;
    let mut body = json!({ "model": model, "messages": messages, "stream": stream });
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
    for (key, value) in fields {
        if let Some(v) = value {
            body[key] = v;
        }
    }
    body
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

/// An image part: its URL, or its bytes as a `data:` URL.
fn image_part(image: &Image) -> Value {
    let url = match &image.source {
        ImageSource::Url(url) => url.clone(),
        ImageSource::Inline(i) => {
            format!("data:{};base64,{}", i.mime_type, STANDARD.encode(&i.data))
        }
    };
    let detail = match image.detail {
        ImageDetail::Auto => "auto",
        ImageDetail::Low => "low",
        ImageDetail::High => "high",
    };
    json!({ "type": "image_url", "image_url": { "url": url, "detail": detail } })
}

/// A user message's content: a string when it is text alone, else parts.
fn user_content(parts: &[&ContentPart]) -> Value {
    if parts.iter().all(|p| p.as_text().is_some()) {
        return Value::from(parts.iter().filter_map(|p| p.as_text()).collect::<String>());
    }
    let parts: Vec<Value> = parts
        .iter()
        .filter_map(|part| match part {
            ContentPart::Text(text) => Some(json!({ "type": "text", "text": text })),
            ContentPart::Image(image) => Some(image_part(image)),
            _ => None,
        })
        .collect();
    Value::Array(parts)
}

/// One prompt message as OpenAI messages: tool results become one `tool`
/// message each (before any text of the same turn); an assistant turn
/// carries its calls in `tool_calls`.
fn messages(message: &PromptMessage) -> Vec<Value> {
    let mut out = Vec::new();
    for part in &message.content {
        if let ContentPart::ToolResult(result) = part {
            // Tool messages carry text: images in a result are noted.
            let mut text = transcript(&result.content);
            if result.is_error {
                text = format!("[error] {text}");
            }
            out.push(json!({ "role": "tool", "tool_call_id": result.call_id, "content": text }));
        }
    }
    let rest: Vec<&ContentPart> = message
        .content
        .iter()
        .filter(|p| !matches!(p, ContentPart::ToolResult(_)))
        .collect();
    match message.role {
        Role::System => {
            out.push(json!({ "role": "system", "content": join_text(&message.content) }))
        }
        Role::User | Role::Tool if !rest.is_empty() => {
            out.push(json!({ "role": "user", "content": user_content(&rest) }))
        }
        Role::User | Role::Tool => {}
        Role::Assistant => {
            let text = join_text(&message.content);
            let calls: Vec<Value> = crate::dialogue::content::tool_calls(&message.content)
                .map(|call| {
                    json!({
                        "id": call.id,
                        "type": "function",
                        "function": { "name": call.name, "arguments": call.arguments },
                    })
                })
                .collect();
            let mut m = json!({ "role": "assistant", "content": text });
            if !calls.is_empty() {
                if text.is_empty() {
                    m["content"] = Value::Null;
                }
                m["tool_calls"] = Value::Array(calls);
            }
            out.push(m);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialogue::model::{GenerationParams, InlineImage, ToolCall, ToolResult, ToolSpec};

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
                    content: vec![ContentPart::Text("what is this".into()), image],
                },
                PromptMessage {
                    role: Role::Assistant,
                    content: vec![ContentPart::ToolCall(call)],
                },
                PromptMessage {
                    role: Role::Tool,
                    content: vec![ContentPart::ToolResult(ToolResult {
                        call_id: "call_1".into(),
                        content: vec![ContentPart::Text("sunny".into())],
                        is_error: false,
                    })],
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
