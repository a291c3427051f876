//! The body of `POST /v1/messages` (and of `count_tokens`), every field of
//! Anthropic's request type accounted for:
//!
//! - handled: `model`, `max_tokens`, `messages` (text, image, tool_use and
//!   tool_result blocks), `system`, `stream`, `temperature`, `top_p`,
//!   `stop_sequences`, `tools` (custom tools), `tool_choice` (auto, any,
//!   tool, none; `disable_parallel_tool_use`); and dialogd's `dialogue_id`;
//! - accepted and ignored: `metadata` (a user label), `service_tier`, and
//!   `cache_control` on blocks (prompt-caching hints for Anthropic's own
//!   servers);
//! - refused with the field named: everything else (`top_k`, `thinking`
//!   unless disabled, `container`, `mcp_servers`, documents, ...).

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
use serde_json::Value;
use tonic::Status;

pub(crate) const HANDLED: &[&str] = &[
    "model",
    "max_tokens",
    "messages",
    "system",
    "stream",
    "temperature",
    "top_p",
    "stop_sequences",
    "tools",
    "tool_choice",
    "dialogue_id",
    "metadata",
    "service_tier",
    "thinking",
];

pub struct MessagesRequest {
    pub model: String,
    /// The system prompt first (as a system message), then the messages.
    pub messages: Vec<PromptMessage>,
    pub params: GenerationParams,
    pub stream: bool,
    pub dialogue_id: Option<String>,
}

/// `counting`: the body of `count_tokens` (no `max_tokens`, no `stream`).
pub fn parse(body: &[u8], counting: bool) -> Result<MessagesRequest, Status> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| invalid("body", format!("is not valid JSON: {e}")))?;
    let request = Obj::new(&value, "")?;
    request.only(HANDLED)?;
    if let Some(thinking) = request.obj("thinking")?
        && thinking.str("type")? != Some("disabled")
    {
        return Err(invalid(
            "thinking",
            "extended thinking is not supported by dialogd",
        ));
    }
    let model = request.required_str("model")?.to_owned();
    let max_tokens = match counting {
        true => None,
        false => Some(
            request
                .u32("max_tokens")?
                .ok_or_else(|| invalid("max_tokens", "is required"))?,
        ),
    };
    let stream = request.bool("stream")?.unwrap_or(false);
    if counting && stream {
        return Err(invalid("stream", "is not a field of count_tokens"));
    }
    let (tools, tool_choice, parallel) = tools(&request)?;
    let params = GenerationParams {
        model: Some(model.clone()).filter(|m| !m.is_empty()),
        temperature: request.f32("temperature")?,
        top_p: request.f32("top_p")?,
        max_tokens,
        stop: strings(&request, "stop_sequences")?,
        presence_penalty: None,
        frequency_penalty: None,
        seed: None,
        cache: CachePolicy::Deterministic,
        tools,
        tool_choice,
        parallel_tool_calls: parallel,
        response_format: ResponseFormat::Text,
        logprobs: false,
        top_logprobs: None,
    };
    let mut messages = system(&request)?;
    messages.extend(conversation(&request)?);
    Ok(MessagesRequest {
        model,
        messages,
        params,
        stream,
        dialogue_id: request.str("dialogue_id")?.map(str::to_owned),
    })
}

fn strings(request: &Obj, key: &str) -> Result<Vec<String>, Status> {
    let Some(items) = request.array(key)? else {
        return Ok(Vec::new());
    };
    items
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.as_str()
                .map(str::to_owned)
                .ok_or_else(|| invalid(&format!("{key}[{i}]"), "must be a string"))
        })
        .collect()
}

/// `system`: a string or text blocks.
fn system(request: &Obj) -> Result<Vec<PromptMessage>, Status> {
    let text = match request.get("system") {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => {
            let mut text = String::new();
            for (i, block) in blocks.iter().enumerate() {
                let block = Obj::new(block, format!("system[{i}]"))?;
                block.only(&["type", "text", "cache_control", "citations"])?;
                if block.required_str("type")? != "text" {
                    return Err(invalid(&block.param("type"), "system blocks must be text"));
                }
                text.push_str(block.required_str("text")?);
            }
            text
        }
        Some(_) => return Err(invalid("system", "must be a string or text blocks")),
    };
    Ok(vec![PromptMessage::text(Role::System, text)])
}

/// `messages`: user messages become user (and tool-result) messages,
/// assistant messages keep their text and tool calls.
fn conversation(request: &Obj) -> Result<Vec<PromptMessage>, Status> {
    let items = request
        .array("messages")?
        .ok_or_else(|| invalid("messages", "is required"))?;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let message = Obj::new(item, format!("messages[{i}]"))?;
        message.only(&["role", "content"])?;
        let role = match message.required_str("role")? {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(invalid(
                    &message.param("role"),
                    format!("{other:?} is not one of user, assistant"),
                ));
            }
        };
        let parts = blocks(&message, role)?;
        // Tool results go first as a tool message, then what the user said.
        let (results, said): (Vec<_>, Vec<_>) = parts
            .into_iter()
            .partition(|p| matches!(p, ContentPart::ToolResult(_)));
        if !results.is_empty() {
            out.push(PromptMessage {
                role: Role::Tool,
                content: results.into(),
            });
        }
        if !said.is_empty() || role == Role::Assistant {
            out.push(PromptMessage {
                role,
                content: said.into(),
            });
        }
    }
    Ok(out)
}

