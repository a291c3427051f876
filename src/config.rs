//! Typed settings, layered: built-in defaults, then a TOML file, then
//! `DIALOGD_*` environment variables, then command-line flags.
//!
//! Environment variables name a key path with `__` between levels, for
//! example `DIALOGD_SERVER__LISTEN=0.0.0.0:50051` or
//! `DIALOGD_STORE__DURABILITY=relaxed`. Every key is documented in README.md.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Everything dialogd can be configured with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub store: StoreSettings,
    pub limits: LimitSettings,
    pub log: LogSettings,
    /// Public model used when neither the dialogue nor the request names one.
    pub default_model: String,
    /// Public models and the backend serving each.
    pub models: Vec<ModelSettings>,
    /// Model backends by name.
    pub backends: BTreeMap<String, BackendSettings>,
    /// Retries, fallback and circuit breaking of model calls.
    pub routing: RoutingSettings,
    /// Who may call: API keys, JWTs, token issuance.
    pub auth: AuthSettings,
    /// Blocked terms in messages and replies.
    pub content_filter: ContentFilterSettings,
    /// The audit log.
    pub audit: AuditSettings,
    /// Callbacks of asynchronous turns (SubmitTurn).
    pub webhooks: WebhookSettings,
    /// The Prometheus scrape endpoint.
    pub metrics: MetricsSettings,
    /// The response cache of deterministic turns.
    pub cache: CacheSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Serve `/metrics` at all.
    pub enabled: bool,
    /// Where `/metrics` is served (plain HTTP, apart from the gRPC port).
    pub listen: SocketAddr,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
        }
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
pub struct AuditSettings {
    /// Days audit events are kept; older ones are erased by the sweeper.
    pub retention_days: u32,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings { retention_days: 90 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// Environment variable holding the HMAC key callbacks are signed
    /// with; without it, SubmitTurn refuses callback URLs.
    pub secret_env: Option<String>,
    /// POSTs per callback before it is given up.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled each time, at most a minute.
    pub initial_backoff_ms: u64,
    /// How long one POST may take.
    pub timeout_secs: u64,
    /// Hosts callback URLs may name (exact, case-insensitive); empty: any.
    /// Set it in production, or callers can make the server POST to any
    /// address it reaches.
    pub allowed_hosts: Vec<String>,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            secret_env: None,
            max_attempts: 6,
            initial_backoff_ms: 500,
            timeout_secs: 10,
            allowed_hosts: Vec::new(),
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

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No credentials; every caller is the `local` principal with all
    /// roles. Allowed only when listening on loopback.
    None,
    /// Every call (but health, reflection and IssueToken) needs a valid
    /// API key or JWT.
    Required,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    pub mode: AuthMode,
    /// Lifetime of tokens from IssueToken, in seconds.
    pub token_ttl_secs: u64,
    pub jwt: JwtSettings,
    /// API keys (also the client credentials of IssueToken).
    pub api_keys: Vec<ApiKeySettings>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            mode: AuthMode::None,
            token_ttl_secs: 900,
            jwt: JwtSettings::default(),
            api_keys: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JwtSettings {
    /// Required `iss` of accepted tokens, and the `iss` of issued ones.
    pub issuer: String,
    /// Required `aud` of accepted tokens, and the `aud` of issued ones.
    pub audience: String,
    /// Environment variable with the HS256 secret (at least 32 bytes): verifies
    /// HS256 tokens and signs IssueToken's tokens.
    pub hs256_secret_env: Option<String>,
    /// PEM file of an RSA public key for RS256 tokens.
    pub rs256_public_key_file: Option<String>,
    /// PEM file of a P-256 public key for ES256 tokens.
    pub es256_public_key_file: Option<String>,
    /// JWKS file (RS256 and ES256 keys, chosen by `kid`).
    pub jwks_file: Option<String>,
}

impl Default for JwtSettings {
    fn default() -> Self {
        JwtSettings {
            issuer: "dialogd".into(),
            audience: "dialogd".into(),
            hs256_secret_env: None,
            rs256_public_key_file: None,
            es256_public_key_file: None,
            jwks_file: None,
        }
    }
}

/// One API key: only its id and the hash of its secret are configured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySettings {
    /// The key's public id (`dk_<id>_...`): `[a-z0-9-]`, 1 to 64.
    pub id: String,
    /// `sha256:<hex>` of the secret, as printed by `dialogd keygen`.
    pub hash: String,
    /// The principal the key acts as; defaults to `id`.
    #[serde(default)]
    pub principal: Option<String>,
    /// The tenant whose data the key reaches.
    pub tenant: String,
    #[serde(default = "default_roles")]
    pub roles: Vec<crate::auth::Role>,
    /// Narrower scopes than the roles grant, if set.
    #[serde(default)]
    pub scopes: Option<Vec<crate::auth::Scope>>,
}

fn default_roles() -> Vec<crate::auth::Role> {
    vec![crate::auth::Role::User]
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address the gRPC server binds; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Upper bound of a decoded request message, in bytes.
    pub max_request_bytes: usize,
    /// How long in-flight calls and streams may run on after SIGTERM/SIGINT.
    pub drain_timeout_secs: u64,
    /// Browser origins (`https://app.example.com`, or `*`) allowed to call
    /// gRPC-Web and the HTTP routes cross-origin; empty: no CORS headers.
    pub cors_allowed_origins: Vec<String>,
    /// TLS for the gRPC port; plain HTTP/2 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// PEM CA certificates: when set, clients must present a certificate
    /// signed by one of them (mTLS).
    #[serde(default)]
    pub client_ca_file: Option<String>,
    /// How often the certificate files are checked for changes, in seconds
    /// (they are also reloaded on SIGHUP).
    #[serde(default = "default_reload_check_secs")]
    pub reload_check_secs: u64,
    /// Roles of callers known only by their client certificate (subject CN
    /// = principal, O = tenant), when no bearer credential is sent.
    #[serde(default = "default_roles")]
    pub client_cert_roles: Vec<crate::auth::Role>,
}

fn default_reload_check_secs() -> u64 {
    10
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Acknowledge a write only once it is flushed to disk (group commit).
    Sync,
    /// Acknowledge at once; a background flush runs every `flush_interval_ms`.
    Relaxed,
}

/// Which store keeps dialogues.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The embedded sled database in `data_dir` (one replica).
    Sled,
    /// A Redis server shared by several replicas (`store.redis`).
    Redis,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://` for TLS).
    pub url: String,
    /// Prepended to every key, so deployments can share a database.
    pub key_prefix: String,
    /// Redis Cluster: the nodes to discover it from (`redis://host:port`
    /// each). When set, `url` is not used.
    pub cluster_nodes: Vec<String>,
    /// How long the dialogue locks and stream slots of a replica that died
    /// outlive it; held ones are renewed three times per period.
    pub lease_secs: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: "dialogd:".into(),
            cluster_nodes: Vec::new(),
            lease_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// `sled` (embedded, default) or `redis`.
    pub kind: StoreKind,
    /// The Redis store's server and key prefix (with `kind = "redis"`).
    pub redis: RedisSettings,
    /// Directory of the embedded sled database (created if missing).
    pub data_dir: PathBuf,
    /// When a write is acknowledged: `sync` (durable) or `relaxed`.
    pub durability: Durability,
    /// Background flush period, in milliseconds (the loss window of `relaxed`).
    pub flush_interval_ms: u64,
    /// Size of sled's page cache, in MiB.
    pub cache_capacity_mb: u64,
    /// How often expired dialogues and idempotency keys are erased, in seconds.
    pub sweep_interval_secs: u64,
    /// Memory for recent turns of busy dialogues (prompts are built from
    /// it instead of re-reading history), in MiB; 0 turns it off.
    pub history_cache_mb: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Upper bound of a user message's text, in bytes.
    pub max_message_bytes: usize,
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
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// A tracing filter: a level (`info`) or directives (`dialogd=debug,info`).
    pub level: String,
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
}

