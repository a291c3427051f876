//! `[[models]]` and `[routing]`: the public models, where each is served,
//! and how calls are retried, spread and cut off from failing targets.

use super::BackendSettings;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

/// A public model name and where it is served.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// Name callers use.
    pub name: String,
    /// Shorthand for a single target: key of the backend in `[backends]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// With `backend`: model name sent to it; defaults to `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_model: Option<String>,
    /// Where the model is served. A turn goes to one target picked by
    /// weight; if it fails, the others are tried in this order (fallback).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetSettings>,
    /// Context window in tokens; history that does not fit is left out.
    #[serde(default = "default_context_tokens")]
    pub context_tokens: u32,
    /// Upper bound of history turns in one prompt, whatever their size.
    #[serde(default = "default_max_history_turns")]
    pub max_history_turns: usize,
    /// Summarize history once this many tokens of it no longer fit the
    /// window (unset: never; dropped turns are just left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summarize_after_tokens: Option<u32>,
    /// Length limit of a summary, in tokens (room for it is kept in every
    /// prompt when summarizing is on).
    #[serde(default = "default_summary_max_tokens")]
    pub summary_max_tokens: u32,
    /// What every target of the model can do; unset: what its backend's
    /// kind can do (see `BackendSettings::capabilities`). A request needing
    /// more is refused, and fallback skips targets that cannot take it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<Capability>>,
    /// An embeddings model: it serves `POST /v1/embeddings`, not turns.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub embeddings: bool,
    /// Reuse replies of prompts that mean the same (see README).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic_cache: Option<SemanticCacheSettings>,
}

/// `[models.semantic_cache]`: a reply is reused for a new prompt whose
/// newest message means the same as a cached one's (cosine similarity of
/// their embeddings at least `threshold`) when everything else of the
/// prompt is identical.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SemanticCacheSettings {
    /// The embeddings model (`embeddings = true`) the messages go to.
    pub embedding_model: String,
    /// Lowest cosine similarity that counts as the same (0 to 1].
    #[serde(default = "default_threshold")]
    pub threshold: f32,
    /// How long a reply is reused.
    #[serde(default = "default_semantic_ttl_secs")]
    pub ttl_secs: u64,
    /// Replies kept for this model; the oldest go first.
    #[serde(default = "default_semantic_entries")]
    pub max_entries: usize,
}

fn default_threshold() -> f32 {
    0.95
}

fn default_semantic_ttl_secs() -> u64 {
    3600
}

fn default_semantic_entries() -> usize {
    10_000
}

/// Something a request may need of a model beyond plain text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Images in the prompt.
    Vision,
    /// Tool definitions, tool calls and tool results.
    Tools,
    /// A JSON object or JSON Schema response format.
    JsonSchema,
    /// Token log probabilities.
    Logprobs,
}

impl Capability {
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Vision => "vision",
            Capability::Tools => "tools",
            Capability::JsonSchema => "json_schema",
            Capability::Logprobs => "logprobs",
        }
    }
}

impl ModelSettings {
    /// The targets, with the single-target shorthand expanded.
    pub fn resolved_targets(&self) -> Vec<TargetSettings> {
        match &self.backend {
            Some(backend) => vec![TargetSettings {
                backend: backend.clone(),
                upstream_model: self.upstream_model.clone(),
                weight: 1,
                capabilities: self.capabilities.clone(),
            }],
            None => self
                .targets
                .iter()
                .map(|t| TargetSettings {
                    capabilities: t.capabilities.clone().or(self.capabilities.clone()),
                    ..t.clone()
                })
                .collect(),
        }
    }
}

/// The built-in model: the echo backend, so the service runs with no
/// model server.
pub(super) fn echo_model() -> ModelSettings {
    ModelSettings {
        name: "echo".into(),
        backend: Some("echo".into()),
        upstream_model: None,
        targets: Vec::new(),
        context_tokens: default_context_tokens(),
        max_history_turns: default_max_history_turns(),
        summarize_after_tokens: None,
        summary_max_tokens: default_summary_max_tokens(),
        capabilities: None,
        embeddings: false,
        semantic_cache: None,
    }
}

