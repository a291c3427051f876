//! Reading OpenAI's answers: a whole completion (text, tool calls, log
//! probabilities) and the chunks of a streamed one.

use crate::backend::http::{SseDecoder, invalid_json, redact};
use crate::backend::{BackendError, ModelReply, ReplyChunk, ToolCallChunk};
use crate::dialogue::model::{FinishReason, TokenLogprob, ToolCall, TopLogprob, Usage};
use serde::Deserialize;
use serde_json::Value;

pub fn finish_reason(raw: &str) -> FinishReason {
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

#[derive(Deserialize, Default)]
struct LogprobsJson {
    #[serde(default)]
    content: Option<Vec<TokenLogprobJson>>,
}

#[derive(Deserialize)]
struct TokenLogprobJson {
    token: String,
    logprob: f64,
    #[serde(default)]
    top_logprobs: Vec<TopLogprobJson>,
}

#[derive(Deserialize)]
struct TopLogprobJson {
    token: String,
    logprob: f64,
}

impl LogprobsJson {
    fn tokens(self) -> Vec<TokenLogprob> {
        self.content
            .unwrap_or_default()
            .into_iter()
            .map(|t| TokenLogprob {
                token: t.token,
                logprob: t.logprob,
                top: t
                    .top_logprobs
                    .into_iter()
                    .map(|a| TopLogprob {
                        token: a.token,
                        logprob: a.logprob,
                    })
                    .collect(),
            })
            .collect()
    }
}

#[derive(Deserialize)]
pub struct Completion {
    model: Option<String>,
    choices: Vec<CompletionChoice>,
    usage: Option<UsageJson>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    message: CompletionMessage,
    finish_reason: Option<String>,
    #[serde(default)]
    logprobs: Option<LogprobsJson>,
}

#[derive(Deserialize)]
struct CompletionMessage {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ToolCallJson>,
}

#[derive(Deserialize)]
struct ToolCallJson {
    #[serde(default)]
    id: String,
    function: FunctionJson,
}

#[derive(Deserialize)]
struct FunctionJson {
    #[serde(default)]
    name: String,
    #[serde(default)]
    arguments: String,
}

impl Completion {
    /// The reply of the first choice.
    pub fn reply(self, backend: &str) -> Result<ModelReply, BackendError> {
        let choice = self
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| BackendError::InvalidReply {
                backend: backend.to_owned(),
                detail: "the reply has no choices".into(),
            })?;
        let tool_calls: Vec<ToolCall> = choice
            .message
            .tool_calls
            .into_iter()
            .map(|c| ToolCall {
                id: c.id,
                name: c.function.name,
                arguments: c.function.arguments,
            })
            .collect();
        Ok(ModelReply {
            text: choice.message.content.unwrap_or_default(),
            tool_calls,
            finish_reason: choice
                .finish_reason
                .as_deref()
                .map(finish_reason)
                .unwrap_or(FinishReason::Stop),
            usage: self.usage.map(Usage::from),
            model: self.model.filter(|m| !m.is_empty()),
            logprobs: choice.logprobs.unwrap_or_default().tokens(),
        })
    }
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
    #[serde(default)]
    logprobs: Option<LogprobsJson>,
}

#[derive(Deserialize)]
struct ChunkDelta {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ToolCallDeltaJson>,
}

#[derive(Deserialize)]
struct ToolCallDeltaJson {
    #[serde(default)]
    index: u32,
    id: Option<String>,
    function: Option<FunctionDeltaJson>,
}

#[derive(Deserialize)]
struct FunctionDeltaJson {
    name: Option<String>,
    arguments: Option<String>,
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
            // Log probabilities go ahead of the text they belong to.
            let logprobs = choice
                .logprobs
                .map(LogprobsJson::tokens)
                .unwrap_or_default();
            if !logprobs.is_empty() {
                out.push(ReplyChunk::Logprobs(logprobs));
            }
            if let Some(delta) = choice.delta {
                if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                    out.push(ReplyChunk::Text(text));
                }
                for call in delta.tool_calls {
                    let (name, arguments) = call
                        .function
                        .map(|f| (f.name, f.arguments.unwrap_or_default()))
                        .unwrap_or_default();
                    out.push(ReplyChunk::ToolCall(ToolCallChunk {
                        index: call.index,
                        id: call.id,
                        name,
                        arguments,
                    }));
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_decode_to_text_then_a_finish_with_usage() {
        let mut d = ChunkDecoder::new("b");
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

    #[test]
    fn tool_call_fragments_and_log_probabilities_come_through() {
        let mut d = ChunkDecoder::new("b");
        let first = r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"weather","arguments":""}}]}}]}"#;
        let next = r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\""}}]},"logprobs":{"content":[{"token":"x","logprob":-0.5,"top_logprobs":[{"token":"y","logprob":-1.0}]}]}}]}"#;
        let chunks = d.decode(first).unwrap().unwrap();
        assert_eq!(
            chunks,
            [ReplyChunk::ToolCall(ToolCallChunk {
                index: 0,
                id: Some("call_1".into()),
                name: Some("weather".into()),
                arguments: String::new(),
            })]
        );
        let chunks = d.decode(next).unwrap().unwrap();
        assert!(matches!(&chunks[0], ReplyChunk::Logprobs(l) if l[0].top[0].token == "y"));
        assert!(
            matches!(&chunks[1], ReplyChunk::ToolCall(c) if c.arguments == "{\"city\"" && c.id.is_none())
        );
    }

    #[test]
    fn a_whole_completion_keeps_its_tool_calls() {
        let raw = r#"{"model":"m","choices":[{"message":{"content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"#;
        let reply = serde_json::from_str::<Completion>(raw)
            .unwrap()
            .reply("b")
            .unwrap();
        assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
        assert_eq!(reply.tool_calls[0].name, "f");
        assert_eq!(reply.text, "");
    }
}
