//! The built-in `echo` backend: deterministic, streamed word by word with
//! an optional delay per word. It makes the service runnable and testable
//! with no model server, rich turns included:
//!
//! - it replies `echo: <last user message>`, noting each image of it as
//!   `[image <mime type>, <n> bytes]` or `[image <url>]`;
//! - with tools declared, `call <tool> {json}` in the last user message
//!   calls that tool with those arguments (`{}` when none follow); several
//!   such phrases make parallel calls (one unless `parallel_tool_calls`
//!   allows more); `tool_choice = required` or naming a tool calls it even
//!   unasked, `none` never calls;
//! - after tool results it replies `echo: ` and what the tools returned;
//! - a JSON response format gets `{"echo": <reply>}`, a JSON Schema one an
//!   object with every declared property (strings hold the reply, numbers
//!   0, booleans false, lists and objects empty);
//! - log probabilities are 0 for every word (each word its own alternative).

use super::{
    BackendError, ModelBackend, ModelReply, ModelRequest, ReplyChunk, ReplyStream, ToolCallChunk,
};
use crate::dialogue::content::{images, tool_results, transcript};
use crate::dialogue::model::{
    FinishReason, ImageSource, PromptMessage, ResponseFormat, Role, TokenLogprob, ToolCall,
    ToolChoice, TopLogprob, Usage,
};
use async_trait::async_trait;
use futures_util::StreamExt;
use serde_json::{Map, Value};
use std::time::Duration;

pub struct EchoBackend {
    name: String,
    delay: Duration,
}

impl EchoBackend {
    pub fn new(name: &str, delay: Duration) -> EchoBackend {
        EchoBackend {
            name: name.to_owned(),
            delay,
        }
    }
}

/// What echo answers: text pieces (words with their trailing whitespace,
/// so they concatenate to the reply) or tool calls, and why it ended.
/// `max_tokens` counts words; a stop sequence cuts the reply before it.
struct Echo {
    pieces: Vec<String>,
    calls: Vec<ToolCall>,
    finish: FinishReason,
}

fn echo(request: &ModelRequest) -> Echo {
    let last = request.messages.last();
    let calls = last
        .map(|m| tool_calls_asked(request, m))
        .unwrap_or_default();
    if !calls.is_empty() {
        return Echo {
            pieces: Vec::new(),
            calls,
            finish: FinishReason::ToolCalls,
        };
    }
    let said = match last {
        Some(m) if m.role == Role::Tool || tool_results(&m.content).next().is_some() => {
            trailing_results(&request.messages)
        }
        _ => last_user_words(&request.messages),
    };
    let mut reply = match &request.params.response_format {
        ResponseFormat::Text => format!("echo: {said}"),
        ResponseFormat::JsonObject => json_reply(&said, None),
        ResponseFormat::JsonSchema { schema, .. } => json_reply(&said, Some(schema)),
    };
    let mut finish = FinishReason::Stop;
    let params = &request.params;
    if let Some(cut) = params
        .stop
        .iter()
        .filter_map(|s| reply.find(s.as_str()))
        .min()
    {
        reply.truncate(cut);
    }
    let mut pieces: Vec<String> = reply
        .split_inclusive(char::is_whitespace)
        .map(str::to_owned)
        .collect();
    if let Some(max) = params.max_tokens.map(|m| m as usize)
        && pieces.len() > max
    {
        pieces.truncate(max);
        finish = FinishReason::Length;
    }
    Echo {
        pieces,
        calls: Vec::new(),
        finish,
    }
}

/// What the trailing tool messages (one per result, as OpenAI sends them,
/// or one holding all) returned.
fn trailing_results(messages: &[PromptMessage]) -> String {
    let first = messages
        .iter()
        .rposition(|m| m.role != Role::Tool)
        .map_or(0, |i| i + 1);
    let trailing = match &messages[first..] {
        [] => &messages[messages.len().saturating_sub(1)..],
        tools => tools,
    };
    trailing
        .iter()
        .map(|m| transcript(&m.content))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last user message's words, with a note per image.
fn last_user_words(messages: &[PromptMessage]) -> String {
    let Some(user) = messages.iter().rev().find(|m| m.role == Role::User) else {
        return String::new();
    };
    let mut words = user.joined_text();
    for image in images(&user.content) {
        if !words.is_empty() {
            words.push(' ');
        }
        match &image.source {
            ImageSource::Url(url) => words.push_str(&format!("[image {url}]")),
            ImageSource::Inline(i) => {
                words.push_str(&format!("[image {}, {} bytes]", i.mime_type, i.data.len()))
            }
        }
    }
    words
}

/// The tool calls `message` asks for (see the module).
fn tool_calls_asked(request: &ModelRequest, message: &PromptMessage) -> Vec<ToolCall> {
    let params = &request.params;
    if params.tools.is_empty()
        || message.role != Role::User
        || params.tool_choice == Some(ToolChoice::None)
    {
        return Vec::new();
    }
    let text = message.joined_text();
    let mut asked: Vec<(String, String)> = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("call ") {
        rest = &rest[at + 5..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect();
        if !params.tools.iter().any(|t| t.name == name) {
            continue;
        }
        rest = &rest[name.len()..];
        let arguments = json_object_at(rest.trim_start()).unwrap_or("{}");
        asked.push((name, arguments.to_owned()));
    }
    let forced = match &params.tool_choice {
        Some(ToolChoice::Function(name)) => Some(name.clone()),
        Some(ToolChoice::Required) => params.tools.first().map(|t| t.name.clone()),
        _ => None,
    };
    if let Some(name) = forced
        && !asked.iter().any(|(n, _)| *n == name)
    {
        asked.insert(0, (name, "{}".into()));
    }
    if params.parallel_tool_calls == Some(false) {
        asked.truncate(1);
    }
    asked
        .into_iter()
        .enumerate()
        .map(|(i, (name, arguments))| ToolCall {
            id: format!("call_{i}_{name}"),
            name,
            arguments,
        })
        .collect()
}

/// The JSON object text `text` starts with (balanced braces), if any.
fn json_object_at(text: &str) -> Option<&str> {
    if !text.starts_with('{') {
        return None;
    }
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    let candidate = &text[..=i];
                    return serde_json::from_str::<Value>(candidate)
                        .is_ok()
                        .then_some(candidate);
                }
            }
            _ => {}
        }
    }
    None
}