/// A public model name and where it is served.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// Name callers use.
    pub name: String,
    /// Shorthand for a single target: key of the backend in `[backends]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// With `backend`: model name sent to it; defaults to `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_model: Option<String>,
    /// Where the model is served. A turn goes to one target picked by
    /// weight; if it fails, the others are tried in this order (fallback).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetSettings>,
    /// Context window in tokens; history that does not fit is left out.
    #[serde(default = "default_context_tokens")]
    pub context_tokens: u32,
    /// Upper bound of history turns in one prompt, whatever their size.
    #[serde(default = "default_max_history_turns")]
    pub max_history_turns: usize,
    /// Summarize history once this many tokens of it no longer fit the
    /// window (unset: never; dropped turns are just left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summarize_after_tokens: Option<u32>,
    /// Length limit of a summary, in tokens (room for it is kept in every
    /// prompt when summarizing is on).
    #[serde(default = "default_summary_max_tokens")]
    pub summary_max_tokens: u32,
}

impl ModelSettings {
    /// The targets, with the single-target shorthand expanded.
    pub fn resolved_targets(&self) -> Vec<TargetSettings> {
        match &self.backend {
            Some(backend) => vec![TargetSettings {
                backend: backend.clone(),
                upstream_model: self.upstream_model.clone(),
                weight: 1,
            }],
            None => self.targets.clone(),
        }
    }
}