fn blocks(message: &Obj, role: Role) -> Result<Vec<ContentPart>, Status> {
    let path = message.param("content");
    match message.get("content") {
        Some(Value::String(s)) => Ok(vec![ContentPart::Text(s.clone())]),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, block)| content_block(&Obj::new(block, format!("{path}[{i}]"))?, role))
            .collect(),
        Some(_) => Err(invalid(&path, "must be a string or an array of blocks")),
        None => Err(invalid(&path, "is required")),
    }
}

fn content_block(block: &Obj, role: Role) -> Result<ContentPart, Status> {
    let kind = block.required_str("type")?;
    match (kind, role) {
        ("text", _) => {
            block.only(&["type", "text", "cache_control", "citations"])?;
            Ok(ContentPart::Text(block.required_str("text")?.to_owned()))
        }
        ("image", Role::User) => {
            block.only(&["type", "source", "cache_control"])?;
            let source = block
                .obj("source")?
                .ok_or_else(|| invalid(&block.param("source"), "is required"))?;
            Ok(ContentPart::Image(image(&source)?))
        }
        ("tool_use", Role::Assistant) => {
            block.only(&["type", "id", "name", "input", "cache_control"])?;
            let input = block
                .get("input")
                .cloned()
                .unwrap_or_else(|| Value::Object(Default::default()));
            Ok(ContentPart::ToolCall(ToolCall {
                id: block.required_str("id")?.to_owned(),
                name: block.required_str("name")?.to_owned(),
                arguments: input.to_string(),
            }))
        }
        ("tool_result", Role::User) => {
            block.only(&[
                "type",
                "tool_use_id",
                "content",
                "is_error",
                "cache_control",
            ])?;
            let content = match block.get("content") {
                None => Vec::new(),
                Some(Value::String(s)) => vec![ContentPart::Text(s.clone())],
                Some(Value::Array(items)) => items
                    .iter()
                    .enumerate()
                    .map(|(i, inner)| {
                        let inner = Obj::new(inner, format!("{}[{i}]", block.param("content")))?;
                        match inner.required_str("type")? {
                            "text" | "image" => content_block(&inner, Role::User),
                            _ => Err(invalid(
                                &inner.param("type"),
                                "a tool result holds text and image blocks",
                            )),
                        }
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => {
                    return Err(invalid(
                        &block.param("content"),
                        "must be a string or an array of blocks",
                    ));
                }
            };
            Ok(ContentPart::ToolResult(ToolResult {
                call_id: block.required_str("tool_use_id")?.to_owned(),
                content,
                is_error: block.bool("is_error")?.unwrap_or(false),
            }))
        }
        (kind, _) => Err(invalid(
            &block.param("type"),
            format!("{kind:?} blocks are not supported in {role:?} messages by dialogd"),
        )),
    }
}

/// `{"type": "base64", "media_type", "data"}` or `{"type": "url", "url"}`.
fn image(source: &Obj) -> Result<Image, Status> {
    let source = match source.required_str("type")? {
        "base64" => {
            source.only(&["type", "media_type", "data"])?;
            let data = STANDARD
                .decode(source.required_str("data")?)
                .map_err(|_| invalid(&source.param("data"), "is not base64"))?;
            ImageSource::Inline(InlineImage {
                mime_type: source.required_str("media_type")?.to_ascii_lowercase(),
                data: data.into(),
            })
        }
        "url" => {
            source.only(&["type", "url"])?;
            ImageSource::Url(source.required_str("url")?.to_owned())
        }
        other => {
            return Err(invalid(
                &source.param("type"),
                format!("{other:?} is not one of base64, url"),
            ));
        }
    };
    Ok(Image {
        source,
        detail: ImageDetail::Auto,
    })
}

/// The tools, the choice among them and whether calls may be parallel.
type Tools = (Vec<ToolSpec>, Option<ToolChoice>, Option<bool>);

/// `tools` and `tool_choice` (with `disable_parallel_tool_use`).
fn tools(request: &Obj) -> Result<Tools, Status> {
    let mut specs = Vec::new();
    for (i, tool) in request.array("tools")?.into_iter().flatten().enumerate() {
        let tool = Obj::new(tool, format!("tools[{i}]"))?;
        tool.only(&[
            "type",
            "name",
            "description",
            "input_schema",
            "cache_control",
        ])?;
        if let Some(kind) = tool.str("type")?
            && kind != "custom"
        {
            return Err(invalid(
                &tool.param("type"),
                "only custom tools are supported by dialogd",
            ));
        }
        specs.push(ToolSpec {
            name: tool.required_str("name")?.to_owned(),
            description: tool.str("description")?.unwrap_or_default().to_owned(),
            parameters: tool.obj("input_schema")?.map(|p| p.map.clone()),
            strict: false,
        });
    }
    let Some(choice) = request.obj("tool_choice")? else {
        return Ok((specs, None, None));
    };
    choice.only(&["type", "name", "disable_parallel_tool_use"])?;
    let parallel = choice
        .bool("disable_parallel_tool_use")?
        .map(|disabled| !disabled);
    let choice = match choice.required_str("type")? {
        "auto" => ToolChoice::Auto,
        "any" => ToolChoice::Required,
        "none" => ToolChoice::None,
        "tool" => ToolChoice::Function(choice.required_str("name")?.to_owned()),
        other => {
            return Err(invalid(
                "tool_choice.type",
                format!("{other:?} is not one of auto, any, tool, none"),
            ));
        }
    };
    Ok((specs, Some(choice), parallel))
}
