//! Turns a bearer credential into a `Principal`, and client credentials
//! into a short-lived token.

use super::jwt::{JwtIssuer, JwtVerifier};
use super::networks::Networks;
use super::{Principal, Scope, keys};
use crate::failure::{ErrorKind, Failure};
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

/// The longest `authorization` value read: API keys and the JWTs dialogd
/// and identity providers issue are far shorter.
pub const MAX_AUTHORIZATION_BYTES: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials: send `authorization: Bearer <API key or token>`")]
    Missing,
    /// Deliberately vague: which part was wrong helps only an attacker.
    #[error("invalid or expired credentials")]
    Invalid,
    #[error("this call needs the `{}` scope", .0.as_str())]
    MissingScope(Scope),
    #[error("requested scope {0:?} is not granted to this client")]
    ScopeNotGranted(String),
    #[error("token issuance is not configured (auth.jwt.hs256_secret_env)")]
    IssuanceDisabled,
    /// Says nothing of the credentials: they are not even checked.
    #[error("calls from this address are not allowed")]
    AddressNotAllowed,
}

impl From<AuthError> for Failure {
    fn from(e: AuthError) -> Failure {
        let (kind, reason) = match &e {
            AuthError::Missing | AuthError::Invalid => {
                (ErrorKind::Unauthenticated, "UNAUTHENTICATED")
            }
            AuthError::MissingScope(_) => (ErrorKind::PermissionDenied, "MISSING_SCOPE"),
            AuthError::ScopeNotGranted(_) => (ErrorKind::InvalidArgument, "SCOPE_NOT_GRANTED"),
            AuthError::IssuanceDisabled => {
                (ErrorKind::FailedPrecondition, "TOKEN_ISSUANCE_DISABLED")
            }
            AuthError::AddressNotAllowed => (ErrorKind::PermissionDenied, "ADDRESS_NOT_ALLOWED"),
        };
        let failure = Failure::new(kind, reason, e.to_string());
        match e {
            AuthError::ScopeNotGranted(_) => failure.with_violation("scopes", e.to_string()),
            _ => failure,
        }
    }
}

pub struct IssuedToken {
    pub access_token: String,
    pub expires_in_secs: u64,
    pub scopes: Vec<Scope>,
}

/// When and from where a key may be used.
#[derive(Debug, Clone, Default)]
pub struct KeyLimits {
    /// Unix seconds before which the key is refused.
    pub not_before: Option<i64>,
    /// Unix seconds from which the key is refused.
    pub expires: Option<i64>,
    /// Networks callers using the key must come from (empty: any).
    pub networks: Networks,
}

impl KeyLimits {
    /// Whether the key is valid at `now` (Unix seconds).
    fn in_force_at(&self, now: i64) -> bool {
        self.not_before.is_none_or(|t| now >= t) && self.expires.is_none_or(|t| now < t)
    }
}

struct KeyEntry {
    hash: [u8; 32],
    principal: Principal,
    limits: KeyLimits,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

pub struct Authenticator {
    keys: HashMap<String, KeyEntry>,
    /// Networks a principal's calls must come from, whatever credential
    /// it presents (`auth.principal_networks`).
    principal_networks: HashMap<String, Networks>,
    verifier: Option<JwtVerifier>,
    issuer: Option<JwtIssuer>,
    token_ttl_secs: u64,
}

impl Authenticator {
    /// An authenticator knowing no key yet; issued tokens live
    /// `token_ttl_secs`.
    pub fn new(token_ttl_secs: u64) -> Authenticator {
        Authenticator {
            keys: HashMap::new(),
            principal_networks: HashMap::new(),
            verifier: None,
            issuer: None,
            token_ttl_secs,
        }
    }

    /// Accepts the API key `id` whose secret hashes to `hash`, as
    /// `principal`, within `limits`.
    pub fn add_key(&mut self, id: String, hash: [u8; 32], principal: Principal, limits: KeyLimits) {
        self.keys.insert(
            id,
            KeyEntry {
                hash,
                principal,
                limits,
            },
        );
    }

    /// Admits `principal`'s calls only from `networks`.
    pub fn restrict_principal(&mut self, principal: String, networks: Networks) {
        self.principal_networks.insert(principal, networks);
    }

