//! Everything before the model call: the plan of the call (after the
//! checks of `checks.rs`) — the dialogue it belongs to (created if asked),
//! the prompt fitted into the model's context window, the turns to store
//! and where the reply sits in the response cache. A repeated request is
//! planned as a replay.

use super::prompt::PromptBuilder;
use super::reply_cache::{CacheKey, ReplyCache};
use super::{Engine, EngineError, quota_key};
use crate::auth::Principal;
use crate::backend::ModelRequest;
use crate::dialogue::content::{estimate_tokens, filtered_texts, tokens_at_most};
use crate::dialogue::context::MESSAGE_OVERHEAD;
use crate::dialogue::model::{
    CompletionRequest, ContentPart, Dialogue, DialogueId, GenerationParams, Owner, PromptMessage,
    Role, Time, Turn, TurnOutcome, TurnRequest,
};
use crate::dialogue::validate;
use crate::failure::Violations;
use crate::router::ModelRoute;
use std::time::{Duration, Instant};

/// A turn that passed every check and is ready for the model call.
pub(super) struct PlannedTurn {
    pub dialogue_id: DialogueId,
    /// Whose token budget the turn is charged to.
    pub quota_key: String,
    /// The dialogue to create with the turn (create_if_missing).
    pub create: Option<Dialogue>,
    pub expected_turn_count: u64,
    pub route: ModelRoute,
    pub request: ModelRequest,
    /// A summary of older history to store ahead of the exchange.
    pub summary: Option<Turn>,
    /// Tokens of `request.messages`; None when nobody needed the count yet
    /// (a stateless call whose bytes fit: see `plan_completion`).
    pub prompt_tokens: Option<u64>,
    pub user_turn: Turn,
    pub started: Instant,
    /// Time planning spent waiting on a model (summarizing old history).
    pub waited: Duration,
    /// Where the reply is (or goes) in the response cache, if it may.
    pub cache_key: Option<CacheKey>,
    /// When the caller stops waiting.
    pub deadline: Option<Instant>,
    /// A stateless completion: nothing is stored.
    pub stateless: bool,
    /// `GenerationParams::digest` of the request, kept with its
    /// idempotency key (empty without one).
    pub settings_digest: String,
}

pub(super) enum Plan {
    /// The request repeats a stored one: answer with its result.
    Replay(Box<TurnOutcome>),
    Run(Box<PlannedTurn>),
}

impl Engine {
    /// Checks a turn, admits it, takes its dialogue's lock (held while the
    /// returned guard lives) and plans it.
    pub(super) async fn prepare_turn(
        &self,
        request: &TurnRequest,
    ) -> Result<(Plan, super::locks::DialogueGuard), EngineError> {
        let started = Instant::now();
        self.check_turn_request(request)?;
        self.admit_tokens(&request.caller).await?;
        let guard = self.locks.lock(&request.dialogue_id).await?;
        Ok((self.plan_turn(request, started).await?, guard))
    }

    /// The dialogue a turn goes to, and the dialogue to create with it
    /// when it is missing and may be created.
    async fn dialogue_of(
        &self,
        request: &TurnRequest,
        now: Time,
    ) -> Result<(Dialogue, Option<Dialogue>), EngineError> {
        let id = &request.dialogue_id;
        let stored = self
            .store
            .get_dialogue(id)
            .await?
            .filter(|d| !d.is_expired(now));
        let owner = Owner::of(&request.caller);
        match (stored, &request.create_if_missing) {
            (Some(d), _) if d.owner == owner => Ok((d, None)),
            // Someone else's: not found, and not creatable under that ID.
            (Some(_), _) | (None, None) => Err(EngineError::NotFound(id.resource_name())),
            (None, Some(spec)) => {
                self.erase_if_expired(id, now).await?;
                let d = self.new_dialogue(owner, id.clone(), spec, now, "dialogue_defaults")?;
                Ok((d.clone(), Some(d)))
            }
        }
    }

