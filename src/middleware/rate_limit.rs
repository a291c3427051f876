//! The rate-limit layer, after authentication: sheds calls beyond the
//! in-flight cap and refuses callers over their request rate (see
//! `limits`), telling the others how much of their burst is left in
//! `x-ratelimit-remaining`. Health checks and reflection are never shed: an
//! overloaded server must still answer its probes while it drains.

use super::Refuse;
use super::call::Resolved;
use super::rpc_table::Access;
use crate::auth::Principal;
use crate::limits::RateLimits;
use std::future::Future;
use std::sync::Arc;

/// Applies `RateLimits` to every call.
#[derive(Clone)]
pub struct RateLimiting {
    limits: Arc<RateLimits>,
    refuse: Refuse,
}

impl RateLimiting {
    pub fn new(limits: Arc<RateLimits>, refuse: Refuse) -> RateLimiting {
        RateLimiting { limits, refuse }
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
        if Resolved::of(&request).access() == Access::Public {
            return Box::pin(next(request));
        }
        let permit = match self.limits.enter() {
            Ok(permit) => permit,
            Err(refusal) => return super::refuse_now(&self.refuse, &request, refusal),
        };
        match self.limits.enter_adaptive() {
            Err(refusal) => return super::refuse_now(&self.refuse, &request, refusal),
            // Held until the call ends, then told the call's own time.
            Ok(Some(slot)) => {
                if let Some(timing) = request.extensions().get::<Arc<crate::meter::CallTiming>>() {
                    timing.on_overhead(Box::new(move |own| match own {
                        Some(own) => slot.sample_latency(own),
                        None => drop(slot),
                    }));
                }
            }
            Ok(None) => {}
        }
        let key = request
            .extensions()
            .get::<Principal>()
            .map(|p| crate::limits::caller_key(&p.tenant, &p.id));
        let Some(key) = key else {
            return Box::pin(async move {
                let response = next(request).await;
                drop(permit);
                response
            });
        };
        if self.limits.is_shared() {
            let (limits, refuse) = (self.limits.clone(), self.refuse.clone());
            return Box::pin(async move {
                let remaining = match limits.check_shared(&key).await {
                    Ok(remaining) => remaining,
                    Err(refusal) => {
                        return Ok(refuse(request.headers(), request.uri().path(), refusal));
                    }
                };
                let response = next(request).await?;
                drop(permit);
                Ok(with_remaining(response, remaining))
            });
        }
        let remaining = match self.limits.check_here(&key) {
            Ok(remaining) => remaining,
            Err(refusal) => return super::refuse_now(&self.refuse, &request, refusal),
        };
        let response = next(request);
        Box::pin(async move {
            let response = response.await?;
            drop(permit);
            Ok(with_remaining(response, remaining))
        })
    }
}

/// Tells the caller how many more calls its burst holds now.
fn with_remaining(mut response: super::Response, remaining: Option<u32>) -> super::Response {
    if let Some(left) = remaining {
        response
            .headers_mut()
            .insert("x-ratelimit-remaining", http::HeaderValue::from(left));
    }
    response
}