/// `{"echo": said}`, or an object with every property of `schema`.
fn json_reply(said: &str, schema: Option<&Map<String, Value>>) -> String {
    let properties = schema
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object);
    let object: Map<String, Value> = match properties {
        None => Map::from_iter([("echo".to_owned(), Value::from(said))]),
        Some(properties) => properties
            .iter()
            .map(|(name, spec)| {
                let value = match spec.get("type").and_then(Value::as_str) {
                    Some("number" | "integer") => Value::from(0),
                    Some("boolean") => Value::Bool(false),
                    Some("array") => Value::Array(Vec::new()),
                    Some("object") => Value::Object(Map::new()),
                    _ => Value::from(said),
                };
                (name.clone(), value)
            })
            .collect(),
    };
    Value::Object(object).to_string()
}

fn usage(request: &ModelRequest, completion_words: usize) -> Usage {
    let prompt_words: usize = request
        .messages
        .iter()
        .flat_map(|m| m.content.iter().filter_map(|p| p.as_text()))
        .map(|text| text.split_whitespace().count())
        .sum();
    Usage {
        prompt_tokens: prompt_words as u64,
        completion_tokens: completion_words as u64,
    }
}

/// Each piece's log probability (0: echo is sure), when asked for.
fn logprobs(request: &ModelRequest, pieces: &[String]) -> Vec<TokenLogprob> {
    if !request.params.logprobs {
        return Vec::new();
    }
    let alternatives = request.params.top_logprobs.unwrap_or(0).min(1) as usize;
    pieces
        .iter()
        .map(|piece| TokenLogprob {
            token: piece.clone(),
            logprob: 0.0,
            top: vec![
                TopLogprob {
                    token: piece.clone(),
                    logprob: 0.0,
                };
                alternatives
            ],
        })
        .collect()
}

#[async_trait]
impl ModelBackend for EchoBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "echo"
    }

    async fn complete(
        &self,
        model: &str,
        request: &ModelRequest,
    ) -> Result<ModelReply, BackendError> {
        let Echo {
            pieces,
            calls,
            finish,
        } = echo(request);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay * pieces.len().max(calls.len()) as u32).await;
        }
        Ok(ModelReply {
            model: Some(model.to_owned()),
            usage: Some(usage(request, pieces.len() + calls.len())),
            logprobs: logprobs(request, &pieces),
            text: pieces.concat(),
            tool_calls: calls,
            finish_reason: finish,
        })
    }

    async fn stream(
        &self,
        model: &str,
        request: &ModelRequest,
    ) -> Result<ReplyStream, BackendError> {
        let Echo {
            pieces,
            calls,
            finish,
        } = echo(request);
        let finished = ReplyChunk::Finished {
            finish_reason: finish,
            model: Some(model.to_owned()),
            usage: Some(usage(request, pieces.len() + calls.len())),
        };
        let logprobs = logprobs(request, &pieces);
        let mut chunks = Vec::new();
        for (i, piece) in pieces.into_iter().enumerate() {
            // As OpenAI-shaped backends decode them: a piece's log
            // probabilities ahead of its text.
            if let Some(logprob) = logprobs.get(i) {
                chunks.push(ReplyChunk::Logprobs(vec![logprob.clone()]));
            }
            chunks.push(ReplyChunk::Text(piece));
        }
        // A call's ID and name first, then its arguments in two pieces, as
        // models stream them.
        for (index, call) in (0u32..).zip(calls) {
            let mut middle = call.arguments.len() / 2;
            while !call.arguments.is_char_boundary(middle) {
                middle -= 1;
            }
            let (head, tail) = call.arguments.split_at(middle);
            chunks.push(ReplyChunk::ToolCall(ToolCallChunk {
                index,
                id: Some(call.id.clone()),
                name: Some(call.name.clone()),
                arguments: head.to_owned(),
            }));
            chunks.push(ReplyChunk::ToolCall(ToolCallChunk {
                index,
                id: None,
                name: None,
                arguments: tail.to_owned(),
            }));
        }
        let delay = self.delay;
        let paced = futures_util::stream::iter(chunks).then(move |chunk| async move {
            if !delay.is_zero() && !matches!(chunk, ReplyChunk::Logprobs(_)) {
                tokio::time::sleep(delay).await;
            }
            Ok(chunk)
        });
        Ok(Box::pin(
            paced.chain(futures_util::stream::once(async { Ok(finished) })),
        ))
    }

    async fn healthy(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests;
