//! `[store]`: which store keeps dialogues, and how.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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
    /// How long a finished asynchronous turn's operation record is kept
    /// (erased earlier with its dialogue), in hours.
    pub operation_retention_hours: u64,
    /// Start even when the data dir holds less than its manifest promised
    /// (a deliberately emptied or knowingly damaged store).
    pub accept_loss: bool,
    /// Encryption at rest of dialogue content (off without a key ring).
    pub encryption: EncryptionSettings,
}

/// `[store.encryption]`: where the AES-256 key ring is (a file or an
/// environment variable — never this config), and which key seals.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EncryptionSettings {
    /// File of `id:base64(32 bytes)` entries, one per line.
    pub key_file: Option<PathBuf>,
    /// Environment variable holding the same entries, comma-separated.
    pub keys_env: Option<String>,
    /// The key id new records are sealed with.
    pub primary: Option<String>,
    /// Per-dialogue data keys (crypto-shredding, embedded store only): the
    /// file keeping them, outside the data dir; erasing a dialogue
    /// destroys its key there.
    pub dialogue_key_file: Option<PathBuf>,
}

impl EncryptionSettings {
    /// The key ring's text, if encryption is configured.
    pub fn key_ring_text(&self) -> Result<Option<(String, String)>, String> {
        let text = match (&self.key_file, &self.keys_env) {
            (None, None) => {
                return match &self.primary {
                    None => Ok(None),
                    Some(_) => Err("store.encryption.primary needs key_file or keys_env".into()),
                };
            }
            (Some(_), Some(_)) => {
                return Err("store.encryption: set key_file or keys_env, not both".into());
            }
            (Some(path), None) => std::fs::read_to_string(path)
                .map_err(|e| format!("store.encryption.key_file {}: {e}", path.display()))?,
            (None, Some(var)) => std::env::var(var)
                .map_err(|_| format!("store.encryption.keys_env names {var}, which is not set"))?,
        };
        let primary = self
            .primary
            .clone()
            .ok_or("store.encryption.primary must name the key that seals new records")?;
        Ok(Some((text, primary)))
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
            accept_loss: false,
            operation_retention_hours: 168,
            encryption: EncryptionSettings::default(),
        }
    }
}

impl StoreSettings {
    /// Per-dialogue keys need one process to own them, beside a key ring,
    /// and outside the data dir (a copy of the data dir must not carry the
    /// keys that erasure destroys).
    fn check_dialogue_key_file(&self, path: &std::path::Path) -> Result<(), String> {
        const NAME: &str = "store.encryption.dialogue_key_file";
        if self.kind == StoreKind::Redis {
            return Err(format!(
                "{NAME}: per-dialogue keys (crypto-shredding) work with the embedded store only: replicas cannot share a key file; unset it with store.kind = \"redis\""
            ));
        }
        if self.encryption.key_file.is_none() && self.encryption.keys_env.is_none() {
            return Err(format!(
                "{NAME} needs a key ring (store.encryption.key_file or keys_env) to wrap the keys"
            ));
        }
        let absolute =
            |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
        if absolute(path).starts_with(absolute(&self.data_dir)) {
            return Err(format!(
                "{NAME} must be outside store.data_dir: a copy of the data dir must not carry the keys erasure destroys"
            ));
        }
        Ok(())
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        if self.data_dir.as_os_str().is_empty() {
            return Err("store.data_dir must not be empty".into());
        }
        if self.flush_interval_ms == 0 || self.flush_interval_ms > 60_000 {
            return Err("store.flush_interval_ms must be 1 to 60000".into());
        }
        if self.sweep_interval_secs == 0 {
            return Err("store.sweep_interval_secs must be at least 1".into());
        }
        if let Some(path) = &self.encryption.dialogue_key_file {
            self.check_dialogue_key_file(path)?;
        }
        if !(1..=3600).contains(&self.redis.lease_secs) {
            return Err("store.redis.lease_secs must be 1 to 3600".into());
        }
        if !(1..=87_600).contains(&self.operation_retention_hours) {
            return Err("store.operation_retention_hours must be 1 to 87600".into());
        }
        let r = &self.redis;
        if [
            r.connect_timeout_ms,
            r.command_timeout_ms,
            r.health_check_ms,
        ]
        .iter()
        .any(|ms| !(10..=60_000).contains(ms))
        {
            return Err("store.redis.connect_timeout_ms, command_timeout_ms and health_check_ms must be 10 to 60000".into());
        }
        Ok(())
    }
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
    /// Longest wait for a new connection to Redis; a call made while Redis
    /// cannot be reached fails within it.
    pub connect_timeout_ms: u64,
    /// Longest wait for Redis to answer a command.
    pub command_timeout_ms: u64,
    /// How often Redis is pinged: readiness follows the answer, and calls
    /// fail at once while it is unreachable.
    pub health_check_ms: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: "dialogd:".into(),
            cluster_nodes: Vec::new(),
            lease_secs: 2,
            connect_timeout_ms: 250,
            command_timeout_ms: 1_000,
            health_check_ms: 250,
        }
    }
}
