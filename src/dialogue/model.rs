//! Domain types of the dialogue engine: what a dialogue and a turn are,
//! independent of gRPC and of the store's encoding.

pub use super::content::{
    ContentPart, Image, ImageDetail, ImageSource, InlineImage, ToolCall, ToolResult, join_text,
};
pub use super::generation::{
    CachePolicy, GenerationParams, ResponseFormat, TokenLogprob, ToolChoice, ToolSpec, TopLogprob,
};
pub use super::id::{DialogueId, Owner};
pub use super::message::{MessageContent, PromptMessage};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
    /// Bytes of the inline images of its turns (kept by the store beside
    /// the turn count).
    #[serde(default, skip_serializing)]
    pub media_bytes: u64,
    /// Token count of `system_prompt`, kept so turns need not recount it;
    /// 0 when unknown (records written before it existed).
    #[serde(default)]
    pub system_prompt_tokens: u32,
    /// Set on a branch: its first turns are its parent's, read from the
    /// parent (shared by reference) until the branch adopts a copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork: Option<ForkOrigin>,
    /// Branches that read turns of this dialogue: each adopts a copy before
    /// those turns are erased. May name branches since erased.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<DialogueId>,
}

/// Where a branch's borrowed turns live: turns `0..turns` are `parent`'s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkOrigin {
    pub parent: DialogueId,
    pub turns: u64,
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
    /// Results of the model's tool calls, from the caller.
    Tool,
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
    /// Added as a conversation item, with no model call: a caller's turn
    /// that may end the dialogue unanswered (the next turn follows it).
    #[serde(default, skip_serializing_if = "is_false")]
    pub added: bool,
    /// Assistant turns: the traffic rule that routed the call or answered
    /// it with a canned reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
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
    /// The turn's text parts joined: what it says in words.
    pub fn text(&self) -> String {
        join_text(&self.content)
    }

    /// A bare turn of text, for tests.
    #[cfg(test)]
    pub(crate) fn of_text(index: u64, role: Role, text: &str) -> Turn {
        Turn {
            index,
            role,
            content: vec![ContentPart::Text(text.into())],
            create_time: Time(0),
            finish_reason: None,
            model: String::new(),
            usage: None,
            request_id: None,
            tokens: 0,
            summary: None,
            added: false,
            rule: None,
        }
    }
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
    /// The traffic rule that routed or answered the turn (empty: none).
    #[serde(default)]
    pub rule: String,
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
    /// Log probabilities of the reply's tokens, when asked for (not stored:
    /// a replay has none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logprobs: Vec<TokenLogprob>,
}

/// An event of a streamed turn.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Start {
        dialogue_id: DialogueId,
        turn_index: u64,
        model: String,
    },
    /// A piece of the reply's text (with its tokens' log probabilities,
    /// when asked for).
    Delta {
        text: String,
        offset: u64,
        logprobs: Vec<TokenLogprob>,
    },
    /// A piece of tool call `index` of the reply: its ID and name on the
    /// first piece, then fragments of its arguments.
    ToolCallDelta {
        index: u32,
        id: Option<String>,
        name: Option<String>,
        arguments: String,
    },
    End(Box<TurnOutcome>),
}

/// How much of a turn a read returns (AIP-157): `Basic` leaves inline
/// image bytes out (their type, size and digest stay), `Full` has them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TurnView {
    #[default]
    Basic,
    Full,
}

/// A page of results and where the next one starts.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}
