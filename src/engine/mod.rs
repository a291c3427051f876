//! The engine: the conversation rules, independent of transport, storage
//! engine and model protocol. It validates a request, serializes changes
//! per dialogue, plans the prompt within the context window, calls the
//! model through the router (or answers from the response cache), commits
//! the exchange in one durable write, streams, replays and resumes.
//!
//! One job per file: `dialogues` (CRUD, paging, expiry), `plan` (checks,
//! quotas, the prompt; `stateless` for completions), `rules` (the traffic
//! rule table), `unary` and `stream` (running a turn), `commit`
//! (where a reply comes from, and storing it), `replay` (idempotent
//! replays and resumed streams). This file holds the engine itself and what
//! they share.

pub mod branches;
mod checks;
mod commit;
mod dialogues;
pub mod embeddings;
pub mod error;
pub mod history;
pub mod image_text;
mod items;
pub mod locks;
mod plan;
pub mod prompt;
pub mod quota;
mod relay;
mod replay;
pub mod reply_cache;
pub mod resumable;
pub mod rules;
pub mod semantic_cache;
mod stateless;
mod stream;
#[cfg(test)]
mod tests;
mod unary;

pub use error::EngineError;

use crate::auth::Principal;
use crate::config::LimitSettings;
use crate::dialogue::content_filter::ContentFilter;
use crate::dialogue::model::{Dialogue, DialogueId, DialogueSpec, Owner, StreamEvent, Time};
use crate::dialogue::ports::{DialogueStore, ImageReader, SharedLocks, SharedSlots, TokenLedger};
use crate::dialogue::tokenizer::count_tokens;
use crate::dialogue::validate;
use crate::failure::Violations;
use crate::router::Router;
use locks::DialogueLocks;
use quota::{StreamSlots, TokenBudget};
use reply_cache::ReplyCache;
use resumable::LiveTurns;
use rules::RuleBook;
use semantic_cache::SemanticCache;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a streamed turn sends its client.
pub type Events = tokio::sync::mpsc::Receiver<Result<StreamEvent, EngineError>>;

/// Waits for a streamed turn's first event: a refusal (a bad field, an
/// unknown model, a limit, a failed model call) comes before the turn
/// starts and is returned as the error, so fronts answer it as an error
/// instead of starting a stream.
pub async fn started(
    mut events: Events,
) -> Result<impl futures_util::Stream<Item = Result<StreamEvent, EngineError>> + Send, EngineError>
{
    let first = events
        .recv()
        .await
        .ok_or_else(|| EngineError::Aborted("the turn ended before it started".into()))??;
    let rest = tokio_stream::wrappers::ReceiverStream::new(events);
    Ok(futures_util::StreamExt::chain(
        futures_util::stream::iter([Ok(first)]),
        rest,
    ))
}

/// Turns in one BatchConverse.
pub const MAX_BATCH: usize = 32;

pub struct Engine {
    store: Arc<dyn DialogueStore>,
    /// Replies of deterministic turns, when the cache is on.
    cache: Option<ReplyCache>,
    router: Arc<Router>,
    limits: LimitSettings,
    locks: DialogueLocks,
    /// Streaming turns run as tasks; shutdown waits for them.
    tasks: TaskTracker,
    /// Blocked terms, when configured.
    filter: Option<ContentFilter>,
    /// Open streams per principal.
    streams: StreamSlots,
    /// Tokens per minute per principal, when limited.
    token_budget: Option<Arc<dyn TokenLedger>>,
    /// Cancelled when the drain time is over: running turns end with
    /// UNAVAILABLE instead of running on unobserved.
    cut_turns: CancellationToken,
    /// Resumable streamed turns, while they run and shortly after.
    live: Arc<LiveTurns>,
    /// Traffic rules, evaluated before each model call.
    rules: Arc<RuleBook>,
    /// Reads images as text for models that cannot see, when configured.
    image_reader: Option<Arc<dyn ImageReader>>,
    /// Replies reused for prompts that mean the same, when configured.
    semantic: Option<SemanticCache>,
}

