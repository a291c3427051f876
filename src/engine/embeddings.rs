//! Embeddings (`POST /v1/embeddings`): texts turned into vectors by an
//! embeddings model, routed like turns (targets, retries, fallback,
//! breakers), with the same checks, token budget and metrics; nothing is
//! stored.

use super::{Engine, EngineError, quota_key};
use crate::auth::Principal;
use crate::backend::EmbedRequest;
use crate::dialogue::tokenizer::count_tokens;
use crate::failure::Violations;
use std::time::Instant;

/// Inputs of one request, at most (as OpenAI's API).
pub const MAX_INPUTS: usize = 2048;

pub struct EmbeddingRequest {
    pub caller: Principal,
    pub model: String,
    pub inputs: Vec<String>,
    /// Length of the vectors, for models that can shorten them.
    pub dimensions: Option<u32>,
    pub deadline: Option<Instant>,
}

pub struct EmbeddingOutcome {
    pub model: String,
    pub vectors: Vec<Vec<f32>>,
    /// Input tokens (the upstream's count, else ours).
    pub prompt_tokens: u64,
}

impl Engine {
    /// The vectors of the request's inputs, in order.
    pub async fn embed(&self, request: EmbeddingRequest) -> Result<EmbeddingOutcome, EngineError> {
        let mut v = Violations::default();
        let route = self.router.route(&request.model);
        match route {
            None => v.add(
                "model",
                format!(
                    "unknown model {:?}; embeddings models: {}",
                    request.model,
                    self.embedding_models().join(", ")
                ),
            ),
            Some(r) if !r.embeddings => v.add(
                "model",
                format!(
                    "{} is a chat model, not an embeddings model (embeddings models: {})",
                    request.model,
                    self.embedding_models().join(", ")
                ),
            ),
            Some(_) => {}
        }
        if request.inputs.is_empty() || request.inputs.len() > MAX_INPUTS {
            v.add(
                "input",
                format!(
                    "must hold 1 to {MAX_INPUTS} texts, not {}",
                    request.inputs.len()
                ),
            );
        }
        for (i, input) in request.inputs.iter().enumerate() {
            if input.is_empty() || input.len() > self.limits.max_message_bytes {
                v.add(
                    format!("input[{i}]"),
                    format!(
                        "must be 1 to {} bytes, not {}",
                        self.limits.max_message_bytes,
                        input.len()
                    ),
                );
            }
        }
        if request.dimensions.is_some_and(|d| d == 0 || d > 65_536) {
            v.add("dimensions", "must be 1 to 65536");
        }
        v.into_result(())?;
        let route = route
            .cloned()
            .ok_or_else(|| EngineError::invalid("model", "unknown"))?;
        if self.blocks(request.inputs.iter().map(String::as_str).collect()) {
            return Err(EngineError::ContentBlocked);
        }
        self.admit_tokens(&request.caller).await?;
        let call = EmbedRequest {
            inputs: request.inputs,
            dimensions: request.dimensions,
        };
        let deadline = request.deadline;
        let routed = self
            .guarded(deadline, async {
                let deadline = deadline.map(tokio::time::Instant::from_std);
                Ok(self.router.embed(&route, &call, deadline).await?)
            })
            .await?;
        let prompt_tokens = routed
            .value
            .prompt_tokens
            .unwrap_or_else(|| call.inputs.iter().map(|i| count_tokens(i)).sum());
        if let Some(budget) = &self.token_budget {
            budget
                .charge(&quota_key(&request.caller), prompt_tokens)
                .await;
        }
        crate::meter::tokens(&route.name, prompt_tokens, 0);
        Ok(EmbeddingOutcome {
            model: route.name,
            vectors: routed.value.vectors,
            prompt_tokens,
        })
    }

    fn embedding_models(&self) -> Vec<&str> {
        self.router
            .models()
            .iter()
            .filter(|m| m.embeddings)
            .map(|m| m.name.as_str())
            .collect()
    }
}
