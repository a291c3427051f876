//! The engine's request rules: sizes from `[limits]` and fixed ranges of
//! generation settings. Every violation names its field so a client can fix
//! all of them at once. Content (text, images, tool results) is checked in
//! `content`, tools and response formats in `tools`.

mod content;
mod tools;

pub use content::{MAX_PROMPT_MESSAGES, check_answers, check_item, check_message, check_prompt};

use super::model::{DialogueSpec, Expiration, GenerationParams, Time, UpdateMask};
use crate::config::LimitSettings;
use crate::failure::Violations;

const MAX_TTL_SECS: i64 = 10 * 365 * 24 * 3600;
const MAX_LABEL_KEY_BYTES: usize = 63;
const MAX_LABEL_VALUE_BYTES: usize = 256;
const MAX_STOP_SEQUENCES: usize = 4;
const MAX_STOP_BYTES: usize = 64;
const MAX_REQUEST_ID_BYTES: usize = 128;

/// Checks the fields of `spec` that `mask` selects (all when `None`).
/// `prefix` is the spec's path in the request, for example `dialogue`.
pub fn check_spec(
    limits: &LimitSettings,
    spec: &DialogueSpec,
    mask: Option<&UpdateMask>,
    prefix: &str,
    now: Time,
    v: &mut Violations,
) {
    let all = UpdateMask {
        model: true,
        system_prompt: true,
        labels: true,
        state: true,
        expiration: true,
    };
    let mask = mask.unwrap_or(&all);
    if mask.system_prompt && spec.system_prompt.len() > limits.max_system_prompt_bytes {
        v.add(
            format!("{prefix}.system_prompt"),
            format!(
                "is {} bytes; at most {} are allowed",
                spec.system_prompt.len(),
                limits.max_system_prompt_bytes
            ),
        );
    }
    if mask.labels {
        if spec.labels.len() > limits.max_labels {
            v.add(
                format!("{prefix}.labels"),
                format!(
                    "has {} entries; at most {} are allowed",
                    spec.labels.len(),
                    limits.max_labels
                ),
            );
        }
        for (key, value) in &spec.labels {
            if key.is_empty()
                || key.len() > MAX_LABEL_KEY_BYTES
                || key.chars().any(char::is_control)
            {
                v.add(
                    format!("{prefix}.labels"),
                    format!("key {key:?} must be 1 to {MAX_LABEL_KEY_BYTES} bytes without control characters"),
                );
            }
            if value.len() > MAX_LABEL_VALUE_BYTES {
                v.add(
                    format!("{prefix}.labels[{key}]"),
                    format!("value is longer than {MAX_LABEL_VALUE_BYTES} bytes"),
                );
            }
        }
    }
    if mask.state
        && let Some(state) = &spec.state
    {
        let size = serde_json::to_vec(state)
            .map(|b| b.len())
            .unwrap_or(usize::MAX);
        if size > limits.max_state_bytes {
            v.add(
                format!("{prefix}.state"),
                format!(
                    "is {size} bytes as JSON; at most {} are allowed",
                    limits.max_state_bytes
                ),
            );
        }
    }
    if mask.expiration {
        match spec.expiration {
            Expiration::Ttl(secs) if !(0..=MAX_TTL_SECS).contains(&secs) => {
                v.add(format!("{prefix}.ttl"), "must be 0 (never) to 10 years")
            }
            Expiration::At(t) if t <= now => {
                v.add(format!("{prefix}.expire_time"), "must be in the future")
            }
            _ => {}
        }
    }
}

/// Checks the fixed ranges of generation settings.
pub fn check_params(params: &GenerationParams, v: &mut Violations) {
    let mut range = |name: &str, value: Option<f32>, lo: f32, hi: f32, lo_open: bool| {
        if let Some(x) = value {
            let above_lo = if lo_open { x > lo } else { x >= lo };
            if !(above_lo && x <= hi) {
                let open = if lo_open { "greater than" } else { "from" };
                v.add(
                    format!("generation.{name}"),
                    format!("must be {open} {lo} to {hi}"),
                );
            }
        }
    };
    range("temperature", params.temperature, 0.0, 2.0, false);
    range("top_p", params.top_p, 0.0, 1.0, true);
    range(
        "presence_penalty",
        params.presence_penalty,
        -2.0,
        2.0,
        false,
    );
    range(
        "frequency_penalty",
        params.frequency_penalty,
        -2.0,
        2.0,
        false,
    );
    if let Some(max) = params.max_tokens
        && !(1..=1_000_000).contains(&max)
    {
        v.add("generation.max_tokens", "must be 1 to 1000000");
    }
    if params.stop.len() > MAX_STOP_SEQUENCES {
        v.add(
            "generation.stop",
            format!("at most {MAX_STOP_SEQUENCES} sequences are allowed"),
        );
    }
    for (i, s) in params.stop.iter().enumerate() {
        if s.is_empty() || s.len() > MAX_STOP_BYTES {
            v.add(
                format!("generation.stop[{i}]"),
                format!("must be 1 to {MAX_STOP_BYTES} bytes"),
            );
        }
    }
    tools::check(params, v);
}

