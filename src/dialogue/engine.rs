//! The conversation rules: load and validate, serialize changes per dialogue,
//! fit the prompt into the context window, call the model, persist, stream.

use super::content_filter::{ContentFilter, StreamFilter};
use super::context::Counted;
use super::error::EngineError;
use super::locks::DialogueLocks;
use super::model::*;
use super::page_token;
use super::ports::{
    DialogueCursor, DialogueStore, ExchangeCommit, IdempotencyRecord, SharedLocks, SharedSlots,
    StoreError, TokenLedger,
};
use super::prompt::PromptBuilder;
use super::quota::{StreamSlots, TokenBudget};
use super::reply_cache::{CacheKey, CachedReply, ReplyCache};
use super::resumable::LiveTurns;
use super::tokenizer::count_tokens;
use super::validate;
use crate::auth::Principal;
use crate::backend::{BackendError, ModelReply, ModelRequest, ReplyChunk};
use crate::config::LimitSettings;
use crate::failure::Violations;
use crate::meter::TurnKind;
use crate::router::{ModelRoute, Routed, Router};
use futures_util::StreamExt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long an idempotency key is remembered.
const IDEMPOTENCY_TTL_SECS: i64 = 24 * 3600;
/// Default and maximum page sizes of list calls (AIP-158).
const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 1000;
/// Text bytes of turns in one response: well under the 4 MiB that gRPC
/// clients accept by default. A page that would exceed it ends early.
const MAX_RESPONSE_TEXT_BYTES: usize = 3 * 1024 * 1024;
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
}

/// A turn that passed every check and is ready for the model call.
struct PlannedTurn {
    dialogue_id: DialogueId,
    /// Whose token budget the turn is charged to.
    quota_key: String,
    /// The dialogue to create with the turn (create_if_missing).
    create: Option<Dialogue>,
    expected_turn_count: u64,
    route: ModelRoute,
    request: ModelRequest,
    /// A summary of older history to store ahead of the exchange.
    summary: Option<Turn>,
    /// Tokens of `request.messages`.
    prompt_tokens: u64,
    user_turn: Turn,
    started: Instant,
    /// Time planning spent waiting on a model (summarizing old history).
    waited: Duration,
    /// Where the reply is (or goes) in the response cache, if it may.
    cache_key: Option<CacheKey>,
    /// When the caller stops waiting.
    deadline: Option<Instant>,
    /// A stateless completion: nothing is stored.
    stateless: bool,
}

enum Plan {
    /// The request repeats a stored one: answer with its result.
    Replay(Box<TurnOutcome>),
    Run(Box<PlannedTurn>),
}

