//! Planning a stateless completion (the OpenAI and Anthropic fronts'
//! calls without a stored dialogue): the caller's messages are the prompt
//! and must fit the model's context window; nothing is stored.

use super::plan::{PlannedTurn, has_images, has_tool_parts, user_turn};
use super::rules::RuleInput;
use super::{Engine, EngineError, quota_key};
use crate::backend::ModelRequest;
use crate::dialogue::content::{estimate_tokens, filtered_texts, tokens_at_most};
use crate::dialogue::context::MESSAGE_OVERHEAD;
use crate::dialogue::model::{
    CompletionRequest, DialogueId, GenerationParams, PromptMessage, Role, Time,
};
use crate::dialogue::validate;
use crate::failure::Violations;
use std::time::{Duration, Instant};

impl Engine {
    /// Checks a stateless completion and fits nothing: the caller's
    /// messages are the prompt and must fit the model's context window.
    pub(super) async fn plan_completion(
        &self,
        request: CompletionRequest,
    ) -> Result<PlannedTurn, EngineError> {
        let started = Instant::now();
        let mut v = Violations::default();
        validate::check_prompt(&self.limits, &request.messages, &mut v);
        validate::check_params(&request.params, &mut v);
        let model = request
            .params
            .model
            .clone()
            .unwrap_or_else(|| self.model_or_default(""));
        self.check_model(&model, "model", &mut v);
        v.into_result(())?;
        let callers_texts = request
            .messages
            .iter()
            .filter(|m| matches!(m.role, Role::User | Role::Tool))
            .flat_map(|m| filtered_texts(&m.content))
            .collect();
        if self.blocks(callers_texts) {
            return Err(EngineError::ContentBlocked);
        }
        let newest = request
            .messages
            .iter()
            .rev()
            .find(|m| matches!(m.role, Role::User | Role::Tool))
            .map_or(&[][..], |m| &m.content[..]);
        let ruled = self.apply_rules(RuleInput {
            caller: &request.caller,
            labels: None,
            model: &model,
            newest,
            images: request.messages.iter().any(|m| has_images(&m.content)),
            tools: !request.params.tools.is_empty()
                || request.messages.iter().any(|m| has_tool_parts(&m.content)),
            tokens: &|| prompt_tokens(&request.messages, &request.params),
        })?;
        let model = ruled.model;
        self.admit_tokens(&request.caller).await?;
        let route = self
            .router
            .route(&model)
            .cloned()
            .ok_or_else(|| EngineError::invalid("model", format!("unknown model {model:?}")))?;
        let room = u64::from(route.context_tokens)
            .saturating_sub(u64::from(request.params.max_tokens.unwrap_or(0)));
        // Tokenizing is a stateless call's costliest step, and a token
        // covers at least one byte: when the messages' bytes fit, so do
        // their tokens, and the count waits until an upstream reports no
        // usage (`commit`).
        let at_most = request
            .messages
            .iter()
            .map(|m| tokens_at_most(&m.content) + MESSAGE_OVERHEAD)
            .sum::<u64>()
            + request.params.schema_tokens();
        // A canned reply goes to no model: no window to fit.
        let prompt_tokens = match at_most <= room || ruled.canned.is_some() {
            true => None,
            false => Some(prompt_tokens(&request.messages, &request.params)),
        };
        if let Some(tokens) = prompt_tokens
            && tokens > room
        {
            return Err(EngineError::invalid(
                "messages",
                format!(
                    "take {tokens} tokens; {model} fits {room} with the requested max_tokens (context window {})",
                    route.context_tokens
                ),
            ));
        }
        let CompletionRequest {
            caller,
            messages,
            params,
            deadline,
        } = request;
        let last = messages
            .last()
            .cloned()
            .unwrap_or_else(|| PromptMessage::text(Role::User, ""));
        // The messages move into the model request: no copy of the prompt.
        let mut model_request = ModelRequest { messages, params };
        if ruled.canned.is_none() {
            self.images_to_text(&route, &mut model_request.messages)
                .await?;
            self.check_capabilities(&route, &model_request)?;
        }
        let dialogue_id = DialogueId::generate();
        let semantic = match ruled.canned {
            None => self.semantic_query(&caller, &route, &model_request, &dialogue_id),
            Some(_) => None,
        };
        Ok(PlannedTurn {
            cache_key: match ruled.canned {
                None => self.cache_key(&caller, &route, &model_request),
                Some(_) => None,
            },
            quota_key: quota_key(&caller),
            create: None,
            expected_turn_count: 0,
            request: model_request,
            route,
            summary: None,
            prompt_tokens,
            // Not counted: a stateless turn is neither stored nor shown.
            user_turn: user_turn(0, last.role, last.content.into_vec(), 0, Time::now()),
            started,
            waited: Duration::ZERO,
            deadline,
            stateless: true,
            settings_digest: String::new(),
            semantic,
            dialogue_id,
            rule: ruled.rule,
            canned: ruled.canned,
        })
    }
}

/// Tokens a stateless call's prompt takes (`MESSAGE_OVERHEAD` each).
pub(super) fn prompt_tokens(messages: &[PromptMessage], params: &GenerationParams) -> u64 {
    messages
        .iter()
        .map(|m| estimate_tokens(&m.content) + MESSAGE_OVERHEAD)
        .sum::<u64>()
        + params.schema_tokens()
}
