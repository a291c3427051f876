//! The body of `POST /v1/responses`, every field of OpenAI's request type
//! accounted for:
//!
//! - handled: `model`, `input` (a string, or items: messages with
//!   `input_text` / `input_image` / `output_text` parts, `function_call`
//!   and `function_call_output` items), `instructions`, `temperature`,
//!   `top_p`, `max_output_tokens`, `tools` (function tools), `tool_choice`,
//!   `parallel_tool_calls`, `text.format`, `previous_response_id`, `store`,
//!   `stream`; `metadata` is echoed on the answer, not kept;
//! - `truncation: "auto"` (what dialogd always does; "disabled" refused);
//! - accepted and ignored: `user`, `safety_identifier`, `prompt_cache_key`,
//!   `prompt_cache_retention`, `service_tier`;
//! - `conversation` (an ID or `{"id"}`) appends to that conversation;
//! - refused with the field named: `background`, `include`, `reasoning`, `prompt`,
//!   `max_tool_calls`, `top_logprobs`, non-function tools, and anything else.

use crate::dialogue::content::{
    Image, ImageDetail, ImageSource, InlineImage, ToolCall, ToolResult,
};
use crate::dialogue::model::{
    CachePolicy, ContentPart, GenerationParams, PromptMessage, ResponseFormat, Role, ToolChoice,
    ToolSpec,
};
use crate::http::request_json::{Obj, invalid};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};
use tonic::Status;

pub(crate) const HANDLED: &[&str] = &[
    "model",
    "input",
    "instructions",
    "temperature",
    "top_p",
    "max_output_tokens",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "previous_response_id",
    "conversation",
    "store",
    "metadata",
    "stream",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "service_tier",
    "truncation",
];

pub struct ResponsesRequest {
    pub model: String,
    pub instructions: Option<String>,
    /// The input items, as prompt messages (no system message).
    pub input: Vec<PromptMessage>,
    pub params: GenerationParams,
    pub previous_response_id: Option<String>,
    /// The conversation (dialogue) to append to.
    pub conversation: Option<String>,
    pub store: bool,
    pub stream: bool,
    pub metadata: Map<String, Value>,
    /// The request's echo fields, returned on the response.
    pub echo: Map<String, Value>,
}

pub fn parse(body: &[u8]) -> Result<ResponsesRequest, Status> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| invalid("body", format!("is not valid JSON: {e}")))?;
    let request = Obj::new(&value, "")?;
    request.only(HANDLED)?;
    // dialogd always fits history to the model's context (oldest turns
    // first): that is "auto"; "disabled" (fail instead) it cannot honour.
    if let Some(truncation) = request.str("truncation")?
        && truncation != "auto"
    {
        return Err(invalid(
            "truncation",
            "only \"auto\" is supported: dialogd fits history to the model's context",
        ));
    }
    let conversation = match request.get("conversation") {
        None => None,
        Some(Value::String(id)) => Some(id.clone()),
        Some(value) => {
            let conversation = Obj::new(value, "conversation")?;
            conversation.only(&["id"])?;
            Some(conversation.required_str("id")?.to_owned())
        }
    };
    if conversation.is_some() && request.get("previous_response_id").is_some() {
        return Err(invalid(
            "conversation",
            "cannot be used together with previous_response_id",
        ));
    }
    let model = request.required_str("model")?.to_owned();
    let (tools, tool_choice) = tools(&request)?;
    let params = GenerationParams {
        model: Some(model.clone()).filter(|m| !m.is_empty()),
        temperature: request.f32("temperature")?,
        top_p: request.f32("top_p")?,
        max_tokens: request.u32("max_output_tokens")?,
        stop: Vec::new(),
        presence_penalty: None,
        frequency_penalty: None,
        seed: None,
        cache: CachePolicy::Deterministic,
        tools,
        tool_choice,
        parallel_tool_calls: request.bool("parallel_tool_calls")?,
        response_format: text_format(&request)?,
        logprobs: false,
        top_logprobs: None,
    };
    let metadata = request
        .obj("metadata")?
        .map(|m| m.map.clone())
        .unwrap_or_default();
    let mut echo = Map::new();
    for key in [
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "temperature",
        "top_p",
        "max_output_tokens",
    ] {
        if let Some(v) = request.get(key) {
            echo.insert(key.to_owned(), v.clone());
        }
    }
    Ok(ResponsesRequest {
        model,
        instructions: request.str("instructions")?.map(str::to_owned),
        input: input(&request)?,
        params,
        previous_response_id: request.str("previous_response_id")?.map(str::to_owned),
        store: match (request.bool("store")?, &conversation) {
            (Some(false), Some(_)) => {
                return Err(invalid("store", "must not be false with a conversation"));
            }
            (store, _) => store.unwrap_or(true),
        },
        conversation,
        stream: request.bool("stream")?.unwrap_or(false),
        metadata,
        echo,
    })
}