    /// Whether `principal` may call from `client` (no list: from anywhere).
    pub fn principal_admits(&self, principal: &str, client: Option<IpAddr>) -> bool {
        self.principal_networks
            .get(principal)
            .is_none_or(|networks| networks.admits(client))
    }

    /// Accepts JWTs `verifier` verifies, and issues tokens with `issuer`.
    pub fn set_jwt(&mut self, verifier: Option<JwtVerifier>, issuer: Option<JwtIssuer>) {
        self.verifier = verifier;
        self.issuer = issuer;
    }

    /// The caller named by an `authorization` header value (at most
    /// `MAX_AUTHORIZATION_BYTES`: longer is no credential dialogd issues),
    /// calling from `client`.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        let raw = authorization.ok_or(AuthError::Missing)?;
        if raw.len() > MAX_AUTHORIZATION_BYTES {
            return Err(AuthError::Invalid);
        }
        // The scheme is case-insensitive (RFC 7235): Bearer, bearer, BEARER.
        let credential = match raw.trim_start().split_once(' ') {
            Some((scheme, credential)) if scheme.eq_ignore_ascii_case("bearer") => {
                credential.trim()
            }
            _ => return Err(AuthError::Missing),
        };
        if let Some(key) = keys::parse(credential) {
            return self.check_key(key.id, key.secret, client);
        }
        // A token's (yet unverified) subject decides before its signature
        // is checked, so a refusal says nothing of the token's validity.
        if !self.principal_networks.is_empty()
            && let Some(subject) = super::jwt::unverified_subject(credential)
            && !self.principal_admits(&subject, client)
        {
            return Err(AuthError::AddressNotAllowed);
        }
        let principal = self
            .verifier
            .as_ref()
            .and_then(|v| v.verify(credential))
            .ok_or(AuthError::Invalid)?;
        match self.principal_networks.is_empty() || self.principal_admits(&principal.id, client) {
            true => Ok(principal),
            false => Err(AuthError::AddressNotAllowed),
        }
    }

    /// A key from a network it may not be used from is refused before its
    /// secret is checked; one outside its validity window like a wrong one.
    fn check_key(
        &self,
        id: &str,
        secret: &str,
        client: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        let entry = self.keys.get(id).ok_or(AuthError::Invalid)?;
        if !entry.limits.networks.admits(client)
            || !self.principal_admits(&entry.principal.id, client)
        {
            return Err(AuthError::AddressNotAllowed);
        }
        if !keys::matches(secret, &entry.hash) {
            return Err(AuthError::Invalid);
        }
        let limits = &entry.limits;
        if (limits.not_before.is_some() || limits.expires.is_some())
            && !limits.in_force_at(unix_now())
        {
            tracing::info!(
                key_id = id,
                "API key refused: outside its validity (not_before/expires)"
            );
            return Err(AuthError::Invalid);
        }
        Ok(entry.principal.clone())
    }

    /// OAuth2 client-credentials style: a key's id and secret (or the whole
    /// key as the secret) for a token of at most the key's scopes.
    pub fn issue_token(
        &self,
        client_id: &str,
        client_secret: &str,
        requested: &[String],
        client: Option<IpAddr>,
        now_secs: u64,
    ) -> Result<IssuedToken, AuthError> {
        let issuer = self.issuer.as_ref().ok_or(AuthError::IssuanceDisabled)?;
        let secret = keys::parse(client_secret)
            .filter(|k| k.id == client_id)
            .map_or(client_secret, |k| k.secret);
        let mut principal = self.check_key(client_id, secret, client)?;
        if !requested.is_empty() {
            let mut scopes = BTreeSet::new();
            for name in requested {
                match Scope::parse(name).filter(|s| principal.scopes.contains(s)) {
                    Some(s) => scopes.insert(s),
                    None => return Err(AuthError::ScopeNotGranted(name.clone())),
                };
            }
            principal.scopes = scopes;
        }
        let access_token = issuer
            .issue(&principal, now_secs, self.token_ttl_secs)
            .map_err(|_| AuthError::IssuanceDisabled)?;
        Ok(IssuedToken {
            access_token,
            expires_in_secs: self.token_ttl_secs,
            scopes: principal.scopes.into_iter().collect(),
        })
    }
}
