//! Conversation items changed without a model call. Added: a caller's
//! messages, replies and tool calls or results written into a dialogue as
//! they are, checked as a turn is, in one atomic write; marked `added`, so
//! a caller's turn may end the dialogue unanswered (the next turn follows
//! it). Removed: parts of one turn taken out in place — indexes (and so
//! item IDs) stay; a turn left empty is skipped by prompts.

use super::{Engine, EngineError};
use crate::auth::Principal;
use crate::dialogue::content::{estimate_tokens, filtered_texts, media_bytes, tool_calls};
use crate::dialogue::model::{
    ContentPart, Dialogue, DialogueId, Owner, PromptMessage, Role, Time, Turn,
};
use crate::dialogue::ports::ExchangeCommit;
use crate::dialogue::validate;
use crate::failure::Violations;

/// Items one call may add (OpenAI's limit too).
pub const MAX_ADDED_ITEMS: usize = 20;

impl Engine {
    /// Appends `messages` (user, assistant or tool roles) to the caller's
    /// dialogue `id` as turns and returns them. Tool results must answer
    /// the calls of the turn before them; calls may stay open at the end.
    pub async fn add_turns(
        &self,
        caller: &Principal,
        id: &DialogueId,
        messages: Vec<PromptMessage>,
    ) -> Result<Vec<Turn>, EngineError> {
        let id = &id.scoped_to(&Owner::of(caller));
        let mut v = Violations::default();
        if messages.is_empty() || messages.len() > MAX_ADDED_ITEMS {
            v.add("items", format!("must hold 1 to {MAX_ADDED_ITEMS} items"));
        }
        for (i, m) in messages.iter().enumerate() {
            let path = format!("items[{i}].content");
            match m.role {
                Role::User | Role::Tool | Role::Assistant => validate::check_item(
                    &self.limits,
                    &m.content,
                    m.role == Role::Assistant,
                    &path,
                    &mut v,
                ),
                Role::System => v.add(
                    format!("items[{i}].role"),
                    "system and developer messages are a conversation's instructions, not items",
                ),
            }
        }
        v.into_result(())?;
        if self.blocks(
            messages
                .iter()
                .flat_map(|m| filtered_texts(&m.content))
                .collect(),
        ) {
            return Err(EngineError::ContentBlocked);
        }
        let _guard = self.locks.lock(id).await?;
        let now = Time::now();
        let dialogue = self.load(caller, id, now).await?;
        let added = messages.len() as u64;
        if dialogue.turn_count + added > self.limits.max_turns_per_dialogue {
            return Err(EngineError::FailedPrecondition {
                reason: "DIALOGUE_TURN_LIMIT",
                message: format!(
                    "{} holds {} turns; at most {} are allowed per dialogue",
                    id.resource_name(),
                    dialogue.turn_count,
                    self.limits.max_turns_per_dialogue
                ),
            });
        }
        // Open calls: those of the newest turn, then of each added reply.
        let newest = self
            .history()
            .before(&dialogue, dialogue.turn_count, 1)
            .await?;
        let mut open: Vec<String> = newest
            .iter()
            .flat_map(|t| tool_calls(&t.content))
            .map(|c| c.id.clone())
            .collect();
        let mut v = Violations::default();
        for (i, m) in messages.iter().enumerate() {
            let answers = m
                .content
                .iter()
                .any(|p| matches!(p, ContentPart::ToolResult(_)));
            if answers || !open.is_empty() {
                let pending: Vec<&str> = open.iter().map(String::as_str).collect();
                let mut inner = Violations::default();
                validate::check_answers(&m.content, &pending, &mut inner);
                if let Err(invalid) = inner.into_result(()) {
                    for f in invalid.0 {
                        v.add(format!("items[{i}].{}", f.field), f.description);
                    }
                }
            }
            open = tool_calls(&m.content).map(|c| c.id.clone()).collect();
        }
        v.into_result(())?;
        let media = dialogue.media_bytes
            + messages
                .iter()
                .map(|m| media_bytes(&m.content))
                .sum::<u64>();
        if media > self.limits.max_dialogue_media_bytes {
            return Err(EngineError::FailedPrecondition {
                reason: "DIALOGUE_MEDIA_LIMIT",
                message: format!(
                    "{} would hold {media} bytes of inline images; at most {} are allowed per dialogue",
                    id.resource_name(),
                    self.limits.max_dialogue_media_bytes
                ),
            });
        }
        let turns: Vec<Turn> = messages
            .into_iter()
            .zip(dialogue.turn_count..)
            .map(|(m, index)| Turn {
                index,
                role: m.role,
                tokens: u32::try_from(estimate_tokens(&m.content)).unwrap_or(u32::MAX),
                content: m.content.into_vec(),
                create_time: now,
                finish_reason: None,
                model: String::new(),
                usage: None,
                request_id: None,
                summary: None,
                added: true,
                rule: None,
            })
            .collect();
        let refs: Vec<&Turn> = turns.iter().collect();
        self.store
            .commit_exchange(ExchangeCommit {
                create: None,
                dialogue_id: id,
                expected_turn_count: dialogue.turn_count,
                turns: &refs,
                idempotency: None,
            })
            .await?;
        Ok(turns)
    }

