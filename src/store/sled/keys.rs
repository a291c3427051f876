//! Key layout of the sled tree. Everything lives in one tree so one
//! logged change (`wal`) can change a dialogue, its turns and its indexes
//! atomically.
//!
//! | key                                      | value                    |
//! |------------------------------------------|--------------------------|
//! | `m/{id}`                                 | dialogue settings (JSON) |
//! | `h/{id}`                                 | head: turn count, last turn time, latest summary (24 bytes) |
//! | `t/{id}\0{index:u64 BE}`                 | one turn (JSON)          |
//! | `i/{id}\0{request_id}`                   | idempotency record (JSON)|
//! | `c/{owner}{!create_time:u64 BE}{id}`     | the id: each owner's newest-first listing |
//! | `x/{expire_time:u64 BE}{kind}{key rest}` | empty: expiry queue      |
//! | `a/{time:u64 BE}{random:u64}`            | audit events (`audit`)   |
//! | `o/{operation id}`                       | asynchronous turn record |
//! | `p/{operation id}`                       | empty: the operation is pending |
//! | `q/{dialogue id}\0{operation id}`        | empty: the dialogue's operations |
//!
//! IDs never contain `\0` (see `DialogueId`), so `{id}\0` prefixes are exact.

use crate::dialogue::model::{DialogueId, Owner, Time};

pub const TURN: &[u8] = b"t/";
pub const CREATED: &[u8] = b"c/";
pub const EXPIRY: &[u8] = b"x/";
pub const AUDIT: &[u8] = b"a/";
pub const PENDING: &[u8] = b"p/";
/// Which keys seal the store's records (`store::sealing`), in clear.
pub const KEY_CHECK: &[u8] = b"k/check";

/// Whether the value under `key` is dialogue content, sealed when
/// encryption is on: settings, turns, idempotency records (replies) and
/// operation records (requests and replies).
pub fn is_sealed(key: &[u8]) -> bool {
    [b"m/", b"t/", b"i/", b"o/"]
        .iter()
        .any(|p| key.starts_with(*p))
}

/// The dialogue a sealed record belongs to, read from its key; for an
/// operation record (`o/{operation}`), from the dialogue's entry of it
/// (`q/{dialogue}\0{operation}`) among `batch`, which `put_operation`
/// always writes with it.
pub fn dialogue_of<'a>(key: &'a [u8], batch: &'a [&'a [u8]]) -> Option<&'a str> {
    let id = match key.split_at_checked(2)? {
        (b"m/", id) => id,
        (b"t/" | b"i/", rest) => rest.split(|b| *b == 0).next()?,
        (b"o/", operation) => batch.iter().find_map(|other| {
            let rest = other.strip_prefix(b"q/")?;
            let split = rest.iter().position(|b| *b == 0)?;
            (&rest[split + 1..] == operation).then_some(&rest[..split])
        })?,
        _ => return None,
    };
    std::str::from_utf8(id).ok()
}

pub fn operation(id: &str) -> Vec<u8> {
    join(b"o/", &[id.as_bytes()])
}

pub fn pending(id: &str) -> Vec<u8> {
    join(PENDING, &[id.as_bytes()])
}

/// An audit event's key: time-ordered, random tail against collisions.
pub fn audit(at: Time) -> Vec<u8> {
    join(AUDIT, &[&time_be(at), &rand::random::<u64>().to_be_bytes()])
}

/// The first audit key at or after `at`.
pub fn audit_from(at: Time) -> Vec<u8> {
    join(AUDIT, &[&time_be(at)])
}
pub const EXPIRY_DIALOGUE: u8 = b'd';
pub const EXPIRY_IDEMPOTENCY: u8 = b'i';
/// A settled operation; the rest is `{dialogue id}\0{operation id}`.
pub const EXPIRY_OPERATION: u8 = b'o';