fn page_size(requested: usize) -> usize {
    match requested {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
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
        }
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
                .store
                .turns_before(id, dialogue.turn_count, last_turns.min(MAX_PAGE_SIZE))
                .await?
                .into_iter()
                .map(Arc::unwrap_or_clone)
                .collect();
            keep_within_response_budget(&mut turns);
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
        let after = match page_token {
            "" => None,
            token => {
                let raw = page_token::decode(token, SCOPE)?;
                let cursor = raw.split_at_checked(8).and_then(|(time, id)| {
                    let time = i64::from_be_bytes(time.try_into().ok()?);
                    let id = DialogueId::from_stored(std::str::from_utf8(id).ok()?).ok()?;
                    Some(DialogueCursor {
                        create_time: Time(time),
                        id,
                    })
                });
                Some(cursor.ok_or_else(|| EngineError::invalid("page_token", "is damaged"))?)
            }
        };
        let (items, next) = self
            .store
            .list_dialogues(&Owner::of(caller), after.as_ref(), page_size(page_size_req))
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

    pub async fn list_turns(
        &self,
        caller: &Principal,
        id: &DialogueId,
        page_size_req: usize,
        page_token: &str,
    ) -> Result<Page<Turn>, EngineError> {
        let id = &id.scoped_to(&Owner::of(caller));
        let scope = format!("{}/turns", id.resource_name());
        let from = match page_token {
            "" => 0,
            token => {
                let raw = page_token::decode(token, &scope)?;
                let bytes: [u8; 8] = raw
                    .try_into()
                    .map_err(|_| EngineError::invalid("page_token", "is damaged"))?;
                u64::from_be_bytes(bytes)
            }
        };
        let dialogue = self.load(caller, id, Time::now()).await?;
        let size = page_size(page_size_req);
        let mut items = self.store.list_turns(id, from, size).await?;
        keep_within_response_budget(&mut items);
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

    /// Runs one turn to completion and returns the stored reply.
    pub async fn converse(&self, mut request: TurnRequest) -> Result<TurnOutcome, EngineError> {
        request.dialogue_id = request.dialogue_id.scoped_to(&Owner::of(&request.caller));
        let deadline = request.deadline;
        tokio::select! {
            outcome = within_deadline(deadline, self.run_unary(request)) => outcome,
            _ = self.cut_turns.cancelled() => Err(EngineError::ShuttingDown),
        }
    }

    async fn run_unary(&self, request: TurnRequest) -> Result<TurnOutcome, EngineError> {
        let started = Instant::now();
        self.check_turn_request(&request)?;
        self.admit_tokens(&request.caller).await?;
        let _guard = self.locks.lock(&request.dialogue_id).await?;
        match self.plan_turn(&request, started).await? {
            Plan::Replay(outcome) => Ok(*outcome),
            Plan::Run(planned) => self.execute_unary(*planned).await,
        }
    }

    /// Calls the model (or the cache) for a planned turn and commits it.
    async fn execute_unary(&self, planned: PlannedTurn) -> Result<TurnOutcome, EngineError> {
        if let Some(hit) = self.cached_reply(&planned) {
            let served = Served::from_cache(&hit, TurnKind::Unary);
            return self.commit(planned, hit.reply.clone(), served).await;
        }
        let deadline = planned.deadline.map(tokio::time::Instant::from_std);
        let upstream_started = Instant::now();
        let routed = self
            .router
            .complete(&planned.route, &planned.request, deadline)
            .await?;
        let served = Served {
            backend: routed.backend,
            attempts: routed.attempts,
            upstream_model: routed.model,
            kind: TurnKind::Unary,
            waited: planned.waited + upstream_started.elapsed(),
            cached: false,
        };
        let mut reply = routed.value;
        if let Some(cut) = self
            .output_filter()
            .and_then(|f| f.first_match(&reply.text))
        {
            reply.text.truncate(cut);
            reply.finish_reason = FinishReason::ContentFilter;
        }
        self.keep_in_cache(&planned, &reply, &served);
        self.commit(planned, reply, served).await
    }

    /// Runs one turn as a stream of events. The turn runs in its own task
    /// and stops as soon as the receiver is dropped (client gone): nothing
    /// is stored then, and the dialogue's lock is released.
    pub fn converse_stream(
        self: &Arc<Self>,
        mut request: TurnRequest,
    ) -> mpsc::Receiver<Result<StreamEvent, EngineError>> {
        request.dialogue_id = request.dialogue_id.scoped_to(&Owner::of(&request.caller));
        let (caller, deadline) = (request.caller.clone(), request.deadline);
        let resumable = request.resumable;
        let turn = self.spawn_stream(&caller, deadline, async move |engine, tx| {
            engine.run_stream(&request, &tx).await
        });
        if !resumable {
            return turn;
        }
        // The recorder drains the turn whatever the client does, so the
        // turn never sees its client go.
        let (client, rx) = mpsc::channel(32);
        self.tasks.spawn(self.live.clone().record(turn, client));
        rx
    }

    /// Re-attaches to assistant turn `index` of the caller's dialogue `id`
    /// from byte `offset` of its text: the start, the text from there, then
    /// what follows live; a turn that finished is replayed from the store.
    pub async fn resume_stream(
        &self,
        caller: &Principal,
        id: &DialogueId,
        index: u64,
        offset: u64,
    ) -> Result<mpsc::Receiver<Result<StreamEvent, EngineError>>, EngineError> {
        let id = id.scoped_to(&Owner::of(caller));
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        let rest_of = |text: &str| match text.get(offset..) {
            Some(rest) => Ok(rest.to_owned()),
            None => Err(EngineError::invalid(
                "offset",
                format!(
                    "is not a character boundary within the {} bytes of text so far",
                    text.len()
                ),
            )),
        };
        let (tx, rx) = mpsc::channel(32);
        let delta = |text: String| StreamEvent::Delta {
            text,
            offset: offset as u64,
        };
        if let Some(live) = self.live.attach(&id, index) {
            let missed = rest_of(&live.text)?;
            self.tasks.spawn(live.forward(missed, offset as u64, tx));
            return Ok(rx);
        }
        // Not live (any more): the stored turn, if it is one.
        self.load(caller, &id, Time::now()).await?;
        let turns = self
            .store
            .list_turns(&id, index.saturating_sub(1), 2)
            .await?;
        let [user_turn, assistant_turn]: [Turn; 2] = match turns.try_into() {
            Ok(pair) => pair,
            Err(_) => return Err(not_a_turn(&id, index)),
        };
        if index == 0 || assistant_turn.index != index || assistant_turn.role != Role::Assistant {
            return Err(not_a_turn(&id, index));
        }
        let missed = rest_of(&assistant_turn.text())?;
        let outcome = stored_outcome(&id, user_turn, assistant_turn, String::new(), 0.0);
        let mut events = vec![StreamEvent::Start {
            dialogue_id: id,
            turn_index: index,
            model: outcome.metadata.model.clone(),
        }];
        if !missed.is_empty() {
            events.push(delta(missed));
        }
        events.push(StreamEvent::End(Box::new(outcome)));
        for event in events {
            // The channel holds 32: these few never wait.
            let _ = tx.try_send(Ok(event));
        }
        Ok(rx)
    }

    /// Runs `run` as a streaming turn's task: in one of the caller's stream
    /// slots, until the client goes (nothing stored), the deadline passes
    /// or the drain time ends.
    fn spawn_stream<F, Fut>(
        self: &Arc<Self>,
        caller: &Principal,
        deadline: Option<Instant>,
        run: F,
    ) -> mpsc::Receiver<Result<StreamEvent, EngineError>>
    where
        F: FnOnce(Arc<Engine>, mpsc::Sender<Result<StreamEvent, EngineError>>) -> Fut
            + Send
            + 'static,
        Fut: Future<Output = Result<(), EngineError>> + Send,
    {
        let (tx, rx) = mpsc::channel(32);
        let engine = self.clone();
        let span = tracing::Span::current();
        let quota_key = quota_key(caller);
        self.tasks.spawn(tracing::Instrument::instrument(
            async move {
                let Some(_slot) = engine.streams.try_open(&quota_key).await else {
                    crate::meter::rate_limited("streams");
                    let _ = tx
                        .send(Err(EngineError::RateLimited {
                            reason: "STREAM_LIMIT",
                            message: format!(
                                "this caller already has {} streams open",
                                engine.limits.max_streams_per_principal
                            ),
                            retry_after: std::time::Duration::from_secs(1),
                        }))
                        .await;
                    return;
                };
                let _in_flight = crate::meter::stream_started();
                let running = run(engine.clone(), tx.clone());
                tokio::select! {
                    _ = tx.closed() => {
                        tracing::debug!("stream abandoned by the client; nothing stored");
                    }
                    _ = engine.cut_turns.cancelled() => {
                        let _ = tx.send(Err(EngineError::ShuttingDown)).await;
                    }
                    result = within_deadline(deadline, running) => {
                        if let Err(e) = result {
                            let _ = tx.send(Err(e)).await;
                        }
                    }
                }
            },
            span,
        ));
        rx
    }

    /// Up to `MAX_BATCH` turns on distinct dialogues, run concurrently;
    /// one result per entry, in order (an entry may arrive already failed,
    /// e.g. unreadable). Errs only when the batch itself is malformed.
    pub async fn converse_batch(
        &self,
        entries: Vec<Result<TurnRequest, EngineError>>,
    ) -> Result<Vec<Result<TurnOutcome, EngineError>>, EngineError> {
        if entries.is_empty() || entries.len() > MAX_BATCH {
            return Err(EngineError::invalid(
                "requests",
                format!("must hold 1 to {MAX_BATCH} turns, not {}", entries.len()),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, entry) in entries.iter().enumerate() {
            if let Ok(turn) = entry
                && !seen.insert(turn.dialogue_id.scoped_to(&Owner::of(&turn.caller)))
            {
                return Err(EngineError::invalid(
                    format!("requests[{i}].name"),
                    "names a dialogue an earlier request of the batch names; its turns are not independent",
                ));
            }
        }
        let turns = entries
            .into_iter()
            .map(async |entry| self.converse(entry?).await);
        Ok(futures_util::future::join_all(turns).await)
    }

    /// A stateless completion: the caller's messages go to the model (with
    /// the same checks, limits, cache and metrics as a turn) and nothing is
    /// stored. The outcome's dialogue ID is a fresh completion ID.
    pub async fn complete(&self, request: CompletionRequest) -> Result<TurnOutcome, EngineError> {
        let run = async {
            let planned = self.plan_completion(&request, Instant::now()).await?;
            self.execute_unary(planned).await
        };
        tokio::select! {
            outcome = within_deadline(request.deadline, run) => outcome,
            _ = self.cut_turns.cancelled() => Err(EngineError::ShuttingDown),
        }
    }

    /// `complete`, streamed like a turn.
    pub fn complete_stream(
        self: &Arc<Self>,
        request: CompletionRequest,
    ) -> mpsc::Receiver<Result<StreamEvent, EngineError>> {
        let (caller, deadline) = (request.caller.clone(), request.deadline);
        self.spawn_stream(&caller, deadline, async move |engine, tx| {
            let planned = engine.plan_completion(&request, Instant::now()).await?;
            engine.execute_stream(planned, &tx).await
        })
    }

    /// Checks a stateless completion and fits nothing: the caller's
    /// messages are the prompt and must fit the model's context window.
    async fn plan_completion(
        &self,
        request: &CompletionRequest,
        started: Instant,
    ) -> Result<PlannedTurn, EngineError> {
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
        if let Some(filter) = &self.filter
            && request
                .messages
                .iter()
                .any(|m| m.role == Role::User && filter.first_match(&m.text).is_some())
        {
            return Err(EngineError::ContentBlocked);
        }
        self.admit_tokens(&request.caller).await?;
        let route = self
            .router
            .route(&model)
            .cloned()
            .ok_or_else(|| EngineError::invalid("model", format!("unknown model {model:?}")))?;
        let prompt_tokens: u64 = request.messages.iter().map(|m| count_tokens(&m.text)).sum();
        let room = u64::from(route.context_tokens)
            .saturating_sub(u64::from(request.params.max_tokens.unwrap_or(0)));
        if prompt_tokens > room {
            return Err(EngineError::invalid(
                "messages",
                format!(
                    "take {prompt_tokens} tokens; {model} fits {room} with the requested max_tokens (context window {})",
                    route.context_tokens
                ),
            ));
        }
        let last = request
            .messages
            .last()
            .map(|m| m.text.clone())
            .unwrap_or_default();
        let model_request = ModelRequest {
            messages: request.messages.clone(),
            params: request.params.clone(),
        };
        let cache_key = self.cache_key(&request.caller, &route, &model_request);
        Ok(PlannedTurn {
            cache_key,
            dialogue_id: DialogueId::generate(),
            quota_key: quota_key(&request.caller),
            create: None,
            expected_turn_count: 0,
            request: model_request,
            route,
            summary: None,
            prompt_tokens,
            user_turn: Turn {
                index: 0,
                role: Role::User,
                tokens: u32::try_from(count_tokens(&last)).unwrap_or(u32::MAX),
                content: vec![ContentPart::Text(last)],
                create_time: Time::now(),
                finish_reason: None,
                model: String::new(),
                usage: None,
                request_id: None,
                summary: None,
            },
            started,
            waited: Duration::ZERO,
            deadline: request.deadline,
            stateless: true,
        })
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

    async fn run_stream(
        &self,
        request: &TurnRequest,
        tx: &mpsc::Sender<Result<StreamEvent, EngineError>>,
    ) -> Result<(), EngineError> {
        let started = Instant::now();
        self.check_turn_request(request)?;
        self.admit_tokens(&request.caller).await?;
        let _guard = self.locks.lock(&request.dialogue_id).await?;
        match self.plan_turn(request, started).await? {
            Plan::Replay(outcome) => {
                for event in replay_events(*outcome) {
                    if tx.send(Ok(event)).await.is_err() {
                        break;
                    }
                }
                Ok(())
            }
            Plan::Run(planned) => self.execute_stream(*planned, tx).await,
        }
    }

    /// Streams the model's (or the cache's) reply to a planned turn and
    /// commits it.
    async fn execute_stream(
        &self,
        planned: PlannedTurn,
        tx: &mpsc::Sender<Result<StreamEvent, EngineError>>,
    ) -> Result<(), EngineError> {
        if let Some(hit) = self.cached_reply(&planned) {
            let start = StreamEvent::Start {
                dialogue_id: planned.dialogue_id.clone(),
                turn_index: planned.user_turn.index + 1,
                model: planned.route.name.clone(),
            };
            let mut sent = 0;
            if tx.send(Ok(start)).await.is_err()
                || !send_delta(tx, hit.reply.text.clone(), &mut sent).await
            {
                return Ok(());
            }
            let served = Served::from_cache(&hit, TurnKind::Stream);
            let outcome = self.commit(planned, hit.reply.clone(), served).await?;
            let _ = tx.send(Ok(StreamEvent::End(Box::new(outcome)))).await;
            return Ok(());
        }
        let deadline = planned.deadline.map(tokio::time::Instant::from_std);
        // Time spent waiting on the model or on the client (not dialogd's
        // own work), for the overhead histogram.
        let mut waited = planned.waited;
        let mut wait_started = Instant::now();
        let Routed {
            value: mut reply,
            backend,
            attempts,
            model: upstream_model_configured,
        } = self
            .router
            .stream(&planned.route, &planned.request, deadline)
            .await?;
        waited += wait_started.elapsed();
        let start = StreamEvent::Start {
            dialogue_id: planned.dialogue_id.clone(),
            turn_index: planned.user_turn.index + 1,
            model: planned.route.name.clone(),
        };
        if tx.send(Ok(start)).await.is_err() {
            return Ok(());
        }
        // With an output filter, text is released only once it cannot be
        // the start of a blocked term.
        let mut output = self.output_filter().map(ContentFilter::stream);
        let mut text = String::new();
        let mut sent = 0u64;
        let mut finished = None;
        loop {
            wait_started = Instant::now();
            let next = reply.next().await;
            waited += wait_started.elapsed();
            let Some(chunk) = next else { break };
            match chunk? {
                ReplyChunk::Text(piece) => {
                    let safe = match output.as_mut() {
                        Some(filter) => filter.push(&piece),
                        None => {
                            text.push_str(&piece);
                            piece
                        }
                    };
                    wait_started = Instant::now();
                    if !send_delta(tx, safe, &mut sent).await {
                        return Ok(());
                    }
                    waited += wait_started.elapsed();
                    if output.as_ref().is_some_and(StreamFilter::is_blocked) {
                        // Stop reading: dropping the stream cancels the call.
                        finished = Some((FinishReason::ContentFilter, None, None));
                        break;
                    }
                }
                ReplyChunk::Finished {
                    finish_reason,
                    usage,
                    model,
                } => {
                    finished = Some((finish_reason, usage, model));
                    break;
                }
            }
        }
        drop(reply);
        if let Some(filter) = output.as_mut() {
            let (rest, cut) = filter.finish();
            if !send_delta(tx, rest, &mut sent).await {
                return Ok(());
            }
            if cut && let Some(done) = finished.as_mut() {
                done.0 = FinishReason::ContentFilter;
            }
            text = filter.text().to_owned();
        }
        let Some((finish_reason, usage, model)) = finished else {
            return Err(BackendError::InvalidReply {
                backend,
                detail: "the stream ended without a finish reason".into(),
            }
            .into());
        };
        let reply = ModelReply {
            text,
            finish_reason,
            usage,
            model,
        };
        let served = Served {
            backend,
            attempts,
            upstream_model: upstream_model_configured,
            kind: TurnKind::Stream,
            waited,
            cached: false,
        };
        self.keep_in_cache(&planned, &reply, &served);
        let outcome = self.commit(planned, reply, served).await?;
        let _ = tx.send(Ok(StreamEvent::End(Box::new(outcome)))).await;
        Ok(())
    }

    /// Serializes changes to a dialogue and counts a caller's streams
    /// across the replicas sharing `shared` too.
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

    /// Refuses a turn while the caller's token budget is spent.
    async fn admit_tokens(&self, caller: &Principal) -> Result<(), EngineError> {
        let Some(budget) = &self.token_budget else {
            return Ok(());
        };
        budget
            .admit(&quota_key(caller))
            .await
            .inspect_err(|_| crate::meter::rate_limited("tokens"))
            .map_err(|retry_after| EngineError::RateLimited {
                reason: "TOKEN_RATE_LIMITED",
                message: format!(
                    "token budget of {} per minute spent for this caller",
                    self.limits.tokens_per_minute
                ),
                retry_after,
            })
    }

    fn output_filter(&self) -> Option<&ContentFilter> {
        self.filter.as_ref().filter(|f| f.checks_output())
    }

    /// Request checks that need no stored state; run before taking the lock.
    /// The checks a turn passes before anything runs (sizes, settings,
    /// content filter, models).
    pub fn check_turn_request(&self, request: &TurnRequest) -> Result<(), EngineError> {
        let mut v = Violations::default();
        validate::check_message(&self.limits, &request.content, &mut v);
        validate::check_params(&request.params, &mut v);
        if let Some(rid) = &request.request_id {
            validate::check_request_id(rid, &mut v);
        }
        if let Some(filter) = &self.filter
            && request
                .content
                .iter()
                .any(|ContentPart::Text(t)| filter.first_match(t).is_some())
        {
            return Err(EngineError::ContentBlocked);
        }
        if let Some(model) = &request.params.model {
            self.check_model(model, "generation.model", &mut v);
        }
        if let Some(spec) = &request.create_if_missing {
            validate::check_spec(
                &self.limits,
                spec,
                None,
                "dialogue_defaults",
                Time::now(),
                &mut v,
            );
            self.check_model(&spec.model, "dialogue_defaults.model", &mut v);
        }
        Ok(v.into_result(())?)
    }

    /// Everything before the model call; runs under the dialogue's lock.
    async fn plan_turn(
        &self,
        request: &TurnRequest,
        started: Instant,
    ) -> Result<Plan, EngineError> {
        let id = &request.dialogue_id;
        let now = Time::now();
        let stored = self
            .store
            .get_dialogue(id)
            .await?
            .filter(|d| !d.is_expired(now));
        let owner = Owner::of(&request.caller);
        let (dialogue, create) = match (stored, &request.create_if_missing) {
            (Some(d), _) if d.owner == owner => (d, None),
            // Someone else's: not found, and not creatable under that ID.
            (Some(_), _) => return Err(EngineError::NotFound(id.resource_name())),
            (None, Some(spec)) => {
                self.erase_if_expired(id, now).await?;
                let d = self.new_dialogue(owner, id.clone(), spec, now, "dialogue_defaults")?;
                (d.clone(), Some(d))
            }
            (None, None) => return Err(EngineError::NotFound(id.resource_name())),
        };
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
        let user_text = join_text(&request.content);
        let user_tokens = count_tokens(&user_text);
        let building = Instant::now();
        let prompt = PromptBuilder {
            store: self.store.as_ref(),
            router: &self.router,
            route: &route,
            deadline: request.deadline.map(tokio::time::Instant::from_std),
        }
        .build(
            &dialogue,
            Counted {
                text: &user_text,
                tokens: user_tokens,
            },
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
            index: dialogue.turn_count + u64::from(summary.is_some()),
            role: Role::User,
            content: request.content.clone(),
            create_time: now,
            finish_reason: None,
            model: String::new(),
            usage: None,
            request_id: request.request_id.clone(),
            tokens: u32::try_from(user_tokens).unwrap_or(u32::MAX),
            summary: None,
        };
        let model_request = ModelRequest {
            messages: prompt.messages,
            params: request.params.clone(),
        };
        let cache_key = self.cache_key(&request.caller, &route, &model_request);
        Ok(Plan::Run(Box::new(PlannedTurn {
            cache_key,
            dialogue_id: id.clone(),
            quota_key: quota_key(&request.caller),
            create,
            expected_turn_count: dialogue.turn_count,
            request: model_request,
            route,
            summary,
            prompt_tokens: prompt.tokens,
            user_turn,
            started,
            waited,
            deadline: request.deadline,
            stateless: false,
        })))
    }

    /// Stores the exchange (user turn and reply) in one durable write.
    async fn commit(
        &self,
        planned: PlannedTurn,
        reply: ModelReply,
        served: Served,
    ) -> Result<TurnOutcome, EngineError> {
        let ModelReply {
            text: reply,
            finish_reason,
            usage,
            model: reported_model,
        } = reply;
        let reply_tokens = count_tokens(&reply);
        // Backends that report no usage get our tokenizer's counts.
        let usage = usage.unwrap_or(Usage {
            prompt_tokens: planned.prompt_tokens,
            completion_tokens: reply_tokens,
        });
        let now = Time::now();
        let backend = served.backend;
        let assistant_turn = Turn {
            index: planned.user_turn.index + 1,
            role: Role::Assistant,
            content: vec![ContentPart::Text(reply)],
            create_time: now.max(planned.user_turn.create_time),
            finish_reason: Some(finish_reason),
            model: planned.route.name.clone(),
            usage: Some(usage),
            request_id: planned.user_turn.request_id.clone(),
            tokens: u32::try_from(reply_tokens).unwrap_or(u32::MAX),
            summary: None,
        };
        let idempotency = planned
            .user_turn
            .request_id
            .as_ref()
            .map(|rid| IdempotencyRecord {
                request_id: rid.clone(),
                user_turn_index: planned.user_turn.index,
                backend: backend.clone(),
                expire_time: now.saturating_add_secs(IDEMPOTENCY_TTL_SECS),
            });
        let user_turn = planned.user_turn;
        let turns: Vec<&Turn> = planned
            .summary
            .iter()
            .chain([&user_turn, &assistant_turn])
            .collect();
        if !planned.stateless {
            self.store
                .commit_exchange(ExchangeCommit {
                    create: planned.create.as_ref(),
                    dialogue_id: &planned.dialogue_id,
                    expected_turn_count: planned.expected_turn_count,
                    turns: &turns,
                    idempotency: idempotency.as_ref(),
                })
                .await?;
        }
        // A cached reply spent no model tokens.
        if !served.cached {
            if let Some(budget) = &self.token_budget {
                let spent = usage.prompt_tokens.saturating_add(usage.completion_tokens);
                budget.charge(&planned.quota_key, spent).await;
            }
            crate::meter::tokens(
                &planned.route.name,
                usage.prompt_tokens,
                usage.completion_tokens,
            );
        }
        crate::meter::gateway_overhead(
            served.kind,
            planned.started.elapsed().saturating_sub(served.waited),
        );
        Ok(TurnOutcome {
            dialogue_id: planned.dialogue_id,
            user_turn,
            assistant_turn,
            finish_reason,
            usage,
            metadata: ReplyMetadata {
                latency_ms: planned.started.elapsed().as_secs_f64() * 1000.0,
                model: planned.route.name,
                backend,
                cached: served.cached,
                replayed: false,
                attempts: served.attempts,
                upstream_model: reported_model.unwrap_or(served.upstream_model),
            },
        })
    }

    /// The stored result of an earlier request with the same key.
    async fn replay(
        &self,
        request: &TurnRequest,
        record: IdempotencyRecord,
        started: Instant,
    ) -> Result<TurnOutcome, EngineError> {
        let id = &request.dialogue_id;
        let turns = self.store.list_turns(id, record.user_turn_index, 2).await?;
        let [user_turn, assistant_turn]: [Turn; 2] = turns.try_into().map_err(|_| {
            EngineError::Store(StoreError::Corrupt(format!(
                "turns of request_id {:?} in {} are missing",
                record.request_id,
                id.resource_name()
            )))
        })?;
        if user_turn.content != request.content {
            return Err(EngineError::invalid(
                "request_id",
                "was already used for a different message in this dialogue",
            ));
        }
        Ok(stored_outcome(
            id,
            user_turn,
            assistant_turn,
            record.backend,
            started.elapsed().as_secs_f64() * 1000.0,
        ))
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

    /// Erases a dialogue: its record, turns, idempotency keys and the
    /// replies it left in the response cache.
    async fn erase(&self, id: &DialogueId) -> Result<bool, EngineError> {
        let erased = self.store.delete_dialogue(id).await?;
        if let Some(cache) = &self.cache {
            cache.forget_dialogue(id);
        }
        Ok(erased)
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

    fn cached_reply(&self, planned: &PlannedTurn) -> Option<Arc<CachedReply>> {
        let (cache, key) = (self.cache.as_ref()?, planned.cache_key?);
        cache.get(key)
    }

    /// Keeps a complete, unfiltered reply for identical requests.
    fn keep_in_cache(&self, planned: &PlannedTurn, reply: &ModelReply, served: &Served) {
        if let (Some(cache), Some(key)) = (&self.cache, planned.cache_key)
            && reply.finish_reason != FinishReason::ContentFilter
        {
            cache.insert(
                key,
                &planned.dialogue_id,
                reply.clone(),
                served.backend.clone(),
            );
        }
    }

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
            expire_time: expire_time(spec.expiration, now),
            create_time: now,
            update_time: now,
            turn_count: 0,
            latest_summary: None,
            system_prompt_tokens: token_count_u32(&spec.system_prompt),
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
}

/// Keeps the leading turns whose text fits `MAX_RESPONSE_TEXT_BYTES`
/// (always at least one, since a single turn is bounded by the limits).
fn keep_within_response_budget(turns: &mut Vec<Turn>) {
    let mut total = 0;
    let keep = turns
        .iter()
        .position(|t| {
            total += t
                .content
                .iter()
                .map(|ContentPart::Text(s)| s.len())
                .sum::<usize>();
            total > MAX_RESPONSE_TEXT_BYTES
        })
        .unwrap_or(turns.len());
    turns.truncate(keep.max(1));
}

fn token_count_u32(text: &str) -> u32 {
    u32::try_from(count_tokens(text)).unwrap_or(u32::MAX)
}

/// The key of a caller's quotas.
fn quota_key(caller: &Principal) -> String {
    format!("{}\u{1f}{}", caller.tenant, caller.id)
}

/// Sends a non-empty delta; false once the client is gone.
async fn send_delta(
    tx: &mpsc::Sender<Result<StreamEvent, EngineError>>,
    text: String,
    sent: &mut u64,
) -> bool {
    if text.is_empty() {
        return true;
    }
    let offset = *sent;
    *sent += text.len() as u64;
    tx.send(Ok(StreamEvent::Delta { text, offset }))
        .await
        .is_ok()
}

/// Where a reply came from.
struct Served {
    backend: String,
    attempts: u32,
    /// The target's configured upstream model (used when the backend does
    /// not name the model that answered).
    upstream_model: String,
    kind: TurnKind,
    /// Time the turn spent waiting on models (and, streaming, on the
    /// client taking deltas): the rest of its time is dialogd's overhead.
    waited: Duration,
    /// From the response cache: no model was called.
    cached: bool,
}

impl Served {
    fn from_cache(hit: &CachedReply, kind: TurnKind) -> Served {
        Served {
            backend: hit.backend.clone(),
            attempts: 0,
            upstream_model: String::new(),
            kind,
            waited: Duration::ZERO,
            cached: true,
        }
    }
}

/// Runs `turn`, failing with DEADLINE_EXCEEDED once `deadline` passes.
async fn within_deadline<T>(
    deadline: Option<std::time::Instant>,
    turn: impl std::future::Future<Output = Result<T, EngineError>>,
) -> Result<T, EngineError> {
    match deadline {
        None => turn.await,
        Some(d) => tokio::time::timeout_at(tokio::time::Instant::from_std(d), turn)
            .await
            .unwrap_or(Err(EngineError::DeadlineExceeded)),
    }
}

fn expire_time(expiration: Expiration, now: Time) -> Option<Time> {
    match expiration {
        Expiration::Never | Expiration::Ttl(0) => None,
        Expiration::Ttl(secs) => Some(now.saturating_add_secs(secs)),
        Expiration::At(t) => Some(t),
    }
}

/// A replayed turn as a stream: start, the whole reply as one delta, end.
/// A stored exchange as a turn's outcome, marked replayed.
fn stored_outcome(
    id: &DialogueId,
    user_turn: Turn,
    assistant_turn: Turn,
    backend: String,
    latency_ms: f64,
) -> TurnOutcome {
    TurnOutcome {
        dialogue_id: id.clone(),
        finish_reason: assistant_turn.finish_reason.unwrap_or(FinishReason::Stop),
        usage: assistant_turn.usage.unwrap_or_default(),
        metadata: ReplyMetadata {
            latency_ms,
            model: assistant_turn.model.clone(),
            backend,
            cached: false,
            replayed: true,
            attempts: 0,
            upstream_model: String::new(),
        },
        user_turn,
        assistant_turn,
    }
}

fn not_a_turn(id: &DialogueId, index: u64) -> EngineError {
    EngineError::NotFound(format!(
        "{}/turns/{index} (no reply with that index is being generated or stored)",
        id.resource_name()
    ))
}

fn replay_events(outcome: TurnOutcome) -> [StreamEvent; 3] {
    [
        StreamEvent::Start {
            dialogue_id: outcome.dialogue_id.clone(),
            turn_index: outcome.assistant_turn.index,
            model: outcome.metadata.model.clone(),
        },
        StreamEvent::Delta {
            text: outcome.assistant_turn.text(),
            offset: 0,
        },
        StreamEvent::End(Box::new(outcome)),
    ]
}