    /// Everything before the model call; runs under the dialogue's lock.
    async fn plan_turn(
        &self,
        request: &TurnRequest,
        started: Instant,
    ) -> Result<Plan, EngineError> {
        let id = &request.dialogue_id;
        let now = Time::now();
        let (dialogue, create) = self.dialogue_of(request, now).await?;
        if let (Some(rid), None) = (&request.request_id, &create)
            && let Some(record) = self.store.get_idempotency(id, rid).await?
        {
            let outcome = self.replay(request, record, started).await?;
            return Ok(Plan::Replay(Box::new(outcome)));
        }
        if dialogue.turn_count + 2 > self.limits.max_turns_per_dialogue {
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
        let model = request.params.model.as_deref().unwrap_or(&dialogue.model);
        let route = self.router.route(model).cloned().ok_or_else(|| EngineError::FailedPrecondition {
            reason: "MODEL_NOT_SERVED",
            message: format!(
                "the dialogue's model {model:?} is no longer served; pass generation.model or update the dialogue's model (known: {})",
                self.router.model_names().join(", ")
            ),
        })?;
        self.check_against_history(&dialogue, request).await?;
        // A turn of tool results (with or without text) is the tools' turn.
        let role = match request
            .content
            .iter()
            .any(|p| matches!(p, ContentPart::ToolResult(_)))
        {
            true => Role::Tool,
            false => Role::User,
        };
        let user_tokens = estimate_tokens(&request.content);
        // Images are reference-counted: the copies share their bytes.
        let message = PromptMessage {
            role,
            content: request.content.clone(),
        };
        let this_turn = ModelRequest {
            messages: vec![message.clone()],
            params: request.params.clone(),
        };
        self.check_capabilities(&route, &this_turn)?;
        let building = Instant::now();
        let prompt = PromptBuilder {
            history: self.history(),
            router: &self.router,
            route: &route,
            deadline: request.deadline.map(tokio::time::Instant::from_std),
        }
        .build(
            &dialogue,
            message,
            user_tokens + request.params.schema_tokens(),
            request.params.max_tokens,
        )
        .await?;
        // Building reads the store, but with a new summary it mostly waited
        // on the model writing it.
        let waited = match prompt.new_summary {
            Some(_) => building.elapsed(),
            None => Duration::ZERO,
        };
        // A new summary takes the next index, before the exchange; it is
        // skipped when the dialogue has no room left for it.
        let summary = prompt
            .new_summary
            .filter(|_| dialogue.turn_count + 3 <= self.limits.max_turns_per_dialogue)
            .map(|mut s| {
                s.index = dialogue.turn_count;
                s
            });
        let user_turn = Turn {
            request_id: request.request_id.clone(),
            ..user_turn(
                dialogue.turn_count + u64::from(summary.is_some()),
                role,
                request.content.clone(),
                user_tokens,
                now,
            )
        };
        let model_request = ModelRequest {
            messages: prompt.messages,
            params: request.params.clone(),
        };
        // History may need more than the new message (images or tool calls
        // of earlier turns, sent to a model named for this turn only).
        self.check_capabilities(&route, &model_request)?;
        Ok(Plan::Run(Box::new(PlannedTurn {
            cache_key: self.cache_key(&request.caller, &route, &model_request),
            dialogue_id: id.clone(),
            quota_key: quota_key(&request.caller),
            create,
            expected_turn_count: dialogue.turn_count,
            request: model_request,
            route,
            summary,
            prompt_tokens: Some(prompt.tokens),
            user_turn,
            started,
            waited,
            deadline: request.deadline,
            stateless: false,
            // Kept only in an idempotency record, which needs a request ID.
            settings_digest: match request.request_id {
                Some(_) => request.params.digest(),
                None => String::new(),
            },
        })))
    }

    /// Checks a stateless completion and fits nothing: the caller's
    /// messages are the prompt and must fit the model's context window.
    pub(super) async fn plan_completion(
        &self,
        request: CompletionRequest,
    ) -> Result<PlannedTurn, EngineError> {
        let started = Instant::now();
        let mut v = Violations::default();
        validate::check_prompt(&self.limits, &request.messages, &mut v);
        validate::check_params(&request.params, &mut v);
        let model = request
            .params
            .model
            .clone()
            .unwrap_or_else(|| self.model_or_default(""));
        self.check_model(&model, "model", &mut v);
        v.into_result(())?;
        let callers_texts = request
            .messages
            .iter()
            .filter(|m| matches!(m.role, Role::User | Role::Tool))
            .flat_map(|m| filtered_texts(&m.content))
            .collect();
        if self.blocks(callers_texts) {
            return Err(EngineError::ContentBlocked);
        }
        self.admit_tokens(&request.caller).await?;
        let route = self
            .router
            .route(&model)
            .cloned()
            .ok_or_else(|| EngineError::invalid("model", format!("unknown model {model:?}")))?;
        let room = u64::from(route.context_tokens)
            .saturating_sub(u64::from(request.params.max_tokens.unwrap_or(0)));
        // Tokenizing is a stateless call's costliest step, and a token
        // covers at least one byte: when the messages' bytes fit, so do
        // their tokens, and the count waits until an upstream reports no
        // usage (`commit`).
        let at_most = request
            .messages
            .iter()
            .map(|m| tokens_at_most(&m.content) + MESSAGE_OVERHEAD)
            .sum::<u64>()
            + request.params.schema_tokens();
        let prompt_tokens = match at_most <= room {
            true => None,
            false => Some(prompt_tokens(&request.messages, &request.params)),
        };
        if let Some(tokens) = prompt_tokens
            && tokens > room
        {
            return Err(EngineError::invalid(
                "messages",
                format!(
                    "take {tokens} tokens; {model} fits {room} with the requested max_tokens (context window {})",
                    route.context_tokens
                ),
            ));
        }
        let CompletionRequest {
            caller,
            messages,
            params,
            deadline,
        } = request;
        let last = messages
            .last()
            .cloned()
            .unwrap_or_else(|| PromptMessage::text(Role::User, ""));
        // The messages move into the model request: no copy of the prompt.
        let model_request = ModelRequest { messages, params };
        self.check_capabilities(&route, &model_request)?;
        Ok(PlannedTurn {
            cache_key: self.cache_key(&caller, &route, &model_request),
            dialogue_id: DialogueId::generate(),
            quota_key: quota_key(&caller),
            create: None,
            expected_turn_count: 0,
            request: model_request,
            route,
            summary: None,
            prompt_tokens,
            // Not counted: a stateless turn is neither stored nor shown.
            user_turn: user_turn(0, last.role, last.content, 0, Time::now()),
            started,
            waited: Duration::ZERO,
            deadline,
            stateless: true,
            settings_digest: String::new(),
        })
    }

    /// Where this model call's reply is (or goes) in the response cache,
    /// when the cache is on and the call's parameters allow it.
    fn cache_key(
        &self,
        caller: &Principal,
        route: &ModelRoute,
        request: &ModelRequest,
    ) -> Option<CacheKey> {
        self.cache
            .as_ref()
            .filter(|_| ReplyCache::applies_to(&request.params))
            .map(|_| ReplyCache::key(&caller.tenant, &route.name, request))
    }
}

/// Tokens a stateless call's prompt takes (`MESSAGE_OVERHEAD` each).
pub(super) fn prompt_tokens(messages: &[PromptMessage], params: &GenerationParams) -> u64 {
    messages
        .iter()
        .map(|m| estimate_tokens(&m.content) + MESSAGE_OVERHEAD)
        .sum::<u64>()
        + params.schema_tokens()
}

/// The caller's turn of an exchange (user text, tool results), at `index`.
fn user_turn(index: u64, role: Role, content: Vec<ContentPart>, tokens: u64, now: Time) -> Turn {
    Turn {
        index,
        role,
        content,
        create_time: now,
        finish_reason: None,
        model: String::new(),
        usage: None,
        request_id: None,
        tokens: u32::try_from(tokens).unwrap_or(u32::MAX),
        summary: None,
        added: false,
    }
}