/// The dialogue's entry of an operation (the key's rest is also the
/// operation's expiry entry's rest).
pub fn operation_of(dialogue: &DialogueId, operation: &str) -> Vec<u8> {
    join(
        b"q/",
        &[dialogue.as_str().as_bytes(), b"\0", operation.as_bytes()],
    )
}

pub fn operations_of_prefix(dialogue: &DialogueId) -> Vec<u8> {
    join(b"q/", &[dialogue.as_str().as_bytes(), b"\0"])
}

fn join(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let len = prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut key = Vec::with_capacity(len);
    key.extend_from_slice(prefix);
    for part in parts {
        key.extend_from_slice(part);
    }
    key
}

fn time_be(t: Time) -> [u8; 8] {
    // Times before 1970 never occur here; clamp instead of wrapping.
    u64::try_from(t.0).unwrap_or(0).to_be_bytes()
}

pub fn meta(id: &DialogueId) -> Vec<u8> {
    join(b"m/", &[id.as_str().as_bytes()])
}

pub fn head(id: &DialogueId) -> Vec<u8> {
    join(b"h/", &[id.as_str().as_bytes()])
}

pub fn turn_prefix(id: &DialogueId) -> Vec<u8> {
    join(TURN, &[id.as_str().as_bytes(), b"\0"])
}

pub fn turn(id: &DialogueId, index: u64) -> Vec<u8> {
    join(TURN, &[id.as_str().as_bytes(), b"\0", &index.to_be_bytes()])
}

pub fn idempotency_prefix(id: &DialogueId) -> Vec<u8> {
    join(b"i/", &[id.as_str().as_bytes(), b"\0"])
}

pub fn idempotency(id: &DialogueId, request_id: &str) -> Vec<u8> {
    join(
        b"i/",
        &[id.as_str().as_bytes(), b"\0", request_id.as_bytes()],
    )
}

/// Length-prefixed, so no tenant or principal name can run into the next.
fn owner_part(owner: &Owner) -> Vec<u8> {
    let mut out = Vec::with_capacity(owner.tenant.len() + owner.principal.len() + 8);
    for part in [&owner.tenant, &owner.principal] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// The listing index of one owner's dialogues.
pub fn created_prefix(owner: &Owner) -> Vec<u8> {
    join(CREATED, &[&owner_part(owner)])
}

/// A listing entry (its value is the dialogue's ID).
pub fn created(owner: &Owner, create_time: Time, id: &DialogueId) -> Vec<u8> {
    let newest_first = !u64::try_from(create_time.0).unwrap_or(0);
    join(
        CREATED,
        &[
            &owner_part(owner),
            &newest_first.to_be_bytes(),
            id.as_str().as_bytes(),
        ],
    )
}

pub fn expiry(at: Time, kind: u8, rest: &[u8]) -> Vec<u8> {
    join(EXPIRY, &[&time_be(at), &[kind], rest])
}

/// The first expiry key after every entry due at or before `now`.
pub fn expiry_end(now: Time) -> Vec<u8> {
    let next = u64::try_from(now.0).unwrap_or(0).saturating_add(1);
    join(EXPIRY, &[&next.to_be_bytes()])
}

/// Splits an `x/` key into its kind and the rest (ID, or ID `\0` request ID).
pub fn parse_expiry(key: &[u8]) -> Option<(u8, &[u8])> {
    let body = key.get(EXPIRY.len() + 8..)?;
    let (&kind, rest) = body.split_first()?;
    Some((kind, rest))
}

/// What changes with every exchange, kept apart from the dialogue's
/// settings so an append never rewrites them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub turn_count: u64,
    pub last_turn_time: Time,
    /// Index of the newest summary turn.
    pub latest_summary: Option<u64>,
    /// Bytes of the inline images of its turns.
    pub media_bytes: u64,
}

/// Head value: turn count, last turn time, latest summary index + 1 (0:
/// none), inline image bytes.
pub fn encode_head(head: &Head) -> [u8; 32] {
    let mut value = [0u8; 32];
    value[..8].copy_from_slice(&head.turn_count.to_be_bytes());
    value[8..16].copy_from_slice(&head.last_turn_time.0.to_be_bytes());
    let summary = head.latest_summary.map_or(0, |i| i + 1);
    value[16..24].copy_from_slice(&summary.to_be_bytes());
    value[24..].copy_from_slice(&head.media_bytes.to_be_bytes());
    value
}

