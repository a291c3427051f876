//! Dialogues as resources: create, read (an admin may read another
//! owner's metadata), list page by page, update, delete, list turns, and
//! the sweep that erases expired dialogues.

use super::{Engine, EngineError, token_count_u32};
use crate::auth::Principal;
use crate::dialogue::content::answer_bytes;
use crate::dialogue::model::{
    Dialogue, DialogueId, DialogueSpec, Expiration, Owner, Page, Time, Turn, TurnView, UpdateMask,
};
use crate::dialogue::page_token;
use crate::dialogue::ports::DialogueCursor;
use crate::dialogue::validate;
use crate::failure::{Invalid, Violations};
use std::sync::Arc;

/// Page size of list calls when the caller names none.
const DEFAULT_PAGE_SIZE: usize = 50;
/// Text bytes of turns in one response: well under the 4 MiB that gRPC
/// clients accept by default. A page that would exceed it ends early.
const MAX_RESPONSE_TEXT_BYTES: usize = 3 * 1024 * 1024;

impl Engine {
    pub async fn create_dialogue(
        &self,
        caller: &Principal,
        id: Option<DialogueId>,
        spec: DialogueSpec,
    ) -> Result<Dialogue, EngineError> {
        let now = Time::now();
        let owner = Owner::of(caller);
        let id = id.unwrap_or_else(DialogueId::generate).scoped_to(&owner);
        let dialogue = self.new_dialogue(owner, id, &spec, now, "dialogue")?;
        let _guard = self.locks.lock(&dialogue.id).await?;
        self.erase_if_expired(&dialogue.id, now).await?;
        self.store.create_dialogue(&dialogue).await?;
        Ok(dialogue)
    }

    /// The caller's dialogue, or with `owner` naming someone else, that
    /// owner's dialogue: for admins its metadata without its content
    /// (system prompt, state, turns), for anyone else NOT_FOUND.
    pub async fn get_dialogue(
        &self,
        caller: &Principal,
        id: &DialogueId,
        owner: Option<&Owner>,
        last_turns: usize,
        view: TurnView,
    ) -> Result<(Dialogue, Vec<Turn>), EngineError> {
        let now = Time::now();
        if let Some(owner) = owner.filter(|&o| *o != Owner::of(caller)) {
            if !caller.is_admin() {
                return Err(EngineError::NotFound(id.resource_name()));
            }
            let mut other = self.load_any(&id.scoped_to(owner), now).await?;
            other.system_prompt.clear();
            other.state = None;
            return Ok((other, Vec::new()));
        }
        let id = &id.scoped_to(&Owner::of(caller));
        let dialogue = self.load(caller, id, now).await?;
        let mut turns = Vec::new();
        if last_turns > 0 {
            turns = self
                .history()
                .before(
                    &dialogue,
                    dialogue.turn_count,
                    last_turns.min(page_token::MAX_PAGE_SIZE),
                )
                .await?
                .into_iter()
                .map(Arc::unwrap_or_clone)
                .collect();
            keep_within_response_budget(&mut turns, view);
            turns.reverse();
        }
        Ok((dialogue, turns))
    }

    pub async fn list_dialogues(
        &self,
        caller: &Principal,
        page_size_req: usize,
        page_token: &str,
    ) -> Result<Page<Dialogue>, EngineError> {
        const SCOPE: &str = "dialogues";
        let after = match page_token::position(page_token, SCOPE)? {
            None => None,
            Some(position) => Some(dialogue_cursor(&position)?),
        };
        let size = page_token::page_size(page_size_req, DEFAULT_PAGE_SIZE);
        let (items, next) = self
            .store
            .list_dialogues(&Owner::of(caller), after.as_ref(), size)
            .await?;
        let next_page_token = next.map(|c| {
            let mut position = c.create_time.0.to_be_bytes().to_vec();
            position.extend_from_slice(c.id.as_str().as_bytes());
            page_token::encode(SCOPE, &position)
        });
        Ok(Page {
            items,
            next_page_token,
        })
    }

    pub async fn update_dialogue(
        &self,
        caller: &Principal,
        id: &DialogueId,
        spec: DialogueSpec,
        mask: UpdateMask,
    ) -> Result<Dialogue, EngineError> {
        let id = &id.scoped_to(&Owner::of(caller));
        let now = Time::now();
        let mut v = Violations::default();
        validate::check_spec(&self.limits, &spec, Some(&mask), "dialogue", now, &mut v);
        if mask.model {
            self.check_model(&spec.model, "dialogue.model", &mut v);
        }
        v.into_result(())?;
        let _guard = self.locks.lock(id).await?;
        let mut dialogue = self.load(caller, id, now).await?;
        if mask.model {
            dialogue.model = self.model_or_default(&spec.model);
        }
        if mask.system_prompt {
            dialogue.system_prompt_tokens = token_count_u32(&spec.system_prompt);
            dialogue.system_prompt = spec.system_prompt;
        }
        if mask.labels {
            dialogue.labels = spec.labels;
        }
        if mask.state {
            dialogue.state = spec.state;
        }
        if mask.expiration {
            dialogue.expire_time = expire_time(spec.expiration, now);
        }
        dialogue.update_time = now;
        self.store.update_dialogue(&dialogue).await?;
        Ok(dialogue)
    }

    pub async fn delete_dialogue(
        &self,
        caller: &Principal,
        id: &DialogueId,
    ) -> Result<(), EngineError> {
        let id = &id.scoped_to(&Owner::of(caller));
        let _guard = self.locks.lock(id).await?;
        self.load(caller, id, Time::now()).await?;
        self.erase(id).await?;
        Ok(())
    }

