//! Where a planned turn's reply comes from — the response cache, else the
//! model through the router — and storing the exchange: the user turn and
//! the reply (after a new summary, if any) in one durable write, the
//! caller charged the model tokens spent.

use super::plan::PlannedTurn;
use super::semantic_cache::SemanticQuery;
use super::{Engine, EngineError};
use crate::backend::ToolCallChunk;
use crate::backend::{BackendError, EmbedRequest, ModelReply, ReplyChunk, ReplyStream};
use crate::dialogue::content::estimate_tokens;
use crate::dialogue::content_filter::ContentFilter;
use crate::dialogue::model::{FinishReason, ReplyMetadata, Role, Time, Turn, TurnOutcome, Usage};
use crate::dialogue::ports::{ExchangeCommit, IdempotencyRecord};
use crate::meter::TurnKind;
use crate::router::Routed;
use std::future::Future;
use std::time::{Duration, Instant};

/// How long an idempotency key is remembered.
const IDEMPOTENCY_TTL_SECS: i64 = 24 * 3600;

/// Where a reply came from.
pub(super) struct Served {
    pub backend: String,
    pub attempts: u32,
    /// The target's configured upstream model (used when the backend does
    /// not name the model that answered).
    pub upstream_model: String,
    pub kind: TurnKind,
    /// Time the turn spent waiting on models (and, streaming, on the
    /// client taking deltas): the rest of its time is dialogd's overhead.
    pub waited: Duration,
    /// From the response cache: no model was called.
    pub cached: bool,
    /// A traffic rule's canned reply: no model was called.
    pub canned: bool,
    /// A semantic cache miss: where the model's reply goes in the cache.
    pub semantic_miss: Option<(SemanticQuery, Vec<f32>)>,
}

impl Served {
    /// Whether a model call produced the reply (and its tokens count).
    fn called_a_model(&self) -> bool {
        !self.cached && !self.canned
    }
}

/// The backend named for a rule's canned replies.
pub const CANNED_BACKEND: &str = "canned";

/// Calls the model through the router (`call` gets the turn's deadline)
/// and tells where the answer came from.
async fn call_model<T, Fut>(
    planned: &PlannedTurn,
    kind: TurnKind,
    call: impl FnOnce(Option<tokio::time::Instant>) -> Fut,
) -> Result<(T, Served), EngineError>
where
    Fut: Future<Output = Result<Routed<T>, BackendError>>,
{
    let started = Instant::now();
    let routed = call(planned.deadline.map(tokio::time::Instant::from_std)).await?;
    let served = Served {
        backend: routed.backend,
        attempts: routed.attempts,
        upstream_model: routed.model,
        kind,
        waited: planned.waited + started.elapsed(),
        cached: false,
        canned: false,
        semantic_miss: None,
    };
    Ok((routed.value, served))
}

impl Engine {
    /// The cached reply to `planned`, when there is one: no model is called.
    fn cached(&self, planned: &PlannedTurn, kind: TurnKind) -> Option<(ModelReply, Served)> {
        let hit = self.cache.as_ref()?.get(planned.cache_key?)?;
        let served = Served {
            backend: hit.backend.clone(),
            attempts: 0,
            upstream_model: String::new(),
            kind,
            waited: Duration::ZERO,
            cached: true,
            canned: false,
            semantic_miss: None,
        };
        Some((hit.reply.clone(), served))
    }

    /// A rule's canned reply to `planned`, when it has one: no model is
    /// called, and no model tokens are spent.
    fn canned(planned: &PlannedTurn, kind: TurnKind) -> Option<(ModelReply, Served)> {
        let text = planned.canned.clone()?;
        let reply = ModelReply {
            usage: Some(Usage {
                prompt_tokens: 0,
                completion_tokens: 0,
            }),
            ..ModelReply::text(text, FinishReason::Stop)
        };
        let served = Served {
            backend: CANNED_BACKEND.to_owned(),
            attempts: 0,
            upstream_model: String::new(),
            kind,
            waited: Duration::ZERO,
            cached: false,
            canned: true,
            semantic_miss: None,
        };
        Some((reply, served))
    }