impl Engine {
    /// An engine keeping dialogues in `store`, calling models through
    /// `router`, running streamed turns on `tasks` (shutdown waits for them).
    pub fn new(
        store: Arc<dyn DialogueStore>,
        router: Arc<Router>,
        limits: LimitSettings,
        filter: Option<ContentFilter>,
        cache: Option<ReplyCache>,
        tasks: TaskTracker,
    ) -> Engine {
        Engine {
            cache,
            store,
            router,
            streams: StreamSlots::new(limits.max_streams_per_principal),
            token_budget: TokenBudget::new(limits.tokens_per_minute)
                .map(|b| Arc::new(b) as Arc<dyn TokenLedger>),
            limits,
            filter,
            locks: DialogueLocks::default(),
            tasks,
            cut_turns: CancellationToken::new(),
            live: Arc::default(),
            rules: Arc::default(),
            image_reader: None,
            semantic: None,
        }
    }

    /// Reuses replies of prompts that mean the same (the models of `cache`).
    pub fn with_semantic_cache(mut self, cache: SemanticCache) -> Engine {
        self.semantic = Some(cache);
        self
    }

    /// Reads images as text with `reader` for models that cannot see.
    pub fn with_image_reader(mut self, reader: Arc<dyn ImageReader>) -> Engine {
        self.image_reader = Some(reader);
        self
    }

    /// Evaluates `rules` before each model call (the book may be replaced
    /// while serving: a reloaded rules file).
    pub fn with_rules(mut self, rules: Arc<RuleBook>) -> Engine {
        self.rules = rules;
        self
    }

    /// Serializes changes to a dialogue and counts a caller's streams
    /// across the replicas sharing `locks` and `slots` too.
    pub fn with_shared_leases(
        mut self,
        locks: Arc<dyn SharedLocks>,
        slots: Arc<dyn SharedSlots>,
    ) -> Engine {
        self.locks = DialogueLocks::shared_through(locks);
        self.streams = self.streams.shared_through(slots);
        self
    }

    /// Keeps token budgets in `ledger` (shared by replicas) instead of in
    /// this process; only when a budget is configured.
    pub fn with_token_ledger(mut self, ledger: Arc<dyn TokenLedger>) -> Engine {
        if self.token_budget.is_some() {
            self.token_budget = Some(ledger);
        }
        self
    }

    /// Ends every running turn with `ShuttingDown`; nothing of them is
    /// stored. Called when the drain time is over.
    pub fn cut_running_turns(&self) {
        self.cut_turns.cancel();
    }

    /// Dialogues locked by a running change (or waited on).
    pub fn busy_dialogues(&self) -> usize {
        self.locks.len()
    }

