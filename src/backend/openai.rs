//! The `openai` backend: `POST {base_url}{chat_path}` (chat completions),
//! unary and `stream: true` (SSE), and `GET {base_url}/models` for health.
//! Works with OpenAI, vLLM, Ollama's /v1, llama.cpp's server, TGI, LiteLLM
//! and Azure OpenAI (`chat_path` with api-version, `api_key_header = "api-key"`).

use super::http::{Endpoint, SseDecoder, invalid_json, redact};
use super::{
    ApiKey, BackendError, BuildError, ModelBackend, ModelReply, ModelRequest, ReplyChunk,
    ReplyStream,
};
use crate::config::BackendSettings;
use crate::dialogue::model::{FinishReason, Role, Usage};
use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};

pub struct OpenAiBackend {
    endpoint: Endpoint,
    chat_url: String,
    models_url: String,
}

fn header_error(name: &str, what: &str) -> BuildError {
    BuildError {
        name: name.to_owned(),
        detail: format!("invalid header {what}"),
    }
}

/// Headers from config plus the key, as `Authorization: Bearer` or as the
/// named header.
pub(super) fn build_headers(
    name: &str,
    extra: &std::collections::BTreeMap<String, String>,
    key: Option<&ApiKey>,
    key_header: Option<&str>,
) -> Result<HeaderMap, BuildError> {
    let mut headers = HeaderMap::new();
    for (k, v) in extra {
        let header = HeaderName::from_bytes(k.as_bytes()).map_err(|_| header_error(name, k))?;
        let value = HeaderValue::from_str(v).map_err(|_| header_error(name, k))?;
        headers.insert(header, value);
    }
    if let Some(key) = key {
        let (header, value) = match key_header {
            Some(h) => (
                HeaderName::from_bytes(h.as_bytes()).map_err(|_| header_error(name, h))?,
                key.expose().to_owned(),
            ),
            None => (AUTHORIZATION, format!("Bearer {}", key.expose())),
        };
        let mut value =
            HeaderValue::from_str(&value).map_err(|_| header_error(name, "holding the API key"))?;
        value.set_sensitive(true);
        headers.insert(header, value);
    }
    Ok(headers)
}

impl OpenAiBackend {
    pub fn new(name: &str, settings: &BackendSettings) -> Result<OpenAiBackend, BuildError> {
        let BackendSettings::Openai {
            base_url,
            api_key_env,
            chat_path,
            api_key_header,
            headers,
            timeouts,
        } = settings
        else {
            return Err(BuildError {
                name: name.to_owned(),
                detail: "not an openai backend".into(),
            });
        };
        let key = ApiKey::from_env(api_key_env.as_deref());
        let headers = build_headers(name, headers, key.as_ref(), api_key_header.as_deref())?;
        let base = base_url.trim_end_matches('/');
        Ok(OpenAiBackend {
            endpoint: Endpoint::new(name, headers, key, timeouts)?,
            chat_url: format!("{base}{chat_path}"),
            models_url: format!("{base}/models"),
        })
    }