    /// The whole reply to `planned`: cached, or from the model with the
    /// output filter applied.
    pub(super) async fn reply_to(
        &self,
        planned: &PlannedTurn,
    ) -> Result<(ModelReply, Served), EngineError> {
        if let Some(answer) =
            Self::canned(planned, TurnKind::Unary).or_else(|| self.cached(planned, TurnKind::Unary))
        {
            return Ok(answer);
        }
        let (hit, miss) = self.semantic(planned, TurnKind::Unary).await;
        if let Some(hit) = hit {
            return Ok(hit);
        }
        let (mut reply, mut served) = call_model(planned, TurnKind::Unary, |deadline| {
            self.router
                .complete(&planned.route, &planned.request, deadline)
        })
        .await?;
        served.semantic_miss = miss;
        if let Some(filter) = self.output_filter() {
            filter_reply(filter, &mut reply);
        }
        Ok((reply, served))
    }

    /// The reply to `planned` as chunks: a cached reply as one, else the
    /// model's stream (retried by the router until its first chunk).
    pub(super) async fn reply_stream_to(
        &self,
        planned: &PlannedTurn,
    ) -> Result<(ReplyStream, Served), EngineError> {
        if let Some((reply, served)) = Self::canned(planned, TurnKind::Stream)
            .or_else(|| self.cached(planned, TurnKind::Stream))
        {
            let chunks = as_chunks(reply).into_iter().map(Ok);
            return Ok((Box::pin(futures_util::stream::iter(chunks)), served));
        }
        let (hit, miss) = self.semantic(planned, TurnKind::Stream).await;
        if let Some((reply, served)) = hit {
            let chunks = as_chunks(reply).into_iter().map(Ok);
            return Ok((Box::pin(futures_util::stream::iter(chunks)), served));
        }
        let (stream, mut served) = call_model(planned, TurnKind::Stream, |deadline| {
            self.router
                .stream(&planned.route, &planned.request, deadline)
        })
        .await?;
        served.semantic_miss = miss;
        Ok((stream, served))
    }

    /// The semantic cache's answer to `planned`: a close enough reply, or
    /// (on a miss) where the model's reply is to go. An embedding that
    /// fails only skips the cache.
    async fn semantic(
        &self,
        planned: &PlannedTurn,
        kind: TurnKind,
    ) -> (
        Option<(ModelReply, Served)>,
        Option<(SemanticQuery, Vec<f32>)>,
    ) {
        let (Some(cache), Some(query)) = (&self.semantic, &planned.semantic) else {
            return (None, None);
        };
        let Some(route) = self.router.route(&query.embedding_model) else {
            return (None, None);
        };
        let started = Instant::now();
        let request = EmbedRequest {
            inputs: vec![query.text.clone()],
            dimensions: None,
        };
        let deadline = planned.deadline.map(tokio::time::Instant::from_std);
        let vector = match self.router.embed(route, &request, deadline).await {
            Ok(routed) => {
                let tokens = routed.value.prompt_tokens.unwrap_or(0);
                crate::meter::tokens(&route.name, tokens, 0);
                routed.value.vectors.into_iter().next()
            }
            Err(e) => {
                tracing::warn!(model = %route.name, error = %e, "embedding for the semantic cache failed; not using it");
                crate::meter::semantic_lookup_failed();
                None
            }
        };
        let Some(vector) = vector else {
            return (None, None);
        };
        match cache.lookup(query, &vector) {
            Some(hit) => {
                let served = Served {
                    backend: hit.backend,
                    attempts: 0,
                    upstream_model: String::new(),
                    kind,
                    waited: planned.waited + started.elapsed(),
                    cached: true,
                    canned: false,
                    semantic_miss: None,
                };
                (Some((hit.reply, served)), None)
            }
            None => (None, Some((query.clone(), vector))),
        }
    }

