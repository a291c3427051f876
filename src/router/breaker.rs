//! A circuit breaker per target: it opens after `consecutive_failures`
//! failures in a row, or when the error rate of a window of at least
//! `min_calls` calls reaches `error_rate`; while open the target is skipped.
//! After `cooldown` one probe call is let through (half-open): success
//! closes the circuit, failure opens it again.
//!
//! The last closed target of a model is never ejected by a run of
//! failures, only by a sustained outage (`last_target_error_rate` of a
//! window): with it open every call fails, so a background of random
//! failures must not open it (Envoy's max-ejection limit plays this part).

use crate::config::BreakerSettings;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    /// The state as `dialogd_backend_circuit_state` reports it.
    pub fn gauge_value(self) -> f64 {
        match self {
            CircuitState::Closed => 0.0,
            CircuitState::HalfOpen => 1.0,
            CircuitState::Open => 2.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { probe_in_flight: bool },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    consecutive_failures: u32,
    window_start: Instant,
    calls: u32,
    failures: u32,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
}

/// Leave to make one call. Report its outcome with `success`/`failure`;
/// dropping it unreported (a cancelled call) counts as neither, but frees
/// the half-open probe slot.
#[must_use]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    reported: bool,
}

impl Permit<'_> {
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.record(Instant::now(), true, false);
    }

    /// A failed call; `last_standing`: no other target of the model is
    /// closed.
    pub fn failure(mut self, last_standing: bool) {
        self.reported = true;
        self.breaker.failed(Instant::now(), last_standing);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            let mut inner = self.breaker.lock();
            if let Phase::HalfOpen { .. } = inner.phase {
                inner.phase = Phase::HalfOpen {
                    probe_in_flight: false,
                };
            }
        }
    }
}

