//! Whose a dialogue is and what it is called: owners, and dialogue IDs
//! scoped to their owner.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A dialogue's ID. Callers name dialogues with a public ID: 1 to 128
/// characters of `[A-Za-z0-9_.-]`, starting with a letter or digit (safe
/// inside store keys and resource names). Each owner has its own namespace,
/// so the engine scopes a public ID to its owner before touching the store:
/// `{owner key}~{public ID}`. Two callers may then both hold `chat-1`, and
/// creating an ID someone else holds cannot reveal that it exists.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DialogueId {
    /// What the store keys and locks use: scoped, or public before scoping.
    full: String,
    /// Where the public ID starts inside `full`.
    public_at: usize,
}

/// Separates owner key and public ID; outside the public charset.
const SCOPE_SEPARATOR: char = '~';
/// Hex digits of the owner key (128 bits of SHA-256).
const OWNER_KEY_LEN: usize = 32;

impl DialogueId {
    pub const MAX_LEN: usize = 128;

    /// A public ID as a caller writes it; rejects anything outside the charset.
    pub fn parse(raw: &str) -> Result<DialogueId, &'static str> {
        check_public(raw)?;
        Ok(DialogueId {
            full: raw.to_owned(),
            public_at: 0,
        })
    }

    /// An ID read back from the store: scoped, or public (records written
    /// before owners had namespaces).
    pub fn from_stored(raw: &str) -> Result<DialogueId, &'static str> {
        match raw.split_once(SCOPE_SEPARATOR) {
            None => DialogueId::parse(raw),
            Some((key, public)) => {
                if key.len() != OWNER_KEY_LEN || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err("has a damaged owner key");
                }
                check_public(public)?;
                Ok(DialogueId {
                    full: raw.to_owned(),
                    public_at: OWNER_KEY_LEN + 1,
                })
            }
        }
    }

    /// A fresh random public ID for dialogues created without one.
    pub fn generate() -> DialogueId {
        let bits: u128 = rand::random();
        DialogueId {
            full: format!("d-{bits:032x}"),
            public_at: 0,
        }
    }

    /// This public ID inside `owner`'s namespace.
    pub fn scoped_to(&self, owner: &Owner) -> DialogueId {
        let public = self.public();
        DialogueId {
            full: format!("{}{SCOPE_SEPARATOR}{public}", owner.key()),
            public_at: OWNER_KEY_LEN + 1,
        }
    }

    /// The full form: what store keys and locks use.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The owner key part ('' for IDs stored before owners had namespaces).
    pub fn owner_key(&self) -> &str {
        &self.full[..self.public_at.saturating_sub(1)]
    }

    /// The ID its owner knows it by.
    pub fn public(&self) -> &str {
        &self.full[self.public_at..]
    }

    /// The resource name, `dialogues/{public ID}`.
    pub fn resource_name(&self) -> String {
        format!("dialogues/{}", self.public())
    }
}

fn check_public(raw: &str) -> Result<(), &'static str> {
    if raw.is_empty() || raw.len() > DialogueId::MAX_LEN {
        return Err("must be 1 to 128 characters");
    }
    if !raw.as_bytes()[0].is_ascii_alphanumeric() {
        return Err("must start with a letter or digit");
    }
    if !raw
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err("may only contain letters, digits, '_', '-' and '.'");
    }
    Ok(())
}

impl TryFrom<String> for DialogueId {
    type Error = &'static str;
    fn try_from(raw: String) -> Result<DialogueId, &'static str> {
        DialogueId::from_stored(&raw)
    }
}

impl From<DialogueId> for String {
    fn from(id: DialogueId) -> String {
        id.full
    }
}

impl fmt::Display for DialogueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.public())
    }
}

/// Who a dialogue belongs to: only this principal of this tenant sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    pub tenant: String,
    pub principal: String,
}

impl Owner {
    pub fn of(principal: &crate::auth::Principal) -> Owner {
        Owner {
            tenant: principal.tenant.clone(),
            principal: principal.id.clone(),
        }
    }

    /// A fixed-length key naming this owner inside store keys: 128 bits of
    /// SHA-256 over tenant and principal, the tenant length-prefixed so no
    /// two owners can run together into the same input.
    pub fn key(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update((self.tenant.len() as u64).to_be_bytes())
            .chain_update(self.tenant.as_bytes())
            .chain_update(self.principal.as_bytes())
            .finalize();
        digest[..OWNER_KEY_LEN / 2]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl Default for Owner {
    /// Records written before owners existed belong to the local caller.
    fn default() -> Owner {
        Owner::of(&crate::auth::Principal::local())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialogue_ids_accept_the_documented_charset_only() {
        for ok in ["unique_session_123", "a", "A-b.c_9", &"x".repeat(128)] {
            assert!(DialogueId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "_lead",
            "-lead",
            "has space",
            "slash/no",
            "nul\0",
            "é",
            &"x".repeat(129),
        ] {
            assert!(DialogueId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = DialogueId::generate();
        let b = DialogueId::generate();
        assert_ne!(a, b);
        assert!(DialogueId::parse(a.as_str()).is_ok());
    }

    fn owner(tenant: &str, principal: &str) -> Owner {
        Owner {
            tenant: tenant.into(),
            principal: principal.into(),
        }
    }

    #[test]
    fn scoped_ids_keep_owners_apart_and_their_public_part() {
        let public = DialogueId::parse("chat-1").unwrap();
        let alice = public.scoped_to(&owner("acme", "alice"));
        let bob = public.scoped_to(&owner("acme", "bob"));
        let run_together = public.scoped_to(&owner("acmea", "lice"));
        assert_ne!(alice, bob);
        assert_ne!(alice, run_together);
        for id in [&alice, &bob] {
            assert_eq!(
                (id.public(), id.resource_name()),
                ("chat-1", "dialogues/chat-1".into())
            );
            assert_eq!(id.to_string(), "chat-1");
            assert_eq!(&DialogueId::from_stored(id.as_str()).unwrap(), id);
        }
        // Scoping twice is scoping once.
        assert_eq!(alice.scoped_to(&owner("acme", "alice")), alice);
        let json = serde_json::to_string(&alice).unwrap();
        assert_eq!(serde_json::from_str::<DialogueId>(&json).unwrap(), alice);
    }

    #[test]
    fn callers_cannot_write_a_scoped_id_and_damaged_ones_are_refused() {
        let scoped = DialogueId::parse("x").unwrap().scoped_to(&owner("t", "p"));
        assert!(DialogueId::parse(scoped.as_str()).is_err());
        assert!(DialogueId::from_stored("abc~x").is_err());
        assert!(DialogueId::from_stored(&format!("{}~", "0".repeat(32))).is_err());
        assert_eq!(
            DialogueId::from_stored("legacy").unwrap().public(),
            "legacy"
        );
    }
}
