//! The `anthropic` backend: `POST {base_url}/v1/messages`, unary and
//! streaming (SSE events mapped onto the same reply chunks as OpenAI's),
//! and `GET {base_url}/v1/models` for health.

mod decode;
mod wire;
mod wire_messages;

use super::http::Endpoint;
use super::openai::build_headers;
use super::{
    ApiKey, BackendError, BuildError, ModelBackend, ModelReply, ModelRequest, ReplyStream,
};
use crate::config::BackendSettings;
use async_trait::async_trait;
use decode::{EventDecoder, Message};
use reqwest::header::HeaderValue;

pub struct AnthropicBackend {
    endpoint: Endpoint,
    messages_url: reqwest::Url,
    models_url: reqwest::Url,
    default_max_tokens: u32,
}

impl AnthropicBackend {
    fn body<'a>(&self, model: &str, request: &'a ModelRequest, stream: bool) -> wire::Body<'a> {
        wire::body(model, request, self.default_max_tokens, stream)
    }

    pub fn new(name: &str, settings: &BackendSettings) -> Result<AnthropicBackend, BuildError> {
        let BackendSettings::Anthropic {
            base_url,
            api_key_env,
            version,
            default_max_tokens,
            headers,
            timeouts,
        } = settings
        else {
            return Err(BuildError {
                name: name.to_owned(),
                detail: "not an anthropic backend".into(),
            });
        };
        let key = ApiKey::from_env(api_key_env.as_deref());
        let mut all_headers = build_headers(name, headers, key.as_ref(), Some("x-api-key"))?;
        let version = HeaderValue::from_str(version).map_err(|_| BuildError {
            name: name.to_owned(),
            detail: "invalid anthropic version".into(),
        })?;
        all_headers.insert("anthropic-version", version);
        let base = base_url.trim_end_matches('/');
        Ok(AnthropicBackend {
            endpoint: Endpoint::new(name, all_headers, key, timeouts)?,
            messages_url: Endpoint::url(name, &format!("{base}/v1/messages"))?,
            models_url: Endpoint::url(name, &format!("{base}/v1/models"))?,
            default_max_tokens: *default_max_tokens,
        })
    }
}

#[async_trait]
impl ModelBackend for AnthropicBackend {
    fn name(&self) -> &str {
        &self.endpoint.name
    }

    fn kind(&self) -> &'static str {
        "anthropic"
    }

    async fn complete(
        &self,
        model: &str,
        request: &ModelRequest,
    ) -> Result<ModelReply, BackendError> {
        let message: Message = self
            .endpoint
            .post_json(&self.messages_url, &self.body(model, request, false))
            .await?;
        Ok(message.reply())
    }

    async fn stream(
        &self,
        model: &str,
        request: &ModelRequest,
    ) -> Result<ReplyStream, BackendError> {
        let decoder = EventDecoder::new(&self.endpoint.name);
        self.endpoint
            .post_sse(
                &self.messages_url,
                &self.body(model, request, true),
                decoder,
            )
            .await
    }

    async fn healthy(&self) -> bool {
        self.endpoint.probe(&self.models_url).await
    }
}
