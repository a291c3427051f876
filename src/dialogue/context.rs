//! Fitting a dialogue into a model's context window: the system prompt, then
//! as many of the most recent turns as fit, oldest dropped first, never a
//! partial turn, then the new user message.
//!
//! The engine offers stored turns newest first and stops pulling them from
//! the store as soon as one does not fit, so the cost of a turn is bounded
//! by the window, not by the dialogue's length.
//!
//! Tokens are counted with `tokenizer::count_tokens`; stored turns carry
//! their count, so history is not re-tokenized on every turn.

use super::content::estimate_tokens;
use super::model::{ContentPart, Role, Turn};
use super::tokenizer::count_tokens;
use crate::dialogue::model::PromptMessage;
use std::sync::Arc;

/// Tokens a message adds to a chat prompt besides its content (role markers).
pub const MESSAGE_OVERHEAD: u64 = 4;

/// A text with its token count, counted once by the caller.
#[derive(Debug, Clone, Copy)]
pub struct Counted<'a> {
    pub text: &'a str,
    pub tokens: u64,
}

impl<'a> Counted<'a> {
    pub fn new(text: &'a str) -> Counted<'a> {
        Counted {
            text,
            tokens: count_tokens(text),
        }
    }
}

/// Tokens a stored turn takes in a prompt: its stored count, else an
/// estimate (see `content::estimate_tokens`).
pub fn turn_tokens(turn: &Turn) -> u64 {
    match turn.tokens {
        0 => estimate_tokens(&turn.content),
        n => u64::from(n),
    }
}

pub struct ContextFit {
    system_prompt: String,
    message: PromptMessage,
    budget: u64,
    remaining_tokens: u64,
    remaining_turns: usize,
    /// Accepted history, newest first.
    history: Vec<PromptMessage>,
    full: bool,
}

impl ContextFit {
    /// Starts a prompt of at most `budget` tokens and `max_turns` history
    /// turns, ending with `message` (which takes `message_tokens`). `None`
    /// when the system prompt and the new message alone do not fit.
    pub fn new(
        system_prompt: Counted<'_>,
        message: PromptMessage,
        message_tokens: u64,
        budget: u64,
        max_turns: usize,
    ) -> Option<ContextFit> {
        let system_cost = match system_prompt.text {
            "" => 0,
            _ => system_prompt.tokens + MESSAGE_OVERHEAD,
        };
        let remaining_tokens =
            budget.checked_sub(system_cost + message_tokens + MESSAGE_OVERHEAD)?;
        Some(ContextFit {
            budget,
            system_prompt: system_prompt.text.to_owned(),
            message,
            remaining_tokens,
            remaining_turns: max_turns,
            history: Vec::new(),
            full: max_turns == 0,
        })
    }

    /// Offers the next older turns, newest first, as one unit — a turn of
    /// tool results with the turn of the calls they answer, so the two are
    /// never split — or a single turn. False once the window is full (the
    /// unit and every older turn are left out).
    pub fn offer(&mut self, unit: &[&Arc<Turn>]) -> bool {
        if self.full {
            return false;
        }
        let cost: u64 = unit.iter().map(|t| turn_tokens(t) + MESSAGE_OVERHEAD).sum();
        if cost > self.remaining_tokens || unit.len() > self.remaining_turns {
            self.full = true;
            return false;
        }
        self.remaining_tokens -= cost;
        self.remaining_turns -= unit.len();
        self.full = self.remaining_turns == 0;
        // Shared with the stored turns, not copied.
        self.history
            .extend(unit.iter().map(|turn| PromptMessage::of_turn(turn)));
        true
    }

    /// Tokens of the prompt so far (system prompt, message, history).
    pub fn used_tokens(&self) -> u64 {
        self.budget - self.remaining_tokens
    }

    pub fn is_full(&self) -> bool {
        self.full
    }

