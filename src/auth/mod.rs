//! Who is calling and what they may do: principals, roles and scopes,
//! hashed API keys and JWTs. The transport's auth layer (middleware/auth.rs)
//! authenticates each call with `Authenticator` and checks the scope the
//! method's entry in the table of methods names; the engine checks
//! ownership of dialogues.

mod authenticator;
pub mod failures;
pub mod jwt;
pub mod keys;
pub mod networks;

pub use authenticator::{AuthError, Authenticator, IssuedToken, KeyLimits};

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A permission a method requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    #[serde(rename = "dialogue:read")]
    DialogueRead,
    #[serde(rename = "dialogue:write")]
    DialogueWrite,
    #[serde(rename = "models:read")]
    ModelsRead,
    #[serde(rename = "admin")]
    Admin,
    #[serde(rename = "audit:read")]
    AuditRead,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::DialogueRead => "dialogue:read",
            Scope::DialogueWrite => "dialogue:write",
            Scope::ModelsRead => "models:read",
            Scope::Admin => "admin",
            Scope::AuditRead => "audit:read",
        }
    }

    pub fn parse(raw: &str) -> Option<Scope> {
        [
            Scope::DialogueRead,
            Scope::DialogueWrite,
            Scope::ModelsRead,
            Scope::Admin,
            Scope::AuditRead,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

/// A bundle of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Their own dialogues, and the model list.
    User,
    /// Models, routing and traffic; any dialogue's metadata (not its content).
    Admin,
    /// The audit log; no dialogue content.
    Auditor,
}

impl Role {
    pub fn scopes(self) -> &'static [Scope] {
        match self {
            Role::User => &[Scope::DialogueRead, Scope::DialogueWrite, Scope::ModelsRead],
            Role::Admin => &[Scope::Admin, Scope::ModelsRead, Scope::DialogueRead],
            Role::Auditor => &[Scope::AuditRead],
        }
    }

    pub fn parse(raw: &str) -> Option<Role> {
        match raw {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who: a key's principal or a token's `sub`.
    pub id: String,
    /// Which organisation's data they belong to.
    pub tenant: String,
    pub roles: BTreeSet<Role>,
    pub scopes: BTreeSet<Scope>,
}

impl Principal {
    /// Scopes granted: the explicit list if any, else the roles' scopes.
    pub fn new(
        id: String,
        tenant: String,
        roles: BTreeSet<Role>,
        scopes: Option<BTreeSet<Scope>>,
    ) -> Principal {
        let scopes = scopes.unwrap_or_else(|| {
            roles
                .iter()
                .flat_map(|r| r.scopes().iter().copied())
                .collect()
        });
        Principal {
            id,
            tenant,
            roles,
            scopes,
        }
    }

    /// The caller when `auth.mode = "none"` (local development only).
    pub fn local() -> Principal {
        Principal::new(
            "local".into(),
            "local".into(),
            [Role::User, Role::Admin, Role::Auditor].into(),
            None,
        )
    }

    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    pub fn is_admin(&self) -> bool {
        self.has_scope(Scope::Admin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_their_scopes_unless_narrowed() {
        let user = Principal::new("a".into(), "t".into(), [Role::User].into(), None);
        assert!(user.has_scope(Scope::DialogueWrite) && !user.has_scope(Scope::Admin));
        let auditor = Principal::new("b".into(), "t".into(), [Role::Auditor].into(), None);
        assert!(auditor.has_scope(Scope::AuditRead) && !auditor.has_scope(Scope::DialogueRead));
        let narrowed = Principal::new(
            "c".into(),
            "t".into(),
            [Role::User].into(),
            Some([Scope::DialogueRead].into()),
        );
        assert!(!narrowed.has_scope(Scope::DialogueWrite));
    }

    #[test]
    fn scopes_round_trip_their_names() {
        for s in [
            "dialogue:read",
            "dialogue:write",
            "models:read",
            "admin",
            "audit:read",
        ] {
            assert_eq!(Scope::parse(s).unwrap().as_str(), s);
        }
        assert!(Scope::parse("root").is_none());
    }
}