fn input(request: &Obj) -> Result<Vec<PromptMessage>, Status> {
    match request.get("input") {
        None => Err(invalid("input", "is required")),
        Some(Value::String(text)) => Ok(vec![PromptMessage::text(Role::User, text.clone())]),
        Some(Value::Array(list)) => items(list, "input"),
        Some(_) => Err(invalid("input", "must be a string or an array of items")),
    }
}

/// Responses items (at `field`) as messages: consecutive items of one role
/// (but the user's) make one message, as a reply's text and its calls.
pub fn items(list: &[Value], field: &str) -> Result<Vec<PromptMessage>, Status> {
    let mut out: Vec<PromptMessage> = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let item = Obj::new(item, format!("{field}[{i}]"))?;
        let (role, part) = input_item(&item)?;
        match out.last_mut() {
            Some(last) if last.role == role && role != Role::User => {
                last.content.to_mut().extend(part)
            }
            _ => out.push(PromptMessage {
                role,
                content: part.into(),
            }),
        }
    }
    Ok(out)
}

fn input_item(item: &Obj) -> Result<(Role, Vec<ContentPart>), Status> {
    match item.str("type")?.unwrap_or("message") {
        "message" => {
            item.only(&["type", "role", "content", "id", "status"])?;
            let role = match item.required_str("role")? {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "system" | "developer" => Role::System,
                other => {
                    return Err(invalid(
                        &item.param("role"),
                        format!("{other:?} is not one of user, assistant, system, developer"),
                    ));
                }
            };
            Ok((role, message_content(item)?))
        }
        "function_call" => {
            item.only(&["type", "call_id", "name", "arguments", "id", "status"])?;
            Ok((
                Role::Assistant,
                vec![ContentPart::ToolCall(ToolCall {
                    id: item.required_str("call_id")?.to_owned(),
                    name: item.required_str("name")?.to_owned(),
                    arguments: item.required_str("arguments")?.to_owned(),
                })],
            ))
        }
        "function_call_output" => {
            item.only(&["type", "call_id", "output", "id", "status"])?;
            Ok((
                Role::Tool,
                vec![ContentPart::ToolResult(ToolResult {
                    call_id: item.required_str("call_id")?.to_owned(),
                    content: vec![ContentPart::Text(item.required_str("output")?.to_owned())],
                    is_error: false,
                })],
            ))
        }
        other => Err(invalid(
            &item.param("type"),
            format!("{other:?} items are not supported by dialogd"),
        )),
    }
}

fn message_content(item: &Obj) -> Result<Vec<ContentPart>, Status> {
    let path = item.param("content");
    match item.get("content") {
        Some(Value::String(text)) => Ok(vec![ContentPart::Text(text.clone())]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(i, part)| {
                let part = Obj::new(part, format!("{path}[{i}]"))?;
                match part.required_str("type")? {
                    "input_text" | "output_text" => {
                        part.only(&["type", "text", "annotations", "logprobs"])?;
                        Ok(ContentPart::Text(part.required_str("text")?.to_owned()))
                    }
                    "input_image" => {
                        part.only(&["type", "image_url", "detail", "file_id"])?;
                        if part.get("file_id").is_some() {
                            return Err(invalid(
                                &part.param("file_id"),
                                "files are not supported by dialogd; send image_url",
                            ));
                        }
                        Ok(ContentPart::Image(image(&part)?))
                    }
                    other => Err(invalid(
                        &part.param("type"),
                        format!("{other:?} parts are not supported by dialogd"),
                    )),
                }
            })
            .collect(),
        Some(_) => Err(invalid(&path, "must be a string or an array of parts")),
        None => Err(invalid(&path, "is required")),
    }
}

