//! Domain types of the dialogue engine: what a dialogue and a turn are,
//! independent of gRPC and of the store's encoding.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A point in time as nanoseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Time(pub i64);

impl Time {
    pub fn now() -> Time {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Time(i64::try_from(nanos).unwrap_or(i64::MAX))
    }

    pub fn saturating_add_secs(self, secs: i64) -> Time {
        Time(self.0.saturating_add(secs.saturating_mul(1_000_000_000)))
    }
}

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

/// A dialogue's settings and counters (its turns are stored separately).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dialogue {
    pub id: DialogueId,
    #[serde(default)]
    pub owner: Owner,
    pub model: String,
    pub system_prompt: String,
    pub labels: BTreeMap<String, String>,
    /// Free-form JSON object; `None` when never set.
    pub state: Option<serde_json::Map<String, serde_json::Value>>,
    pub expire_time: Option<Time>,
    pub create_time: Time,
    pub update_time: Time,
    /// Turns stored so far; also the index the next turn gets.
    pub turn_count: u64,
    /// Index of the newest summary turn (kept by the store beside the
    /// turn count, not with the settings).
    #[serde(default, skip_serializing)]
    pub latest_summary: Option<u64>,
    /// Token count of `system_prompt`, kept so turns need not recount it;
    /// 0 when unknown (records written before it existed).
    #[serde(default)]
    pub system_prompt_tokens: u32,
}

impl Dialogue {
    /// The system prompt's token count, counted now if it was not stored.
    pub fn system_prompt_tokens(&self) -> u64 {
        match self.system_prompt_tokens {
            0 if !self.system_prompt.is_empty() => {
                super::tokenizer::count_tokens(&self.system_prompt)
            }
            n => u64::from(n),
        }
    }

    pub fn is_expired(&self, now: Time) -> bool {
        self.expire_time.is_some_and(|t| t <= now)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    System,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentPart {
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ContentFilter,
    ToolCalls,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// One stored message of a dialogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub index: u64,
    pub role: Role,
    pub content: Vec<ContentPart>,
    pub create_time: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<FinishReason>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The text's token count (see `tokenizer`); 0 when unknown.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tokens: u32,
    /// Set on summary turns: the earlier turns this one stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<SummaryRange>,
}

/// The turns a summary replaces in prompts: `first_index..=last_index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryRange {
    pub first_index: u64,
    pub last_index: u64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Turn {
    /// The turn's text parts joined, as a model sees them.
    pub fn text(&self) -> String {
        join_text(&self.content)
    }
}

pub fn join_text(parts: &[ContentPart]) -> String {
    let mut out = String::new();
    for part in parts {
        match part {
            ContentPart::Text(t) => out.push_str(t),
        }
    }
    out
}

/// One message of the prompt sent to a model.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptMessage {
    pub role: Role,
    pub text: String,
}

/// Sampling settings of one turn, already range-checked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationParams {
    pub model: Option<String>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub seed: Option<i64>,
    pub cache: CachePolicy,
}

/// Whether a turn may be answered from the response cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CachePolicy {
    /// Only deterministic requests: temperature 0 or a seed.
    #[default]
    Deterministic,
    /// This request accepts a cached reply whatever its parameters.
    Use,
    /// Never from (nor into) the cache.
    Bypass,
}

/// When a dialogue expires, as a caller states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expiration {
    Never,
    /// Seconds from now.
    Ttl(i64),
    At(Time),
}

/// The caller-settable part of a dialogue, for create and update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DialogueSpec {
    pub model: String,
    pub system_prompt: String,
    pub labels: BTreeMap<String, String>,
    pub state: Option<serde_json::Map<String, serde_json::Value>>,
    pub expiration: Expiration,
}

/// Which fields an update replaces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateMask {
    pub model: bool,
    pub system_prompt: bool,
    pub labels: bool,
    pub state: bool,
    pub expiration: bool,
}

/// A request to run one turn.
#[derive(Debug, Clone)]
pub struct TurnRequest {
    /// Who asks; the dialogue must be theirs.
    pub caller: crate::auth::Principal,
    pub dialogue_id: DialogueId,
    pub content: Vec<ContentPart>,
    pub params: GenerationParams,
    pub request_id: Option<String>,
    /// Settings for the dialogue when it is missing and may be created.
    pub create_if_missing: Option<DialogueSpec>,
    /// When the caller stops waiting (its grpc-timeout), if it said.
    pub deadline: Option<std::time::Instant>,
    /// A streamed turn goes on when its client goes, and can be resumed.
    pub resumable: bool,
}

/// A stateless completion: the whole prompt comes with the request.
pub struct CompletionRequest {
    pub caller: crate::auth::Principal,
    /// System, user and assistant messages; the last is the user's.
    pub messages: Vec<PromptMessage>,
    /// `model` names the public model (the default one when absent).
    pub params: GenerationParams,
    pub deadline: Option<std::time::Instant>,
}

/// How a reply was produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyMetadata {
    pub latency_ms: f64,
    pub model: String,
    pub backend: String,
    pub cached: bool,
    pub replayed: bool,
    /// Model calls made for this turn (retries and fallbacks included).
    pub attempts: u32,
    /// The upstream model (and version, when the backend says) that answered.
    pub upstream_model: String,
}

/// The stored result of one turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnOutcome {
    pub dialogue_id: DialogueId,
    pub user_turn: Turn,
    pub assistant_turn: Turn,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    pub metadata: ReplyMetadata,
}

/// An event of a streamed turn.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Start {
        dialogue_id: DialogueId,
        turn_index: u64,
        model: String,
    },
    Delta {
        text: String,
        offset: u64,
    },
    End(Box<TurnOutcome>),
}

/// A page of results and where the next one starts.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
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