    /// Runs `work` until it ends, the caller's `deadline` passes
    /// (DEADLINE_EXCEEDED) or the drain time ends (UNAVAILABLE).
    fn guarded<'a, T: 'a>(
        &'a self,
        deadline: Option<Instant>,
        work: impl Future<Output = Result<T, EngineError>> + 'a,
    ) -> impl Future<Output = Result<T, EngineError>> + 'a {
        // Boxed once, when called: a turn's future is kilobytes; boxed
        // inside the returned future it would make that future (and every
        // caller's above it, moved from layer to layer) as large.
        let work = Box::pin(work);
        async move {
            tokio::select! {
                outcome = within_deadline(deadline, work) => outcome,
                _ = self.cut_turns.cancelled() => Err(EngineError::ShuttingDown),
            }
        }
    }

    /// The caller's live dialogue. Missing, expired and someone else's all
    /// answer NOT_FOUND alike, so existence never leaks.
    async fn load(
        &self,
        caller: &Principal,
        id: &DialogueId,
        now: Time,
    ) -> Result<Dialogue, EngineError> {
        match self.load_any(id, now).await? {
            d if d.owner == Owner::of(caller) => Ok(d),
            _ => Err(EngineError::NotFound(id.resource_name())),
        }
    }

    /// A live dialogue whoever owns it (only for admin metadata reads and
    /// the owner check in `load`); `id` must already be scoped.
    async fn load_any(&self, id: &DialogueId, now: Time) -> Result<Dialogue, EngineError> {
        match self.store.get_dialogue(id).await? {
            Some(d) if !d.is_expired(now) => Ok(d),
            _ => Err(EngineError::NotFound(id.resource_name())),
        }
    }

    /// Erases the dialogue if it exists but expired; true if it did.
    async fn erase_if_expired(&self, id: &DialogueId, now: Time) -> Result<bool, EngineError> {
        match self.store.get_dialogue(id).await? {
            Some(d) if d.is_expired(now) => self.erase(id).await,
            _ => Ok(false),
        }
    }

    /// Erases a dialogue (locked by the caller): its record, turns,
    /// idempotency keys and the replies it left in the response cache,
    /// after its branches adopted the turns they borrow.
    async fn erase(&self, id: &DialogueId) -> Result<bool, EngineError> {
        if let Some(mut dialogue) = self.store.get_dialogue(id).await? {
            self.release_branches(&mut dialogue, 0).await?;
        }
        let erased = self.store.delete_dialogue(id).await?;
        if let Some(cache) = &self.cache {
            cache.forget_dialogue(id);
        }
        if let Some(semantic) = &self.semantic {
            semantic.forget_dialogue(id);
        }
        Ok(erased)
    }

    /// A new dialogue of `owner` from a checked `spec`; `prefix` is the
    /// spec's field path in the request.
    fn new_dialogue(
        &self,
        owner: Owner,
        id: DialogueId,
        spec: &DialogueSpec,
        now: Time,
        prefix: &str,
    ) -> Result<Dialogue, EngineError> {
        let mut v = Violations::default();
        validate::check_spec(&self.limits, spec, None, prefix, now, &mut v);
        self.check_model(&spec.model, &format!("{prefix}.model"), &mut v);
        v.into_result(())?;
        Ok(Dialogue {
            id,
            owner,
            model: self.model_or_default(&spec.model),
            system_prompt: spec.system_prompt.clone(),
            labels: spec.labels.clone(),
            state: spec.state.clone(),
            expire_time: dialogues::expire_time(spec.expiration, now),
            create_time: now,
            update_time: now,
            turn_count: 0,
            latest_summary: None,
            media_bytes: 0,
            system_prompt_tokens: token_count_u32(&spec.system_prompt),
            fork: None,
            branches: Vec::new(),
        })
    }

    /// An empty model means the default one.
    fn model_or_default(&self, model: &str) -> String {
        if model.is_empty() {
            self.router.default_model()
        } else {
            model
        }
        .to_owned()
    }

    fn check_model(&self, model: &str, field: &str, v: &mut Violations) {
        if self.router.route(model).is_some_and(|r| r.embeddings) {
            v.add(
                field,
                format!("{model} is an embeddings model (POST /v1/embeddings); it takes no turns"),
            );
        }
        if !model.is_empty() && self.router.route(model).is_none() {
            v.add(
                field,
                format!(
                    "unknown model {model:?}; known models: {}",
                    self.router.model_names().join(", ")
                ),
            );
        }
    }

    fn output_filter(&self) -> Option<&ContentFilter> {
        self.filter.as_ref().filter(|f| f.checks_output())
    }
}

fn token_count_u32(text: &str) -> u32 {
    u32::try_from(count_tokens(text)).unwrap_or(u32::MAX)
}

/// The key of a caller's quotas.
fn quota_key(caller: &Principal) -> String {
    format!("{}\u{1f}{}", caller.tenant, caller.id)
}

/// Runs `work`, failing with DEADLINE_EXCEEDED once `deadline` passes.
async fn within_deadline<T>(
    deadline: Option<Instant>,
    work: impl Future<Output = Result<T, EngineError>>,
) -> Result<T, EngineError> {
    match deadline {
        None => work.await,
        Some(d) => tokio::time::timeout_at(tokio::time::Instant::from_std(d), work)
            .await
            .unwrap_or(Err(EngineError::DeadlineExceeded)),
    }
}