/// One backend + upstream model serving a public model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetSettings {
    /// Key of the backend in `[backends]`.
    pub backend: String,
    /// Model name sent to the backend; defaults to the public name.
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// Share of first attempts this target gets; 0 makes it fallback only.
    #[serde(default = "default_weight")]
    pub weight: u32,
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

/// Retries, fallback and circuit breaking of model calls.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingSettings {
    /// Attempts per turn across all targets (first call included).
    pub max_attempts: u32,
    /// Retries may add at most this share of calls (0.2 = 20%).
    pub retry_budget_ratio: f64,
    /// Retries always allowed in a quiet period before the ratio applies.
    pub retry_budget_reserve: u32,
    /// Backoff before retrying the same target: full jitter over
    /// `base * 2^n`, capped at `max`.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub breaker: BreakerSettings,
}

impl Default for RoutingSettings {
    fn default() -> Self {
        RoutingSettings {
            max_attempts: 3,
            retry_budget_ratio: 0.2,
            retry_budget_reserve: 10,
            backoff_base_ms: 100,
            backoff_max_ms: 2_000,
            breaker: BreakerSettings::default(),
        }
    }
}

/// When a target's circuit opens (it is skipped) and when it is probed again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSettings {
    /// Open after this many failures in a row.
    pub consecutive_failures: u32,
    /// Or when this share of calls in a window failed...
    pub error_rate: f64,
    /// ...and the window saw at least this many calls.
    pub min_calls: u32,
    /// Length of the error-rate window, in seconds.
    pub window_secs: u64,
    /// How long an open circuit waits before letting one probe call through.
    pub cooldown_secs: u64,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            consecutive_failures: 5,
            error_rate: 0.5,
            min_calls: 20,
            window_secs: 30,
            cooldown_secs: 15,
        }
    }
}

