//! Building a turn's prompt: the system prompt, the summary of older
//! history (when the model summarizes), as many recent turns as fit, then
//! the new message.
//!
//! Summaries: once the history that fell out of the window (and no summary
//! covers yet) passes the model's `summarize_after_tokens`, the model is
//! asked for a new summary of the previous summary plus those turns. It is
//! stored as a turn (role SYSTEM, with the range it covers) together with the
//! exchange, and stands in for everything up to that range from then on.
//! A failed summary call does not fail the turn: it goes on without one.

use super::error::EngineError;
use crate::backend::ModelRequest;
use crate::dialogue::context::{ContextFit, Counted, MESSAGE_OVERHEAD};
use crate::dialogue::model::{
    ContentPart, Dialogue, GenerationParams, PromptMessage, Role, SummaryRange, Time, Turn,
};
use crate::dialogue::ports::DialogueStore;
use crate::dialogue::tokenizer::{count_tokens, truncate_to_tokens};
use crate::router::{ModelRoute, Router, SummaryPolicy};
use tokio::time::Instant;

/// Turns read from the store per step while walking back through history:
/// the first step, doubling up to the last.
const FIRST_HISTORY_CHUNK: usize = 8;
const MAX_HISTORY_CHUNK: usize = 128;

const SUMMARY_HEADING: &str = "Summary of the earlier conversation:";

const SUMMARY_INSTRUCTION: &str = "You keep the memory of a long conversation. Summarize the \
conversation below (an earlier summary may come first) for your own later use: keep facts, \
names, numbers, decisions, open questions and the user's preferences; drop pleasantries. \
Write plain prose.";

/// What a turn sends to the model, and a summary to store with it.
pub struct Prompt {
    pub messages: Vec<PromptMessage>,
    /// A new summary turn; the engine gives it its index.
    pub new_summary: Option<Turn>,
    /// Tokens of `messages`, counted while building it.
    pub tokens: u64,
}

pub struct PromptBuilder<'a> {
    pub store: &'a dyn DialogueStore,
    pub router: &'a Router,
    pub route: &'a ModelRoute,
    pub deadline: Option<Instant>,
}

fn turn_tokens(turn: &Turn) -> u64 {
    match turn.tokens {
        0 => count_tokens(&turn.text()),
        n => u64::from(n),
    }
}

