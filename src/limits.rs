//! Abuse limits at the door: requests per second per caller (GCRA via
//! governor, or shared by replicas through `SharedRequestLimiter`), and a
//! global cap on calls in flight, so an overloaded server sheds load at
//! once instead of queueing without bound. Per-caller stream counts and
//! token budgets are the engine's (it knows each turn's usage).

use crate::config::AdaptiveConcurrencySettings;
use crate::dialogue::ports::StoreError;
use crate::failure::Failure;
use crate::router::limit::{AdaptiveLimit, Slot};
use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

type KeyedLimiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// A limiter's answer for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Admitted; this many more calls fit the burst now.
    Admitted { remaining: u32 },
    /// Refused; retry after this long.
    Refused { retry_after: Duration },
}

/// A request-rate limiter shared by the replicas (the Redis store's).
#[async_trait]
pub trait SharedRequestLimiter: Send + Sync + 'static {
    /// Counts `cost` requests of `key` at once.
    async fn check(&self, key: &str, cost: u32) -> Result<Admission, StoreError>;
}

pub struct RateLimits {
    per_principal: Option<KeyedLimiter>,
    /// Replaces `per_principal` when replicas share one.
    shared: Option<Arc<dyn SharedRequestLimiter>>,
    in_flight: Option<Arc<Semaphore>>,
    /// An adaptive limit of calls in flight, beside `in_flight`.
    adaptive: Option<Arc<AdaptiveLimit>>,
    /// The per-caller burst, when limited.
    burst: Option<u32>,
}

impl RateLimits {
    /// `requests_per_second` 0 turns the per-caller limit off;
    /// `max_in_flight` 0 turns shedding off.
    pub fn new(requests_per_second: u32, burst: u32, max_in_flight: u32) -> RateLimits {
        let per_principal = NonZeroU32::new(requests_per_second).map(|rps| {
            let burst = NonZeroU32::new(burst).unwrap_or(rps);
            RateLimiter::keyed(Quota::per_second(rps).allow_burst(burst))
                .with_middleware::<StateInformationMiddleware>()
        });
        RateLimits {
            burst: per_principal.is_some().then_some(if burst == 0 {
                requests_per_second
            } else {
                burst
            }),
            per_principal,
            shared: None,
            in_flight: (max_in_flight > 0)
                .then(|| Arc::new(Semaphore::new(max_in_flight as usize))),
            adaptive: None,
        }
    }

    /// Also limits calls in flight adaptively (see `router::limit`): the
    /// latency it follows is each call's own time in the server.
    pub fn with_adaptive_limit(mut self, settings: &AdaptiveConcurrencySettings) -> RateLimits {
        self.adaptive = settings.enabled.then(|| AdaptiveLimit::new(settings));
        self
    }

    /// A place under the adaptive limit, when on; refused (UNAVAILABLE,
    /// retry soon) when the server is at it.
    pub fn enter_adaptive(&self) -> Result<Option<Slot>, Failure> {
        let Some(limit) = &self.adaptive else {
            return Ok(None);
        };
        limit.try_acquire().map(Some).ok_or_else(|| {
            crate::meter::rate_limited("adaptive_limit");
            Failure::new(
                crate::failure::ErrorKind::Unavailable,
                "OVERLOADED",
                "the server is at its adaptive concurrency limit; retry shortly",
            )
            .retry_after(Duration::from_millis(100))
        })
    }

    /// The server's adaptive limit now, when on.
    pub fn adaptive_limit(&self) -> Option<usize> {
        self.adaptive.as_ref().map(|l| l.current())
    }

    /// Counts requests in `limiter` instead, across every replica using it.
    pub fn shared_through(mut self, limiter: Arc<dyn SharedRequestLimiter>) -> RateLimits {
        if self.per_principal.is_some() {
            self.shared = Some(limiter);
        }
        self
    }