/// Checks every model, that each names configured backends, and that
/// the default model is one of them.
pub(super) fn validate_models(
    models: &[ModelSettings],
    backends: &BTreeMap<String, BackendSettings>,
    default_model: &str,
) -> Result<(), String> {
    if models.is_empty() {
        return Err("at least one [[models]] entry is needed".into());
    }
    let mut seen = HashSet::new();
    for model in models {
        if model.name.is_empty() || !seen.insert(model.name.as_str()) {
            return Err(format!("model name {:?} is empty or repeated", model.name));
        }
        let targets = model.resolved_targets();
        if model.backend.is_some() != model.targets.is_empty() {
            return Err(format!(
                "model {:?} needs either `backend` or a non-empty `targets` list, not both",
                model.name
            ));
        }
        if model.backend.is_none() && model.upstream_model.is_some() {
            return Err(format!(
                "model {:?}: `upstream_model` goes inside each target when `targets` is used",
                model.name
            ));
        }
        if targets.iter().all(|t| t.weight == 0) {
            return Err(format!(
                "model {:?}: at least one target needs a weight above 0",
                model.name
            ));
        }
        for target in &targets {
            if !backends.contains_key(&target.backend) {
                let known: Vec<&str> = backends.keys().map(String::as_str).collect();
                return Err(format!(
                    "model {:?} names backend {:?}, which is not configured (known: {})",
                    model.name,
                    target.backend,
                    known.join(", ")
                ));
            }
        }
        if model.context_tokens < 16 {
            return Err(format!(
                "model {:?}: context_tokens must be at least 16",
                model.name
            ));
        }
        if model.summarize_after_tokens.is_some()
            && (model.summary_max_tokens == 0
                || model.summary_max_tokens > model.context_tokens / 2)
        {
            return Err(format!(
                "model {:?}: summary_max_tokens must be 1 to half of context_tokens",
                model.name
            ));
        }
    }
    if !seen.contains(default_model) {
        return Err(format!(
            "default_model {:?} is not one of the configured models",
            default_model
        ));
    }
    if models
        .iter()
        .any(|m| m.embeddings && m.name == default_model)
    {
        return Err(format!(
            "default_model {default_model:?} is an embeddings model; it takes no turns"
        ));
    }
    for model in models {
        if let Some(cache) = &model.semantic_cache {
            check_semantic_cache(model, cache, models)?;
        }
    }
    Ok(())
}

fn check_semantic_cache(
    model: &ModelSettings,
    cache: &SemanticCacheSettings,
    models: &[ModelSettings],
) -> Result<(), String> {
    let at = format!("model {:?}: semantic_cache", model.name);
    if model.embeddings {
        return Err(format!("{at}: an embeddings model has no replies to cache"));
    }
    if !models
        .iter()
        .any(|m| m.name == cache.embedding_model && m.embeddings)
    {
        return Err(format!(
            "{at}.embedding_model {:?} is not a model with `embeddings = true`",
            cache.embedding_model
        ));
    }
    if !(cache.threshold > 0.0 && cache.threshold <= 1.0) {
        return Err(format!("{at}.threshold must be above 0 and at most 1"));
    }
    if cache.ttl_secs == 0 || !(1..=1_000_000).contains(&cache.max_entries) {
        return Err(format!(
            "{at}: ttl_secs must be at least 1 and max_entries 1 to 1000000"
        ));
    }
    Ok(())
}

/// One backend + upstream model serving a public model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetSettings {
    /// Key of the backend in `[backends]`.
    pub backend: String,
    /// Model name sent to the backend; defaults to the public name.
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// Share of first attempts this target gets; 0 makes it fallback only.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// What this target can do; unset: the model's `capabilities`, else
    /// what its backend's kind can do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<Capability>>,
}

/// Retries, fallback and circuit breaking of model calls.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingSettings {
    /// Attempts per turn across all targets (first call included).
    pub max_attempts: u32,
    /// Retries may add at most this share of calls (0.2 = 20%).
    pub retry_budget_ratio: f64,
    /// Retries always allowed in a quiet period before the ratio applies.
    pub retry_budget_reserve: u32,
    /// Backoff before retrying the same target: full jitter over
    /// `base * 2^n`, capped at `max`.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub breaker: BreakerSettings,
    /// An adaptive limit of calls in flight per target.
    pub adaptive_concurrency: AdaptiveConcurrencySettings,
}

