//! Typed settings, layered: built-in defaults, then a TOML file, then
//! `DIALOGD_*` environment variables, then command-line flags. One file per
//! subsystem, each with its defaults and its validation beside the struct;
//! this file holds the whole and the layering.
//!
//! Environment variables name a key path with `__` between levels, for
//! example `DIALOGD_SERVER__LISTEN=0.0.0.0:50051` or
//! `DIALOGD_STORE__DURABILITY=relaxed`. Every key is documented in README.md.

mod auth;
mod backends;
mod engine;
mod flags;
mod image_text;
mod messages;
mod models;
mod observability;
mod operations;
mod rules;
mod server;
mod store;
mod webhooks;

pub use auth::{ApiKeySettings, AuthMode, AuthSettings, JwtSettings};
pub use backends::{BackendSettings, TimeoutSettings};
pub use engine::{CacheSettings, ContentFilterSettings, LimitSettings};
pub use flags::Flags;
pub use image_text::ImageTextSettings;
pub use models::{
    AdaptiveConcurrencySettings, BreakerSettings, Capability, ModelSettings, RoutingSettings,
    SemanticCacheSettings, TargetSettings,
};
pub use observability::{AuditSettings, LogFormat, LogSettings, MetricsSettings, TracingSettings};
pub use operations::OperationSettings;
pub use rules::{
    RefuseSettings, RefuseStatus, RuleAction, RuleConditions, RuleSettings, RulesSettings,
    parse_hours, read_rule_file, validate_rules,
};
pub use server::{ServerSettings, TlsSettings};
pub use store::{Durability, EncryptionSettings, RedisSettings, StoreKind, StoreSettings};
pub use webhooks::WebhookSettings;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Everything dialogd can be configured with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub store: StoreSettings,
    pub limits: LimitSettings,
    pub log: LogSettings,
    /// OpenTelemetry traces (off by default).
    pub tracing: TracingSettings,
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
    /// How asynchronous turns are run: workers and priorities.
    pub operations: OperationSettings,
    /// The Prometheus scrape endpoint.
    pub metrics: MetricsSettings,
    /// The response cache of deterministic turns.
    pub cache: CacheSettings,
    /// Traffic rules evaluated before each model call.
    pub rules: RulesSettings,
    /// Images turned into text for models without `vision` (unset: such
    /// requests are refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_text: Option<ImageTextSettings>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            server: ServerSettings::default(),
            store: StoreSettings::default(),
            limits: LimitSettings::default(),
            log: LogSettings::default(),
            tracing: TracingSettings::default(),
            default_model: "echo".into(),
            models: vec![models::echo_model()],
            backends: BTreeMap::from([("echo".into(), BackendSettings::Echo { delay_ms: 0 })]),
            routing: RoutingSettings::default(),
            auth: AuthSettings::default(),
            content_filter: ContentFilterSettings::default(),
            audit: AuditSettings::default(),
            webhooks: WebhookSettings::default(),
            operations: OperationSettings::default(),
            metrics: MetricsSettings::default(),
            cache: CacheSettings::default(),
            rules: RulesSettings::default(),
            image_text: None,
        }
    }
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

/// The top-level keys, as `Settings` names them: only `DIALOGD_*`
/// variables starting with one of these are configuration. Others are left
/// alone, for example the `DIALOGD_SERVICE_HOST` / `DIALOGD_PORT` that
/// Kubernetes sets for a Service named dialogd.
fn top_level_keys() -> &'static [String] {
    static KEYS: OnceLock<Vec<String>> = OnceLock::new();
    KEYS.get_or_init(|| match serde_json::to_value(Settings::default()) {
        Ok(serde_json::Value::Object(fields)) => fields.keys().cloned().collect(),
        _ => Vec::new(),
    })
}