impl PromptBuilder<'_> {
    pub async fn build(
        &self,
        dialogue: &Dialogue,
        user: Counted<'_>,
        max_tokens: Option<u32>,
    ) -> Result<Prompt, EngineError> {
        let route = self.route;
        let policy = route.summary;
        // Leave room for the reply when the caller bounds it, and for a
        // summary when the model summarizes.
        let summary_room = policy.map_or(0, |p| u64::from(p.max_tokens) + MESSAGE_OVERHEAD);
        let budget = u64::from(route.context_tokens)
            .saturating_sub(u64::from(max_tokens.unwrap_or(0)))
            .saturating_sub(summary_room);
        let system = Counted {
            text: &dialogue.system_prompt,
            tokens: dialogue.system_prompt_tokens(),
        };
        let mut fit = ContextFit::new(system, user, budget, route.max_history_turns)
            .ok_or_else(|| EngineError::FailedPrecondition {
                reason: "CONTEXT_TOO_LONG",
                message: format!(
                    "the system prompt and message (about {} tokens) plus max_tokens do not fit model {}'s context window of {} tokens",
                    system.tokens + user.tokens,
                    route.name,
                    route.context_tokens
                ),
            })?;
        let previous = match (policy, dialogue.latest_summary) {
            (Some(_), Some(index)) => self
                .store
                .list_turns(&dialogue.id, index, 1)
                .await?
                .into_iter()
                .find(|t| t.summary.is_some()),
            _ => None,
        };
        // Turns below this index are represented by the previous summary.
        let covered_to = previous
            .as_ref()
            .and_then(|s| s.summary)
            .map_or(0, |r| r.last_index + 1);

        // Walk back from the newest turn: keep what fits; with a policy,
        // collect what falls out (up to one window's worth) to summarize.
        let mut dropped: Vec<Turn> = Vec::new();
        let mut dropped_tokens = 0u64;
        let mut first_kept = dialogue.turn_count;
        let mut before = dialogue.turn_count;
        // Read a few turns first and more as they keep fitting, so a window
        // holding a few large turns does not decode dozens.
        let mut chunk_size = FIRST_HISTORY_CHUNK;
        'walk: while before > covered_to {
            let chunk = self
                .store
                .turns_before(&dialogue.id, before, chunk_size)
                .await?;
            let Some(oldest) = chunk.last() else { break };
            before = oldest.index;
            let exhausted = chunk.len() < chunk_size;
            chunk_size = (chunk_size * 2).min(MAX_HISTORY_CHUNK);
            for turn in chunk {
                if turn.index < covered_to {
                    break 'walk;
                }
                if turn.summary.is_some() {
                    continue;
                }
                if dropped.is_empty() && fit.offer(&turn) {
                    first_kept = turn.index;
                    continue;
                }
                if policy.is_none() {
                    break 'walk;
                }
                dropped_tokens += turn_tokens(&turn);
                dropped.push(Turn::clone(&turn));
                if dropped_tokens >= u64::from(route.context_tokens) {
                    break 'walk;
                }
            }
            if exhausted {
                break;
            }
        }

        let mut summary_text = previous.as_ref().map(Turn::text);
        let mut new_summary = None;
        if let Some(policy) = policy
            && dropped_tokens >= policy.after_tokens
            && first_kept > 0
        {
            dropped.reverse();
            match self
                .summarize(summary_text.as_deref(), &dropped, policy)
                .await
            {
                Ok(text) => {
                    new_summary = Some(summary_turn(&text, first_kept - 1));
                    summary_text = Some(text);
                }
                Err(e) => tracing::warn!(
                    dialogue = %dialogue.id,
                    error = %e,
                    "summarizing history failed; the turn goes on without a new summary"
                ),
            }
        }

        let mut tokens = fit.used_tokens();
        let mut messages = fit.finish();
        if let Some(text) = summary_text {
            tokens += count_tokens(&text) + MESSAGE_OVERHEAD;
            let at = usize::from(!dialogue.system_prompt.is_empty());
            messages.insert(
                at,
                PromptMessage {
                    role: Role::System,
                    text: format!("{SUMMARY_HEADING}\n{text}"),
                },
            );
        }
        Ok(Prompt {
            messages,
            new_summary,
            tokens,
        })
    }

    /// Asks the model for a summary of `previous` plus `turns` (oldest
    /// first), keeping the newest of them when all do not fit its window.
    async fn summarize(
        &self,
        previous: Option<&str>,
        turns: &[Turn],
        policy: SummaryPolicy,
    ) -> Result<String, EngineError> {
        let room = u64::from(self.route.context_tokens)
            .saturating_sub(u64::from(policy.max_tokens))
            .saturating_sub(count_tokens(SUMMARY_INSTRUCTION) + 3 * MESSAGE_OVERHEAD)
            .saturating_sub(previous.map_or(0, count_tokens));
        let mut lines: Vec<String> = Vec::new();
        let mut used = 0u64;
        for turn in turns.iter().rev() {
            let cost = turn_tokens(turn) + 2;
            if used + cost > room {
                break;
            }
            used += cost;
            let speaker = if turn.role == Role::Assistant {
                "Assistant"
            } else {
                "User"
            };
            lines.push(format!("{speaker}: {}", turn.text()));
        }
        if lines.is_empty() {
            return Err(EngineError::FailedPrecondition {
                reason: "CONTEXT_TOO_LONG",
                message: "the window is too small to summarize any turn".into(),
            });
        }
        lines.reverse();
        let mut transcript = String::new();
        if let Some(p) = previous {
            transcript.push_str(&format!("Earlier summary: {p}\n\n"));
        }
        transcript.push_str(&lines.join("\n"));
        let request = ModelRequest {
            messages: vec![
                PromptMessage {
                    role: Role::System,
                    text: SUMMARY_INSTRUCTION.to_owned(),
                },
                PromptMessage {
                    role: Role::User,
                    text: transcript,
                },
            ],
            params: GenerationParams {
                temperature: Some(0.0),
                max_tokens: Some(policy.max_tokens),
                ..Default::default()
            },
        };
        let reply = self
            .router
            .complete(self.route, &request, self.deadline)
            .await?;
        // A backend may ignore max_tokens; an overlong summary would eat
        // the room kept for history.
        let text = truncate_to_tokens(reply.value.text.trim(), policy.max_tokens as usize);
        if text.is_empty() {
            return Err(EngineError::Backend(
                crate::backend::BackendError::InvalidReply {
                    backend: reply.backend,
                    detail: "the summary was empty".into(),
                },
            ));
        }
        Ok(text)
    }
}

/// A summary turn standing for turns `0..=last_index`; index set later.
fn summary_turn(text: &str, last_index: u64) -> Turn {
    Turn {
        index: 0,
        role: Role::System,
        content: vec![ContentPart::Text(text.to_owned())],
        create_time: Time::now(),
        finish_reason: None,
        model: String::new(),
        usage: None,
        request_id: None,
        tokens: u32::try_from(count_tokens(text)).unwrap_or(u32::MAX),
        summary: Some(SummaryRange {
            first_index: 0,
            last_index,
        }),
    }
}
