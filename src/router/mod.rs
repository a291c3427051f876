//! Routing: which target (backend + upstream model) serves a call, and what
//! happens when it fails.
//!
//! - The first attempt goes to a target picked by weight; on a retryable
//!   failure the next targets are tried in configured order (fallback),
//!   coming back round with backoff when all were tried.
//! - Attempts are bounded per call (`max_attempts`), by a retry budget
//!   shared by all calls, and by the turn's deadline.
//! - Each target has a circuit breaker; open targets are skipped. A 429
//!   rests the target until its Retry-After has passed.
//! - Streams are retried only until their first chunk: the caller gets a
//!   stream that has already produced one, so nothing has reached the client
//!   before the target was settled.

mod breaker;
pub mod limit;
mod retry;
mod target;

pub use breaker::CircuitState;
use target::{Busy, last_standing};
pub use target::{ModelRoute, SummaryPolicy, Target};

use crate::backend::{
    self, BackendError, EmbedRequest, Embedded, ModelBackend, ModelReply, ModelRequest, ReplyChunk,
    ReplyStream,
};
use crate::config::{RoutingSettings, Settings};
use breaker::CircuitBreaker;
use futures_util::StreamExt;
use limit::{AdaptiveLimit, Slot};
use retry::{RetryBudget, backoff};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

/// Longest Retry-After worth waiting for inside one call; beyond it the
/// call fails with RESOURCE_EXHAUSTED and the client is told when to retry.
const MAX_RETRY_AFTER_WAIT: Duration = Duration::from_secs(5);

/// A successful call and how it was reached.
pub struct Routed<T> {
    pub value: T,
    /// Name of the backend that answered.
    pub backend: String,
    /// Calls made, the successful one included.
    pub attempts: u32,
    /// The answering target's configured upstream model name.
    pub model: String,
    /// The call's place under the target's adaptive limit (a stream keeps
    /// it until it ends).
    slot: Option<Slot>,
}

pub struct Router {
    routes: Vec<ModelRoute>,
    by_name: HashMap<String, usize>,
    default_model: String,
    settings: RoutingSettings,
    budget: RetryBudget,
}

