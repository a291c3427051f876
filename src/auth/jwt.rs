//! JWT access tokens. Verification accepts exactly the algorithms a key is
//! configured for (HS256 with the shared secret; RS256 / ES256 with public
//! keys from PEM files or a JWKS file), so `alg: none` and algorithm
//! confusion (an RSA public key used as an HMAC secret) are refused by
//! construction. `exp`, `iss`, `aud` and `sub` are required; `nbf` is
//! checked when present.

use super::{Principal, Role, Scope};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 30;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    aud: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    /// The caller's tenant; defaults to `sub` (a tenant of one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    roles: Vec<String>,
    /// Space-separated scopes (OAuth2 style).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

/// A public key and the one algorithm it verifies.
struct VerifyingKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

pub struct JwtVerifier {
    issuer: String,
    audience: String,
    hs256: Option<DecodingKey>,
    public_keys: Vec<VerifyingKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum JwtSetupError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0} is not a usable key: {1}")]
    Key(String, String),
}

impl JwtVerifier {
    pub fn new(issuer: &str, audience: &str, hs256_secret: Option<&[u8]>) -> JwtVerifier {
        JwtVerifier {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            hs256: hs256_secret.map(DecodingKey::from_secret),
            public_keys: Vec::new(),
        }
    }

    pub fn add_pem(&mut self, path: &str, alg: Algorithm) -> Result<(), JwtSetupError> {
        let pem = std::fs::read(path).map_err(|e| JwtSetupError::Read(path.to_owned(), e))?;
        let key = match alg {
            Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
            _ => DecodingKey::from_ec_pem(&pem),
        }
        .map_err(|e| JwtSetupError::Key(path.to_owned(), e.to_string()))?;
        self.public_keys.push(VerifyingKey {
            kid: None,
            alg,
            key,
        });
        Ok(())
    }

    /// Adds the RS256 and ES256 keys of a JWKS file (others are ignored).
    pub fn add_jwks(&mut self, path: &str) -> Result<(), JwtSetupError> {
        let raw = std::fs::read(path).map_err(|e| JwtSetupError::Read(path.to_owned(), e))?;
        let set: JwkSet = serde_json::from_slice(&raw)
            .map_err(|e| JwtSetupError::Key(path.to_owned(), e.to_string()))?;
        for jwk in &set.keys {
            let alg = match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                _ => continue,
            };
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|e| JwtSetupError::Key(path.to_owned(), e.to_string()))?;
            self.public_keys.push(VerifyingKey {
                kid: jwk.common.key_id.clone(),
                alg,
                key,
            });
        }
        Ok(())
    }

    /// The principal a valid token names; `None` for any invalid token (the
    /// reason is logged at debug level only: it helps attackers).
    pub fn verify(&self, token: &str) -> Option<Principal> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref()?,
            alg @ (Algorithm::RS256 | Algorithm::ES256) => {
                &self
                    .public_keys
                    .iter()
                    .find(|k| {
                        k.alg == alg
                            && (header.kid.is_none() || k.kid.is_none() || k.kid == header.kid)
                    })?
                    .key
            }
            _ => return None,
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let claims = match jsonwebtoken::decode::<Claims>(token, key, &validation) {
            Ok(data) => data.claims,
            Err(e) => {
                tracing::debug!(error = %e, "JWT refused");
                return None;
            }
        };
        let roles: BTreeSet<Role> = claims.roles.iter().filter_map(|r| Role::parse(r)).collect();
        let scopes = claims.scope.map(|s| {
            s.split_whitespace()
                .filter_map(Scope::parse)
                .collect::<BTreeSet<_>>()
        });
        let tenant = claims.tenant.unwrap_or_else(|| claims.sub.clone());
        Some(Principal::new(claims.sub, tenant, roles, scopes))
    }
}

/// Signs short-lived tokens for IssueToken (HS256 with the shared secret).
pub struct JwtIssuer {
    issuer: String,
    audience: String,
    key: EncodingKey,
}

impl JwtIssuer {
    pub fn new(issuer: &str, audience: &str, secret: &[u8]) -> JwtIssuer {
        JwtIssuer {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            key: EncodingKey::from_secret(secret),
        }
    }

