//! The engine's settings: `[limits]` (sizes and per-caller quotas),
//! `[cache]` (the response cache) and `[content_filter]` (blocked terms).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Upper bound of a user message's text, in bytes.
    pub max_message_bytes: usize,
    /// Upper bound of the inline image bytes of one request.
    pub max_request_media_bytes: u64,
    /// Upper bound of the inline image bytes a dialogue keeps (every turn).
    pub max_dialogue_media_bytes: u64,
    /// Upper bound of a dialogue's system prompt, in bytes.
    pub max_system_prompt_bytes: usize,
    /// Upper bound of a dialogue's state, JSON-encoded, in bytes.
    pub max_state_bytes: usize,
    /// Upper bound of a dialogue's label count.
    pub max_labels: usize,
    /// Upper bound of turns stored in one dialogue (user and assistant each count).
    pub max_turns_per_dialogue: u64,
    /// Calls per second per principal (0: unlimited).
    pub requests_per_second: u32,
    /// Calls a principal may make at once above that rate (0: the rate).
    pub request_burst: u32,
    /// Model tokens (prompt + reply) per minute per principal (0: unlimited).
    pub tokens_per_minute: u64,
    /// Streams one principal may have open at once (0: unlimited).
    pub max_streams_per_principal: u32,
    /// Calls in flight in the whole server before new ones are shed with
    /// RESOURCE_EXHAUSTED (0: unlimited).
    pub max_in_flight: u32,
    /// An adaptive limit of the server's calls in flight, beside
    /// `max_in_flight`, following each call's own time in the server.
    pub adaptive_concurrency: super::AdaptiveConcurrencySettings,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            max_message_bytes: 64 * 1024,
            max_request_media_bytes: 10 << 20,
            max_dialogue_media_bytes: 256 << 20,
            max_system_prompt_bytes: 32 * 1024,
            max_state_bytes: 64 * 1024,
            max_labels: 64,
            max_turns_per_dialogue: 100_000,
            requests_per_second: 0,
            request_burst: 0,
            tokens_per_minute: 0,
            max_streams_per_principal: 64,
            max_in_flight: 4096,
            adaptive_concurrency: super::AdaptiveConcurrencySettings::default(),
        }
    }
}

impl LimitSettings {
    pub(super) fn validate(&self) -> Result<(), String> {
        self.adaptive_concurrency
            .validate("limits.adaptive_concurrency")?;
        for (key, value) in [
            ("limits.max_message_bytes", self.max_message_bytes),
            (
                "limits.max_system_prompt_bytes",
                self.max_system_prompt_bytes,
            ),
            ("limits.max_state_bytes", self.max_state_bytes),
            ("limits.max_labels", self.max_labels),
        ] {
            if value == 0 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        if self.max_request_media_bytes > self.max_dialogue_media_bytes {
            return Err(
                "limits.max_request_media_bytes must be at most limits.max_dialogue_media_bytes"
                    .into(),
            );
        }
        if self.max_turns_per_dialogue < 2 {
            return Err("limits.max_turns_per_dialogue must be at least 2".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// Keep replies of deterministic turns (temperature 0 or a seed, or a
    /// request that opts in) and answer identical requests from them.
    pub enabled: bool,
    /// Most bytes of reply text held (plus 256 per reply); the least
    /// recently used go first.
    pub max_bytes: usize,
    /// How long a reply may be served from the cache, in seconds.
    pub ttl_secs: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            enabled: true,
            max_bytes: 64 << 20,
            ttl_secs: 3600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ContentFilterSettings {
    /// Terms (matched anywhere, ASCII case-insensitive); empty: no filter.
    pub blocked_terms: Vec<String>,
    /// Also cut replies at a blocked term (finish reason CONTENT_FILTER).
    pub check_output: bool,
}

impl Default for ContentFilterSettings {
    fn default() -> Self {
        ContentFilterSettings {
            blocked_terms: Vec::new(),
            check_output: true,
        }
    }
}
