//! An adaptive limit of a target's calls in flight: TCP Vegas as Netflix's
//! concurrency-limits applies it (`VegasLimit`), with the lowest latency
//! measured as Envoy's adaptive concurrency filter measures it. The target's
//! latency without queueing comes from a probe: for a few calls the limit
//! drops to `min_limit`, and the fastest of those calls is the baseline
//! (at start, then again every `probe_multiplier × limit` calls, jittered:
//! the baseline may change for good). In between, a call's latency above
//! the baseline says how many calls queue: `limit × (1 − baseline /
//! latency)`. Few queued (≤ log10 of the limit): the limit rises; many
//! (> 6·log10): it falls; a failure of the target (timeout, 5xx, 429)
//! lowers it too.

use crate::config::AdaptiveConcurrencySettings;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Calls a probe measures the baseline latency with.
const PROBE_CALLS: u32 = 10;

pub struct AdaptiveLimit {
    settings: AdaptiveConcurrencySettings,
    in_flight: AtomicUsize,
    /// The current limit, read without the lock.
    limit: AtomicUsize,
    state: Mutex<Vegas>,
}

struct Vegas {
    /// The limit as a real number (it moves by fractions).
    estimate: f64,
    /// The latency without queueing, from the last probe.
    baseline: Option<Duration>,
    /// Calls until the next probe.
    until_probe: u64,
    /// A probe under way: calls it still needs, and the fastest so far.
    probe: Option<(u32, Option<Duration>)>,
}

/// A place among a target's calls in flight; freed when dropped.
pub struct Slot {
    limit: Arc<AdaptiveLimit>,
    started: Instant,
    /// Calls in flight when it started, itself included.
    started_with: usize,
    sampled: bool,
}

impl AdaptiveLimit {
    pub fn new(settings: &AdaptiveConcurrencySettings) -> Arc<AdaptiveLimit> {
        // The baseline is probed first, at the lowest limit.
        Arc::new(AdaptiveLimit {
            in_flight: AtomicUsize::new(0),
            limit: AtomicUsize::new(settings.min_limit as usize),
            state: Mutex::new(Vegas {
                estimate: f64::from(settings.initial_limit),
                baseline: None,
                until_probe: 0,
                probe: Some((PROBE_CALLS, None)),
            }),
            settings: settings.clone(),
        })
    }

    /// The current limit.
    pub fn current(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    /// A place for one call, unless the target is at its limit.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        let mut n = self.in_flight.load(Ordering::Acquire);
        loop {
            if n >= self.current() {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                n,
                n + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Some(Slot {
                        limit: self.clone(),
                        started: Instant::now(),
                        started_with: n + 1,
                        sampled: false,
                    });
                }
                Err(now) => n = now,
            }
        }
    }

    /// Moves the limit after a call of `latency` that started with
    /// `started_with` calls in flight (`failed`: the target failed it).
    fn sample(&self, latency: Duration, started_with: usize, failed: bool) {
        let s = &self.settings;
        let mut vegas = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((left, fastest)) = &mut vegas.probe {
            // Only calls that ran at the probe's concurrency count.
            if !failed && started_with <= s.min_limit as usize {
                *left -= 1;
                *fastest = Some(fastest.map_or(latency, |f| f.min(latency)));
            }
            if *left == 0 {
                vegas.baseline = *fastest;
                vegas.probe = None;
                vegas.until_probe = probe_interval(s, vegas.estimate);
                self.limit.store(vegas.estimate as usize, Ordering::Release);
            }
            return;
        }
        vegas.until_probe = vegas.until_probe.saturating_sub(1);
        if vegas.until_probe == 0 {
            vegas.probe = Some((PROBE_CALLS, None));
            self.limit.store(s.min_limit as usize, Ordering::Release);
            return;
        }
        let Some(baseline) = vegas.baseline.filter(|b| *b <= latency) else {
            vegas.baseline = Some(latency);
            return;
        };
        let limit = vegas.estimate;
        let log = limit.log10().max(1.0);
        let next = if failed {
            limit - log
        } else if (started_with as f64) * 2.0 < limit {
            // Too few calls to tell whether more would queue.
            return;
        } else {
            let ratio = baseline.as_secs_f64() / latency.as_secs_f64().max(f64::MIN_POSITIVE);
            let queued = (limit * (1.0 - ratio)).ceil();
            if queued <= log {
                limit + 6.0 * log
            } else if queued < 3.0 * log {
                limit + log
            } else if queued > 6.0 * log {
                limit - log
            } else {
                return;
            }
        };
        let next = next.clamp(f64::from(s.min_limit), f64::from(s.max_limit));
        vegas.estimate = next;
        self.limit.store(next as usize, Ordering::Release);
    }
}