    /// A token for `principal`, valid `ttl_secs` from `now` (Unix seconds).
    pub fn issue(&self, principal: &Principal, now: u64, ttl_secs: u64) -> Result<String, String> {
        let claims = Claims {
            sub: principal.id.clone(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: now + ttl_secs,
            nbf: Some(now),
            iat: Some(now),
            jti: Some(format!("{:032x}", rand::random::<u128>())),
            tenant: Some(principal.tenant.clone()),
            roles: principal
                .roles
                .iter()
                .map(|r| format!("{r:?}").to_lowercase())
                .collect(),
            scope: Some(
                principal
                    .scopes
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .map_err(|e| e.to_string())
    }
}

/// The `sub` a token claims, read without checking anything: only for
/// refusing early (a per-principal allow-list), never for admitting.
pub fn unverified_subject(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("sub")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn principal() -> Principal {
        Principal::new(
            "svc-a".into(),
            "acme".into(),
            [Role::User].into(),
            Some([Scope::DialogueRead].into()),
        )
    }

    #[test]
    fn the_unverified_subject_is_read_from_any_token_and_nothing_else() {
        let issuer = JwtIssuer::new("dialogd", "dialogd", b"0123456789abcdef0123456789abcdef");
        let token = issuer.issue(&principal(), now(), 60).unwrap();
        assert_eq!(unverified_subject(&token).as_deref(), Some("svc-a"));
        for bad in ["", "a.b.c", "dk_key_secret", "x.eyJub3N1YiI6MX0.y"] {
            assert_eq!(unverified_subject(bad), None, "{bad}");
        }
    }

    #[test]
    fn issued_tokens_verify_with_their_claims() {
        let issuer = JwtIssuer::new(
            "dialogd",
            "dialogd-api",
            b"0123456789abcdef0123456789abcdef",
        );
        let verifier = JwtVerifier::new(
            "dialogd",
            "dialogd-api",
            Some(b"0123456789abcdef0123456789abcdef"),
        );
        let token = issuer.issue(&principal(), now(), 60).unwrap();
        assert_eq!(verifier.verify(&token), Some(principal()));
    }

    #[test]
    fn wrong_audience_issuer_key_or_expiry_is_refused() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let good = JwtVerifier::new("dialogd", "dialogd-api", Some(secret));
        let token = JwtIssuer::new("dialogd", "other-api", secret)
            .issue(&principal(), now(), 60)
            .unwrap();
        assert!(good.verify(&token).is_none(), "wrong audience");
        let token = JwtIssuer::new("evil", "dialogd-api", secret)
            .issue(&principal(), now(), 60)
            .unwrap();
        assert!(good.verify(&token).is_none(), "wrong issuer");
        let token = JwtIssuer::new(
            "dialogd",
            "dialogd-api",
            b"another-secret-another-secret-00",
        )
        .issue(&principal(), now(), 60)
        .unwrap();
        assert!(good.verify(&token).is_none(), "wrong key");
        let token = JwtIssuer::new("dialogd", "dialogd-api", secret)
            .issue(&principal(), now() - 3600, 60)
            .unwrap();
        assert!(good.verify(&token).is_none(), "expired");
        let token = JwtIssuer::new("dialogd", "dialogd-api", secret)
            .issue(&principal(), now() + 3600, 60)
            .unwrap();
        assert!(good.verify(&token).is_none(), "not valid yet");
    }

    fn fixture(name: &str) -> String {
        format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn sign(alg: Algorithm, key: EncodingKey, aud: &str) -> String {
        let claims = Claims {
            sub: "svc-b".into(),
            iss: "dialogd".into(),
            aud: aud.into(),
            exp: now() + 60,
            nbf: None,
            iat: None,
            jti: None,
            tenant: Some("acme".into()),
            roles: vec!["user".into()],
            scope: None,
        };
        jsonwebtoken::encode(&Header::new(alg), &claims, &key).unwrap()
    }

    #[test]
    fn rs256_and_es256_tokens_verify_with_their_public_keys_only() {
        let mut verifier = JwtVerifier::new("dialogd", "dialogd-api", None);
        verifier
            .add_pem(&fixture("rs256.pub.pem"), Algorithm::RS256)
            .unwrap();
        verifier
            .add_pem(&fixture("es256.pub.pem"), Algorithm::ES256)
            .unwrap();
        let rsa =
            || EncodingKey::from_rsa_pem(&std::fs::read(fixture("rs256.key")).unwrap()).unwrap();
        let ec =
            || EncodingKey::from_ec_pem(&std::fs::read(fixture("es256.key")).unwrap()).unwrap();

        let p = verifier
            .verify(&sign(Algorithm::RS256, rsa(), "dialogd-api"))
            .expect("RS256 verifies");
        assert_eq!((p.id.as_str(), p.tenant.as_str()), ("svc-b", "acme"));
        assert!(
            p.has_scope(Scope::DialogueWrite),
            "scopes come from the roles"
        );
        assert!(
            verifier
                .verify(&sign(Algorithm::ES256, ec(), "dialogd-api"))
                .is_some(),
            "ES256 verifies"
        );
        assert!(
            verifier
                .verify(&sign(Algorithm::RS256, rsa(), "elsewhere"))
                .is_none(),
            "audience checked"
        );

        // A token signed by a key dialogd does not know is refused.
        let mut only_es = JwtVerifier::new("dialogd", "dialogd-api", None);
        only_es
            .add_pem(&fixture("es256.pub.pem"), Algorithm::ES256)
            .unwrap();
        assert!(
            only_es
                .verify(&sign(Algorithm::RS256, rsa(), "dialogd-api"))
                .is_none()
        );
        // An HS256 token "signed" with the RSA public key (algorithm
        // confusion) finds no HMAC secret to be checked against.
        let public_pem = std::fs::read(fixture("rs256.pub.pem")).unwrap();
        let confused = sign(
            Algorithm::HS256,
            EncodingKey::from_secret(&public_pem),
            "dialogd-api",
        );
        assert!(verifier.verify(&confused).is_none());
    }

    #[test]
    fn jwks_keys_verify_by_kid() {
        let mut verifier = JwtVerifier::new("dialogd", "dialogd-api", None);
        verifier.add_jwks(&fixture("jwks.json")).unwrap();
        let ec =
            || EncodingKey::from_ec_pem(&std::fs::read(fixture("es256.key")).unwrap()).unwrap();
        let with_kid = |kid: &str| {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some(kid.into());
            let claims = Claims {
                sub: "svc-c".into(),
                iss: "dialogd".into(),
                aud: "dialogd-api".into(),
                exp: now() + 60,
                nbf: None,
                iat: None,
                jti: None,
                tenant: None,
                roles: vec![],
                scope: None,
            };
            jsonwebtoken::encode(&header, &claims, &ec()).unwrap()
        };
        assert!(verifier.verify(&with_kid("test-es256")).is_some());
        assert!(
            verifier.verify(&with_kid("another-key")).is_none(),
            "unknown kid"
        );
        let rsa = EncodingKey::from_rsa_pem(&std::fs::read(fixture("rs256.key")).unwrap()).unwrap();
        assert!(
            verifier
                .verify(&sign(Algorithm::RS256, rsa, "dialogd-api"))
                .is_none()
        );
    }

    #[test]
    fn alg_none_and_algorithm_confusion_are_refused() {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let claims = format!(
            r#"{{"sub":"x","iss":"dialogd","aud":"dialogd-api","exp":{},"roles":["admin"]}}"#,
            now() + 60
        );
        let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&claims));
        let verifier = JwtVerifier::new(
            "dialogd",
            "dialogd-api",
            Some(b"0123456789abcdef0123456789abcdef"),
        );
        assert!(verifier.verify(&none).is_none(), "alg none");

        // RS256 is not configured, so an RS256 token finds no key at all;
        // an HS256 token is checked only with the HMAC secret, never a
        // public key.
        let rs = format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"RS256","typ":"JWT"}"#),
            b64(&claims)
        );
        assert!(verifier.verify(&rs).is_none());
        let no_hmac = JwtVerifier::new("dialogd", "dialogd-api", None);
        let hs = JwtIssuer::new("dialogd", "dialogd-api", b"guessable")
            .issue(&principal(), now(), 60)
            .unwrap();
        assert!(
            no_hmac.verify(&hs).is_none(),
            "HS256 without a configured secret"
        );
        assert!(verifier.verify("not.a.jwt").is_none());
    }
}