impl Settings {
    fn validate_auth(&self) -> Result<(), String> {
        let auth = &self.auth;
        if auth.mode == AuthMode::None && !self.server.listen.ip().is_loopback() {
            return Err(format!(
                "auth.mode = \"none\" is only allowed on a loopback address, not {}; configure API keys or JWTs and set auth.mode = \"required\"",
                self.server.listen
            ));
        }
        let mut ids = std::collections::HashSet::new();
        for key in &auth.api_keys {
            if !crate::auth::keys::valid_id(&key.id) || !ids.insert(key.id.as_str()) {
                return Err(format!(
                    "auth.api_keys: id {:?} is invalid or repeated",
                    key.id
                ));
            }
            if crate::auth::keys::parse_hash(&key.hash).is_none() {
                return Err(format!(
                    "auth.api_keys {:?}: hash must be sha256:<64 hex digits> (see `dialogd keygen`)",
                    key.id
                ));
            }
            if key.tenant.is_empty() {
                return Err(format!(
                    "auth.api_keys {:?}: tenant must not be empty",
                    key.id
                ));
            }
        }
        let jwt = &auth.jwt;
        if let Some(var) = &jwt.hs256_secret_env {
            match std::env::var(var) {
                Ok(secret) if secret.len() >= 32 => {}
                _ => {
                    return Err(format!(
                        "auth.jwt.hs256_secret_env names {var}, which must hold a secret of at least 32 bytes"
                    ));
                }
            }
        }
        for (key, path) in [
            ("rs256_public_key_file", &jwt.rs256_public_key_file),
            ("es256_public_key_file", &jwt.es256_public_key_file),
            ("jwks_file", &jwt.jwks_file),
        ] {
            if let Some(p) = path
                && !Path::new(p).is_file()
            {
                return Err(format!("auth.jwt.{key}: {p} is not a readable file"));
            }
        }
        let any_jwt = jwt.hs256_secret_env.is_some()
            || jwt.rs256_public_key_file.is_some()
            || jwt.es256_public_key_file.is_some()
            || jwt.jwks_file.is_some();
        if auth.mode == AuthMode::Required && auth.api_keys.is_empty() && !any_jwt {
            return Err("auth.mode = \"required\" needs auth.api_keys or an auth.jwt key".into());
        }
        if let Some(tls) = &self.server.tls {
            for (key, path) in [
                ("cert_file", Some(&tls.cert_file)),
                ("key_file", Some(&tls.key_file)),
                ("client_ca_file", tls.client_ca_file.as_ref()),
            ] {
                if let Some(p) = path
                    && !Path::new(p).is_file()
                {
                    return Err(format!("server.tls.{key}: {p} is not a readable file"));
                }
            }
            if tls.reload_check_secs == 0 {
                return Err("server.tls.reload_check_secs must be at least 1".into());
            }
        }
        if self.audit.retention_days == 0 {
            return Err("audit.retention_days must be at least 1".into());
        }
        if auth.token_ttl_secs == 0 || auth.token_ttl_secs > 24 * 3600 {
            return Err("auth.token_ttl_secs must be 1 to 86400".into());
        }
        Ok(())
    }
}

impl BackendSettings {
    /// Checks a backend entry, including that its API key variable is set.
    fn validate(&self, name: &str) -> Result<(), String> {
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

    pub fn kind(&self) -> &'static str {
        match self {
            BackendSettings::Echo { .. } => "echo",
            BackendSettings::Openai { .. } => "openai",
            BackendSettings::Anthropic { .. } => "anthropic",
        }
    }
}

fn default_weight() -> u32 {
    1
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

fn default_context_tokens() -> u32 {
    8192
}

fn default_max_history_turns() -> usize {
    1000
}

fn default_summary_max_tokens() -> u32 {
    512
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            server: ServerSettings::default(),
            store: StoreSettings::default(),
            limits: LimitSettings::default(),
            log: LogSettings::default(),
            default_model: "echo".into(),
            models: vec![ModelSettings {
                name: "echo".into(),
                backend: Some("echo".into()),
                upstream_model: None,
                targets: Vec::new(),
                context_tokens: default_context_tokens(),
                max_history_turns: default_max_history_turns(),
                summarize_after_tokens: None,
                summary_max_tokens: default_summary_max_tokens(),
            }],
            backends: BTreeMap::from([("echo".into(), BackendSettings::Echo { delay_ms: 0 })]),
            routing: RoutingSettings::default(),
            auth: AuthSettings::default(),
            content_filter: ContentFilterSettings::default(),
            audit: AuditSettings::default(),
            webhooks: WebhookSettings::default(),
            metrics: MetricsSettings::default(),
            cache: CacheSettings::default(),
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            max_request_bytes: 4 * 1024 * 1024,
            drain_timeout_secs: 30,
            cors_allowed_origins: Vec::new(),
            tls: None,
        }
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            kind: StoreKind::Sled,
            redis: RedisSettings::default(),
            data_dir: PathBuf::from("./data"),
            durability: Durability::Sync,
            flush_interval_ms: 500,
            cache_capacity_mb: 256,
            sweep_interval_secs: 60,
            history_cache_mb: 64,
        }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            max_message_bytes: 64 * 1024,
            max_system_prompt_bytes: 32 * 1024,
            max_state_bytes: 64 * 1024,
            max_labels: 64,
            max_turns_per_dialogue: 100_000,
            requests_per_second: 0,
            request_burst: 0,
            tokens_per_minute: 0,
            max_streams_per_principal: 64,
            max_in_flight: 4096,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Values given as command-line flags; they win over file and environment.
