//! `[auth]`: who may call — API keys, JWTs, token issuance.

use crate::auth::networks::Networks;
use crate::auth::{KeyLimits, Role, Scope, keys};
use serde::{Deserialize, Serialize};
use std::path::Path;

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
    /// Failed authentications allowed per minute from one client address
    /// (and for one API key id) before further tries are refused with
    /// RESOURCE_EXHAUSTED; 0 turns the limit off.
    pub max_failures_per_minute: u32,
    /// Networks (CIDR) every caller must come from; empty lets any in.
    /// Health checks are exempt (probes come from the node).
    pub allowed_networks: Vec<String>,
    /// Proxies (CIDR) whose `Forwarded` / `X-Forwarded-For` headers name
    /// the caller; from anyone else those headers are ignored.
    pub trusted_proxies: Vec<String>,
    /// Per principal (a key's principal, a token's `sub`, a certificate's
    /// subject): the networks its calls must come from.
    pub principal_networks: std::collections::BTreeMap<String, Vec<String>>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            mode: AuthMode::None,
            token_ttl_secs: 900,
            jwt: JwtSettings::default(),
            api_keys: Vec::new(),
            max_failures_per_minute: 20,
            allowed_networks: Vec::new(),
            trusted_proxies: Vec::new(),
            principal_networks: std::collections::BTreeMap::new(),
        }
    }
}

impl AuthSettings {
    /// Checks the keys and JWT settings, including that the secret's
    /// variable is set and the key files exist.
    pub(super) fn validate(&self) -> Result<(), String> {
        let mut ids = std::collections::HashSet::new();
        for key in &self.api_keys {
            if !keys::valid_id(&key.id) || !ids.insert(key.id.as_str()) {
                return Err(format!(
                    "auth.api_keys: id {:?} is invalid or repeated",
                    key.id
                ));
            }
            if keys::parse_hash(&key.hash).is_none() {
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
            key.limits()?;
        }
        Networks::parse("auth.allowed_networks", &self.allowed_networks)?;
        Networks::parse("auth.trusted_proxies", &self.trusted_proxies)?;
        for (principal, networks) in &self.principal_networks {
            Networks::parse(&format!("auth.principal_networks.{principal}"), networks)?;
        }
        self.jwt.validate()?;
        if self.mode == AuthMode::Required && self.api_keys.is_empty() && !self.jwt.any_key() {
            return Err("auth.mode = \"required\" needs auth.api_keys or an auth.jwt key".into());
        }
        if self.token_ttl_secs == 0 || self.token_ttl_secs > 24 * 3600 {
            return Err("auth.token_ttl_secs must be 1 to 86400".into());
        }
        Ok(())
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

impl JwtSettings {
    fn validate(&self) -> Result<(), String> {
        if let Some(var) = &self.hs256_secret_env {
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
            ("rs256_public_key_file", &self.rs256_public_key_file),
            ("es256_public_key_file", &self.es256_public_key_file),
            ("jwks_file", &self.jwks_file),
        ] {
            if let Some(p) = path
                && !Path::new(p).is_file()
            {
                return Err(format!("auth.jwt.{key}: {p} is not a readable file"));
            }
        }
        Ok(())
    }

    /// Whether any key verifies JWTs.
    pub fn any_key(&self) -> bool {
        self.hs256_secret_env.is_some()
            || self.rs256_public_key_file.is_some()
            || self.es256_public_key_file.is_some()
            || self.jwks_file.is_some()
    }
}

/// One API key: only its id and the hash of its secret are configured.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
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
    pub roles: Vec<Role>,
    /// Narrower scopes than the roles grant, if set.
    #[serde(default)]
    pub scopes: Option<Vec<Scope>>,
    /// RFC 3339 time before which the key is refused (a successor's start).
    #[serde(default)]
    pub not_before: Option<String>,
    /// RFC 3339 time from which the key is refused like a wrong one.
    #[serde(default)]
    pub expires: Option<String>,
    /// Networks (CIDR) callers using this key must come from; empty: any.
    #[serde(default)]
    pub allowed_networks: Vec<String>,
}

impl ApiKeySettings {
    /// The key's validity window and networks, or what is wrong with them.
    pub fn limits(&self) -> Result<KeyLimits, String> {
        let time = |field: &str, raw: &Option<String>| -> Result<Option<i64>, String> {
            raw.as_deref()
                .map(|t| {
                    keys::parse_time(t).ok_or_else(|| {
                        format!(
                            "auth.api_keys {:?}: {field} {t:?} is not an RFC 3339 time (e.g. 2027-03-01T00:00:00Z)",
                            self.id
                        )
                    })
                })
                .transpose()
        };
        let limits = KeyLimits {
            not_before: time("not_before", &self.not_before)?,
            expires: time("expires", &self.expires)?,
            networks: Networks::parse(
                &format!("auth.api_keys {:?}: allowed_networks", self.id),
                &self.allowed_networks,
            )?,
        };
        if let (Some(start), Some(end)) = (limits.not_before, limits.expires)
            && start >= end
        {
            return Err(format!(
                "auth.api_keys {:?}: not_before must come before expires",
                self.id
            ));
        }
        Ok(limits)
    }
}

fn default_roles() -> Vec<Role> {
    vec![Role::User]
}