fn probe_interval(settings: &AdaptiveConcurrencySettings, limit: f64) -> u64 {
    // Jittered, so targets do not probe in step.
    let jitter = 0.5 + rand::random::<f64>();
    (f64::from(settings.probe_multiplier) * limit * jitter).max(1.0) as u64
}

impl Slot {
    /// Reports `latency` as the call's (the server's limit: the call's own
    /// time, without its waits on models).
    pub fn sample_latency(mut self, latency: Duration) {
        self.sampled = true;
        self.limit.sample(latency, self.started_with, false);
    }

    /// Reports the call's latency so far (its first chunk, for a stream):
    /// the slot stays taken until dropped.
    pub fn sample(&mut self, failed: bool) {
        if std::mem::replace(&mut self.sampled, true) {
            return;
        }
        self.limit
            .sample(self.started.elapsed(), self.started_with, failed);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limit.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AdaptiveConcurrencySettings {
        AdaptiveConcurrencySettings {
            enabled: true,
            initial_limit: 20,
            min_limit: 3,
            max_limit: 200,
            probe_multiplier: 1000,
        }
    }

    fn feed(limit: &AdaptiveLimit, latency_ms: u64, started_with: usize, times: usize) {
        for _ in 0..times {
            limit.sample(Duration::from_millis(latency_ms), started_with, false);
        }
    }

    /// A limit whose baseline probe measured `baseline_ms`.
    fn probed(baseline_ms: u64) -> Arc<AdaptiveLimit> {
        let l = AdaptiveLimit::new(&settings());
        assert_eq!(l.current(), 3, "the probe runs at min_limit");
        // Calls that started under more load do not count for the probe.
        feed(&l, 5, 10, 20);
        assert_eq!(l.current(), 3);
        feed(&l, baseline_ms, 1, PROBE_CALLS as usize);
        assert_eq!(l.current(), 20, "back to the estimate after the probe");
        l
    }

    #[test]
    fn the_limit_rises_at_the_baseline_latency_and_falls_with_queueing() {
        let l = probed(20);
        feed(&l, 21, 20, 10);
        let risen = l.current();
        assert!(risen > 40, "{risen}");
        // Latency five times the baseline: most calls queue.
        feed(&l, 100, risen, 30);
        assert!(l.current() < risen / 2, "{} vs {risen}", l.current());
    }

    #[test]
    fn an_idle_target_does_not_grow_its_limit_and_failures_lower_it() {
        let l = probed(20);
        feed(&l, 20, 1, 50);
        assert_eq!(l.current(), 20, "few calls in flight prove nothing");
        for _ in 0..5 {
            l.sample(Duration::from_millis(20), 20, true);
        }
        assert!(l.current() < 20);
    }

    #[test]
    fn slots_beyond_the_limit_are_refused_until_one_is_freed() {
        let l = AdaptiveLimit::new(&settings());
        let held: Vec<Slot> = (0..3).map(|_| l.try_acquire().unwrap()).collect();
        assert!(l.try_acquire().is_none());
        drop(held);
        assert!(l.try_acquire().is_some());
    }
}
