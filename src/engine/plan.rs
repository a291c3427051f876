//! Everything before the model call: the plan of the call (after the
//! checks of `checks.rs`) — the dialogue it belongs to (created if asked),
//! what the traffic rules decide (another model, a canned reply, a
//! refusal), the prompt fitted into the model's context window, the turns
//! to store and where the reply sits in the response cache. A repeated
//! request is planned as a replay. Stateless completions: `stateless.rs`.

use super::prompt::PromptBuilder;
use super::reply_cache::{CacheKey, ReplyCache};
use super::rules::{Decided, RuleInput};
use super::semantic_cache::SemanticQuery;
use super::{Engine, EngineError, quota_key};
use crate::auth::Principal;
use crate::backend::ModelRequest;
use crate::dialogue::content::estimate_tokens;
use crate::dialogue::model::{
    ContentPart, Dialogue, DialogueId, Owner, PromptMessage, Role, Time, Turn, TurnOutcome,
    TurnRequest,
};
use crate::router::ModelRoute;
use std::sync::Arc;
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
    /// The traffic rule that routed or answered the turn.
    pub rule: Option<Arc<str>>,
    /// A rule's canned reply: no model is called.
    pub canned: Option<String>,
    /// Where the reply may be found in (or go into) the semantic cache.
    pub semantic: Option<SemanticQuery>,
}

/// What the traffic rules make of a request: the model to call, or a
/// canned reply; a refusal is an error.
pub(super) struct Ruled {
    pub model: String,
    pub rule: Option<Arc<str>>,
    pub canned: Option<String>,
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
        let requested = request.params.model.as_deref().unwrap_or(&dialogue.model);
        let ruled = self.apply_rules(RuleInput {
            caller: &request.caller,
            labels: Some(&dialogue.labels),
            model: requested,
            newest: &request.content,
            images: has_images(&request.content),
            tools: !request.params.tools.is_empty() || has_tool_parts(&request.content),
            tokens: &|| estimate_tokens(&request.content),
        })?;
        let model = ruled.model.as_str();
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
        // A model that cannot see gets the images' text, which the stored
        // turn keeps beside them (a canned reply reads nothing).
        let mut content = request.content.clone();
        if ruled.canned.is_none() {
            self.add_image_text(&route, &mut content).await?;
        }
        let user_tokens = estimate_tokens(&content);
        // Images are reference-counted: the copies share their bytes.
        let message = PromptMessage {
            role,
            content: content.clone().into(),
        };
        let mut this_turn = ModelRequest {
            messages: vec![message.clone()],
            params: request.params.clone(),
        };
        if ruled.canned.is_some() {
            let user_turn = Turn {
                request_id: request.request_id.clone(),
                ..user_turn(dialogue.turn_count, role, content, user_tokens, now)
            };
            return Ok(Plan::Run(Box::new(PlannedTurn {
                cache_key: None,
                dialogue_id: id.clone(),
                quota_key: quota_key(&request.caller),
                create,
                expected_turn_count: dialogue.turn_count,
                request: this_turn,
                route,
                summary: None,
                prompt_tokens: Some(user_tokens),
                user_turn,
                started,
                waited: Duration::ZERO,
                deadline: request.deadline,
                stateless: false,
                settings_digest: settings_digest(request),
                rule: ruled.rule,
                canned: ruled.canned,
                semantic: None,
            })));
        }
        // Images with their text next to them go as the text alone.
        self.images_to_text(&route, &mut this_turn.messages).await?;
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
                content,
                user_tokens,
                now,
            )
        };
        let mut messages = prompt.messages;
        self.images_to_text(&route, &mut messages).await?;
        let model_request = ModelRequest {
            messages,
            params: request.params.clone(),
        };
        // History may need more than the new message (images or tool calls
        // of earlier turns, sent to a model named for this turn only).
        self.check_capabilities(&route, &model_request)?;
        Ok(Plan::Run(Box::new(PlannedTurn {
            cache_key: self.cache_key(&request.caller, &route, &model_request),
            semantic: self.semantic_query(&request.caller, &route, &model_request, id),
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
            settings_digest: settings_digest(request),
            rule: ruled.rule,
            canned: None,
        })))
    }

    /// Lets the first matching traffic rule decide: the model to call (the
    /// requested one, or the rule's), a canned reply, or a refusal.
    pub(super) fn apply_rules(&self, input: RuleInput) -> Result<Ruled, EngineError> {
        let Some(decision) = self.rules.decide(&input) else {
            return Ok(Ruled {
                model: input.model.to_owned(),
                rule: None,
                canned: None,
            });
        };
        let (model, canned) = match decision.action {
            Decided::Refuse(refusal) => return Err(refusal),
            Decided::Route(model) => (model, None),
            Decided::Reply(text) => (input.model.to_owned(), Some(text)),
        };
        Ok(Ruled {
            model,
            rule: Some(decision.rule),
            canned,
        })
    }

    /// Where this model call's reply is (or goes) in the response cache,
    /// when the cache is on and the call's parameters allow it.
    /// Where this model call's reply may be in the semantic cache.
    pub(super) fn semantic_query(
        &self,
        caller: &Principal,
        route: &ModelRoute,
        request: &ModelRequest,
        dialogue: &DialogueId,
    ) -> Option<SemanticQuery> {
        self.semantic
            .as_ref()?
            .query(&caller.tenant, route, request, dialogue)
    }

    pub(super) fn cache_key(
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

/// `GenerationParams::digest` of the request, kept only in an idempotency
/// record (which needs a request ID).
fn settings_digest(request: &TurnRequest) -> String {
    match request.request_id {
        Some(_) => request.params.digest(),
        None => String::new(),
    }
}

pub(super) fn has_images(parts: &[ContentPart]) -> bool {
    parts.iter().any(|p| matches!(p, ContentPart::Image(_)))
}

pub(super) fn has_tool_parts(parts: &[ContentPart]) -> bool {
    parts
        .iter()
        .any(|p| matches!(p, ContentPart::ToolCall(_) | ContentPart::ToolResult(_)))
}

/// The caller's turn of an exchange (user text, tool results), at `index`.
pub(super) fn user_turn(
    index: u64,
    role: Role,
    content: Vec<ContentPart>,
    tokens: u64,
    now: Time,
) -> Turn {
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
        rule: None,
    }
}
