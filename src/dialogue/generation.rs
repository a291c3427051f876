//! How a reply is to be generated: sampling and length settings, the tools
//! the model may call, the shape of its answer (text, a JSON object, or
//! JSON matching a schema) and whether token log probabilities come back.

use super::tokenizer::count_tokens;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Generation settings of one turn, already range-checked.
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
    /// Functions the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Whether the model may call several tools in one reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default, skip_serializing_if = "ResponseFormat::is_text")]
    pub response_format: ResponseFormat,
    /// Return each output token's log probability.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub logprobs: bool,
    /// With `logprobs`: this many most likely alternatives per token (0-20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
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

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// 1 to 64 of `[A-Za-z0-9_-]`.
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// A JSON Schema object of the arguments; `None`: no arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    /// Ask the model to follow the schema exactly (where it can).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strict: bool,
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides (the default when tools are given).
    Auto,
    /// No tool call; answer in text.
    None,
    /// At least one tool call.
    Required,
    /// A call of this tool.
    Function(String),
}

/// The shape of the reply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    #[default]
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching `schema`.
    JsonSchema {
        name: String,
        /// What the reply is for; models read it.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        description: String,
        schema: Map<String, Value>,
        strict: bool,
    },
}

impl ResponseFormat {
    pub fn is_text(&self) -> bool {
        *self == ResponseFormat::Text
    }
}

/// An output token's log probability, and its likeliest alternatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<TopLogprob>,
}

/// One alternative of a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f64,
}

impl GenerationParams {
    /// A digest of every setting (hex SHA-256 of their JSON), to tell two
    /// requests apart.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let json = serde_json::to_vec(self).unwrap_or_default();
        let mut hex = String::with_capacity(32);
        for b in Sha256::digest(json).iter().take(16) {
            hex.push(char::from(HEX[usize::from(b >> 4)]));
            hex.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        hex
    }

    /// Tokens the tool definitions and the response schema add to a
    /// prompt, estimated from their JSON text.
    pub fn schema_tokens(&self) -> u64 {
        let tools = match self.tools.is_empty() {
            true => 0,
            false => serde_json::to_string(&self.tools).map_or(0, |t| count_tokens(&t)),
        };
        let format = match &self.response_format {
            ResponseFormat::JsonSchema { schema, .. } => {
                count_tokens(&Value::Object(schema.clone()).to_string())
            }
            _ => 0,
        };
        tools + format
    }
}
