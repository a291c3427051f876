//! Where a model is served: its targets, each with a circuit breaker and
//! a rest set by 429s.

use super::breaker::{CircuitBreaker, CircuitState};
use crate::backend::ModelBackend;
use crate::config::Capability;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// One place a model is served.
pub struct Target {
    pub backend: Arc<dyn ModelBackend>,
    pub upstream_model: String,
    pub weight: u32,
    /// What the target can do (config, or its backend kind's defaults).
    pub capabilities: BTreeSet<Capability>,
    pub(super) breaker: CircuitBreaker,
    /// Set by a 429: skip this target until then.
    pub(super) resting_until: Mutex<Option<Instant>>,
}

impl Target {
    pub fn circuit_state(&self) -> CircuitState {
        self.breaker.state(Instant::now())
    }

    pub(super) fn resting_for(&self, now: Instant) -> Option<Duration> {
        let until = (*self.resting_until.lock().unwrap_or_else(|p| p.into_inner()))?;
        (until > now).then(|| until - now)
    }

    pub(super) fn rest(&self, until: Instant) {
        let mut slot = self.resting_until.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some(slot.map_or(until, |u| u.max(until)));
    }

    /// When this target may take a call again (zero: now).
    pub(super) fn available_in(&self, now: Instant) -> Duration {
        let rest = self.resting_for(now).unwrap_or_default();
        let breaker = self.breaker.reopens_in(now).unwrap_or_default();
        rest.max(breaker)
    }
}

/// A public model and where it is served.
#[derive(Clone)]
pub struct ModelRoute {
    pub name: String,
    pub context_tokens: u32,
    pub max_history_turns: usize,
    /// History summarizing, when on.
    pub summary: Option<SummaryPolicy>,
    pub targets: Vec<Arc<Target>>,
}

impl ModelRoute {
    /// What `needs` asks that no target of the model can do all of, as
    /// its first target lacks it; `None` when some target can take it.
    pub fn lacks(&self, needs: &BTreeSet<Capability>) -> Option<Vec<Capability>> {
        if self
            .targets
            .iter()
            .any(|t| t.capabilities.is_superset(needs))
        {
            return None;
        }
        let first = self.targets.first().map(|t| &t.capabilities);
        Some(
            needs
                .iter()
                .filter(|n| first.is_none_or(|c| !c.contains(n)))
                .copied()
                .collect(),
        )
    }
}

/// When to summarize dropped history, and how long a summary may be.
#[derive(Debug, Clone, Copy)]
pub struct SummaryPolicy {
    pub after_tokens: u64,
    pub max_tokens: u32,
}

/// Whether `target` is its model's last closed target (the others open or
/// probing): its breaker then opens only on a sustained outage.
pub(super) fn last_standing(targets: &[Arc<Target>], target: &Arc<Target>) -> bool {
    targets
        .iter()
        .filter(|t| !Arc::ptr_eq(t, target))
        .all(|t| t.circuit_state() != CircuitState::Closed)
}
