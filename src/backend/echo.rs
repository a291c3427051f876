//! The built-in `echo` backend: replies `echo: <last user message>`,
//! deterministic, streamed word by word with an optional delay per word.
//! It makes the service runnable and testable with no model server.

use super::{BackendError, ModelBackend, ModelReply, ModelRequest, ReplyChunk, ReplyStream};
use crate::dialogue::model::{FinishReason, GenerationParams, Role, Usage};
use async_trait::async_trait;
use futures_util::StreamExt;
use std::time::Duration;

pub struct EchoBackend {
    name: String,
    delay: Duration,
}

impl EchoBackend {
    pub fn new(name: &str, delay: Duration) -> EchoBackend {
        EchoBackend {
            name: name.to_owned(),
            delay,
        }
    }
}

/// The reply's pieces (words with their trailing whitespace, so they
/// concatenate to the reply) and why it ended. `max_tokens` counts words;
/// a stop sequence cuts the reply before it.
fn echo_pieces(request: &ModelRequest) -> (Vec<String>, FinishReason) {
    let last_user = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.text.as_str())
        .unwrap_or("");
    let mut reply = format!("echo: {last_user}");
    let mut finish = FinishReason::Stop;
    let GenerationParams {
        stop, max_tokens, ..
    } = &request.params;
    if let Some(cut) = stop.iter().filter_map(|s| reply.find(s.as_str())).min() {
        reply.truncate(cut);
    }
    let mut pieces: Vec<String> = reply
        .split_inclusive(char::is_whitespace)
        .map(str::to_owned)
        .collect();
    if let Some(max) = max_tokens.map(|m| m as usize)
        && pieces.len() > max
    {
        pieces.truncate(max);
        finish = FinishReason::Length;
    }
    (pieces, finish)
}

fn usage(request: &ModelRequest, completion_words: usize) -> Usage {
    let prompt_words: usize = request
        .messages
        .iter()
        .map(|m| m.text.split_whitespace().count())
        .sum();
    Usage {
        prompt_tokens: prompt_words as u64,
        completion_tokens: completion_words as u64,
    }
}

#[async_trait]
impl ModelBackend for EchoBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "echo"
    }

    async fn complete(
        &self,
        model: &str,
        request: &ModelRequest,
    ) -> Result<ModelReply, BackendError> {
        let (pieces, finish_reason) = echo_pieces(request);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay * pieces.len() as u32).await;
        }
        Ok(ModelReply {
            model: Some(model.to_owned()),
            usage: Some(usage(request, pieces.len())),
            text: pieces.concat(),
            finish_reason,
        })
    }

    async fn stream(
        &self,
        model: &str,
        request: &ModelRequest,
    ) -> Result<ReplyStream, BackendError> {
        let (pieces, finish_reason) = echo_pieces(request);
        let finished = ReplyChunk::Finished {
            finish_reason,
            model: Some(model.to_owned()),
            usage: Some(usage(request, pieces.len())),
        };
        let delay = self.delay;
        let words = futures_util::stream::iter(pieces).then(move |piece| async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(ReplyChunk::Text(piece))
        });
        Ok(Box::pin(
            words.chain(futures_util::stream::once(async { Ok(finished) })),
        ))
    }

    async fn healthy(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialogue::model::PromptMessage;

    fn request(text: &str, params: GenerationParams) -> ModelRequest {
        ModelRequest {
            messages: vec![
                PromptMessage {
                    role: Role::System,
                    text: "be brief".into(),
                },
                PromptMessage {
                    role: Role::User,
                    text: text.into(),
                },
            ],
            params,
        }
    }

    #[tokio::test]
    async fn streams_word_by_word_and_matches_the_unary_reply() {
        let backend = EchoBackend::new("echo", Duration::ZERO);
        let req = request("hello big world", GenerationParams::default());
        let chunks: Vec<_> = backend.stream("echo", &req).await.unwrap().collect().await;
        let texts: Vec<String> = chunks
            .iter()
            .filter_map(|c| match c {
                Ok(ReplyChunk::Text(t)) => Some(t.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(texts, ["echo: ", "hello ", "big ", "world"]);
        let unary = backend.complete("echo", &req).await.unwrap();
        assert_eq!(unary.text, texts.concat());
        assert_eq!(unary.finish_reason, FinishReason::Stop);
        assert_eq!(
            unary.usage,
            Some(Usage {
                prompt_tokens: 5,
                completion_tokens: 4
            })
        );
        assert!(matches!(
            chunks.last(),
            Some(Ok(ReplyChunk::Finished { .. }))
        ));
    }

    #[test]
    fn max_tokens_and_stop_sequences_shape_the_reply() {
        let params = GenerationParams {
            max_tokens: Some(2),
            ..Default::default()
        };
        let (pieces, finish) = echo_pieces(&request("one two three", params));
        assert_eq!(
            (pieces.concat().as_str(), finish),
            ("echo: one ", FinishReason::Length)
        );

        let params = GenerationParams {
            stop: vec!["three".into()],
            ..Default::default()
        };
        let (pieces, finish) = echo_pieces(&request("one two three", params));
        assert_eq!(
            (pieces.concat().as_str(), finish),
            ("echo: one two ", FinishReason::Stop)
        );
    }
}
