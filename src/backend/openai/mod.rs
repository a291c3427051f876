//! The `openai` backend: `POST {base_url}{chat_path}` (chat completions),
//! unary and `stream: true` (SSE), and `GET {base_url}/models` for health.
//! Works with OpenAI, vLLM, Ollama's /v1, llama.cpp's server, TGI, LiteLLM
//! and Azure OpenAI (`chat_path` with api-version, `api_key_header = "api-key"`).

mod decode;
mod wire;
mod wire_messages;

pub use decode::ChunkDecoder;

use super::http::Endpoint;
use super::{
    ApiKey, BackendError, BuildError, EmbedRequest, Embedded, ModelBackend, ModelReply,
    ModelRequest, ReplyStream,
};
use crate::config::BackendSettings;
use async_trait::async_trait;
use decode::Completion;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};

pub struct OpenAiBackend {
    endpoint: Endpoint,
    chat_url: reqwest::Url,
    models_url: reqwest::Url,
    embeddings_url: reqwest::Url,
}

fn header_error(name: &str, what: &str) -> BuildError {
    BuildError {
        name: name.to_owned(),
        detail: format!("invalid header {what}"),
    }
}

/// Headers from config plus the key, as `Authorization: Bearer` or as the
/// named header.
pub(super) fn build_headers(
    name: &str,
    extra: &std::collections::BTreeMap<String, String>,
    key: Option<&ApiKey>,
    key_header: Option<&str>,
) -> Result<HeaderMap, BuildError> {
    let mut headers = HeaderMap::new();
    for (k, v) in extra {
        let header = HeaderName::from_bytes(k.as_bytes()).map_err(|_| header_error(name, k))?;
        let value = HeaderValue::from_str(v).map_err(|_| header_error(name, k))?;
        headers.insert(header, value);
    }
    if let Some(key) = key {
        let (header, value) = match key_header {
            Some(h) => (
                HeaderName::from_bytes(h.as_bytes()).map_err(|_| header_error(name, h))?,
                key.expose().to_owned(),
            ),
            None => (AUTHORIZATION, format!("Bearer {}", key.expose())),
        };
        let mut value =
            HeaderValue::from_str(&value).map_err(|_| header_error(name, "holding the API key"))?;
        value.set_sensitive(true);
        headers.insert(header, value);
    }
    Ok(headers)
}

impl OpenAiBackend {
    pub fn new(name: &str, settings: &BackendSettings) -> Result<OpenAiBackend, BuildError> {
        let BackendSettings::Openai {
            base_url,
            api_key_env,
            chat_path,
            api_key_header,
            headers,
            timeouts,
        } = settings
        else {
            return Err(BuildError {
                name: name.to_owned(),
                detail: "not an openai backend".into(),
            });
        };
        let key = ApiKey::from_env(api_key_env.as_deref());
        let headers = build_headers(name, headers, key.as_ref(), api_key_header.as_deref())?;
        let base = base_url.trim_end_matches('/');
        Ok(OpenAiBackend {
            endpoint: Endpoint::new(name, headers, key, timeouts)?,
            chat_url: Endpoint::url(name, &format!("{base}{chat_path}"))?,
            models_url: Endpoint::url(name, &format!("{base}/models"))?,
            embeddings_url: Endpoint::url(name, &format!("{base}/embeddings"))?,
        })
    }
}

#[async_trait]
impl ModelBackend for OpenAiBackend {
    fn name(&self) -> &str {
        &self.endpoint.name
    }

    fn kind(&self) -> &'static str {
        "openai"
    }

    async fn complete(
        &self,
        model: &str,
        request: &ModelRequest,
    ) -> Result<ModelReply, BackendError> {
        let completion: Completion = self
            .endpoint
            .post_json(&self.chat_url, &wire::body(model, request, false))
            .await?;
        completion.reply(&self.endpoint.name)
    }

    async fn stream(
        &self,
        model: &str,
        request: &ModelRequest,
    ) -> Result<ReplyStream, BackendError> {
        let decoder = ChunkDecoder::new(&self.endpoint.name);
        self.endpoint
            .post_sse(&self.chat_url, &wire::body(model, request, true), decoder)
            .await
    }

    async fn healthy(&self) -> bool {
        self.endpoint.probe(&self.models_url).await
    }

    async fn embed(&self, model: &str, request: &EmbedRequest) -> Result<Embedded, BackendError> {
        let mut body = serde_json::json!({
            "model": model,
            "input": request.inputs,
            "encoding_format": "float",
        });
        if let Some(dimensions) = request.dimensions {
            body["dimensions"] = dimensions.into();
        }
        let reply: wire::EmbeddingsReply =
            self.endpoint.post_json(&self.embeddings_url, &body).await?;
        reply.embedded(&self.endpoint.name, request.inputs.len())
    }
}