/// Reads a head. Shorter heads were written by earlier releases: 16 bytes
/// (before summaries) have no summary, 24 (before images) no image bytes.
pub fn decode_head(value: &[u8]) -> Option<Head> {
    let word = |at: usize| -> Option<u64> {
        Some(u64::from_be_bytes(value.get(at..at + 8)?.try_into().ok()?))
    };
    if !matches!(value.len(), 16 | 24 | 32) {
        return None;
    }
    let turn_count = word(0)?;
    let time = i64::from_be_bytes(value.get(8..16)?.try_into().ok()?);
    Some(Head {
        turn_count,
        last_turn_time: Time(time),
        latest_summary: word(16).and_then(|s| s.checked_sub(1)),
        media_bytes: word(24).unwrap_or(0),
    })
}

/// The key right after every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xFF: no upper bound fits in a key; the caller uses prefix scans.
    vec![u8::MAX; prefix.len() + 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> DialogueId {
        DialogueId::parse(s).unwrap()
    }

    #[test]
    fn turn_keys_sort_by_index_and_do_not_overlap_between_ids() {
        let a = id("ab");
        assert!(turn(&a, 9) < turn(&a, 10));
        assert!(turn(&a, 255) < turn(&a, 256));
        assert!(turn(&a, u64::MAX) < prefix_end(&turn_prefix(&a)));
        // "ab" turns never fall inside the "ab"-prefixed "abc" range.
        let abc = id("abc");
        assert!(!turn(&abc, 0).starts_with(&turn_prefix(&a)));
    }

    #[test]
    fn created_keys_list_newest_first_within_their_owner_only() {
        let owner = Owner {
            tenant: "t".into(),
            principal: "p".into(),
        };
        let old = created(&owner, Time(1_000), &id("old"));
        let new = created(&owner, Time(2_000), &id("new"));
        assert!(new < old);
        assert!(new.starts_with(&created_prefix(&owner)));
        // "t"+"pq" must not share a prefix with "tp"+"q".
        let a = Owner {
            tenant: "t".into(),
            principal: "pq".into(),
        };
        let b = Owner {
            tenant: "tp".into(),
            principal: "q".into(),
        };
        assert!(!created(&a, Time(1), &id("x")).starts_with(&created_prefix(&b)));
    }

    #[test]
    fn expiry_keys_sort_by_time_and_stop_at_now() {
        let early = expiry(Time(5), EXPIRY_DIALOGUE, b"a");
        let late = expiry(Time(6), EXPIRY_IDEMPOTENCY, b"b\0r");
        assert!(early < late);
        assert!(early < expiry_end(Time(5)));
        assert!(late >= expiry_end(Time(5)));
        assert_eq!(
            parse_expiry(&late),
            Some((EXPIRY_IDEMPOTENCY, &b"b\0r"[..]))
        );
    }

    #[test]
    fn head_round_trips_and_reads_the_short_form() {
        let head = Head {
            turn_count: 42,
            last_turn_time: Time(7),
            latest_summary: Some(0),
            media_bytes: 1 << 20,
        };
        assert_eq!(decode_head(&encode_head(&head)), Some(head));
        let before_images = decode_head(&encode_head(&head)[..24]).unwrap();
        assert_eq!(
            (before_images.latest_summary, before_images.media_bytes),
            (Some(0), 0)
        );
        let before_summaries = &encode_head(&head)[..16];
        assert_eq!(decode_head(before_summaries).unwrap().latest_summary, None);
        assert_eq!(decode_head(&encode_head(&head)[..10]), None);
    }

    #[test]
    fn prefix_end_is_the_next_prefix() {
        assert_eq!(prefix_end(b"t/"), b"t0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
    }
}
