//! The body of `POST /v1/chat/completions`, every parameter of OpenAI's
//! request type accounted for:
//!
//! - handled: `model`, `messages`, `stream`, `stream_options.include_usage`,
//!   `temperature`, `top_p`, `max_tokens`, `max_completion_tokens`, `stop`,
//!   `presence_penalty`, `frequency_penalty`, `seed`, `n` (1 only),
//!   `tools`, `tool_choice`, `parallel_tool_calls`, `response_format`,
//!   `logprobs`, `top_logprobs`; and dialogd's `dialogue_id`;
//! - accepted and ignored (`IGNORED`): they ask OpenAI to keep or label the
//!   call, which has no meaning here;
//! - refused with the parameter named: everything else, known to OpenAI
//!   (`audio`, `functions`, `logit_bias`, `prediction`, ...) or not.

use super::messages::messages;
use crate::dialogue::model::{
    CachePolicy, GenerationParams, PromptMessage, ResponseFormat, ToolChoice, ToolSpec,
};
use crate::http::request_json::{Obj, invalid};
use serde_json::Value;
use tonic::Status;

/// Parameters accepted and ignored: labels and retention settings of
/// OpenAI's platform (and stream padding, which dialogd never adds).
pub const IGNORED: &[&str] = &[
    "user",
    "safety_identifier",
    "metadata",
    "store",
    "prompt_cache_key",
    "prompt_cache_retention",
    "prompt_cache_options",
    "service_tier",
];

/// Parameters of OpenAI's that dialogd does not support.
const UNSUPPORTED: &[&str] = &[
    "audio",
    "function_call",
    "functions",
    "logit_bias",
    "modalities",
    "moderation",
    "prediction",
    "reasoning_effort",
    "verbosity",
    "web_search_options",
];

pub(crate) const HANDLED: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "n",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "logprobs",
    "top_logprobs",
    "dialogue_id",
];

pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<PromptMessage>,
    pub params: GenerationParams,
    pub stream: bool,
    pub include_usage: bool,
    /// dialogd's extension: the stored dialogue (like `X-Dialogue-Id`).
    pub dialogue_id: Option<String>,
}

pub fn parse(body: &[u8]) -> Result<ChatRequest, Status> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| invalid("body", format!("is not valid JSON: {e}")))?;
    let request = Obj::new(&value, "")?;
    let known: Vec<&str> = [HANDLED, IGNORED, UNSUPPORTED].concat();
    request.only(&known)?;
    refuse_unsupported(&request)?;
    let (stream, include_usage) = stream(&request)?;
    if request.i64("n")?.is_some_and(|n| n != 1) {
        return Err(invalid("n", "only 1 choice per request is supported"));
    }
    let model = request.required_str("model")?.to_owned();
    let params = GenerationParams {
        model: Some(model.clone()).filter(|m| !m.is_empty()),
        temperature: request.f32("temperature")?,
        top_p: request.f32("top_p")?,
        max_tokens: match request.u32("max_completion_tokens")? {
            Some(n) => Some(n),
            None => request.u32("max_tokens")?,
        },
        stop: stop(&request)?,
        presence_penalty: request.f32("presence_penalty")?,
        frequency_penalty: request.f32("frequency_penalty")?,
        seed: request.i64("seed")?,
        cache: CachePolicy::Deterministic,
        tools: tools(&request)?,
        tool_choice: tool_choice(&request)?,
        parallel_tool_calls: request.bool("parallel_tool_calls")?,
        response_format: response_format(&request)?,
        logprobs: request.bool("logprobs")?.unwrap_or(false),
        top_logprobs: request.u32("top_logprobs")?,
    };
    Ok(ChatRequest {
        model,
        messages: messages(&request)?,
        params,
        stream,
        include_usage,
        dialogue_id: request.str("dialogue_id")?.map(str::to_owned),
    })
}

/// Refuses OpenAI parameters dialogd does not support, unless set to
/// what they mean by default (`modalities: ["text"]`, an empty
/// `logit_bias`, `service_tier: "auto"`).
fn refuse_unsupported(request: &Obj) -> Result<(), Status> {
    for &key in UNSUPPORTED {
        let Some(value) = request.get(key) else {
            continue;
        };
        let harmless = match key {
            "modalities" => *value == serde_json::json!(["text"]),
            "logit_bias" => value.as_object().is_some_and(|m| m.is_empty()),
            _ => false,
        };
        if !harmless {
            return Err(invalid(key, "is not supported by dialogd"));
        }
    }
    if let Some(tier) = request.str("service_tier")?
        && !matches!(tier, "auto" | "default")
    {
        return Err(invalid(
            "service_tier",
            "only \"auto\" and \"default\" are supported",
        ));
    }
    Ok(())
}