fn is_config_env_key(key: &str) -> bool {
    let first = key.split("__").next().unwrap_or("").to_ascii_lowercase();
    top_level_keys().contains(&first)
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
    pub fn load(file: Option<&Path>, flags: &Flags) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile(path.to_path_buf()));
            }
            figment = figment.merge(Toml::file(path));
        }
        let settings: Settings = figment
            .merge(
                Env::prefixed("DIALOGD_")
                    .filter(|k| is_config_env_key(k.as_str()))
                    .split("__"),
            )
            .merge(Serialized::defaults(flags))
            .extract()
            .map_err(|e| ConfigError::Parse(messages::describe(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what types alone cannot: ranges, cross-references, and that
    /// named files and environment variables exist.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.store.validate().map_err(ConfigError::Invalid)?;
        self.server.validate().map_err(ConfigError::Invalid)?;
        self.limits.validate().map_err(ConfigError::Invalid)?;
        self.log.validate().map_err(ConfigError::Invalid)?;
        self.tracing.validate().map_err(ConfigError::Invalid)?;
        models::validate_models(&self.models, &self.backends, &self.default_model)
            .map_err(ConfigError::Invalid)?;
        for (name, backend) in &self.backends {
            backend.validate(name).map_err(ConfigError::Invalid)?;
        }
        if self.auth.mode == AuthMode::None && !self.server.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "auth.mode = \"none\" is only allowed on a loopback address, not {}; configure API keys or JWTs and set auth.mode = \"required\"",
                self.server.listen
            )));
        }
        self.auth.validate().map_err(ConfigError::Invalid)?;
        self.audit.validate().map_err(ConfigError::Invalid)?;
        self.routing.validate().map_err(ConfigError::Invalid)?;
        self.operations.validate().map_err(ConfigError::Invalid)?;
        if let Some(image_text) = &self.image_text {
            image_text
                .validate(&self.chat_model_names())
                .map_err(ConfigError::Invalid)?;
        }
        self.validate_rules()?;
        Ok(())
    }

    /// The rule table in force at start: the config's own, or the rules
    /// file's (a file that does not validate stops the start).
    pub fn initial_rules(&self) -> Result<Vec<RuleSettings>, ConfigError> {
        let rules = match &self.rules.file {
            Some(file) => read_rule_file(Path::new(file)).map_err(ConfigError::Invalid)?,
            None => self.rules.rule.clone(),
        };
        validate_rules(&rules, &self.chat_model_names()).map_err(ConfigError::Invalid)?;
        Ok(rules)
    }

    /// The public model names.
    pub fn model_names(&self) -> Vec<&str> {
        self.models.iter().map(|m| m.name.as_str()).collect()
    }

    /// The models that take turns (not embeddings models): what rules may
    /// match and route to.
    pub fn chat_model_names(&self) -> Vec<&str> {
        self.models
            .iter()
            .filter(|m| !m.embeddings)
            .map(|m| m.name.as_str())
            .collect()
    }

    fn validate_rules(&self) -> Result<(), ConfigError> {
        if self.rules.file.is_some() && !self.rules.rule.is_empty() {
            return Err(ConfigError::Invalid(
                "rules: give rules either in rules.file or as [[rules.rule]], not both".into(),
            ));
        }
        if self.rules.reload_check_secs == 0 {
            return Err(ConfigError::Invalid(
                "rules.reload_check_secs must be at least 1".into(),
            ));
        }
        self.initial_rules().map(|_| ())
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
            let mut flags = Flags::default();
            flags.store.data_dir = Some("/from/flag".into());
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
            let err = Settings::load(Some(Path::new("typo.toml")), &Flags::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("server.listen_addr: is not a configuration key"),
                "{err}"
            );
            assert!(err.contains("typo.toml"), "{err}");
            assert!(!err.contains("default."), "{err}");

            jail.create_file("bad.toml", "[store]\ndurability = \"sometimes\"\n")?;
            let err = Settings::load(Some(Path::new("bad.toml")), &Flags::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(r#"store.durability: "sometimes" is not one of "sync", "relaxed""#),
                "{err}"
            );
            assert!(!err.contains("``"), "{err}");

            jail.set_env("DIALOGD_STORE__DURABILITY", "often");
            let err = Settings::load(None, &Flags::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("DIALOGD_STORE__DURABILITY: \"often\""),
                "{err}"
            );
            jail.clear_env();

            jail.create_file("model.toml", "default_model = \"gpt-9\"\n")?;
            let err = Settings::load(Some(Path::new("model.toml")), &Flags::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("gpt-9"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn every_section_can_be_set_from_the_environment() {
        Jail::expect_with(|jail| {
            jail.set_env("DIALOGD_CACHE__ENABLED", "false");
            jail.set_env("DIALOGD_WEBHOOKS__MAX_ATTEMPTS", "2");
            jail.set_env("DIALOGD_CONTENT_FILTER__CHECK_OUTPUT", "false");
            let s = Settings::load(None, &Flags::default()).unwrap();
            assert!(!s.cache.enabled && !s.content_filter.check_output);
            assert_eq!(s.webhooks.max_attempts, 2);
            assert!(ignored_env_keys().is_empty());
            Ok(())
        });
    }

    #[test]
    fn flags_set_the_keys_they_name() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            flags: Flags,
        }
        let cli = Cli::parse_from([
            "dialogd",
            "--listen",
            "127.0.0.1:7",
            "--metrics-listen",
            "127.0.0.1:8",
            "--data-dir",
            "/d",
            "--log-level",
            "debug",
        ]);
        let s = Settings::load(None, &cli.flags).unwrap();
        assert_eq!(s.server.listen.port(), 7);
        assert_eq!(s.metrics.listen.port(), 8);
        assert_eq!(s.store.data_dir, PathBuf::from("/d"));
        assert_eq!(s.log.level, "debug");
    }

    #[test]
    fn unrelated_dialogd_variables_are_not_config() {
        Jail::expect_with(|jail| {
            // What Kubernetes injects for a Service named "dialogd".
            jail.set_env("DIALOGD_SERVICE_HOST", "10.0.0.7");
            jail.set_env("DIALOGD_PORT", "tcp://10.0.0.7:50051");
            jail.set_env("DIALOGD_BIN", "/usr/local/bin/dialogd");
            jail.set_env("DIALOGD_SERVR__LISTEN", "127.0.0.1:1");
            let s = Settings::load(None, &Flags::default()).unwrap();
            assert_eq!(s, Settings::default());
            assert_eq!(ignored_env_keys(), ["DIALOGD_SERVR__LISTEN"]);
            Ok(())
        });
    }

    #[test]
    fn env_reaches_nested_backend_settings() {
        Jail::expect_with(|jail| {
            jail.set_env("DIALOGD_BACKENDS__ECHO__DELAY_MS", "25");
            let s = Settings::load(None, &Flags::default()).unwrap();
            assert_eq!(s.backends["echo"], BackendSettings::Echo { delay_ms: 25 });
            Ok(())
        });
    }

    #[test]
    fn rules_and_image_text_name_only_models_that_take_turns() {
        let mut settings = Settings::default();
        let mut embeddings = settings.models[0].clone();
        embeddings.name = "emb".into();
        embeddings.embeddings = true;
        settings.models.push(embeddings);
        settings.rules.rule = vec![RuleSettings {
            name: "to-emb".into(),
            when: RuleConditions::default(),
            then: RuleAction {
                route: Some("emb".into()),
                ..RuleAction::default()
            },
        }];
        let error = settings.validate().unwrap_err().to_string();
        assert!(
            error.contains("then.route: unknown model \"emb\""),
            "{error}"
        );
        settings.rules.rule.clear();
        settings.image_text = Some(ImageTextSettings::Model {
            model: "emb".into(),
            instruction: "read".into(),
        });
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("image_text.model: unknown model"), "{error}");
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
                let settings = Settings::load(Some(&root.join(file)), &Flags::default())
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
            &Flags::default(),
        );
        assert!(matches!(err, Err(ConfigError::MissingFile(_))));
    }
}