fn image(part: &Obj) -> Result<Image, Status> {
    let detail = match part.str("detail")? {
        None | Some("auto") => ImageDetail::Auto,
        Some("low") => ImageDetail::Low,
        Some("high") => ImageDetail::High,
        Some(other) => {
            return Err(invalid(
                &part.param("detail"),
                format!("{other:?} is not one of auto, low, high"),
            ));
        }
    };
    let url = part.required_str("image_url")?;
    let source = match url.strip_prefix("data:") {
        None => ImageSource::Url(url.to_owned()),
        Some(data) => {
            let bad = || invalid(&part.param("image_url"), "is not a base64 data URL");
            let (mime_type, encoded) = data.split_once(";base64,").ok_or_else(bad)?;
            ImageSource::Inline(InlineImage {
                mime_type: mime_type.to_ascii_lowercase(),
                data: STANDARD.decode(encoded).map_err(|_| bad())?.into(),
            })
        }
    };
    Ok(Image { source, detail })
}

fn tools(request: &Obj) -> Result<(Vec<ToolSpec>, Option<ToolChoice>), Status> {
    let mut specs = Vec::new();
    for (i, tool) in request.array("tools")?.into_iter().flatten().enumerate() {
        let tool = Obj::new(tool, format!("tools[{i}]"))?;
        tool.only(&["type", "name", "description", "parameters", "strict"])?;
        if tool.required_str("type")? != "function" {
            return Err(invalid(
                &tool.param("type"),
                "only function tools are supported by dialogd",
            ));
        }
        specs.push(ToolSpec {
            name: tool.required_str("name")?.to_owned(),
            description: tool.str("description")?.unwrap_or_default().to_owned(),
            parameters: tool.obj("parameters")?.map(|p| p.map.clone()),
            strict: tool.bool("strict")?.unwrap_or(false),
        });
    }
    let choice = match request.get("tool_choice") {
        None => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(invalid(
                    "tool_choice",
                    format!("{other:?} is not one of auto, none, required"),
                ));
            }
        }),
        Some(value) => {
            let choice = Obj::new(value, "tool_choice")?;
            choice.only(&["type", "name"])?;
            if choice.required_str("type")? != "function" {
                return Err(invalid(
                    "tool_choice.type",
                    "only function choices are supported",
                ));
            }
            Some(ToolChoice::Function(
                choice.required_str("name")?.to_owned(),
            ))
        }
    };
    Ok((specs, choice))
}

/// `text.format`: text, json_object, or json_schema (flat, as the
/// Responses API writes it).
fn text_format(request: &Obj) -> Result<ResponseFormat, Status> {
    let Some(text) = request.obj("text")? else {
        return Ok(ResponseFormat::Text);
    };
    text.only(&["format", "verbosity"])?;
    if text.get("verbosity").is_some_and(|v| v != "medium") {
        return Err(invalid("text.verbosity", "is not supported by dialogd"));
    }
    let Some(format) = text.obj("format")? else {
        return Ok(ResponseFormat::Text);
    };
    format.only(&["type", "name", "description", "schema", "strict"])?;
    match format.required_str("type")? {
        "text" => Ok(ResponseFormat::Text),
        "json_object" => Ok(ResponseFormat::JsonObject),
        "json_schema" => Ok(ResponseFormat::JsonSchema {
            name: format.required_str("name")?.to_owned(),
            description: format.str("description")?.unwrap_or_default().to_owned(),
            schema: format
                .obj("schema")?
                .map(|s| s.map.clone())
                .unwrap_or_default(),
            strict: format.bool("strict")?.unwrap_or(false),
        }),
        other => Err(invalid(
            "text.format.type",
            format!("{other:?} is not one of text, json_object, json_schema"),
        )),
    }
}