/// `stream`, and `stream_options.include_usage`.
fn stream(request: &Obj) -> Result<(bool, bool), Status> {
    let stream = request.bool("stream")?.unwrap_or(false);
    let Some(options) = request.obj("stream_options")? else {
        return Ok((stream, false));
    };
    if !stream {
        return Err(invalid(
            "stream_options",
            "is only allowed with stream: true",
        ));
    }
    // No padding is ever added, so there is nothing to turn off.
    options.only(&["include_usage", "include_obfuscation"])?;
    Ok((stream, options.bool("include_usage")?.unwrap_or(false)))
}

fn stop(request: &Obj) -> Result<Vec<String>, Status> {
    match request.get("stop") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| invalid(&format!("stop[{i}]"), "must be a string"))
            })
            .collect(),
        Some(_) => Err(invalid("stop", "must be a string or an array of strings")),
    }
}

fn tools(request: &Obj) -> Result<Vec<ToolSpec>, Status> {
    let Some(items) = request.array("tools")? else {
        return Ok(Vec::new());
    };
    items
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            let tool = Obj::new(tool, format!("tools[{i}]"))?;
            tool.only(&["type", "function"])?;
            if tool.required_str("type")? != "function" {
                return Err(invalid(
                    &tool.param("type"),
                    "only \"function\" tools are supported",
                ));
            }
            let function = tool
                .obj("function")?
                .ok_or_else(|| invalid(&tool.param("function"), "is required"))?;
            function.only(&["name", "description", "parameters", "strict"])?;
            Ok(ToolSpec {
                name: function.required_str("name")?.to_owned(),
                description: function.str("description")?.unwrap_or_default().to_owned(),
                parameters: function.obj("parameters")?.map(|p| p.map.clone()),
                strict: function.bool("strict")?.unwrap_or(false),
            })
        })
        .collect()
}

fn tool_choice(request: &Obj) -> Result<Option<ToolChoice>, Status> {
    match request.get("tool_choice") {
        None => Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(Some(ToolChoice::Auto)),
            "none" => Ok(Some(ToolChoice::None)),
            "required" => Ok(Some(ToolChoice::Required)),
            other => Err(invalid(
                "tool_choice",
                format!("{other:?} is not one of auto, none, required"),
            )),
        },
        Some(value) => {
            let choice = Obj::new(value, "tool_choice")?;
            choice.only(&["type", "function", "allowed_tools", "custom"])?;
            if choice.required_str("type")? != "function" {
                return Err(invalid(
                    "tool_choice.type",
                    "only \"function\" choices are supported",
                ));
            }
            let function = choice
                .obj("function")?
                .ok_or_else(|| invalid("tool_choice.function", "is required"))?;
            function.only(&["name"])?;
            Ok(Some(ToolChoice::Function(
                function.required_str("name")?.to_owned(),
            )))
        }
    }
}

fn response_format(request: &Obj) -> Result<ResponseFormat, Status> {
    let Some(format) = request.obj("response_format")? else {
        return Ok(ResponseFormat::Text);
    };
    format.only(&["type", "json_schema"])?;
    match format.required_str("type")? {
        "text" => Ok(ResponseFormat::Text),
        "json_object" => Ok(ResponseFormat::JsonObject),
        "json_schema" => {
            let spec = format
                .obj("json_schema")?
                .ok_or_else(|| invalid("response_format.json_schema", "is required"))?;
            spec.only(&["name", "description", "schema", "strict"])?;
            Ok(ResponseFormat::JsonSchema {
                name: spec.required_str("name")?.to_owned(),
                description: spec.str("description")?.unwrap_or_default().to_owned(),
                schema: spec
                    .obj("schema")?
                    .map(|s| s.map.clone())
                    .unwrap_or_default(),
                strict: spec.bool("strict")?.unwrap_or(false),
            })
        }
        other => Err(invalid(
            "response_format.type",
            format!("{other:?} is not one of text, json_object, json_schema"),
        )),
    }
}