    /// Keeps a model's complete, unfiltered reply for identical requests,
    /// then stores the exchange (user turn and reply) in one durable write.
    pub(super) async fn commit(
        &self,
        planned: Box<PlannedTurn>,
        reply: ModelReply,
        mut served: Served,
    ) -> Result<TurnOutcome, EngineError> {
        if let (Some(cache), Some(key), true) =
            (&self.cache, planned.cache_key, served.called_a_model())
            && reply.finish_reason != FinishReason::ContentFilter
        {
            let backend = served.backend.clone();
            cache.insert(key, &planned.dialogue_id, reply.clone(), backend);
        }
        if let (Some(cache), Some((query, vector))) = (&self.semantic, served.semantic_miss.take())
            && served.called_a_model()
            && reply.finish_reason != FinishReason::ContentFilter
        {
            cache.insert(query, &vector, reply.clone(), served.backend.clone());
        }
        let content = reply.content();
        let ModelReply {
            finish_reason,
            usage,
            model: reported_model,
            logprobs,
            ..
        } = reply;
        // A stored reply's count must be ours (context fitting relies on
        // it); a stateless one's is only usage, which the upstream may
        // report — then it is not tokenized again.
        let reply_tokens = match (&usage, planned.stateless) {
            (Some(reported), true) => reported.completion_tokens,
            _ => estimate_tokens(&content),
        };
        // Backends that report no usage get our tokenizer's counts.
        let usage = usage.unwrap_or_else(|| Usage {
            prompt_tokens: planned.prompt_tokens.unwrap_or_else(|| {
                super::stateless::prompt_tokens(&planned.request.messages, &planned.request.params)
            }),
            completion_tokens: reply_tokens,
        });
        let now = Time::now();
        let called_a_model = served.called_a_model();
        let backend = served.backend;
        let assistant_turn = Turn {
            index: planned.user_turn.index + 1,
            role: Role::Assistant,
            content,
            create_time: now.max(planned.user_turn.create_time),
            finish_reason: Some(finish_reason),
            model: planned.route.name.clone(),
            usage: Some(usage),
            request_id: planned.user_turn.request_id.clone(),
            tokens: u32::try_from(reply_tokens).unwrap_or(u32::MAX),
            summary: None,
            added: false,
            rule: planned.rule.as_deref().map(str::to_owned),
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
                settings_digest: planned.settings_digest.clone(),
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
        // A cached or canned reply spent no model tokens.
        if called_a_model {
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
        crate::meter::turn_finished(served.kind, planned.started.elapsed(), served.waited);
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
                rule: planned
                    .rule
                    .as_deref()
                    .map(str::to_owned)
                    .unwrap_or_default(),
            },
            logprobs,
        })
    }
}

/// Applies the output filter to a whole reply: text cut before a blocked
/// term (with the log probabilities past the cut), and no tool calls when
/// the arguments of one hold a blocked term.
fn filter_reply(filter: &ContentFilter, reply: &mut ModelReply) {
    if let Some(cut) = filter.first_match(&reply.text) {
        reply.text.truncate(cut);
        let mut covered = 0;
        reply.logprobs.retain(|l| {
            covered += l.token.len();
            covered <= cut
        });
        reply.finish_reason = FinishReason::ContentFilter;
    }
    let blocked =
        |call: &crate::dialogue::model::ToolCall| filter.first_match(&call.arguments).is_some();
    if reply.finish_reason == FinishReason::ContentFilter || reply.tool_calls.iter().any(blocked) {
        reply.tool_calls.clear();
        reply.finish_reason = FinishReason::ContentFilter;
    }
}

/// A whole (cached) reply as the chunks a backend would stream.
fn as_chunks(reply: ModelReply) -> Vec<ReplyChunk> {
    let mut chunks = Vec::new();
    if !reply.logprobs.is_empty() {
        chunks.push(ReplyChunk::Logprobs(reply.logprobs));
    }
    if !reply.text.is_empty() {
        chunks.push(ReplyChunk::Text(reply.text));
    }
    for (index, call) in reply.tool_calls.into_iter().enumerate() {
        chunks.push(ReplyChunk::ToolCall(ToolCallChunk {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            id: Some(call.id),
            name: Some(call.name),
            arguments: call.arguments,
        }));
    }
    chunks.push(ReplyChunk::Finished {
        finish_reason: reply.finish_reason,
        usage: reply.usage,
        model: reply.model,
    });
    chunks
}