/// Checks an idempotency key: 1 to 128 printable ASCII characters.
pub fn check_request_id(request_id: &str, v: &mut Violations) {
    if request_id.is_empty()
        || request_id.len() > MAX_REQUEST_ID_BYTES
        || !request_id.bytes().all(|b| b.is_ascii_graphic())
    {
        v.add("request_id", "must be 1 to 128 printable ASCII characters");
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The fields `v` names, in order.
    pub(super) fn fields(v: Violations) -> Vec<String> {
        match v.into_result(()) {
            Ok(()) => vec![],
            Err(crate::failure::Invalid(list)) => list.into_iter().map(|f| f.field).collect(),
        }
    }

    fn spec() -> DialogueSpec {
        DialogueSpec {
            model: String::new(),
            system_prompt: String::new(),
            labels: BTreeMap::new(),
            state: None,
            expiration: Expiration::Never,
        }
    }

    #[test]
    fn oversized_spec_fields_are_each_named() {
        let limits = LimitSettings {
            max_system_prompt_bytes: 4,
            max_labels: 1,
            max_state_bytes: 8,
            ..LimitSettings::default()
        };
        let mut s = spec();
        s.system_prompt = "12345".into();
        s.labels = BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]);
        s.state = Some(
            serde_json::json!({"k": "a long value"})
                .as_object()
                .unwrap()
                .clone(),
        );
        s.expiration = Expiration::Ttl(-1);
        let mut v = Violations::default();
        check_spec(&limits, &s, None, "dialogue", Time(0), &mut v);
        assert_eq!(
            fields(v),
            [
                "dialogue.system_prompt",
                "dialogue.labels",
                "dialogue.state",
                "dialogue.ttl"
            ]
        );
    }

    #[test]
    fn the_mask_limits_what_is_checked() {
        let limits = LimitSettings {
            max_system_prompt_bytes: 1,
            ..LimitSettings::default()
        };
        let mut s = spec();
        s.system_prompt = "too long".into();
        let mask = UpdateMask {
            labels: true,
            ..UpdateMask::default()
        };
        let mut v = Violations::default();
        check_spec(&limits, &s, Some(&mask), "dialogue", Time(0), &mut v);
        assert!(fields(v).is_empty());
    }

    #[test]
    fn generation_ranges_are_enforced() {
        let params = GenerationParams {
            temperature: Some(2.5),
            top_p: Some(0.0),
            max_tokens: Some(0),
            stop: vec![String::new()],
            presence_penalty: Some(-3.0),
            frequency_penalty: Some(f32::NAN),
            ..Default::default()
        };
        let mut v = Violations::default();
        check_params(&params, &mut v);
        assert_eq!(
            fields(v),
            [
                "generation.temperature",
                "generation.top_p",
                "generation.presence_penalty",
                "generation.frequency_penalty",
                "generation.max_tokens",
                "generation.stop[0]"
            ]
        );
        let mut v = Violations::default();
        check_params(
            &GenerationParams {
                temperature: Some(0.0),
                top_p: Some(1.0),
                ..Default::default()
            },
            &mut v,
        );
        assert!(fields(v).is_empty());
    }

    #[test]
    fn request_ids_are_printable_ascii() {
        let mut v = Violations::default();
        check_request_id("retry-1", &mut v);
        assert!(fields(v).is_empty());
        for bad in ["", "has space", &"x".repeat(129)] {
            let mut v = Violations::default();
            check_request_id(bad, &mut v);
            assert_eq!(fields(v), ["request_id"]);
        }
    }
}
