//! The checks a turn passes: before anything runs (sizes, settings, the
//! content filter, known models), against its dialogue's stored state
//! (answers to pending tool calls, the dialogue's image bytes), against
//! what the routed model can do (capabilities), and the caller's token
//! budget.

use super::{Engine, EngineError, quota_key};
use crate::auth::Principal;
use crate::backend::ModelRequest;
use crate::dialogue::content::{filtered_texts, media_bytes, tool_calls};
use crate::dialogue::model::{Dialogue, Time, TurnRequest};
use crate::dialogue::validate;
use crate::failure::Violations;
use crate::router::ModelRoute;

impl Engine {
    /// The checks a turn passes before anything runs (sizes, settings,
    /// content filter, models); they need no stored state.
    pub fn check_turn_request(&self, request: &TurnRequest) -> Result<(), EngineError> {
        let mut v = Violations::default();
        validate::check_message(&self.limits, &request.content, &mut v);
        validate::check_params(&request.params, &mut v);
        if let Some(rid) = &request.request_id {
            validate::check_request_id(rid, &mut v);
        }
        if self.blocks(filtered_texts(&request.content)) {
            return Err(EngineError::ContentBlocked);
        }
        if let Some(model) = &request.params.model {
            self.check_model(model, "generation.model", &mut v);
        }
        if let Some(spec) = &request.create_if_missing {
            let now = Time::now();
            validate::check_spec(&self.limits, spec, None, "dialogue_defaults", now, &mut v);
            self.check_model(&spec.model, "dialogue_defaults.model", &mut v);
        }
        Ok(v.into_result(())?)
    }

    /// Whether the content filter blocks one of `texts`.
    pub(super) fn blocks(&self, texts: Vec<&str>) -> bool {
        self.filter
            .as_ref()
            .is_some_and(|f| texts.into_iter().any(|t| f.first_match(t).is_some()))
    }

    /// Refuses a model call the routed model cannot take (images without
    /// `vision`, tools without `tools`, ...), naming what it lacks.
    pub(super) fn check_capabilities(
        &self,
        route: &ModelRoute,
        request: &ModelRequest,
    ) -> Result<(), EngineError> {
        match route.lacks(&request.needs()) {
            None => Ok(()),
            Some(lacking) => {
                let names: Vec<&str> = lacking.iter().map(|c| c.as_str()).collect();
                Err(EngineError::FailedPrecondition {
                    reason: "MODEL_LACKS_CAPABILITY",
                    message: format!(
                        "model {} lacks the capability {} this request needs (models[].capabilities)",
                        route.name,
                        names.join(", ")
                    ),
                })
            }
        }
    }

    /// Checks a turn against its dialogue's stored state: its tool results
    /// answer the previous turn's calls, and its images fit the dialogue's
    /// media limit.
    pub(super) async fn check_against_history(
        &self,
        dialogue: &Dialogue,
        request: &TurnRequest,
    ) -> Result<(), EngineError> {
        let previous = match dialogue.turn_count {
            0 => Vec::new(),
            n => self.history().before(dialogue, n, 1).await?,
        };
        let pending: Vec<&str> = previous
            .iter()
            .flat_map(|turn| tool_calls(&turn.content))
            .map(|call| call.id.as_str())
            .collect();
        let mut v = Violations::default();
        validate::check_answers(&request.content, &pending, &mut v);
        v.into_result(())?;
        let media = dialogue.media_bytes + media_bytes(&request.content);
        if media > self.limits.max_dialogue_media_bytes {
            return Err(EngineError::FailedPrecondition {
                reason: "DIALOGUE_MEDIA_LIMIT",
                message: format!(
                    "{} would hold {media} bytes of inline images; at most {} are allowed per dialogue",
                    dialogue.id.resource_name(),
                    self.limits.max_dialogue_media_bytes
                ),
            });
        }
        Ok(())
    }

    /// Refuses a call while the caller's token budget is spent.
    pub(super) async fn admit_tokens(&self, caller: &Principal) -> Result<(), EngineError> {
        let Some(budget) = &self.token_budget else {
            return Ok(());
        };
        budget
            .admit(&quota_key(caller))
            .await
            .inspect_err(|_| crate::meter::rate_limited("tokens"))
            .map_err(|retry_after| EngineError::RateLimited {
                reason: "TOKEN_RATE_LIMITED",
                message: format!(
                    "token budget of {} per minute spent for this caller",
                    self.limits.tokens_per_minute
                ),
                retry_after,
            })
    }
}
