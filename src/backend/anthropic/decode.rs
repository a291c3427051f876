//! Reading Anthropic's answers: a whole message (text and `tool_use`
//! blocks) and the events of a streamed one (text deltas, tool calls
//! forming from `input_json_delta` fragments).

use crate::backend::http::{SseDecoder, invalid_json, redact};
use crate::backend::{BackendError, ModelReply, ReplyChunk, ToolCallChunk};
use crate::dialogue::model::{FinishReason, ToolCall, Usage};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;

pub fn finish_reason(raw: &str) -> FinishReason {
    match raw {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

#[derive(Deserialize)]
pub struct Message {
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
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    input: Value,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct UsageJson {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
}

impl Message {
    pub fn reply(self) -> ModelReply {
        let text: String = self
            .content
            .iter()
            .filter(|b| b.kind == "text")
            .map(|b| b.text.as_str())
            .collect();
        let tool_calls = self
            .content
            .into_iter()
            .filter(|b| b.kind == "tool_use")
            .map(|b| ToolCall {
                id: b.id,
                name: b.name,
                arguments: b.input.to_string(),
            })
            .collect();
        ModelReply {
            text,
            tool_calls,
            finish_reason: self
                .stop_reason
                .as_deref()
                .map(finish_reason)
                .unwrap_or(FinishReason::Stop),
            usage: self.usage.map(|u| Usage {
                prompt_tokens: u.input_tokens,
                completion_tokens: u.output_tokens,
            }),
            model: self.model,
            logprobs: Vec::new(),
        }
    }
}

/// Decodes Messages-API stream events into reply chunks.
pub struct EventDecoder {
    backend: String,
    model: Option<String>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    finish: Option<FinishReason>,
    /// Content block index -> tool call index, for `tool_use` blocks.
    tool_blocks: HashMap<u64, u32>,
}

impl EventDecoder {
    pub fn new(backend: &str) -> EventDecoder {
        EventDecoder {
            backend: backend.to_owned(),
            model: None,
            input_tokens: None,
            output_tokens: None,
            finish: None,
            tool_blocks: HashMap::new(),
        }
    }
}

impl SseDecoder for EventDecoder {
    fn decode(&mut self, data: &str) -> Result<Option<Vec<ReplyChunk>>, BackendError> {
        let event: Value =
            serde_json::from_str(data).map_err(|e| invalid_json(&self.backend, &e))?;
        let block_index = event["index"].as_u64().unwrap_or(0);
        match event["type"].as_str().unwrap_or("") {
            "message_start" => {
                self.input_tokens = event["message"]["usage"]["input_tokens"].as_u64();
                self.model = event["message"]["model"].as_str().map(str::to_owned);
                Ok(Some(vec![]))
            }
            "content_block_start" if event["content_block"]["type"] == "tool_use" => {
                let index = u32::try_from(self.tool_blocks.len()).unwrap_or(u32::MAX);
                self.tool_blocks.insert(block_index, index);
                let block = &event["content_block"];
                Ok(Some(vec![ReplyChunk::ToolCall(ToolCallChunk {
                    index,
                    id: block["id"].as_str().map(str::to_owned),
                    name: block["name"].as_str().map(str::to_owned),
                    arguments: String::new(),
                })]))
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
            "content_block_delta" if event["delta"]["type"] == "input_json_delta" => {
                let Some(&index) = self.tool_blocks.get(&block_index) else {
                    return Ok(Some(vec![]));
                };
                let fragment = event["delta"]["partial_json"].as_str().unwrap_or("");
                Ok(Some(vec![ReplyChunk::ToolCall(ToolCallChunk {
                    index,
                    id: None,
                    name: None,
                    arguments: fragment.to_owned(),
                })]))
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
            // ping, other block starts and stops, and events added later.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_events_decode_to_text_and_a_finish_with_usage() {
        let mut d = EventDecoder::new("b");
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

    #[test]
    fn tool_use_blocks_stream_as_tool_call_pieces() {
        let mut d = EventDecoder::new("b");
        let start = r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"weather","input":{}}}"#;
        let piece = r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\":"}}"#;
        let first = d.decode(start).unwrap().unwrap();
        assert!(
            matches!(&first[0], ReplyChunk::ToolCall(c) if c.index == 0 && c.id.as_deref() == Some("toolu_1"))
        );
        let next = d.decode(piece).unwrap().unwrap();
        assert!(
            matches!(&next[0], ReplyChunk::ToolCall(c) if c.index == 0 && c.arguments == "{\"city\":")
        );
        d.decode(r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"}}"#)
            .unwrap();
        assert!(matches!(
            d.finished().unwrap(),
            ReplyChunk::Finished {
                finish_reason: FinishReason::ToolCalls,
                ..
            }
        ));
    }

    #[test]
    fn a_whole_message_keeps_its_tool_use_as_calls() {
        let raw = r#"{"content":[{"type":"text","text":"Let me look."},{"type":"tool_use","id":"t","name":"weather","input":{"city":"Paris"}}],"stop_reason":"tool_use"}"#;
        let reply = serde_json::from_str::<Message>(raw).unwrap().reply();
        assert_eq!(reply.text, "Let me look.");
        assert_eq!(reply.tool_calls[0].arguments, r#"{"city":"Paris"}"#);
        assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
    }
}