/// `[routing.adaptive_concurrency]`: each target's limit of calls in
/// flight follows its latency (TCP Vegas, as Netflix's concurrency-limits
/// applies it): it rises while latency stays near the lowest seen and falls
/// when queueing shows; calls over every target's limit are shed with
/// UNAVAILABLE and a retry hint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveConcurrencySettings {
    pub enabled: bool,
    /// The limit a target starts with.
    pub initial_limit: u32,
    /// The lowest limit; also the one the baseline latency is probed at.
    pub min_limit: u32,
    pub max_limit: u32,
    /// The lowest latency is measured again after this many samples per
    /// unit of limit (it may have changed for good).
    pub probe_multiplier: u32,
}

impl AdaptiveConcurrencySettings {
    /// `key` names the settings in errors.
    pub(super) fn validate(&self, key: &str) -> Result<(), String> {
        if self.min_limit == 0
            || self.min_limit > self.initial_limit
            || self.initial_limit > self.max_limit
        {
            return Err(format!(
                "{key} needs 1 <= min_limit <= initial_limit <= max_limit"
            ));
        }
        if self.probe_multiplier == 0 {
            return Err(format!("{key}.probe_multiplier must be at least 1"));
        }
        Ok(())
    }
}

impl Default for AdaptiveConcurrencySettings {
    fn default() -> Self {
        AdaptiveConcurrencySettings {
            enabled: false,
            initial_limit: 20,
            min_limit: 3,
            max_limit: 1000,
            probe_multiplier: 30,
        }
    }
}

impl Default for RoutingSettings {
    fn default() -> Self {
        RoutingSettings {
            max_attempts: 3,
            retry_budget_ratio: 0.2,
            retry_budget_reserve: 10,
            backoff_base_ms: 100,
            backoff_max_ms: 2_000,
            breaker: BreakerSettings::default(),
            adaptive_concurrency: AdaptiveConcurrencySettings::default(),
        }
    }
}

impl RoutingSettings {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 || self.max_attempts > 10 {
            return Err("routing.max_attempts must be 1 to 10".into());
        }
        self.adaptive_concurrency
            .validate("routing.adaptive_concurrency")?;
        if !(0.0..=1.0).contains(&self.retry_budget_ratio) {
            return Err("routing.retry_budget_ratio must be 0.0 to 1.0".into());
        }
        if self.backoff_base_ms == 0 || self.backoff_max_ms < self.backoff_base_ms {
            return Err(
                "routing.backoff_base_ms must be at least 1 and at most routing.backoff_max_ms"
                    .into(),
            );
        }
        let breaker = &self.breaker;
        if breaker.consecutive_failures == 0
            || !(0.0..=1.0).contains(&breaker.error_rate)
            || !(0.0..=1.0).contains(&breaker.last_target_error_rate)
            || breaker.window_secs == 0
        {
            return Err(
                "routing.breaker: consecutive_failures and window_secs must be at least 1, error_rate and last_target_error_rate 0.0 to 1.0".into(),
            );
        }
        Ok(())
    }
}

/// When a target's circuit opens (it is skipped) and when it is probed again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSettings {
    /// Open after this many failures in a row.
    pub consecutive_failures: u32,
    /// Or when this share of calls in a window failed...
    pub error_rate: f64,
    /// ...and the window saw at least this many calls.
    pub min_calls: u32,
    /// Length of the error-rate window, in seconds.
    pub window_secs: u64,
    /// How long an open circuit waits before letting one probe call through.
    pub cooldown_secs: u64,
    /// The last closed target of a model (its others all open) opens only
    /// when this share of at least `min_calls` calls in a window failed —
    /// never on failures in a row: ejecting it fails every call, so only a
    /// sustained outage, well above a background of random failures, may.
    pub last_target_error_rate: f64,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            consecutive_failures: 5,
            error_rate: 0.5,
            min_calls: 20,
            window_secs: 30,
            cooldown_secs: 15,
            last_target_error_rate: 0.9,
        }
    }
}

fn default_weight() -> u32 {
    1
}

fn default_context_tokens() -> u32 {
    8192
}

fn default_max_history_turns() -> usize {
    1000
}

fn default_summary_max_tokens() -> u32 {
    512
}
