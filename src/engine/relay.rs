//! Relaying a model's streamed reply to the client while assembling it:
//! text as deltas (with the log probabilities of the tokens they hold),
//! tool calls as they form, numbered 0, 1, ... in the order they appear.
//!
//! With an output filter, text is released only once it cannot be the
//! start of a blocked term, and tool calls are held until the reply ends:
//! a call whose arguments hold a blocked term is never shown, and the reply
//! then ends with CONTENT_FILTER and no calls.

use super::EngineError;
use crate::backend::{ModelReply, ToolCallChunk, ToolCalls};
use crate::dialogue::content_filter::{ContentFilter, StreamFilter};
use crate::dialogue::model::{FinishReason, StreamEvent, TokenLogprob, ToolCall};
use std::collections::VecDeque;
use tokio::sync::mpsc;

pub(super) type EventSender = mpsc::Sender<Result<StreamEvent, EngineError>>;

pub(super) struct Relay<'a> {
    tx: &'a EventSender,
    filter: Option<&'a ContentFilter>,
    output: Option<StreamFilter<'a>>,
    /// The text so far (without a filter; the filter keeps its own).
    text: String,
    /// Bytes of text sent.
    sent: u64,
    /// Log probabilities of tokens not (wholly) sent yet.
    held_logprobs: VecDeque<TokenLogprob>,
    /// Bytes of text the sent log probabilities cover.
    logprob_bytes: u64,
    logprobs: Vec<TokenLogprob>,
    calls: ToolCalls,
    /// The backend's index of each call, by our index.
    call_indices: Vec<u32>,
}

impl<'a> Relay<'a> {
    pub fn new(tx: &'a EventSender, filter: Option<&'a ContentFilter>) -> Relay<'a> {
        Relay {
            tx,
            filter,
            output: filter.map(ContentFilter::stream),
            text: String::new(),
            sent: 0,
            held_logprobs: VecDeque::new(),
            logprob_bytes: 0,
            logprobs: Vec::new(),
            calls: ToolCalls::default(),
            call_indices: Vec::new(),
        }
    }

    /// Relays a piece of text; false once the client is gone.
    pub async fn text(&mut self, piece: String) -> bool {
        let safe = match self.output.as_mut() {
            Some(filter) => filter.push(&piece),
            None => {
                self.text.push_str(&piece);
                piece
            }
        };
        self.send_text(safe).await
    }

    /// Log probabilities of tokens coming next (backends send them ahead of
    /// their text); they go out with the delta completing their tokens.
    pub fn logprobs(&mut self, logprobs: Vec<TokenLogprob>) {
        self.held_logprobs.extend(logprobs);
    }

    /// Whether the filter cut the reply short.
    pub fn is_blocked(&self) -> bool {
        self.output.as_ref().is_some_and(StreamFilter::is_blocked)
    }

    /// Relays a piece of a tool call (held with an output filter); false
    /// once the client is gone.
    pub async fn tool_call(&mut self, mut chunk: ToolCallChunk) -> bool {
        let index = match self.call_indices.iter().position(|&i| i == chunk.index) {
            Some(p) => p,
            None => {
                self.call_indices.push(chunk.index);
                // A backend that names no call gets one named for it, so the
                // client's first piece carries an ID as promised.
                if chunk.id.is_none() {
                    chunk.id = Some(format!("call_{}", self.call_indices.len() - 1));
                }
                self.call_indices.len() - 1
            }
        };
        chunk.index = u32::try_from(index).unwrap_or(u32::MAX);
        self.calls.push(&chunk);
        if self.filter.is_some() {
            return true;
        }
        let event = StreamEvent::ToolCallDelta {
            index: chunk.index,
            id: chunk.id,
            name: chunk.name,
            arguments: chunk.arguments,
        };
        self.tx.send(Ok(event)).await.is_ok()
    }

    /// Sends what is held back and returns the reply (usage and model left
    /// for the caller to fill); `None` once the client is gone.
    pub async fn finish(mut self, mut finish_reason: FinishReason) -> Option<ModelReply> {
        let mut text = std::mem::take(&mut self.text);
        if let Some(mut filter) = self.output.take() {
            let (rest, cut) = filter.finish();
            if !self.send_text(rest).await {
                return None;
            }
            if cut {
                finish_reason = FinishReason::ContentFilter;
            }
            text = filter.text().to_owned();
        }
        let mut calls = std::mem::take(&mut self.calls).finish();
        let blocked = |call: &ToolCall| {
            self.filter
                .is_some_and(|f| f.first_match(&call.arguments).is_some())
        };
        if finish_reason == FinishReason::ContentFilter || calls.iter().any(blocked) {
            finish_reason = FinishReason::ContentFilter;
            calls.clear();
        } else {
            // Log probabilities whose tokens did not line up with the text.
            let rest: Vec<TokenLogprob> = self.held_logprobs.drain(..).collect();
            if !rest.is_empty() {
                self.logprobs.extend(rest.iter().cloned());
                let delta = StreamEvent::Delta {
                    text: String::new(),
                    offset: self.sent,
                    logprobs: rest,
                };
                if self.tx.send(Ok(delta)).await.is_err() {
                    return None;
                }
            }
        }
        if self.filter.is_some() {
            for (index, call) in calls.iter().enumerate() {
                let event = StreamEvent::ToolCallDelta {
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    id: Some(call.id.clone()),
                    name: Some(call.name.clone()),
                    arguments: call.arguments.clone(),
                };
                if self.tx.send(Ok(event)).await.is_err() {
                    return None;
                }
            }
        }
        Some(ModelReply {
            text,
            tool_calls: calls,
            finish_reason,
            usage: None,
            model: None,
            logprobs: self.logprobs,
        })
    }

    /// Sends released text with the log probabilities of the tokens it
    /// completes; false once the client is gone.
    async fn send_text(&mut self, text: String) -> bool {
        let offset = self.sent;
        self.sent += text.len() as u64;
        let mut logprobs = Vec::new();
        while let Some(next) = self.held_logprobs.front() {
            let end = self.logprob_bytes + next.token.len() as u64;
            if end > self.sent {
                break;
            }
            self.logprob_bytes = end;
            logprobs.extend(self.held_logprobs.pop_front());
        }
        if text.is_empty() && logprobs.is_empty() {
            return true;
        }
        self.logprobs.extend(logprobs.iter().cloned());
        let delta = StreamEvent::Delta {
            text,
            offset,
            logprobs,
        };
        self.tx.send(Ok(delta)).await.is_ok()
    }
}
