//! `dialogd chat`: a terminal client for people trying the service. Each
//! line typed (or piped) is a turn of one dialogue, created if missing;
//! the reply is printed as it streams, then its finish reason and tokens.

use crate::grpc::pb::dialogue::v1 as pb;
use pb::converse_stream_response::Event;
use pb::dialogue_service_client::DialogueServiceClient;
use std::io::{IsTerminal, Write};
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::metadata::{Ascii, MetadataValue};

pub struct ChatOptions {
    /// The server: `host:port`, `http://host:port` or `https://host:port`.
    pub addr: String,
    pub dialogue: String,
    /// An API key or JWT, sent as a bearer token.
    pub key: Option<String>,
    /// The model of a dialogue this creates (the server's default if none).
    pub model: Option<String>,
}

/// Chats until stdin ends; false if any turn failed.
pub async fn run(options: ChatOptions) -> Result<bool, String> {
    let authorization = match &options.key {
        None => None,
        Some(key) => Some(
            format!("Bearer {key}")
                .parse::<MetadataValue<Ascii>>()
                .map_err(|_| "the key is not valid ASCII".to_string())?,
        ),
    };
    let url = super::endpoint(&options.addr);
    let mut client = DialogueServiceClient::connect(url.clone())
        .await
        .map_err(|e| {
            format!(
                "cannot connect to {url} (from --addr {}): {e}",
                options.addr
            )
        })?;
    let interactive = std::io::stdin().is_terminal();
    let prompt = || {
        if interactive {
            print!("> ");
            let _ = std::io::stdout().flush();
        }
    };
    if interactive {
        println!(
            "dialogue {} on {}; type a message (Ctrl-D ends)",
            options.dialogue, options.addr
        );
    }
    prompt();
    let mut all_ok = true;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
        let text = line.trim();
        if !text.is_empty()
            && let Err(status) = turn(&mut client, &options, authorization.as_ref(), text).await
        {
            eprintln!("error: {:?}: {}", status.code(), status.message());
            all_ok = false;
        }
        prompt();
    }
    Ok(all_ok)
}

async fn turn(
    client: &mut DialogueServiceClient<tonic::transport::Channel>,
    options: &ChatOptions,
    authorization: Option<&MetadataValue<Ascii>>,
    text: &str,
) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(pb::ConverseRequest {
        name: format!("dialogues/{}", options.dialogue),
        content: vec![pb::ContentPart {
            kind: Some(pb::content_part::Kind::Text(text.to_owned())),
        }],
        create_if_missing: true,
        dialogue_defaults: Some(pb::Dialogue {
            model: options.model.clone().unwrap_or_default(),
            ..Default::default()
        }),
        ..Default::default()
    });
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.clone());
    }
    let mut events = client.converse_stream(request).await?.into_inner();
    let mut stdout = std::io::stdout();
    while let Some(message) = events.message().await? {
        match message.event {
            Some(Event::Delta(delta)) => {
                let _ = write!(stdout, "{}", delta.text);
                let _ = stdout.flush();
            }
            Some(Event::End(end)) => {
                let usage = end.usage.unwrap_or_default();
                let reason = pb::FinishReason::try_from(end.finish_reason)
                    .map(|r| r.as_str_name())
                    .unwrap_or("FINISH_REASON_UNSPECIFIED");
                let _ = writeln!(
                    stdout,
                    "\n[{reason}, {}+{} tokens]",
                    usage.prompt_tokens, usage.completion_tokens
                );
            }
            // The chat client declares no tools; a model calling one is shown.
            Some(Event::ToolCallDelta(call)) => {
                if !call.name.is_empty() {
                    let _ = write!(stdout, "\n[tool call {} {}] ", call.id, call.name);
                }
                let _ = write!(stdout, "{}", call.arguments);
            }
            Some(Event::Start(_)) | None => {}
        }
    }
    Ok(())
}
