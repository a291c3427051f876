//! The `anthropic` backend: `POST {base_url}/v1/messages`, unary and
//! streaming (SSE events mapped onto the same reply chunks as OpenAI's),
//! and `GET {base_url}/v1/models` for health.

use super::http::{Endpoint, SseDecoder, invalid_json, redact};
use super::openai::build_headers;
use super::{
    ApiKey, BackendError, BuildError, ModelBackend, ModelReply, ModelRequest, ReplyChunk,
    ReplyStream,
};
use crate::config::BackendSettings;
use crate::dialogue::model::{FinishReason, PromptMessage, Role, Usage};
use async_trait::async_trait;
use reqwest::header::HeaderValue;
use serde::Deserialize;
use serde_json::{Value, json};

pub struct AnthropicBackend {
    endpoint: Endpoint,
    messages_url: String,
    models_url: String,
    default_max_tokens: u32,
}

impl AnthropicBackend {
    pub fn new(name: &str, settings: &BackendSettings) -> Result<AnthropicBackend, BuildError> {
        let BackendSettings::Anthropic {
            base_url,
            api_key_env,
            version,
            default_max_tokens,
            headers,
            timeouts,
        } = settings
        else {
            return Err(BuildError {
                name: name.to_owned(),
                detail: "not an anthropic backend".into(),
            });
        };
        let key = ApiKey::from_env(api_key_env.as_deref());
        let mut all_headers = build_headers(name, headers, key.as_ref(), Some("x-api-key"))?;
        let version = HeaderValue::from_str(version).map_err(|_| BuildError {
            name: name.to_owned(),
            detail: "invalid anthropic version".into(),
        })?;
        all_headers.insert("anthropic-version", version);
        let base = base_url.trim_end_matches('/');
        Ok(AnthropicBackend {
            endpoint: Endpoint::new(name, all_headers, key, timeouts)?,
            messages_url: format!("{base}/v1/messages"),
            models_url: format!("{base}/v1/models"),
            default_max_tokens: *default_max_tokens,
        })
    }