    /// Removes the exchange whose reply is at `reply_index` — the reply and
    /// the turn it answers (a deleted response). The latest goes with its
    /// turns; an older one is emptied in place (`forget_exchange`), so the
    /// later turns keep their indexes.
    pub async fn delete_exchange(
        &self,
        caller: &Principal,
        id: &DialogueId,
        reply_index: u64,
    ) -> Result<(), EngineError> {
        let id = &id.scoped_to(&Owner::of(caller));
        let _guard = self.locks.lock(id).await?;
        let mut dialogue = self.load(caller, id, Time::now()).await?;
        if reply_index == 0 || reply_index >= dialogue.turn_count {
            return Err(EngineError::NotFound(id.resource_name()));
        }
        if reply_index + 1 != dialogue.turn_count {
            return self.forget_exchange(dialogue, reply_index).await;
        }
        let keep = reply_index - 1;
        self.release_branches(&mut dialogue, keep).await?;
        if dialogue.fork.as_ref().is_some_and(|f| f.turns > keep) {
            // The exchange is borrowed: own the history, then cut it.
            self.adopt(&dialogue).await?;
        }
        self.store
            .truncate_turns(id, keep, dialogue.turn_count)
            .await?;
        if let Some(cache) = &self.cache {
            cache.forget_dialogue(id);
        }
        Ok(())
    }

    pub async fn list_turns(
        &self,
        caller: &Principal,
        id: &DialogueId,
        page_size_req: usize,
        page_token: &str,
        view: TurnView,
    ) -> Result<Page<Turn>, EngineError> {
        let id = &id.scoped_to(&Owner::of(caller));
        let scope = format!("{}/turns", id.resource_name());
        let from = match page_token::position(page_token, &scope)? {
            None => 0,
            Some(raw) => {
                let bytes: [u8; 8] = raw.try_into().map_err(|_| damaged())?;
                u64::from_be_bytes(bytes)
            }
        };
        let dialogue = self.load(caller, id, Time::now()).await?;
        let size = page_token::page_size(page_size_req, DEFAULT_PAGE_SIZE);
        let items = self.read_turns(&dialogue, from, size, view).await?;
        let next = items
            .last()
            .map(|t| t.index + 1)
            .filter(|&n| n < dialogue.turn_count);
        let next_page_token = next.map(|n| page_token::encode(&scope, &n.to_be_bytes()));
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// The caller's turns of `id` from index `from` on, at most `limit`:
    /// for fronts that name turns by index (response and item IDs).
    pub async fn turns_from(
        &self,
        caller: &Principal,
        id: &DialogueId,
        from: u64,
        limit: usize,
        view: TurnView,
    ) -> Result<Vec<Turn>, EngineError> {
        let id = &id.scoped_to(&Owner::of(caller));
        let dialogue = self.load(caller, id, Time::now()).await?;
        let limit = limit.clamp(1, page_token::MAX_PAGE_SIZE);
        self.read_turns(&dialogue, from, limit, view).await
    }

    async fn read_turns(
        &self,
        dialogue: &Dialogue,
        from: u64,
        limit: usize,
        view: TurnView,
    ) -> Result<Vec<Turn>, EngineError> {
        let mut items = self.history().from(dialogue, from, limit).await?;
        keep_within_response_budget(&mut items, view);
        Ok(items)
    }

    /// Erases dialogues whose expiry passed, and stale idempotency keys.
    pub async fn sweep_expired(&self) -> Result<usize, EngineError> {
        if let Some(cache) = &self.cache {
            cache.prune();
        }
        let now = Time::now();
        let report = self.store.sweep_expired(now).await?;
        let mut erased = 0;
        for id in report.expired_dialogues {
            let _guard = self.locks.lock(&id).await?;
            if self.erase_if_expired(&id, now).await? {
                erased += 1;
            }
        }
        Ok(erased)
    }
}

fn damaged() -> Invalid {
    Invalid::field("page_token", "is damaged")
}

/// A ListDialogues position: the create time, then the dialogue's ID.
fn dialogue_cursor(raw: &[u8]) -> Result<DialogueCursor, Invalid> {
    let (time, id) = raw.split_at_checked(8).ok_or_else(damaged)?;
    let time = i64::from_be_bytes(time.try_into().map_err(|_| damaged())?);
    let id = std::str::from_utf8(id).map_err(|_| damaged())?;
    Ok(DialogueCursor {
        create_time: Time(time),
        id: DialogueId::from_stored(id).map_err(|_| damaged())?,
    })
}

/// Keeps the leading turns that fit `MAX_RESPONSE_TEXT_BYTES` (inline
/// image bytes counted in the full view); always at least one, since a
/// single turn is bounded by the limits.
fn keep_within_response_budget(turns: &mut Vec<Turn>, view: TurnView) {
    let mut total = 0;
    let keep = turns
        .iter()
        .position(|t| {
            total += answer_bytes(&t.content, view == TurnView::Full);
            total > MAX_RESPONSE_TEXT_BYTES
        })
        .unwrap_or(turns.len());
    turns.truncate(keep.max(1));
}

pub(super) fn expire_time(expiration: Expiration, now: Time) -> Option<Time> {
    match expiration {
        Expiration::Never | Expiration::Ttl(0) => None,
        Expiration::Ttl(secs) => Some(now.saturating_add_secs(secs)),
        Expiration::At(t) => Some(t),
    }
}
