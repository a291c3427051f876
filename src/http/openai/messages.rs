//! OpenAI chat messages into prompt messages: system and developer text,
//! user text and images (`image_url`, `data:` URLs kept inline), assistant
//! text and `tool_calls`, and `tool` messages as tool results. Anything
//! else (audio, files, the deprecated `function` role) is refused with the
//! parameter named.

use crate::dialogue::model::{
    ContentPart, Image, ImageDetail, ImageSource, InlineImage, PromptMessage, Role, ToolCall,
    ToolResult,
};
use crate::http::request_json::{Obj, invalid};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use tonic::Status;

/// The request's `messages`.
pub fn messages(request: &Obj) -> Result<Vec<PromptMessage>, Status> {
    let items = request
        .array("messages")?
        .ok_or_else(|| invalid("messages", "is required"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, m)| message(&Obj::new(m, format!("messages[{i}]"))?))
        .collect()
}

fn message(m: &Obj) -> Result<PromptMessage, Status> {
    let role = m.required_str("role")?;
    match role {
        "system" | "developer" => {
            m.only(&["role", "content", "name"])?;
            Ok(PromptMessage {
                role: Role::System,
                content: text_content(m)?.into(),
            })
        }
        "user" => {
            m.only(&["role", "content", "name"])?;
            Ok(PromptMessage {
                role: Role::User,
                content: user_content(m)?.into(),
            })
        }
        "assistant" => assistant(m),
        "tool" => {
            m.only(&["role", "content", "tool_call_id"])?;
            let mut content = text_content(m)?;
            // A tool may return nothing.
            content.retain(|p| p.as_text() != Some(""));
            let result = ToolResult {
                call_id: m.required_str("tool_call_id")?.to_owned(),
                content,
                is_error: false,
            };
            Ok(PromptMessage {
                role: Role::Tool,
                content: vec![ContentPart::ToolResult(result)].into(),
            })
        }
        "function" => Err(invalid(
            &m.param("role"),
            "\"function\" messages are deprecated and not supported; use \"tool\" messages",
        )),
        other => Err(invalid(
            &m.param("role"),
            format!("{other:?} is not one of system, developer, user, assistant, tool"),
        )),
    }
}

fn assistant(m: &Obj) -> Result<PromptMessage, Status> {
    // `annotations` (URL citations of OpenAI's search) are the model's
    // output, accepted back and ignored.
    m.only(&[
        "role",
        "content",
        "name",
        "tool_calls",
        "refusal",
        "annotations",
        "audio",
        "function_call",
    ])?;
    for unsupported in ["audio", "function_call"] {
        if m.get(unsupported).is_some() {
            return Err(invalid(&m.param(unsupported), "is not supported"));
        }
    }
    let mut content = match m.get("content") {
        None => Vec::new(),
        Some(_) => text_content(m)?,
    };
    // A refusal the model gave is what it said.
    if let Some(refusal) = m.str("refusal")? {
        content.push(ContentPart::Text(refusal.to_owned()));
    }
    content.retain(|p| p.as_text() != Some(""));
    for (j, call) in m.array("tool_calls")?.into_iter().flatten().enumerate() {
        let call = Obj::new(call, format!("{}[{j}]", m.param("tool_calls")))?;
        call.only(&["id", "type", "function"])?;
        if let Some(kind) = call.str("type")?
            && kind != "function"
        {
            return Err(invalid(
                &call.param("type"),
                "only \"function\" tool calls are supported",
            ));
        }
        let function = call
            .obj("function")?
            .ok_or_else(|| invalid(&call.param("function"), "is required"))?;
        function.only(&["name", "arguments"])?;
        content.push(ContentPart::ToolCall(ToolCall {
            id: call.required_str("id")?.to_owned(),
            name: function.required_str("name")?.to_owned(),
            arguments: function.str("arguments")?.unwrap_or_default().to_owned(),
        }));
    }
    if content.is_empty() {
        return Err(invalid(
            &m.param("content"),
            "an assistant message needs content or tool_calls",
        ));
    }
    Ok(PromptMessage {
        role: Role::Assistant,
        content: content.into(),
    })
}

/// Content that is text: a string, or `text` parts (and `refusal` parts
/// of an assistant).
fn text_content(m: &Obj) -> Result<Vec<ContentPart>, Status> {
    parts(m, |part, kind| match kind {
        "text" | "refusal" => {
            part.only(&["type", kind])?;
            Ok(ContentPart::Text(part.required_str(kind)?.to_owned()))
        }
        _ => Err(invalid(
            &part.param("type"),
            "only text parts are allowed here",
        )),
    })
}

