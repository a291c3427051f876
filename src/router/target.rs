//! Where a model is served: its targets, each with a circuit breaker and
//! a rest set by 429s.

use super::breaker::{CircuitBreaker, CircuitState, Permit};
use super::limit::{AdaptiveLimit, Slot};
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
    /// Its adaptive limit of calls in flight, when on.
    pub(super) limit: Option<Arc<AdaptiveLimit>>,
}

impl Target {
    pub fn circuit_state(&self) -> CircuitState {
        self.breaker.state(Instant::now())
    }

    /// Its adaptive limit of calls in flight now, when on.
    pub fn concurrency_limit(&self) -> Option<usize> {
        self.limit.as_ref().map(|l| l.current())
    }

    pub(super) fn resting_for(&self, now: Instant) -> Option<Duration> {
        let until = (*self.resting_until.lock().unwrap_or_else(|p| p.into_inner()))?;
        (until > now).then(|| until - now)
    }

    pub(super) fn rest(&self, until: Instant) {
        let mut slot = self.resting_until.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some(slot.map_or(until, |u| u.max(until)));
    }

    /// A call's admission: the breaker's permit, and a place under the
    /// adaptive limit when it is on.
    pub(super) fn try_take(&self, now: Instant) -> Result<(Permit<'_>, Option<Slot>), Busy> {
        if self.resting_for(now).is_some() {
            return Err(Busy::Unavailable);
        }
        let slot = match &self.limit {
            None => None,
            Some(limit) => Some(limit.try_acquire().ok_or(Busy::AtLimit)?),
        };
        let permit = self.breaker.try_acquire(now).ok_or(Busy::Unavailable)?;
        Ok((permit, slot))
    }

    /// When this target may take a call again (zero: now).
    pub(super) fn available_in(&self, now: Instant) -> Duration {
        let rest = self.resting_for(now).unwrap_or_default();
        let breaker = self.breaker.reopens_in(now).unwrap_or_default();
        rest.max(breaker)
    }
}

/// Why a target cannot take a call now.
pub(super) enum Busy {
    /// Resting after a 429, or its circuit is open.
    Unavailable,
    /// At its adaptive limit of calls in flight.
    AtLimit,
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
    /// An embeddings model: it takes `embed` calls, not turns.
    pub embeddings: bool,
}

impl ModelRoute {
    /// Target order of one call among the targets that can take it: a
    /// weighted pick first, then the others in configured order.
    pub(super) fn attempt_order(&self, needs: &BTreeSet<Capability>) -> Vec<Arc<Target>> {
        let able: Vec<&Arc<Target>> = self
            .targets
            .iter()
            .filter(|t| t.capabilities.is_superset(needs))
            .collect();
        let total: u64 = able.iter().map(|t| u64::from(t.weight)).sum();
        let mut pick = if total == 0 {
            0
        } else {
            rand::random::<u64>() % total
        };
        let first = able
            .iter()
            .position(|t| {
                let w = u64::from(t.weight);
                if pick < w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .unwrap_or(0);
        let mut order = Vec::with_capacity(able.len());
        order.extend(able.get(first).map(|t| Arc::clone(t)));
        order.extend(
            able.iter()
                .enumerate()
                .filter(|(i, _)| *i != first)
                .map(|(_, t)| Arc::clone(t)),
        );
        order
    }

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