    /// The prompt in model order: system, history oldest first, new message.
    pub fn finish(self) -> Vec<PromptMessage> {
        let mut prompt = Vec::with_capacity(self.history.len() + 2);
        if !self.system_prompt.is_empty() {
            prompt.push(PromptMessage::text(Role::System, self.system_prompt));
        }
        prompt.extend(self.history.into_iter().rev());
        prompt.push(self.message);
        prompt
    }
}

/// Whether `turn` answers tool calls: it goes into a prompt only with the
/// turn of those calls.
pub fn answers_calls(turn: &Turn) -> bool {
    turn.content
        .iter()
        .any(|p| matches!(p, ContentPart::ToolResult(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialogue::model::{ContentPart, MessageContent};

    fn turn(index: u64, role: Role, text: &str) -> Turn {
        Turn::of_text(index, role, text)
    }

    fn texts(prompt: &[PromptMessage]) -> Vec<String> {
        prompt.iter().map(PromptMessage::joined_text).collect()
    }

    fn fit(system: &str, message: &str, budget: u64, max_turns: usize) -> Option<ContextFit> {
        let new = PromptMessage::text(Role::User, message);
        ContextFit::new(
            Counted::new(system),
            new,
            count_tokens(message),
            budget,
            max_turns,
        )
    }

    #[test]
    fn keeps_the_newest_turns_that_fit_in_order() {
        // system (2+4) + new (1+4) = 11 tokens; each one-word turn costs 5.
        let mut fit = fit("be kind", "new", 21, 100).unwrap();
        assert!(fit.offer(&[&Arc::new(turn(3, Role::Assistant, "four"))]));
        assert!(fit.offer(&[&Arc::new(turn(2, Role::User, "three"))]));
        assert!(!fit.offer(&[&Arc::new(turn(1, Role::Assistant, "two"))]));
        assert!(fit.is_full());
        assert!(
            !fit.offer(&[&Arc::new(turn(0, Role::User, "o"))]),
            "nothing older after a gap"
        );
        let prompt = fit.finish();
        assert_eq!(texts(&prompt), ["be kind", "three", "four", "new"]);
        assert_eq!(prompt[0].role, Role::System);
        assert_eq!(prompt[1].role, Role::User);
        assert_eq!(prompt[3].role, Role::User);
    }

    #[test]
    fn history_is_shared_with_the_stored_turns_not_copied() {
        let stored = Arc::new(turn(3, Role::Assistant, "four"));
        let mut fit = fit("", "new", 100, 10).unwrap();
        assert!(fit.offer(&[&stored]));
        let prompt = fit.finish();
        let MessageContent::Stored(shared) = &prompt[0].content else {
            panic!("the stored turn was copied into the prompt");
        };
        assert!(Arc::ptr_eq(shared, &stored));
    }

    #[test]
    fn never_splits_a_turn() {
        let mut fit = fit("", "new", 30, 100).unwrap();
        assert!(fit.offer(&[&Arc::new(turn(9, Role::User, "hi"))]));
        assert!(!fit.offer(&[&Arc::new(turn(8, Role::User, &"lorem ipsum ".repeat(40)))]));
        assert_eq!(texts(&fit.finish()), ["hi", "new"]);
    }

    #[test]
    fn the_turn_cap_bounds_history_too() {
        let mut fit = fit("", "new", 10_000, 2).unwrap();
        assert!(fit.offer(&[&Arc::new(turn(5, Role::User, "a"))]));
        assert!(fit.offer(&[&Arc::new(turn(4, Role::User, "b"))]));
        assert!(fit.is_full());
        assert!(!fit.offer(&[&Arc::new(turn(3, Role::User, "c"))]));
        assert_eq!(texts(&fit.finish()), ["b", "a", "new"]);
    }

    #[test]
    fn a_message_larger_than_the_window_does_not_fit() {
        assert!(fit("", &"lorem ipsum ".repeat(100), 100, 10).is_none());
    }

    #[test]
    fn stored_token_counts_are_used_instead_of_recounting() {
        let mut fit = fit("", "new", 100, 10).unwrap();
        let mut heavy = turn(1, Role::User, "hi");
        heavy.tokens = 200;
        assert!(
            !fit.offer(&[&Arc::new(heavy)]),
            "a stored count of 200 does not fit 100"
        );
    }

    #[test]
    fn a_call_and_its_results_fit_together_or_not_at_all() {
        use crate::dialogue::model::{ToolCall, ToolResult};
        let mut calls = turn(4, Role::Assistant, "");
        calls.content = vec![ContentPart::ToolCall(ToolCall {
            id: "c".into(),
            name: "lookup".into(),
            arguments: "{}".into(),
        })];
        let mut results = turn(5, Role::Tool, "");
        results.content = vec![ContentPart::ToolResult(ToolResult {
            call_id: "c".into(),
            content: vec![ContentPart::Text("lorem ipsum ".repeat(3))],
            is_error: false,
        })];
        assert!(answers_calls(&results) && !answers_calls(&calls));
        // Room for the results alone, not for both: neither goes in.
        let room = turn_tokens(&results) + MESSAGE_OVERHEAD + 3;
        let (results, calls) = (Arc::new(results), Arc::new(calls));
        let mut tight = fit("", "new", room + 5, 10).unwrap();
        assert!(!tight.offer(&[&results, &calls]));
        assert_eq!(tight.finish().len(), 1);
        let mut roomy = fit("", "new", 1_000, 10).unwrap();
        assert!(roomy.offer(&[&results, &calls]));
        let prompt = roomy.finish();
        assert_eq!(
            prompt.iter().map(|m| m.role).collect::<Vec<_>>(),
            [Role::Assistant, Role::Tool, Role::User]
        );
    }
}
