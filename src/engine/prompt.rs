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
use super::history::History;
use crate::backend::ModelRequest;
use crate::dialogue::content::transcript;
use crate::dialogue::context::{
    ContextFit, Counted, MESSAGE_OVERHEAD, answers_calls as answers_calls_of, turn_tokens,
};
use crate::dialogue::model::{
    ContentPart, Dialogue, GenerationParams, PromptMessage, Role, SummaryRange, Time, Turn,
};
use crate::dialogue::tokenizer::{count_tokens, truncate_to_tokens};
use crate::router::{ModelRoute, Router, SummaryPolicy};
use std::sync::Arc;
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
    pub history: History<'a>,
    pub router: &'a Router,
    pub route: &'a ModelRoute,
    pub deadline: Option<Instant>,
}

impl PromptBuilder<'_> {
    /// The prompt of a turn of `dialogue` ending with `message` (which
    /// takes `message_tokens`). When the message answers tool calls, the
    /// turn of those calls (the newest stored one) must fit with it.
    pub async fn build(
        &self,
        dialogue: &Dialogue,
        message: PromptMessage,
        message_tokens: u64,
        max_tokens: Option<u32>,
    ) -> Result<Prompt, EngineError> {
        let answers_calls = message
            .content
            .iter()
            .any(|p| matches!(p, ContentPart::ToolResult(_)));
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
        let too_long = |what: &str, tokens: u64| EngineError::FailedPrecondition {
            reason: "CONTEXT_TOO_LONG",
            message: format!(
                "{what} (about {tokens} tokens) plus max_tokens do not fit model {}'s context window of {} tokens",
                route.name, route.context_tokens
            ),
        };
        let total = system.tokens + message_tokens;
        let mut fit = ContextFit::new(
            system,
            message,
            message_tokens,
            budget,
            route.max_history_turns,
        )
        .ok_or_else(|| too_long("the system prompt and message", total))?;
        let previous = match (policy, dialogue.latest_summary) {
            (Some(_), Some(index)) => self
                .history
                .from(dialogue, index, 1)
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
        // A turn of tool results waits for the (older) turn of its calls:
        // the two are offered, kept and dropped together.
        let mut results: Option<Arc<Turn>> = None;
        let mut newest = true;
        'walk: while before > covered_to {
            let chunk = self.history.before(dialogue, before, chunk_size).await?;
            let Some(oldest) = chunk.last() else { break };
            before = oldest.index;
            let exhausted = chunk.len() < chunk_size;
            chunk_size = (chunk_size * 2).min(MAX_HISTORY_CHUNK);
            for turn in chunk {
                if turn.index < covered_to {
                    break 'walk;
                }
                // Summaries stand apart; a turn whose items were all
                // deleted says nothing.
                if turn.summary.is_some() || turn.content.is_empty() {
                    continue;
                }
                if results.is_none() && answers_calls_of(&turn) {
                    results = Some(turn);
                    continue;
                }
                // No allocation per turn: this runs for every turn of a window.
                let single = [&turn];
                let pair;
                let unit: &[&Arc<Turn>] = match &results {
                    Some(results) => {
                        pair = [results, &turn];
                        &pair
                    }
                    None => &single,
                };
                let must_fit = std::mem::take(&mut newest) && answers_calls;
                if dropped.is_empty() && fit.offer(unit) {
                    first_kept = turn.index;
                    results = None;
                    continue;
                }
                if must_fit {
                    let tokens = unit.iter().map(|t| turn_tokens(t)).sum::<u64>() + total;
                    return Err(too_long(
                        "the message with the tool calls it answers",
                        tokens,
                    ));
                }
                if policy.is_none() {
                    break 'walk;
                }
                for t in unit {
                    dropped_tokens += turn_tokens(t);
                    dropped.push(Turn::clone(t));
                }
                results = None;
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
                PromptMessage::text(Role::System, format!("{SUMMARY_HEADING}\n{text}")),
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
            let speaker = match turn.role {
                Role::Assistant => "Assistant",
                Role::Tool => "Tools",
                Role::User | Role::System => "User",
            };
            // Tool activity is kept as text: calls, results, image notes.
            lines.push(format!("{speaker}: {}", transcript(&turn.content)));
        }
        if lines.is_empty() {
            return Err(EngineError::FailedPrecondition {
                reason: "CONTEXT_TOO_LONG",
                message: "the window is too small to summarize any turn".into(),
            });
        }
        lines.reverse();
        let mut conversation = String::new();
        if let Some(p) = previous {
            conversation.push_str(&format!("Earlier summary: {p}\n\n"));
        }
        conversation.push_str(&lines.join("\n"));
        let request = ModelRequest {
            messages: vec![
                PromptMessage::text(Role::System, SUMMARY_INSTRUCTION),
                PromptMessage::text(Role::User, conversation),
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
        added: false,
        rule: None,
    }
}