impl CircuitBreaker {
    pub fn new(settings: BreakerSettings) -> CircuitBreaker {
        CircuitBreaker {
            settings,
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                consecutive_failures: 0,
                window_start: Instant::now(),
                calls: 0,
                failures: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A permit if the circuit lets a call through now.
    pub fn try_acquire(&self, now: Instant) -> Option<Permit<'_>> {
        let mut inner = self.lock();
        let probe = match inner.phase {
            Phase::Closed => false,
            Phase::Open { until } if now >= until => {
                inner.phase = Phase::HalfOpen {
                    probe_in_flight: true,
                };
                true
            }
            Phase::Open { .. }
            | Phase::HalfOpen {
                probe_in_flight: true,
            } => return None,
            Phase::HalfOpen {
                probe_in_flight: false,
            } => {
                inner.phase = Phase::HalfOpen {
                    probe_in_flight: true,
                };
                true
            }
        };
        Some(Permit {
            breaker: self,
            probe,
            reported: false,
        })
    }

    /// Records a failure seen after the permit was spent (mid-stream);
    /// `last_standing` as for `Permit::failure`.
    pub fn failed(&self, now: Instant, last_standing: bool) {
        self.record(now, false, last_standing);
    }

    fn record(&self, now: Instant, success: bool, last_standing: bool) {
        let s = &self.settings;
        let mut inner = self.lock();
        if now.duration_since(inner.window_start) >= Duration::from_secs(s.window_secs) {
            inner.window_start = now;
            inner.calls = 0;
            inner.failures = 0;
        }
        inner.calls += 1;
        let open = Phase::Open {
            until: now + Duration::from_secs(s.cooldown_secs),
        };
        if success {
            inner.consecutive_failures = 0;
            if let Phase::HalfOpen { .. } = inner.phase {
                inner.phase = Phase::Closed;
                inner.calls = 0;
                inner.failures = 0;
                inner.window_start = now;
            }
            return;
        }
        inner.failures += 1;
        inner.consecutive_failures += 1;
        match inner.phase {
            Phase::HalfOpen { .. } => inner.phase = open,
            Phase::Closed => {
                let rate_reached = |rate: f64| {
                    inner.calls >= s.min_calls
                        && f64::from(inner.failures) >= rate * f64::from(inner.calls)
                };
                let tripped = match last_standing {
                    true => rate_reached(s.last_target_error_rate),
                    false => {
                        inner.consecutive_failures >= s.consecutive_failures
                            || rate_reached(s.error_rate)
                    }
                };
                if tripped {
                    inner.phase = open;
                }
            }
            Phase::Open { .. } => {}
        }
    }

    pub fn state(&self, now: Instant) -> CircuitState {
        match self.lock().phase {
            Phase::Closed => CircuitState::Closed,
            Phase::Open { until } if now >= until => CircuitState::HalfOpen,
            Phase::Open { .. } => CircuitState::Open,
            Phase::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Time until an open circuit lets a probe through.
    pub fn reopens_in(&self, now: Instant) -> Option<Duration> {
        match self.lock().phase {
            Phase::Open { until } => Some(until.saturating_duration_since(now)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerSettings {
            consecutive_failures: 3,
            error_rate: 0.5,
            min_calls: 10,
            window_secs: 60,
            cooldown_secs: 5,
            last_target_error_rate: 0.9,
        })
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes_after_the_cooldown() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..2 {
            b.failed(t0, false);
        }
        assert_eq!(b.state(t0), CircuitState::Closed);
        b.failed(t0, false);
        assert_eq!(b.state(t0), CircuitState::Open);
        assert!(b.try_acquire(t0 + Duration::from_secs(4)).is_none());

        let later = t0 + Duration::from_secs(5);
        let probe = b.try_acquire(later).expect("one probe after the cooldown");
        assert!(b.try_acquire(later).is_none(), "only one probe at a time");
        probe.failure(false);
        assert_eq!(
            b.state(Instant::now()),
            CircuitState::Open,
            "a failed probe reopens"
        );
    }

    #[test]
    fn a_successful_probe_closes_the_circuit() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..3 {
            b.failed(t0, false);
        }
        let probe = b.try_acquire(t0 + Duration::from_secs(6)).unwrap();
        probe.success();
        assert_eq!(b.state(Instant::now()), CircuitState::Closed);
    }

    #[test]
    fn an_abandoned_probe_frees_the_slot() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..3 {
            b.failed(t0, false);
        }
        let later = t0 + Duration::from_secs(6);
        drop(b.try_acquire(later).unwrap());
        assert!(b.try_acquire(later).is_some());
    }

    #[test]
    fn opens_on_the_error_rate_of_a_window() {
        let b = breaker();
        let t0 = Instant::now();
        // Alternating results never reach 3 in a row, but 50% of 10 calls fail.
        for i in 0..9 {
            b.record(t0, i % 2 == 0, false);
        }
        assert_eq!(b.state(t0), CircuitState::Closed);
        b.failed(t0, false);
        assert_eq!(b.state(t0), CircuitState::Open);
    }

    #[test]
    fn old_windows_are_forgotten() {
        let b = breaker();
        let t0 = Instant::now();
        for i in 0..9 {
            b.record(t0, i % 2 == 0, false);
        }
        let next_window = t0 + Duration::from_secs(61);
        b.failed(next_window, false);
        assert_eq!(b.state(next_window), CircuitState::Closed);
    }

    #[test]
    fn the_last_target_opens_on_a_sustained_outage_not_a_run_of_failures() {
        let b = breaker();
        let t0 = Instant::now();
        // Random failures, some runs longer than consecutive_failures.
        for i in 0..40 {
            b.record(t0, i % 4 == 3, true);
        }
        assert_eq!(b.state(t0), CircuitState::Closed);
        let outage = t0 + Duration::from_secs(61);
        for _ in 0..9 {
            b.failed(outage, true);
        }
        assert_eq!(
            b.state(outage),
            CircuitState::Closed,
            "fewer than min_calls"
        );
        b.failed(outage, true);
        assert_eq!(b.state(outage), CircuitState::Open, "10 of 10 failed");
    }
}