/// A user's content: a string, or text and image parts.
fn user_content(m: &Obj) -> Result<Vec<ContentPart>, Status> {
    parts(m, |part, kind| match kind {
        "text" => {
            part.only(&["type", "text"])?;
            Ok(ContentPart::Text(part.required_str("text")?.to_owned()))
        }
        "image_url" => {
            part.only(&["type", "image_url"])?;
            let image = part
                .obj("image_url")?
                .ok_or_else(|| invalid(&part.param("image_url"), "is required"))?;
            image_part(&image).map(ContentPart::Image)
        }
        "input_audio" => Err(invalid(&part.param("type"), "audio input is not supported")),
        "file" => Err(invalid(
            &part.param("type"),
            "file inputs are not supported",
        )),
        other => Err(invalid(
            &part.param("type"),
            format!("{other:?} is not one of text, image_url"),
        )),
    })
}

/// `content` as parts: a string is one text part; each part of an array
/// goes through `part` with its `type`.
fn parts(
    m: &Obj,
    part: impl Fn(&Obj, &str) -> Result<ContentPart, Status>,
) -> Result<Vec<ContentPart>, Status> {
    match m.get("content") {
        None => Err(invalid(&m.param("content"), "is required")),
        Some(Value::String(text)) => Ok(vec![ContentPart::Text(text.clone())]),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(j, item)| {
                let p = Obj::new(item, format!("{}[{j}]", m.param("content")))?;
                let kind = p.required_str("type")?;
                part(&p, kind)
            })
            .collect(),
        Some(_) => Err(invalid(
            &m.param("content"),
            "must be a string or an array of parts",
        )),
    }
}

/// `{"url": ..., "detail": ...}`: an http(s) URL, or a base64 `data:` URL
/// whose bytes are kept inline.
fn image_part(image: &Obj) -> Result<Image, Status> {
    image.only(&["url", "detail"])?;
    let detail = match image.str("detail")? {
        None | Some("auto") => ImageDetail::Auto,
        Some("low") => ImageDetail::Low,
        Some("high") => ImageDetail::High,
        Some(other) => {
            return Err(invalid(
                &image.param("detail"),
                format!("{other:?} is not one of auto, low, high"),
            ));
        }
    };
    let url = image.required_str("url")?;
    let source = match url.strip_prefix("data:") {
        None => ImageSource::Url(url.to_owned()),
        Some(data) => {
            let bad = || {
                invalid(
                    &image.param("url"),
                    "is not a base64 data URL (data:<image type>;base64,<bytes>)",
                )
            };
            let (mime_type, encoded) = data.split_once(";base64,").ok_or_else(bad)?;
            let bytes = STANDARD.decode(encoded).map_err(|_| bad())?;
            ImageSource::Inline(InlineImage {
                mime_type: mime_type.to_ascii_lowercase(),
                data: bytes.into(),
            })
        }
    };
    Ok(Image { source, detail })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> Result<Vec<PromptMessage>, Status> {
        messages(&Obj::new(&body, "").unwrap())
    }

    fn param(status: Status) -> String {
        use tonic_types::StatusExt;
        status.get_details_bad_request().unwrap().field_violations[0]
            .field
            .clone()
    }

    #[test]
    fn every_message_kind_becomes_a_prompt_message() {
        let prompt = parse(json!({"messages": [
            {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K", "detail": "low"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat"}
        ]}))
        .unwrap();
        assert_eq!(prompt[0].role, Role::System);
        let ContentPart::Image(image) = &prompt[1].content[1] else {
            panic!()
        };
        assert_eq!(image.detail, ImageDetail::Low);
        assert!(
            matches!(&image.source, ImageSource::Inline(i) if i.mime_type == "image/png" && i.data.len() == 6)
        );
        assert!(matches!(&prompt[2].content[..], [ContentPart::ToolCall(c)] if c.id == "call_1"));
        assert_eq!(prompt[3].role, Role::Tool);
        assert!(
            matches!(&prompt[3].content[..], [ContentPart::ToolResult(r)] if r.call_id == "call_1")
        );
    }

    #[test]
    fn what_is_not_supported_is_refused_by_name() {
        let cases = [
            (
                json!({"role": "user", "content": "hi", "audio": {}}),
                "messages[0].audio",
            ),
            (
                json!({"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}]}),
                "messages[0].content[0].image_url.url",
            ),
            (
                json!({"role": "function", "content": "x", "name": "f"}),
                "messages[0].role",
            ),
            (
                json!({"role": "assistant", "content": "x", "function_call": {"name": "f"}}),
                "messages[0].function_call",
            ),
            (
                json!({"role": "tool", "content": "x"}),
                "messages[0].tool_call_id",
            ),
        ];
        for (message, expected) in cases {
            let err = parse(json!({"messages": [message]})).unwrap_err();
            assert_eq!(param(err), expected);
        }
    }
}
