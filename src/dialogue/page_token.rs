//! Opaque page tokens (AIP-158): base64url of a version, the list they
//! belong to and its position. A token from another list, or a damaged one,
//! is rejected instead of silently restarting the list.

use crate::failure::Invalid;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const VERSION: u8 = 1;

/// Encodes `scope` (which list) and `position` (where it continues).
pub fn encode(scope: &str, position: &[u8]) -> String {
    let mut raw = Vec::with_capacity(3 + scope.len() + position.len());
    raw.push(VERSION);
    raw.push(u8::try_from(scope.len()).unwrap_or(u8::MAX));
    raw.extend_from_slice(&scope.as_bytes()[..scope.len().min(255)]);
    raw.extend_from_slice(position);
    URL_SAFE_NO_PAD.encode(raw)
}

/// Most items of one page (AIP-158).
pub const MAX_PAGE_SIZE: usize = 1000;

/// The page size a caller asked for: 0 means `default`, more than
/// `MAX_PAGE_SIZE` means that.
pub fn page_size(requested: usize, default: usize) -> usize {
    match requested {
        0 => default,
        n => n.min(MAX_PAGE_SIZE),
    }
}

/// Where a list continues: `None` for the first page (no token).
pub fn position(token: &str, scope: &str) -> Result<Option<Vec<u8>>, Invalid> {
    match token {
        "" => Ok(None),
        token => decode(token, scope).map(Some),
    }
}

/// The position in `token`, which must have been made for `scope`.
pub fn decode(token: &str, scope: &str) -> Result<Vec<u8>, Invalid> {
    let bad = || {
        Invalid::field(
            "page_token",
            "is not a page token of this list; pass next_page_token unchanged",
        )
    };
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let (&version, rest) = raw.split_first().ok_or_else(bad)?;
    let (&len, rest) = rest.split_first().ok_or_else(bad)?;
    let len = usize::from(len);
    if version != VERSION || rest.len() < len || &rest[..len] != scope.as_bytes() {
        return Err(bad());
    }
    Ok(rest[len..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_within_its_scope_only() {
        let token = encode("dialogues/a/turns", &42u64.to_be_bytes());
        assert_eq!(
            decode(&token, "dialogues/a/turns").unwrap(),
            42u64.to_be_bytes()
        );
        assert!(decode(&token, "dialogues/b/turns").is_err());
    }

    #[test]
    fn garbage_is_invalid_argument_naming_the_field() {
        for token in ["", "!!", "AAAA", &encode("x", b"")[..3]] {
            match decode(token, "x") {
                Err(Invalid(v)) => assert_eq!(v[0].field, "page_token"),
                other => panic!("{token:?} gave {other:?}"),
            }
        }
    }
}