#[derive(Debug, Default, Clone, Serialize)]
pub struct FlagOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
}

/// A setting that could not be read or makes no sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Top-level keys: only `DIALOGD_*` variables starting with one of these
/// are configuration. Others are left alone, for example the
/// `DIALOGD_SERVICE_HOST` / `DIALOGD_PORT` that Kubernetes sets for a
/// Service named dialogd.
const TOP_LEVEL_KEYS: &[&str] = &[
    "server",
    "store",
    "limits",
    "log",
    "default_model",
    "models",
    "backends",
    "routing",
    "auth",
    "content_filter",
    "audit",
    "webhooks",
    "metrics",
    "cache",
];

fn is_config_env_key(key: &str) -> bool {
    let first = key.split("__").next().unwrap_or("").to_ascii_lowercase();
    TOP_LEVEL_KEYS.contains(&first.as_str())
}

/// `DIALOGD_*` variables that look like config keys (they contain `__`) but
/// name no top-level key: probably typos, worth a warning.
pub fn ignored_env_keys() -> Vec<String> {
    std::env::vars()
        .filter_map(|(k, _)| k.strip_prefix("DIALOGD_").map(str::to_owned))
        .filter(|k| k.contains("__") && !is_config_env_key(k))
        .map(|k| format!("DIALOGD_{k}"))
        .collect()
}

