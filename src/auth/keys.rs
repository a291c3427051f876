//! API keys: `dk_{id}_{secret}`. Config keeps only the id and the SHA-256
//! of the secret (keys are 256-bit random, so a fast hash is enough; a slow
//! password hash would only add latency to every call); comparison is
//! constant-time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const PREFIX: &str = "dk_";
const HASH_PREFIX: &str = "sha256:";

/// A key split into its public id and secret part.
pub struct ParsedKey<'a> {
    pub id: &'a str,
    pub secret: &'a str,
}

/// Key ids: 1 to 64 of `[a-z0-9-]` (no `_`: it separates id and secret).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

pub fn parse(key: &str) -> Option<ParsedKey<'_>> {
    let (id, secret) = key.strip_prefix(PREFIX)?.split_once('_')?;
    (valid_id(id) && !secret.is_empty()).then_some(ParsedKey { id, secret })
}

fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The config form of a secret's hash: `sha256:<64 hex digits>`.
pub fn hash_for_config(secret: &str) -> String {
    let hex: String = sha256(secret).iter().map(|b| format!("{b:02x}")).collect();
    format!("{HASH_PREFIX}{hex}")
}

/// Reads a `sha256:<hex>` hash from config.
pub fn parse_hash(raw: &str) -> Option<[u8; 32]> {
    let hex = raw.strip_prefix(HASH_PREFIX)?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Whether `secret` hashes to `expected`, in constant time.
pub fn matches(secret: &str, expected: &[u8; 32]) -> bool {
    sha256(secret).ct_eq(expected).into()
}

/// Seconds since the Unix epoch of an RFC 3339 time (`2027-03-01T00:00:00Z`).
pub fn parse_time(raw: &str) -> Option<i64> {
    time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// The RFC 3339 form (UTC) of `secs` since the Unix epoch.
pub fn format_time(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A new key for `id`: 32 random bytes of secret.
pub fn generate(id: &str) -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let secret = URL_SAFE_NO_PAD.encode(bytes);
    (format!("{PREFIX}{id}_{secret}"), secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_match_their_hash_only() {
        let (key, secret) = generate("ci-bot");
        let parsed = parse(&key).unwrap();
        assert_eq!((parsed.id, parsed.secret), ("ci-bot", secret.as_str()));
        let hash = parse_hash(&hash_for_config(&secret)).unwrap();
        assert!(matches(parsed.secret, &hash));
        assert!(!matches("not-the-secret", &hash));
        assert!(
            !key.contains(&hash_for_config(&secret)[7..]),
            "the key does not contain its hash"
        );
    }

    #[test]
    fn malformed_keys_and_hashes_are_refused() {
        for bad in [
            "",
            "dk_",
            "dk_id",
            "dk__secret",
            "xx_id_secret",
            "dk_Upper_secret",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
        assert!(parse_hash("md5:00").is_none());
        assert!(parse_hash("sha256:zz").is_none());
    }

    #[test]
    fn times_round_trip_in_rfc_3339() {
        let t = parse_time("2027-03-01T12:00:00+01:00").unwrap();
        assert_eq!(format_time(t), "2027-03-01T11:00:00Z");
        assert!(parse_time("2027-03-01").is_none());
    }
}