    fn body(&self, model: &str, request: &ModelRequest, stream: bool) -> Value {
        let (system, messages) = to_messages(&request.messages);
        let p = &request.params;
        let mut body = json!({
            "model": model,
            "messages": messages,
            "max_tokens": p.max_tokens.unwrap_or(self.default_max_tokens),
            "stream": stream,
        });
        if !system.is_empty() {
            body["system"] = Value::from(system);
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
        body
    }
}

/// Anthropic wants the system text apart and user/assistant messages that
/// alternate, starting with the user: system turns join the system text,
/// neighbours of one role are merged, a leading reply is dropped.
fn to_messages(prompt: &[PromptMessage]) -> (String, Vec<Value>) {
    let mut system: Vec<&str> = Vec::new();
    let mut messages: Vec<(&'static str, String)> = Vec::new();
    for m in prompt {
        let role = match m.role {
            Role::System => {
                system.push(&m.text);
                continue;
            }
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        match messages.last_mut() {
            Some((last, text)) if *last == role => {
                text.push_str("\n\n");
                text.push_str(&m.text);
            }
            None if role == "assistant" => {}
            _ => messages.push((role, m.text.clone())),
        }
    }
    let messages = messages
        .into_iter()
        .map(|(role, text)| json!({ "role": role, "content": text }))
        .collect();
    (system.join("\n\n"), messages)
}

fn finish_reason(raw: &str) -> FinishReason {
    match raw {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

#[derive(Deserialize)]
struct Message {
    model: Option<String>,
    #[serde(default)]
    content: Vec<Block>,
    stop_reason: Option<String>,
    usage: Option<UsageJson>,
}

#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: String,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct UsageJson {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
}

/// Decodes Messages-API stream events into reply chunks.
struct EventDecoder {
    backend: String,
    model: Option<String>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    finish: Option<FinishReason>,
}

impl SseDecoder for EventDecoder {
    fn decode(&mut self, data: &str) -> Result<Option<Vec<ReplyChunk>>, BackendError> {
        let event: Value =
            serde_json::from_str(data).map_err(|e| invalid_json(&self.backend, &e))?;
        match event["type"].as_str().unwrap_or("") {
            "message_start" => {
                self.input_tokens = event["message"]["usage"]["input_tokens"].as_u64();
                self.model = event["message"]["model"].as_str().map(str::to_owned);
                Ok(Some(vec![]))
            }
            "content_block_delta" if event["delta"]["type"] == "text_delta" => {
                let text = event["delta"]["text"].as_str().unwrap_or("");
                let chunks = if text.is_empty() {
                    vec![]
                } else {
                    vec![ReplyChunk::Text(text.to_owned())]
                };
                Ok(Some(chunks))
            }
            "message_delta" => {
                if let Some(reason) = event["delta"]["stop_reason"].as_str() {
                    self.finish = Some(finish_reason(reason));
                }
                if let Some(n) = event["usage"]["output_tokens"].as_u64() {
                    self.output_tokens = Some(n);
                }
                Ok(Some(vec![]))
            }
            "message_stop" => Ok(None),
            "error" => Err(BackendError::Unavailable {
                backend: self.backend.clone(),
                detail: format!(
                    "error event in the stream: {}",
                    redact(&event["error"].to_string(), None)
                ),
            }),
            // ping, content_block_start/stop and events added later.
            _ => Ok(Some(vec![])),
        }
    }

    fn finished(&self) -> Result<ReplyChunk, BackendError> {
        let finish_reason = self.finish.ok_or_else(|| BackendError::Unavailable {
            backend: self.backend.clone(),
            detail: "the stream ended before the reply was finished".into(),
        })?;
        let usage = match (self.input_tokens, self.output_tokens) {
            (Some(i), Some(o)) => Some(Usage {
                prompt_tokens: i,
                completion_tokens: o,
            }),
            _ => None,
        };
        Ok(ReplyChunk::Finished {
            finish_reason,
            usage,
            model: self.model.clone(),
        })
    }
}

#[async_trait]
impl ModelBackend for AnthropicBackend {
    fn name(&self) -> &str {
        &self.endpoint.name
    }

    fn kind(&self) -> &'static str {
        "anthropic"
    }

    async fn complete(
        &self,
        model: &str,
        request: &ModelRequest,
    ) -> Result<ModelReply, BackendError> {
        let message: Message = self
            .endpoint
            .post_json(&self.messages_url, &self.body(model, request, false))
            .await?;
        let text: String = message
            .content
            .iter()
            .filter(|b| b.kind == "text")
            .map(|b| b.text.as_str())
            .collect();
        Ok(ModelReply {
            text,
            finish_reason: message
                .stop_reason
                .as_deref()
                .map(finish_reason)
                .unwrap_or(FinishReason::Stop),
            usage: message.usage.map(|u| Usage {
                prompt_tokens: u.input_tokens,
                completion_tokens: u.output_tokens,
            }),
            model: message.model,
        })
    }

    async fn stream(
        &self,
        model: &str,
        request: &ModelRequest,
    ) -> Result<ReplyStream, BackendError> {
        let decoder = EventDecoder {
            backend: self.endpoint.name.clone(),
            model: None,
            input_tokens: None,
            output_tokens: None,
            finish: None,
        };
        self.endpoint
            .post_sse(
                &self.messages_url,
                &self.body(model, request, true),
                decoder,
            )
            .await
    }

    async fn healthy(&self) -> bool {
        self.endpoint.probe(&self.models_url).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: Role, text: &str) -> PromptMessage {
        PromptMessage {
            role,
            text: text.into(),
        }
    }

    #[test]
    fn messages_alternate_and_start_with_the_user() {
        let (system, messages) = to_messages(&[
            msg(Role::System, "be brief"),
            msg(Role::Assistant, "orphan reply"),
            msg(Role::User, "a"),
            msg(Role::User, "b"),
            msg(Role::Assistant, "c"),
            msg(Role::System, "summary so far"),
            msg(Role::User, "d"),
        ]);
        assert_eq!(system, "be brief\n\nsummary so far");
        let roles: Vec<_> = messages
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["user", "assistant", "user"]);
        assert_eq!(messages[0]["content"], "a\n\nb");
    }

    #[test]
    fn stream_events_decode_to_text_and_a_finish_with_usage() {
        let mut d = EventDecoder {
            backend: "b".into(),
            model: None,
            input_tokens: None,
            output_tokens: None,
            finish: None,
        };
        d.decode(
            r#"{"type":"message_start","message":{"usage":{"input_tokens":12,"output_tokens":1}}}"#,
        )
        .unwrap();
        d.decode(r#"{"type":"ping"}"#).unwrap();
        let text = d
            .decode(r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#)
            .unwrap();
        assert_eq!(text, Some(vec![ReplyChunk::Text("Hi".into())]));
        assert!(d.finished().is_err());
        d.decode(r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":5}}"#)
            .unwrap();
        assert_eq!(d.decode(r#"{"type":"message_stop"}"#).unwrap(), None);
        assert_eq!(
            d.finished().unwrap(),
            ReplyChunk::Finished {
                finish_reason: FinishReason::Length,
                usage: Some(Usage {
                    prompt_tokens: 12,
                    completion_tokens: 5
                }),
                model: None,
            }
        );
        let err = d.decode(
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert!(matches!(err, Err(BackendError::Unavailable { .. })));
    }
}