impl Settings {
    /// Reads the layers in order (defaults, `file`, `DIALOGD_*`, `flags`) and
    /// validates the result.
    pub fn load(file: Option<&Path>, flags: &FlagOverrides) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile(path.to_path_buf()));
            }
            figment = figment.merge(Toml::file(path));
        }
        let mut server = serde_json::Map::new();
        let mut store = serde_json::Map::new();
        let mut log = serde_json::Map::new();
        let mut metrics = serde_json::Map::new();
        if let Some(listen) = flags.metrics_listen {
            metrics.insert("listen".into(), listen.to_string().into());
        }
        if let Some(listen) = flags.listen {
            server.insert("listen".into(), listen.to_string().into());
        }
        if let Some(dir) = &flags.data_dir {
            store.insert("data_dir".into(), dir.display().to_string().into());
        }
        if let Some(level) = &flags.log_level {
            log.insert("level".into(), level.clone().into());
        }
        let flag_layer =
            serde_json::json!({ "server": server, "store": store, "log": log, "metrics": metrics });
        let settings: Settings = figment
            .merge(
                Env::prefixed("DIALOGD_")
                    .filter(|k| is_config_env_key(k.as_str()))
                    .split("__"),
            )
            .merge(Serialized::defaults(flag_layer))
            .extract()
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what types alone cannot: ranges and cross-references.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        if self.store.data_dir.as_os_str().is_empty() {
            return invalid("store.data_dir must not be empty".into());
        }
        if self.store.flush_interval_ms == 0 || self.store.flush_interval_ms > 60_000 {
            return invalid("store.flush_interval_ms must be 1 to 60000".into());
        }
        if self.store.sweep_interval_secs == 0 {
            return invalid("store.sweep_interval_secs must be at least 1".into());
        }
        if !(1..=3600).contains(&self.store.redis.lease_secs) {
            return invalid("store.redis.lease_secs must be 1 to 3600".into());
        }
        if self.server.max_request_bytes < 1024 {
            return invalid("server.max_request_bytes must be at least 1024".into());
        }
        let limits = &self.limits;
        for (key, value) in [
            ("limits.max_message_bytes", limits.max_message_bytes),
            (
                "limits.max_system_prompt_bytes",
                limits.max_system_prompt_bytes,
            ),
            ("limits.max_state_bytes", limits.max_state_bytes),
            ("limits.max_labels", limits.max_labels),
        ] {
            if value == 0 {
                return invalid(format!("{key} must be at least 1"));
            }
        }
        if limits.max_turns_per_dialogue < 2 {
            return invalid("limits.max_turns_per_dialogue must be at least 2".into());
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return invalid(format!(
                "log.level {:?} is not a level or filter",
                self.log.level
            ));
        }
        if self.models.is_empty() {
            return invalid("at least one [[models]] entry is needed".into());
        }
        let mut seen = std::collections::HashSet::new();
        for model in &self.models {
            if model.name.is_empty() || !seen.insert(model.name.as_str()) {
                return invalid(format!("model name {:?} is empty or repeated", model.name));
            }
            let targets = model.resolved_targets();
            if model.backend.is_some() != model.targets.is_empty() {
                return invalid(format!(
                    "model {:?} needs either `backend` or a non-empty `targets` list, not both",
                    model.name
                ));
            }
            if model.backend.is_none() && model.upstream_model.is_some() {
                return invalid(format!(
                    "model {:?}: `upstream_model` goes inside each target when `targets` is used",
                    model.name
                ));
            }
            if targets.iter().all(|t| t.weight == 0) {
                return invalid(format!(
                    "model {:?}: at least one target needs a weight above 0",
                    model.name
                ));
            }
            for target in &targets {
                if !self.backends.contains_key(&target.backend) {
                    let known: Vec<&str> = self.backends.keys().map(String::as_str).collect();
                    return invalid(format!(
                        "model {:?} names backend {:?}, which is not configured (known: {})",
                        model.name,
                        target.backend,
                        known.join(", ")
                    ));
                }
            }
            if model.context_tokens < 16 {
                return invalid(format!(
                    "model {:?}: context_tokens must be at least 16",
                    model.name
                ));
            }
            if model.summarize_after_tokens.is_some()
                && (model.summary_max_tokens == 0
                    || model.summary_max_tokens > model.context_tokens / 2)
            {
                return invalid(format!(
                    "model {:?}: summary_max_tokens must be 1 to half of context_tokens",
                    model.name
                ));
            }
        }
        if !seen.contains(self.default_model.as_str()) {
            return invalid(format!(
                "default_model {:?} is not one of the configured models",
                self.default_model
            ));
        }
        for (name, backend) in &self.backends {
            backend.validate(name).map_err(ConfigError::Invalid)?;
        }
        self.validate_auth().map_err(ConfigError::Invalid)?;
        let routing = &self.routing;
        if routing.max_attempts == 0 || routing.max_attempts > 10 {
            return invalid("routing.max_attempts must be 1 to 10".into());
        }
        if !(0.0..=1.0).contains(&routing.retry_budget_ratio) {
            return invalid("routing.retry_budget_ratio must be 0.0 to 1.0".into());
        }
        if routing.backoff_base_ms == 0 || routing.backoff_max_ms < routing.backoff_base_ms {
            return invalid(
                "routing.backoff_base_ms must be at least 1 and at most routing.backoff_max_ms"
                    .into(),
            );
        }
        let breaker = &routing.breaker;
        if breaker.consecutive_failures == 0
            || !(0.0..=1.0).contains(&breaker.error_rate)
            || breaker.window_secs == 0
        {
            return invalid(
                "routing.breaker: consecutive_failures and window_secs must be at least 1, error_rate 0.0 to 1.0".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
// figment's Jail closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let settings = Settings::default();
        settings.validate().unwrap();
        assert_eq!(settings.server.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(settings.store.data_dir, PathBuf::from("./data"));
        assert_eq!(settings.store.durability, Durability::Sync);
    }

    #[test]
    fn flags_win_over_env_and_env_over_file() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "dialogd.toml",
                r#"
                [server]
                listen = "127.0.0.1:7000"
                drain_timeout_secs = 5
                [store]
                data_dir = "/from/file"
                durability = "relaxed"
                "#,
            )?;
            jail.set_env("DIALOGD_SERVER__LISTEN", "127.0.0.1:7001");
            jail.set_env("DIALOGD_STORE__DATA_DIR", "/from/env");
            let flags = FlagOverrides {
                data_dir: Some("/from/flag".into()),
                ..Default::default()
            };
            let s = Settings::load(Some(Path::new("dialogd.toml")), &flags).unwrap();
            assert_eq!(
                s.server.listen.to_string(),
                "127.0.0.1:7001",
                "env over file"
            );
            assert_eq!(
                s.store.data_dir,
                PathBuf::from("/from/flag"),
                "flag over env"
            );
            assert_eq!(s.server.drain_timeout_secs, 5, "file over default");
            assert_eq!(s.store.durability, Durability::Relaxed);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected_with_the_key() {
        Jail::expect_with(|jail| {
            jail.create_file("typo.toml", "[server]\nlisten_addr = \"127.0.0.1:1\"\n")?;
            let err = Settings::load(Some(Path::new("typo.toml")), &FlagOverrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("listen_addr"), "{err}");

            jail.create_file("bad.toml", "[store]\ndurability = \"sometimes\"\n")?;
            let err = Settings::load(Some(Path::new("bad.toml")), &FlagOverrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("durability"), "{err}");

            jail.create_file("model.toml", "default_model = \"gpt-9\"\n")?;
            let err = Settings::load(Some(Path::new("model.toml")), &FlagOverrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("gpt-9"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn every_top_level_key_can_be_set_from_the_environment() {
        let json = serde_json::to_value(Settings::default()).unwrap();
        let mut fields: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut listed = TOP_LEVEL_KEYS.to_vec();
        fields.sort();
        listed.sort();
        assert_eq!(fields, listed);
    }

    #[test]
    fn unrelated_dialogd_variables_are_not_config() {
        Jail::expect_with(|jail| {
            // What Kubernetes injects for a Service named "dialogd".
            jail.set_env("DIALOGD_SERVICE_HOST", "10.0.0.7");
            jail.set_env("DIALOGD_PORT", "tcp://10.0.0.7:50051");
            jail.set_env("DIALOGD_BIN", "/usr/local/bin/dialogd");
            jail.set_env("DIALOGD_SERVR__LISTEN", "127.0.0.1:1");
            let s = Settings::load(None, &FlagOverrides::default()).unwrap();
            assert_eq!(s, Settings::default());
            assert_eq!(ignored_env_keys(), ["DIALOGD_SERVR__LISTEN"]);
            Ok(())
        });
    }

    #[test]
    fn env_reaches_nested_backend_settings() {
        Jail::expect_with(|jail| {
            jail.set_env("DIALOGD_BACKENDS__ECHO__DELAY_MS", "25");
            let s = Settings::load(None, &FlagOverrides::default()).unwrap();
            assert_eq!(s.backends["echo"], BackendSettings::Echo { delay_ms: 25 });
            Ok(())
        });
    }

    #[test]
    fn every_toml_example_in_the_readme_parses() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
        let blocks: Vec<&str> = readme
            .split("```toml\n")
            .skip(1)
            .filter_map(|rest| rest.split("```").next())
            .collect();
        assert!(blocks.len() >= 4, "README examples went missing");
        for block in blocks {
            Figment::from(Serialized::defaults(Settings::default()))
                .merge(Toml::string(block))
                .extract::<Settings>()
                .unwrap_or_else(|e| panic!("README example does not parse: {e}\n{block}"));
        }
    }

    /// The configs shipped for containers and Kubernetes load and validate
    /// as dialogd would load them (with the secret their Secret provides).
    #[test]
    fn the_deployment_configs_are_valid() {
        // In a Jail: the environment is shared with the tests that set
        // DIALOGD_* variables, and the Jail lock keeps them apart.
        Jail::expect_with(|jail| {
            jail.set_env("DIALOGD_JWT_SECRET", "a-test-secret-of-at-least-32-bytes!");
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
            for (file, kind) in [
                ("dialogd.example.toml", StoreKind::Sled),
                ("k8s/overlays/single/dialogd.toml", StoreKind::Sled),
                ("k8s/overlays/scaled/dialogd.toml", StoreKind::Redis),
            ] {
                let settings = Settings::load(Some(&root.join(file)), &FlagOverrides::default())
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
                assert_eq!(settings.store.kind, kind, "{file}");
                assert_eq!(settings.auth.mode, AuthMode::Required, "{file}");
                assert_eq!(settings.server.listen.port(), 50051, "{file}");
                assert_eq!(settings.metrics.listen.port(), 9090, "{file}");
            }
            Ok(())
        });
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let err = Settings::load(
            Some(Path::new("/nonexistent/dialogd.toml")),
            &FlagOverrides::default(),
        );
        assert!(matches!(err, Err(ConfigError::MissingFile(_))));
    }
}