    /// Forgets callers idle long enough to be back at full burst.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.per_principal {
            limiter.retain_recent();
        }
    }

    /// A place among the calls in flight, held until dropped (`None` when
    /// unlimited); refused when the server is at capacity.
    pub fn enter(&self) -> Result<Option<OwnedSemaphorePermit>, Failure> {
        let Some(slots) = &self.in_flight else {
            return Ok(None);
        };
        slots.clone().try_acquire_owned().map(Some).map_err(|_| {
            crate::meter::rate_limited("overloaded");
            Failure::limit(
                "OVERLOADED",
                "the server is at capacity; retry shortly",
                Duration::from_secs(1),
            )
        })
    }

    /// Whether the request rate is counted by replicas together (checking
    /// it then waits on the shared store).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Counts one call of `key` in this process: how much of the burst is
    /// left (`None` when unlimited), or the refusal.
    pub fn check_here(&self, key: &str) -> Result<Option<u32>, Failure> {
        let Some(limiter) = &self.per_principal else {
            return Ok(None);
        };
        match limiter.check_key(&key.to_owned()) {
            Ok(snapshot) => Ok(Some(snapshot.remaining_burst_capacity())),
            Err(not_until) => Err(refused(not_until.wait_time_from(limiter.clock().now()))),
        }
    }

    /// Counts one call of `key` with the other replicas.
    pub async fn check_shared(&self, key: &str) -> Result<Option<u32>, Failure> {
        let Some(shared) = &self.shared else {
            return self.check_here(key);
        };
        match shared.check(key, 1).await {
            Ok(Admission::Admitted { remaining }) => Ok(Some(remaining)),
            Ok(Admission::Refused { retry_after }) => Err(refused(retry_after)),
            // The shared store unreachable: serve rather than refuse
            // everyone; the store's own errors will tell.
            Err(e) => {
                tracing::warn!(error = %e, "shared rate limit unavailable; not limiting");
                Ok(None)
            }
        }
    }
}

impl RateLimits {
    /// Counts `extra` more requests of `key` on top of the call itself (a
    /// batch of N turns costs N requests). A cost past the whole burst can
    /// never pass: INVALID_ARGUMENT naming `requests`.
    pub async fn charge_more(&self, key: &str, extra: u32) -> Result<(), Failure> {
        let Some(extra) = NonZeroU32::new(extra) else {
            return Ok(());
        };
        if self.burst.is_some_and(|burst| extra.get() >= burst) {
            return Err(Failure::invalid(
                "requests",
                format!(
                    "a batch costs one request per turn; {} turns exceed this caller's request burst",
                    extra.get() + 1
                ),
            ));
        }
        if let Some(shared) = &self.shared {
            return match shared.check(key, extra.get()).await {
                Ok(Admission::Admitted { .. }) => Ok(()),
                Ok(Admission::Refused { retry_after }) => Err(refused(retry_after)),
                Err(e) => {
                    tracing::warn!(error = %e, "shared rate limit unavailable; not limiting");
                    Ok(())
                }
            };
        }
        let Some(limiter) = &self.per_principal else {
            return Ok(());
        };
        match limiter.check_key_n(&key.to_owned(), extra) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(not_until)) => Err(refused(not_until.wait_time_from(limiter.clock().now()))),
            Err(_) => Err(Failure::invalid(
                "requests",
                format!(
                    "a batch costs one request per turn; {} turns exceed this caller's request burst",
                    extra.get() + 1
                ),
            )),
        }
    }
}

/// The key a caller's requests are counted under.
pub fn caller_key(tenant: &str, principal: &str) -> String {
    format!("{tenant}\u{1f}{principal}")
}

fn refused(retry_after: Duration) -> Failure {
    crate::meter::rate_limited("requests");
    Failure::limit(
        "RATE_LIMITED",
        "request rate limit reached for this caller",
        retry_after,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_over_its_burst_is_refused_with_a_wait_and_others_are_not() {
        let limits = RateLimits::new(1, 2, 0);
        assert_eq!(limits.check_here("a"), Ok(Some(1)));
        assert_eq!(limits.check_here("a"), Ok(Some(0)));
        let refusal = limits.check_here("a").unwrap_err();
        assert_eq!(refusal.reason, "RATE_LIMITED");
        assert!(
            refusal
                .retry_after
                .is_some_and(|d| d <= Duration::from_secs(1))
        );
        assert!(limits.check_here("b").is_ok());
        assert_eq!(RateLimits::new(0, 0, 0).check_here("a"), Ok(None));
    }

    #[test]
    fn calls_beyond_the_in_flight_cap_are_shed_until_one_ends() {
        let limits = RateLimits::new(0, 0, 1);
        let first = limits.enter().unwrap();
        assert_eq!(limits.enter().unwrap_err().reason, "OVERLOADED");
        drop(first);
        assert!(limits.enter().is_ok());
    }
}