    fn body(model: &str, request: &ModelRequest, stream: bool) -> Value {
        let messages: Vec<Value> = request
            .messages
            .iter()
            .map(|m| {
                let role = match m.role {
                    Role::System => "system",
                    Role::User => "user",
                    Role::Assistant => "assistant",
                };
                json!({ "role": role, "content": m.text })
            })
            .collect();
        let p = &request.params;
        let mut body = json!({ "model": model, "messages": messages, "stream": stream });
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
}

fn finish_reason(raw: &str) -> FinishReason {
    match raw {
        "length" => FinishReason::Length,
        "content_filter" => FinishReason::ContentFilter,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

#[derive(Deserialize)]
struct UsageJson {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl From<UsageJson> for Usage {
    fn from(u: UsageJson) -> Usage {
        Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        }
    }
}

#[derive(Deserialize)]
struct Completion {
    model: Option<String>,
    choices: Vec<CompletionChoice>,
    usage: Option<UsageJson>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    message: CompletionMessage,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct CompletionMessage {
    content: Option<String>,
}

#[derive(Deserialize)]
struct Chunk {
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    usage: Option<UsageJson>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<ChunkDelta>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChunkDelta {
    content: Option<String>,
}

/// Decodes chat-completion chunks into reply chunks. Role-only and empty
/// deltas are skipped; usage may come in a final chunk after the finish.
pub struct ChunkDecoder {
    backend: String,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    model: Option<String>,
}

impl ChunkDecoder {
    pub fn new(backend: &str) -> ChunkDecoder {
        ChunkDecoder {
            backend: backend.to_owned(),
            finish: None,
            usage: None,
            model: None,
        }
    }
}

impl SseDecoder for ChunkDecoder {
    /// Chunks to emit for one SSE data payload; `Ok(None)` at `[DONE]`.
    fn decode(&mut self, data: &str) -> Result<Option<Vec<ReplyChunk>>, BackendError> {
        if data.trim() == "[DONE]" {
            return Ok(None);
        }
        let chunk: Chunk =
            serde_json::from_str(data).map_err(|e| invalid_json(&self.backend, &e))?;
        if let Some(error) = chunk.error {
            return Err(BackendError::Unavailable {
                backend: self.backend.clone(),
                detail: format!(
                    "error event in the stream: {}",
                    redact(&error.to_string(), None)
                ),
            });
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage.into());
        }
        if self.model.is_none() {
            self.model = chunk.model.filter(|m| !m.is_empty());
        }
        let mut out = Vec::new();
        for choice in chunk.choices.into_iter().take(1) {
            if let Some(text) = choice
                .delta
                .and_then(|d| d.content)
                .filter(|t| !t.is_empty())
            {
                out.push(ReplyChunk::Text(text));
            }
            if let Some(reason) = choice.finish_reason {
                self.finish = Some(finish_reason(&reason));
            }
        }
        Ok(Some(out))
    }

    /// The closing chunk once the stream ended; an error if it never said
    /// how it finished (cut off).
    fn finished(&self) -> Result<ReplyChunk, BackendError> {
        match self.finish {
            Some(finish_reason) => Ok(ReplyChunk::Finished {
                finish_reason,
                usage: self.usage,
                model: self.model.clone(),
            }),
            None => Err(BackendError::Unavailable {
                backend: self.backend.clone(),
                detail: "the stream ended before the reply was finished".into(),
            }),
        }
    }
}

#[async_trait]
impl ModelBackend for OpenAiBackend {
    fn name(&self) -> &str {
        &self.endpoint.name
    }

    fn kind(&self) -> &'static str {
        "openai"
    }

    async fn complete(
        &self,
        model: &str,
        request: &ModelRequest,
    ) -> Result<ModelReply, BackendError> {
        let completion: Completion = self
            .endpoint
            .post_json(&self.chat_url, &Self::body(model, request, false))
            .await?;
        let choice =
            completion
                .choices
                .into_iter()
                .next()
                .ok_or_else(|| BackendError::InvalidReply {
                    backend: self.endpoint.name.clone(),
                    detail: "the reply has no choices".into(),
                })?;
        Ok(ModelReply {
            text: choice.message.content.unwrap_or_default(),
            finish_reason: choice
                .finish_reason
                .as_deref()
                .map(finish_reason)
                .unwrap_or(FinishReason::Stop),
            usage: completion.usage.map(Usage::from),
            model: completion.model.filter(|m| !m.is_empty()),
        })
    }

    async fn stream(
        &self,
        model: &str,
        request: &ModelRequest,
    ) -> Result<ReplyStream, BackendError> {
        let decoder = ChunkDecoder::new(&self.endpoint.name);
        self.endpoint
            .post_sse(&self.chat_url, &Self::body(model, request, true), decoder)
            .await
    }

    async fn healthy(&self) -> bool {
        self.endpoint.probe(&self.models_url).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialogue::model::GenerationParams;
    use crate::dialogue::model::PromptMessage;

    #[test]
    fn the_body_carries_messages_and_only_the_set_parameters() {
        let request = ModelRequest {
            messages: vec![
                PromptMessage {
                    role: Role::System,
                    text: "sys".into(),
                },
                PromptMessage {
                    role: Role::User,
                    text: "hi".into(),
                },
            ],
            params: GenerationParams {
                temperature: Some(0.5),
                stop: vec!["END".into()],
                ..Default::default()
            },
        };
        let body = OpenAiBackend::body("gpt-x", &request, true);
        assert_eq!(body["model"], "gpt-x");
        assert_eq!(
            body["messages"][0],
            json!({"role": "system", "content": "sys"})
        );
        assert_eq!(body["temperature"], 0.5);
        assert_eq!(body["stop"], json!(["END"]));
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert!(body.get("max_tokens").is_none() && body.get("seed").is_none());
    }

    #[test]
    fn chunks_decode_to_text_then_a_finish_with_usage() {
        let mut d = ChunkDecoder {
            backend: "b".into(),
            finish: None,
            usage: None,
            model: None,
        };
        let role_only = r#"{"choices":[{"delta":{"role":"assistant"},"finish_reason":null}]}"#;
        assert_eq!(d.decode(role_only).unwrap(), Some(vec![]));
        let text = r#"{"choices":[{"delta":{"content":"Hel"}}]}"#;
        assert_eq!(
            d.decode(text).unwrap(),
            Some(vec![ReplyChunk::Text("Hel".into())])
        );
        assert!(
            d.finished().is_err(),
            "no finish yet: a cut stream is an error"
        );
        d.decode(r#"{"choices":[{"delta":{},"finish_reason":"length"}]}"#)
            .unwrap();
        d.decode(r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#)
            .unwrap();
        assert_eq!(d.decode("[DONE]").unwrap(), None);
        assert_eq!(
            d.finished().unwrap(),
            ReplyChunk::Finished {
                finish_reason: FinishReason::Length,
                usage: Some(Usage {
                    prompt_tokens: 3,
                    completion_tokens: 1
                }),
                model: None,
            }
        );
        assert!(matches!(
            d.decode("{not json"),
            Err(BackendError::InvalidReply { .. })
        ));
        assert!(matches!(
            d.decode(r#"{"error":{"message":"boom"}}"#),
            Err(BackendError::Unavailable { .. })
        ));
    }
}
