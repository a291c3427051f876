//! `[backends.NAME]`: the model servers dialogd calls, by protocol.

use super::Capability;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A model backend; `kind` selects the protocol.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum BackendSettings {
    /// Built-in deterministic backend: replies `echo: <last user message>`,
    /// streamed word by word.
    Echo {
        /// Pause before each streamed word, in milliseconds.
        #[serde(default)]
        delay_ms: u64,
    },
    /// An OpenAI-compatible server (OpenAI, vLLM, Ollama's /v1, llama.cpp,
    /// TGI, LiteLLM, Azure OpenAI).
    Openai {
        /// Base URL including the API version path, e.g. `https://api.openai.com/v1`.
        base_url: String,
        /// Name of the environment variable holding the API key (sent as
        /// `Authorization: Bearer`). The key itself never goes in config.
        #[serde(default)]
        api_key_env: Option<String>,
        /// Path of chat completions below `base_url`, with any query
        /// (Azure: `/chat/completions?api-version=2024-10-21`).
        #[serde(default = "default_chat_path")]
        chat_path: String,
        /// Send the key as this header instead of `Authorization: Bearer`
        /// (Azure: `api-key`).
        #[serde(default)]
        api_key_header: Option<String>,
        /// Extra headers sent with every request.
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        timeouts: TimeoutSettings,
    },
    /// Anthropic's Messages API.
    Anthropic {
        /// Base URL, e.g. `https://api.anthropic.com`.
        base_url: String,
        /// Name of the environment variable holding the API key (`x-api-key`).
        #[serde(default)]
        api_key_env: Option<String>,
        /// `anthropic-version` header.
        #[serde(default = "default_anthropic_version")]
        version: String,
        /// `max_tokens` when the request sets none (the API requires one).
        #[serde(default = "default_anthropic_max_tokens")]
        default_max_tokens: u32,
        /// Extra headers sent with every request.
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        timeouts: TimeoutSettings,
    },
}

impl BackendSettings {
    /// Checks a backend entry, including that its API key variable is set.
    pub(super) fn validate(&self, name: &str) -> Result<(), String> {
        let (base_url, api_key_env, timeouts) = match self {
            BackendSettings::Echo { delay_ms } if *delay_ms > 60_000 => {
                return Err(format!("backends.{name}.delay_ms must be at most 60000"));
            }
            BackendSettings::Echo { .. } => return Ok(()),
            BackendSettings::Openai {
                base_url,
                api_key_env,
                timeouts,
                ..
            }
            | BackendSettings::Anthropic {
                base_url,
                api_key_env,
                timeouts,
                ..
            } => (base_url, api_key_env, timeouts),
        };
        match url::Url::parse(base_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => {
                return Err(format!(
                    "backends.{name}.base_url {base_url:?} is not an http(s) URL"
                ));
            }
        }
        if let Some(var) = api_key_env
            && std::env::var_os(var).is_none_or(|v| v.is_empty())
        {
            return Err(format!(
                "backends.{name}.api_key_env names {var}, which is not set in the environment"
            ));
        }
        let t = timeouts;
        if [t.connect_ms, t.request_ms, t.first_token_ms, t.idle_ms].contains(&0) {
            return Err(format!(
                "backends.{name}.timeouts: every timeout must be at least 1 ms"
            ));
        }
        Ok(())
    }

    /// What a target on this backend can do unless configured otherwise:
    /// OpenAI-compatible servers everything dialogd carries, Anthropic
    /// images and tools (it has no JSON response format nor log
    /// probabilities), echo everything (deterministically, for tests).
    pub fn capabilities(&self) -> Vec<Capability> {
        use Capability::*;
        match self {
            BackendSettings::Echo { .. } | BackendSettings::Openai { .. } => {
                vec![Vision, Tools, JsonSchema, Logprobs]
            }
            BackendSettings::Anthropic { .. } => vec![Vision, Tools],
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            BackendSettings::Echo { .. } => "echo",
            BackendSettings::Openai { .. } => "openai",
            BackendSettings::Anthropic { .. } => "anthropic",
        }
    }
}

/// Per-backend time limits of one model call.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutSettings {
    /// Establishing the TCP/TLS connection.
    pub connect_ms: u64,
    /// A whole unary call (the reply is generated before it is sent).
    pub request_ms: u64,
    /// A stream: from sending the request to the first token.
    pub first_token_ms: u64,
    /// A stream: longest silence between two chunks once tokens flow.
    pub idle_ms: u64,
}

impl Default for TimeoutSettings {
    fn default() -> Self {
        TimeoutSettings {
            connect_ms: 5_000,
            request_ms: 300_000,
            first_token_ms: 60_000,
            idle_ms: 30_000,
        }
    }
}

fn default_chat_path() -> String {
    "/chat/completions".into()
}

fn default_anthropic_version() -> String {
    "2023-06-01".into()
}

fn default_anthropic_max_tokens() -> u32 {
    1024
}