impl Router {
    /// Builds every configured backend once and maps models onto them.
    /// `settings` must have passed `Settings::validate`.
    pub fn from_settings(settings: &Settings) -> Result<Router, backend::BuildError> {
        let mut backends: HashMap<&str, Arc<dyn ModelBackend>> = HashMap::new();
        for (name, cfg) in &settings.backends {
            backends.insert(name.as_str(), backend::build(name, cfg)?);
        }
        let routing = &settings.routing;
        let adaptive = &routing.adaptive_concurrency;
        let mut routes = Vec::new();
        for model in &settings.models {
            let targets = model
                .resolved_targets()
                .into_iter()
                .filter_map(|t| {
                    let backend = backends.get(t.backend.as_str())?.clone();
                    let capabilities = t
                        .capabilities
                        .clone()
                        .or_else(|| Some(settings.backends.get(&t.backend)?.capabilities()))
                        .unwrap_or_default();
                    Some(Arc::new(Target {
                        backend,
                        capabilities: capabilities.into_iter().collect(),
                        upstream_model: t.upstream_model.unwrap_or_else(|| model.name.clone()),
                        weight: t.weight,
                        breaker: CircuitBreaker::new(routing.breaker.clone()),
                        resting_until: Mutex::new(None),
                        limit: adaptive.enabled.then(|| AdaptiveLimit::new(adaptive)),
                    }))
                })
                .collect();
            routes.push(ModelRoute {
                name: model.name.clone(),
                context_tokens: model.context_tokens,
                max_history_turns: model.max_history_turns,
                summary: model.summarize_after_tokens.map(|after| SummaryPolicy {
                    after_tokens: u64::from(after),
                    max_tokens: model.summary_max_tokens,
                }),
                targets,
                embeddings: model.embeddings,
            });
        }
        let by_name = routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone(), i))
            .collect();
        Ok(Router {
            routes,
            by_name,
            default_model: settings.default_model.clone(),
            budget: RetryBudget::new(routing.retry_budget_ratio, routing.retry_budget_reserve),
            settings: routing.clone(),
        })
    }

    pub fn route(&self, model: &str) -> Option<&ModelRoute> {
        self.by_name.get(model).map(|&i| &self.routes[i])
    }

    pub fn default_model(&self) -> &str {
        &self.default_model
    }

    /// Every model, in configuration order.
    pub fn models(&self) -> &[ModelRoute] {
        &self.routes
    }

    /// Probes every backend once, concurrently: name -> answered.
    pub async fn probe_backends(&self) -> HashMap<String, bool> {
        let mut backends: HashMap<&str, &Arc<dyn ModelBackend>> = HashMap::new();
        for target in self.routes.iter().flat_map(|r| &r.targets) {
            backends
                .entry(target.backend.name())
                .or_insert(&target.backend);
        }
        let probes = backends.into_iter().map(|(name, backend)| async move {
            let healthy = tokio::time::timeout(Duration::from_secs(3), backend.healthy())
                .await
                .unwrap_or(false);
            (name.to_owned(), healthy)
        });
        futures_util::future::join_all(probes)
            .await
            .into_iter()
            .collect()
    }

    /// Sets every target's circuit-state gauge (a breaker also changes
    /// state with time alone, between calls).
    pub fn report_circuits(&self) {
        for route in &self.routes {
            for target in &route.targets {
                crate::meter::circuit_state(
                    &route.name,
                    target.backend.name(),
                    target.circuit_state().gauge_value(),
                );
                if let Some(limit) = target.concurrency_limit() {
                    crate::meter::concurrency_limit(&route.name, target.backend.name(), limit);
                }
            }
        }
    }

    pub fn model_names(&self) -> Vec<&str> {
        self.routes.iter().map(|r| r.name.as_str()).collect()
    }

    /// A unary call with retries and fallback.
    pub async fn complete(
        &self,
        route: &ModelRoute,
        request: &ModelRequest,
        deadline: Option<Instant>,
    ) -> Result<Routed<ModelReply>, BackendError> {
        self.run("chat", route, request, deadline, |target| async move {
            let reply = target
                .backend
                .complete(&target.upstream_model, request)
                .await?;
            let usage = reply.usage.as_ref();
            crate::telemetry::traces::record_reply(
                usage.map(|u| u.prompt_tokens),
                usage.map(|u| u.completion_tokens),
                finish_reason_name(reply.finish_reason),
                reply.model.as_deref(),
            );
            Ok(reply)
        })
        .await
    }

    /// Vectors of texts, with retries and fallback (an embeddings model).
    pub async fn embed(
        &self,
        route: &ModelRoute,
        request: &EmbedRequest,
        deadline: Option<Instant>,
    ) -> Result<Routed<Embedded>, BackendError> {
        // An embedding needs no capability of a chat model.
        let needs_nothing = ModelRequest {
            messages: Vec::new(),
            params: Default::default(),
        };
        self.run(
            "embeddings",
            route,
            &needs_nothing,
            deadline,
            |target| async move { target.backend.embed(&target.upstream_model, request).await },
        )
        .await
    }

    /// A streamed call with retries and fallback up to its first chunk. The
    /// stream returned yields that chunk first; failures after it reach the
    /// caller (and the target's breaker) but are not retried.
    pub async fn stream(
        &self,
        route: &ModelRoute,
        request: &ModelRequest,
        deadline: Option<Instant>,
    ) -> Result<Routed<ReplyStream>, BackendError> {
        let started = Instant::now();
        let routed = self
            .run("chat", route, request, deadline, |target| async move {
                let mut stream = target
                    .backend
                    .stream(&target.upstream_model, request)
                    .await?;
                match stream.next().await {
                    Some(Ok(first)) => Ok((first, stream, target)),
                    Some(Err(e)) => Err(e),
                    None => Err(BackendError::InvalidReply {
                        backend: target.backend.name().to_owned(),
                        detail: "the stream ended without any chunk".into(),
                    }),
                }
            })
            .await?;
        // Includes retries: what the caller waited for its first token.
        let first_after = started.elapsed();
        let (first, rest, target) = routed.value;
        // The target is busy with the stream until it ends.
        let slot = routed.slot;
        let model = route.name.clone();
        let target_name = target.backend.name().to_owned();
        crate::meter::time_to_first_token(&model, &target_name, first_after);
        let mut last_chunk = Instant::now();
        let others = route.targets.clone();
        let watched = rest.map(move |item| {
            let _busy = &slot;
            match &item {
                Err(e) if e.is_target_failure() => {
                    let last_standing = last_standing(&others, &target);
                    target.breaker.failed(Instant::now(), last_standing);
                }
                Err(_) => {}
                Ok(_) => {
                    let now = Instant::now();
                    crate::meter::time_per_output_token(&model, &target_name, now - last_chunk);
                    last_chunk = now;
                }
            }
            item
        });
        let stream: ReplyStream = Box::pin(
            futures_util::stream::once(async move { Ok::<ReplyChunk, BackendError>(first) })
                .chain(watched),
        );
        Ok(Routed {
            value: stream,
            backend: routed.backend,
            attempts: routed.attempts,
            model: routed.model,
            slot: None,
        })
    }

    async fn run<T, F, Fut>(
        &self,
        operation: &'static str,
        route: &ModelRoute,
        request: &ModelRequest,
        deadline: Option<Instant>,
        mut call: F,
    ) -> Result<Routed<T>, BackendError>
    where
        F: FnMut(Arc<Target>) -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        self.budget.on_call();
        let order = route.attempt_order(&request.needs());
        let deadline_error = || BackendError::Deadline {
            model: route.name.clone(),
        };
        let mut attempts = 0u32;
        let mut retries_of_same_target = 0u32;
        let mut next = 0usize;
        let mut last: Option<(usize, BackendError)> = None;
        let mut waited = false;
        while attempts < self.settings.max_attempts {
            let now = Instant::now();
            // The next target in order that can take a call now.
            let mut at_limit = false;
            let candidate = (0..order.len())
                .map(|k| (next + k) % order.len())
                .find_map(|i| match order[i].try_take(now) {
                    Ok((permit, slot)) => Some((i, permit, slot)),
                    Err(Busy::AtLimit) => {
                        at_limit = true;
                        None
                    }
                    Err(Busy::Unavailable) => None,
                });
            let Some((index, permit, mut slot)) = candidate else {
                if at_limit && last.is_none() {
                    crate::meter::rate_limited("concurrency_limit");
                }
                // Everything rests or is open: after a failure, wait once if
                // a target is back soon (this honours Retry-After).
                let wait = order
                    .iter()
                    .map(|t| t.available_in(now))
                    .min()
                    .unwrap_or_default();
                let fits_deadline = deadline.is_none_or(|d| now + wait < d);
                if last.is_some() && !waited && wait <= MAX_RETRY_AFTER_WAIT && fits_deadline {
                    waited = true;
                    tokio::time::sleep(wait).await;
                    next = 0;
                    continue;
                }
                return Err(match last {
                    Some((_, e)) => e,
                    None => BackendError::NoTarget {
                        model: route.name.clone(),
                        retry_after: wait.max(Duration::from_millis(100)),
                    },
                });
            };
            if attempts > 0 {
                if !self.budget.try_retry() {
                    tracing::warn!(model = %route.name, "retry budget exhausted; not retrying");
                    break;
                }
                let same_target = last.as_ref().is_some_and(|(i, _)| *i == index);
                if same_target && !waited {
                    let pause = backoff(
                        retries_of_same_target,
                        Duration::from_millis(self.settings.backoff_base_ms),
                        Duration::from_millis(self.settings.backoff_max_ms),
                    );
                    retries_of_same_target += 1;
                    if deadline.is_some_and(|d| Instant::now() + pause >= d) {
                        return Err(deadline_error());
                    }
                    tokio::time::sleep(pause).await;
                }
            }
            waited = false;
            attempts += 1;
            let target = order[index].clone();
            if attempts > 1 {
                crate::meter::backend_retry(&route.name, target.backend.name());
            }
            let attempt_started = Instant::now();
            let span = crate::telemetry::traces::model_call_span(
                operation,
                &route.name,
                target.backend.kind(),
                target.backend.name(),
                &target.upstream_model,
                attempts,
            );
            let attempt = call(target.clone()).instrument(span.clone());
            let outcome = match deadline {
                Some(d) => match tokio::time::timeout_at(d, attempt).await {
                    Ok(result) => result,
                    Err(_) => {
                        crate::telemetry::traces::record_error(&span, "DEADLINE_EXCEEDED");
                        return Err(deadline_error());
                    }
                },
                None => attempt.await,
            };
            if let Err(e) = &outcome {
                crate::telemetry::traces::record_error(&span, e.reason());
            }
            crate::meter::backend_call(
                &route.name,
                target.backend.name(),
                outcome.is_ok(),
                attempt_started.elapsed(),
            );
            if let Some(slot) = &mut slot {
                let failed = outcome.as_ref().is_err_and(|e| {
                    e.is_target_failure() || matches!(e, BackendError::RateLimited { .. })
                });
                slot.sample(failed);
            }
            match outcome {
                Ok(value) => {
                    permit.success();
                    crate::meter::circuit_state(
                        &route.name,
                        target.backend.name(),
                        target.circuit_state().gauge_value(),
                    );
                    return Ok(Routed {
                        value,
                        backend: target.backend.name().to_owned(),
                        attempts,
                        model: target.upstream_model.clone(),
                        slot,
                    });
                }
                Err(error) => {
                    if error.is_target_failure() {
                        permit.failure(last_standing(&route.targets, &target));
                    } else {
                        drop(permit);
                    }
                    crate::meter::circuit_state(
                        &route.name,
                        target.backend.name(),
                        target.circuit_state().gauge_value(),
                    );
                    if let BackendError::RateLimited { retry_after, .. } = &error {
                        target.rest(Instant::now() + retry_after.unwrap_or(Duration::from_secs(1)));
                    }
                    tracing::warn!(
                        model = %route.name,
                        backend = target.backend.name(),
                        attempt = attempts,
                        error = %error,
                        "model call failed"
                    );
                    if !error.is_retryable() {
                        return Err(error);
                    }
                    next = (index + 1) % order.len();
                    last = Some((index, error));
                }
            }
        }
        Err(last.map(|(_, e)| e).unwrap_or(BackendError::NoTarget {
            model: route.name.clone(),
            retry_after: Duration::from_secs(1),
        }))
    }
}

/// A finish reason as the GenAI conventions spell it.
fn finish_reason_name(reason: crate::dialogue::model::FinishReason) -> &'static str {
    use crate::dialogue::model::FinishReason;
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::ToolCalls => "tool_calls",
    }
}
