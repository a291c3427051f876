//! The audit log's events: who did what to which resource, with what
//! result. Recorded by the audit layer (middleware/audit.rs) for every
//! mutating call and every refused one; never holds message content, and
//! personal data in its free-text fields is redacted.

pub mod writer;

use crate::dialogue::model::{Page, Time};
use crate::dialogue::page_token;
use crate::dialogue::ports::StoreError;
use crate::failure::Failure;
use async_trait::async_trait;
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub time: Time,
    /// The call's `x-request-id`, or one made up for it.
    pub request_id: String,
    /// Empty when the caller could not be authenticated.
    pub principal: String,
    pub tenant: String,
    pub client_ip: String,
    /// The gRPC method, e.g. `dialogue.v1.DialogueService/DeleteDialogue`.
    pub action: String,
    /// The resource acted on, e.g. `dialogues/abc`, when known.
    pub resource: String,
    /// The gRPC status code name, e.g. `Ok`, `NotFound`, `Unauthenticated`.
    pub status: String,
    pub duration_ms: f64,
}

/// What the layers and handlers learn during a call, for its event: the
/// auth layer fills in the caller, a handler the resource.
#[derive(Debug, Default, Clone)]
pub struct AuditNotes(Arc<Mutex<Notes>>);

#[derive(Debug, Default, Clone)]
pub struct Notes {
    pub principal: String,
    pub tenant: String,
    pub resource: String,
    /// Refused for security (too many failed authentications): audited
    /// whatever the call.
    pub security_refusal: bool,
}

impl AuditNotes {
    pub fn set_caller(&self, principal: &str, tenant: &str) {
        let mut n = self.0.lock().unwrap_or_else(|p| p.into_inner());
        n.principal = principal.to_owned();
        n.tenant = tenant.to_owned();
    }

    pub fn set_resource(&self, resource: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).resource = resource.to_owned();
    }

    pub fn set_security_refusal(&self) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .security_refusal = true;
    }

    pub fn take(&self) -> Notes {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Filters of a ListAuditEvents call.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub from: Option<Time>,
    pub to: Option<Time>,
    pub principal: Option<String>,
    pub action: Option<String>,
}

impl AuditFilter {
    pub fn matches(&self, e: &AuditEvent) -> bool {
        self.principal.as_ref().is_none_or(|p| &e.principal == p)
            && self
                .action
                .as_ref()
                .is_none_or(|a| e.action.ends_with(a.as_str()))
    }
}

/// Where audit events are kept (the stores implement it).
#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Appends an event (not waited on for durability: the store's
    /// periodic flush covers it).
    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError>;

    /// Appends several events in order (the writer's batches). On an
    /// error, how many of the first ones were appended comes with it, so a
    /// retry does not append them twice.
    async fn append_audit_batch(&self, events: &[AuditEvent]) -> Result<(), (usize, StoreError)> {
        for (written, event) in events.iter().enumerate() {
            self.append_audit(event).await.map_err(|e| (written, e))?;
        }
        Ok(())
    }

    /// Events oldest first from `after` (exclusive), within the filter's
    /// time range, at most `limit`; a cursor when more may follow.
    async fn list_audit(
        &self,
        filter: &AuditFilter,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<AuditEvent>, Option<Vec<u8>>), StoreError>;

    /// Removes events older than `before`; returns how many.
    async fn sweep_audit(&self, before: Time) -> Result<u64, StoreError>;
}

/// Page size of ListAuditEvents when the caller names none.
const DEFAULT_PAGE_SIZE: usize = 100;

/// A page of the events matching `filter`, oldest first; `page_size` 0
/// means the default.
pub async fn list_events(
    log: &dyn AuditLog,
    filter: &AuditFilter,
    page_size: usize,
    page_token: &str,
) -> Result<Page<AuditEvent>, Failure> {
    const SCOPE: &str = "audit";
    let after = page_token::position(page_token, SCOPE)?;
    let size = page_token::page_size(page_size, DEFAULT_PAGE_SIZE);
    let (items, next) = log.list_audit(filter, after.as_deref(), size).await?;
    Ok(Page {
        items,
        next_page_token: next.map(|k| page_token::encode(SCOPE, &k)),
    })
}

/// Replaces e-mail addresses, phone-like digit runs and API keys or tokens
/// with placeholders.
pub fn redact(text: &str) -> String {
    static PATTERNS: OnceLock<[(Regex, &'static str); 3]> = OnceLock::new();
    let patterns = PATTERNS.get_or_init(|| {
        // ok: the patterns are constants, checked by the test below.
        let re = |p: &str| Regex::new(p).unwrap_or_else(|_| Regex::new("$^").expect("constant")); // ok: constant
        [
            (
                re(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),
                "[email]",
            ),
            (
                re(r"\b(?:dk|sk|ak)[_-][A-Za-z0-9_-]{8,}|\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9._-]+"),
                "[secret]",
            ),
            (re(r"\+?\d[\d\s().-]{6,}\d"), "[phone]"),
        ]
    });
    let mut out = text.to_owned();
    for (pattern, placeholder) in patterns {
        out = pattern.replace_all(&out, *placeholder).into_owned();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_data_and_secrets_are_redacted() {
        assert_eq!(redact("dialogues/support-42"), "dialogues/support-42");
        assert_eq!(redact("mail jane.doe@example.com now"), "mail [email] now");
        assert_eq!(redact("call +1 (555) 010-9999"), "call [phone]");
        assert_eq!(redact("key dk_ci-bot_abcdefghijk"), "key [secret]");
        assert_eq!(
            redact("bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig"),
            "bearer [secret]"
        );
    }
}
