//! Turns a bearer credential into a `Principal`, and client credentials
//! into a short-lived token.

use super::jwt::{JwtIssuer, JwtVerifier};
use super::{Principal, Scope, keys};
use crate::failure::{ErrorKind, Failure};
use std::collections::{BTreeSet, HashMap};

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

struct KeyEntry {
    hash: [u8; 32],
    principal: Principal,
}

pub struct Authenticator {
    keys: HashMap<String, KeyEntry>,
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
            verifier: None,
            issuer: None,
            token_ttl_secs,
        }
    }

    /// Accepts the API key `id` whose secret hashes to `hash`, as `principal`.
    pub fn add_key(&mut self, id: String, hash: [u8; 32], principal: Principal) {
        self.keys.insert(id, KeyEntry { hash, principal });
    }

    /// Accepts JWTs `verifier` verifies, and issues tokens with `issuer`.
    pub fn set_jwt(&mut self, verifier: Option<JwtVerifier>, issuer: Option<JwtIssuer>) {
        self.verifier = verifier;
        self.issuer = issuer;
    }

    /// The caller named by an `authorization` header value (at most
    /// `MAX_AUTHORIZATION_BYTES`: longer is no credential dialogd issues).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
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
            return self.check_key(key.id, key.secret);
        }
        self.verifier
            .as_ref()
            .and_then(|v| v.verify(credential))
            .ok_or(AuthError::Invalid)
    }

    fn check_key(&self, id: &str, secret: &str) -> Result<Principal, AuthError> {
        match self.keys.get(id) {
            Some(entry) if keys::matches(secret, &entry.hash) => Ok(entry.principal.clone()),
            _ => Err(AuthError::Invalid),
        }
    }

    /// OAuth2 client-credentials style: a key's id and secret (or the whole
    /// key as the secret) for a token of at most the key's scopes.
    pub fn issue_token(
        &self,
        client_id: &str,
        client_secret: &str,
        requested: &[String],
        now_secs: u64,
    ) -> Result<IssuedToken, AuthError> {
        let issuer = self.issuer.as_ref().ok_or(AuthError::IssuanceDisabled)?;
        let secret = keys::parse(client_secret)
            .filter(|k| k.id == client_id)
            .map_or(client_secret, |k| k.secret);
        let mut principal = self.check_key(client_id, secret)?;
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
