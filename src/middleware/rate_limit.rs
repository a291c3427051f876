//! Abuse limits at the door, after authentication: requests per second per
//! principal (GCRA via governor, or in Redis when replicas share it;
//! reported in `x-ratelimit-remaining`), and
//! a global cap on calls in flight so an overloaded server sheds load at
//! once instead of queueing without bound. Per-principal stream counts and
//! token budgets are the engine's (it knows each turn's usage).

use crate::auth::Principal;
use crate::auth::policy::{self, Access};
use crate::grpc::status::resource_exhausted;
use crate::store::redis_limits::{Admission, SharedLimiter};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

type KeyedLimiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

pub struct RateLimits {
    per_principal: Option<KeyedLimiter>,
    /// Replaces `per_principal` when replicas share Redis.
    shared: Option<SharedLimiter>,
    in_flight: Option<Arc<Semaphore>>,
}

impl RateLimits {
    /// `requests_per_second` 0 turns the per-principal limit off;
    /// `max_in_flight` 0 turns shedding off.
    pub fn new(requests_per_second: u32, burst: u32, max_in_flight: u32) -> RateLimits {
        let per_principal = NonZeroU32::new(requests_per_second).map(|rps| {
            let burst = NonZeroU32::new(burst).unwrap_or(rps);
            RateLimiter::keyed(Quota::per_second(rps).allow_burst(burst))
                .with_middleware::<StateInformationMiddleware>()
        });
        RateLimits {
            per_principal,
            shared: None,
            in_flight: (max_in_flight > 0)
                .then(|| Arc::new(Semaphore::new(max_in_flight as usize))),
        }
    }

    /// Counts requests in Redis instead, across every replica using it.
    pub fn shared_through(mut self, limiter: SharedLimiter) -> RateLimits {
        if self.per_principal.is_some() {
            self.shared = Some(limiter);
        }
        self
    }

    /// Forgets principals idle long enough to be back at full burst.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.per_principal {
            limiter.retain_recent();
        }
    }
}

/// Applies `RateLimits` to every call.
#[derive(Clone)]
pub struct RateLimiting {
    limits: Arc<RateLimits>,
}

impl RateLimiting {
    pub fn new(limits: Arc<RateLimits>) -> RateLimiting {
        RateLimiting { limits }
    }
}

impl super::Around for RateLimiting {
    fn around<B, E, Next, Fut>(
        &self,
        request: http::Request<B>,
        next: Next,
    ) -> super::LayerFuture<E>
    where
        B: Send + 'static,
        E: Send + 'static,
        Next: FnOnce(http::Request<B>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<super::Response, E>> + Send + 'static,
    {
        // Health checks and reflection are never shed: an overloaded server
        // must still answer its probes while it drains.
        let public = policy::required(super::call_path(&request)) == Access::Public;
        let permit = match self.limits.in_flight.as_ref().filter(|_| !public) {
            Some(slots) => match slots.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    crate::meter::rate_limited("overloaded");
                    return super::refuse(
                        &request,
                        resource_exhausted(
                            "the server is at capacity; retry shortly",
                            "OVERLOADED",
                            Duration::from_secs(1),
                        ),
                    );
                }
            },
            None => None,
        };
        let key = request
            .extensions()
            .get::<Principal>()
            .map(|p| format!("{}\u{1f}{}", p.tenant, p.id));
        if let (Some(_), Some(key)) = (&self.limits.shared, key.clone()) {
            let limits = self.limits.clone();
            return Box::pin(async move {
                let remaining = match limits.shared.as_ref().map(|s| s.check(&key)) {
                    Some(check) => match check.await {
                        Ok(Admission::Admitted { remaining }) => Some(remaining),
                        Ok(Admission::Refused { retry_after }) => {
                            crate::meter::rate_limited("requests");
                            return Ok(super::refusal(
                                &request,
                                resource_exhausted(
                                    "request rate limit reached for this caller",
                                    "RATE_LIMITED",
                                    retry_after,
                                ),
                            ));
                        }
                        // Redis unreachable: serve rather than refuse
                        // everyone; the store's own errors will tell.
                        Err(e) => {
                            tracing::warn!(error = %e, "shared rate limit unavailable; not limiting");
                            None
                        }
                    },
                    None => None,
                };
                let response = next(request).await?;
                drop(permit);
                Ok(with_remaining(response, remaining))
            });
        }
        let mut remaining = None;
        if let (Some(limiter), Some(key)) = (&self.limits.per_principal, key) {
            match limiter.check_key(&key) {
                Ok(snapshot) => remaining = Some(snapshot.remaining_burst_capacity()),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(limiter.clock().now());
                    crate::meter::rate_limited("requests");
                    return super::refuse(
                        &request,
                        resource_exhausted(
                            "request rate limit reached for this caller",
                            "RATE_LIMITED",
                            wait,
                        ),
                    );
                }
            }
        }
        let response = next(request);
        Box::pin(async move {
            let response = response.await?;
            drop(permit);
            Ok(with_remaining(response, remaining))
        })
    }
}

/// Tells the caller how many more calls its burst holds now.
fn with_remaining(
    mut response: http::Response<tonic::body::Body>,
    remaining: Option<u32>,
) -> http::Response<tonic::body::Body> {
    if let Some(left) = remaining {
        response
            .headers_mut()
            .insert("x-ratelimit-remaining", http::HeaderValue::from(left));
    }
    response
}
