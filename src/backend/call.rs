//! A model call as every backend sees it: the prompt and settings going
//! out, the reply (text, tool calls, token log probabilities) coming back
//! whole or in chunks, and what the call needs of the model.

use crate::config::Capability;
use crate::dialogue::content::{images, tool_calls, tool_results};
use crate::dialogue::model::{
    ContentPart, FinishReason, GenerationParams, PromptMessage, ResponseFormat, TokenLogprob,
    ToolCall, Usage,
};
use std::collections::BTreeSet;

/// A vendor's request body: the messages, serialized where they are
/// (borrowed from the prompt, so a long history is not copied first), then
/// the call's settings (small).
pub struct RequestBody<M> {
    pub messages: M,
    pub settings: serde_json::Map<String, serde_json::Value>,
}

impl<M: serde::Serialize> serde::Serialize for RequestBody<M> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1 + self.settings.len()))?;
        map.serialize_entry("messages", &self.messages)?;
        for (key, value) in &self.settings {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// A model call: the prompt, already fitted to the context window. The
/// upstream model name is chosen per target and passed beside it.
#[derive(Debug, Clone)]
pub struct ModelRequest {
    pub messages: Vec<PromptMessage>,
    pub params: GenerationParams,
}

impl ModelRequest {
    /// What a model must be able to do to take this call.
    pub fn needs(&self) -> BTreeSet<Capability> {
        let mut needs = BTreeSet::new();
        let contents: Vec<&[ContentPart]> = self.messages.iter().map(|m| &*m.content).collect();
        if contents.iter().any(|c| !images(c).is_empty()) {
            needs.insert(Capability::Vision);
        }
        let tool_activity = contents
            .iter()
            .any(|c| tool_calls(c).next().is_some() || tool_results(c).next().is_some());
        if !self.params.tools.is_empty() || tool_activity {
            needs.insert(Capability::Tools);
        }
        if !self.params.response_format.is_text() {
            needs.insert(Capability::JsonSchema);
        }
        if self.params.logprobs {
            needs.insert(Capability::Logprobs);
        }
        needs
    }

    /// Whether the reply must be a JSON object.
    pub fn wants_json(&self) -> bool {
        !matches!(self.params.response_format, ResponseFormat::Text)
    }
}

/// A complete reply.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelReply {
    pub text: String,
    /// Calls of the request's tools, in the model's order.
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: FinishReason,
    /// Token counts, when the backend reports them.
    pub usage: Option<Usage>,
    /// The model (and version) the backend says answered, when it says.
    pub model: Option<String>,
    /// The text's tokens' log probabilities, when asked for.
    pub logprobs: Vec<TokenLogprob>,
}

impl ModelReply {
    /// A reply of text alone.
    pub fn text(text: String, finish_reason: FinishReason) -> ModelReply {
        ModelReply {
            text,
            tool_calls: Vec::new(),
            finish_reason,
            usage: None,
            model: None,
            logprobs: Vec::new(),
        }
    }

    /// The reply as a turn's content: its text, then its calls (the text
    /// left out when empty and there are calls).
    pub fn content(&self) -> Vec<ContentPart> {
        let text = (!self.text.is_empty() || self.tool_calls.is_empty())
            .then(|| ContentPart::Text(self.text.clone()));
        text.into_iter()
            .chain(self.tool_calls.iter().cloned().map(ContentPart::ToolCall))
            .collect()
    }
}

/// A piece of a streamed reply; `Finished` comes last.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyChunk {
    Text(String),
    /// Log probabilities of the text's tokens sent so far.
    Logprobs(Vec<TokenLogprob>),
    ToolCall(ToolCallChunk),
    Finished {
        finish_reason: FinishReason,
        usage: Option<Usage>,
        /// The model (and version) the backend says answered, when it says.
        model: Option<String>,
    },
}

/// A piece of tool call `index`: its ID and name come on the first piece
/// (as the model streams them), argument fragments on every piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallChunk {
    pub index: u32,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: String,
}

/// Assembles streamed tool-call pieces into whole calls, by index.
#[derive(Debug, Default)]
pub struct ToolCalls {
    calls: Vec<(u32, ToolCall)>,
}

impl ToolCalls {
    pub fn push(&mut self, chunk: &ToolCallChunk) {
        let position = match self.calls.iter().position(|(i, _)| *i == chunk.index) {
            Some(p) => p,
            None => {
                let empty = ToolCall {
                    id: String::new(),
                    name: String::new(),
                    arguments: String::new(),
                };
                self.calls.push((chunk.index, empty));
                self.calls.len() - 1
            }
        };
        let call = &mut self.calls[position].1;
        if let Some(id) = &chunk.id {
            call.id.clone_from(id);
        }
        if let Some(name) = &chunk.name {
            call.name.push_str(name);
        }
        call.arguments.push_str(&chunk.arguments);
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The calls, in index order; a call the backend gave no ID is named
    /// `call_{index}`.
    pub fn finish(mut self) -> Vec<ToolCall> {
        self.calls.sort_by_key(|(i, _)| *i);
        self.calls
            .into_iter()
            .map(|(i, mut call)| {
                if call.id.is_empty() {
                    call.id = format!("call_{i}");
                }
                call
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_pieces_assemble_into_whole_calls_in_index_order() {
        let mut calls = ToolCalls::default();
        let piece = |index, id: Option<&str>, name: Option<&str>, arguments: &str| ToolCallChunk {
            index,
            id: id.map(str::to_owned),
            name: name.map(str::to_owned),
            arguments: arguments.into(),
        };
        calls.push(&piece(1, Some("b"), Some("time"), ""));
        calls.push(&piece(0, Some("a"), Some("weather"), "{\"ci"));
        calls.push(&piece(0, None, None, "ty\":\"Paris\"}"));
        calls.push(&piece(1, None, None, "{}"));
        let calls = calls.finish();
        assert_eq!(calls[0].id, "a");
        assert_eq!(calls[0].arguments, r#"{"city":"Paris"}"#);
        assert_eq!(
            (calls[1].name.as_str(), calls[1].arguments.as_str()),
            ("time", "{}")
        );
    }
}