    /// Takes the parts `remove` picks out of turn `index` of the caller's
    /// dialogue `id` and returns the turn as it is now; NOT_FOUND when the
    /// turn has none. Branches sharing the turn keep it: they adopt their
    /// own copy first, as does this dialogue when it borrows the turn.
    pub async fn remove_parts(
        &self,
        caller: &Principal,
        id: &DialogueId,
        index: u64,
        remove: impl Fn(&ContentPart) -> bool,
    ) -> Result<Turn, EngineError> {
        let id = &id.scoped_to(&Owner::of(caller));
        let _guard = self.locks.lock(id).await?;
        let mut dialogue = self.load(caller, id, Time::now()).await?;
        let not_found = || EngineError::NotFound(format!("{}/turns/{index}", id.resource_name()));
        let mut turn = self
            .history()
            .from(&dialogue, index, 1)
            .await?
            .into_iter()
            .find(|t| t.index == index)
            .ok_or_else(not_found)?;
        let before = turn.content.len();
        turn.content.retain(|p| !remove(p));
        if turn.content.len() == before {
            return Err(not_found());
        }
        turn.tokens = u32::try_from(estimate_tokens(&turn.content)).unwrap_or(u32::MAX);
        self.release_branches(&mut dialogue, index).await?;
        if dialogue.fork.as_ref().is_some_and(|f| f.turns > index) {
            self.adopt(&dialogue).await?;
        }
        self.store
            .replace_turns(id, std::slice::from_ref(&turn))
            .await?;
        if let Some(cache) = &self.cache {
            cache.forget_dialogue(id);
        }
        Ok(turn)
    }

    /// Empties an older exchange of `dialogue` (locked by the caller) in
    /// place: its reply at `reply_index` and the user turn it answers, in
    /// one write. One with tool calls or results is refused: emptying it
    /// would leave a call or a result elsewhere without its other half.
    pub(super) async fn forget_exchange(
        &self,
        mut dialogue: Dialogue,
        reply_index: u64,
    ) -> Result<(), EngineError> {
        let id = dialogue.id.clone();
        let not_found =
            || EngineError::NotFound(format!("{}/turns/{reply_index}", id.resource_name()));
        let mut pair = self.history().from(&dialogue, reply_index - 1, 2).await?;
        let [input, reply] = pair.as_mut_slice() else {
            return Err(not_found());
        };
        if reply.index != reply_index || reply.role != Role::Assistant || reply.content.is_empty() {
            return Err(not_found());
        }
        let tools = [&*input, &*reply].iter().any(|t| {
            t.content
                .iter()
                .any(|p| matches!(p, ContentPart::ToolCall(_) | ContentPart::ToolResult(_)))
        });
        if tools || input.role != Role::User {
            return Err(EngineError::FailedPrecondition {
                reason: "TOOL_EXCHANGE_KEPT",
                message: format!(
                    "the exchange at {}/turns/{reply_index} is part of a tool loop (or answers no user turn); only the latest such response can be deleted",
                    id.resource_name()
                ),
            });
        }
        for turn in [&mut *input, &mut *reply] {
            turn.content.clear();
            turn.tokens = 0;
        }
        self.release_branches(&mut dialogue, reply_index - 1)
            .await?;
        if dialogue
            .fork
            .as_ref()
            .is_some_and(|f| f.turns >= reply_index)
        {
            self.adopt(&dialogue).await?;
        }
        self.store.replace_turns(&id, &pair).await?;
        if let Some(cache) = &self.cache {
            cache.forget_dialogue(&id);
        }
        Ok(())
    }
}
