//! `[rules]`: the ordered table of traffic rules evaluated before every
//! model call — written here (`[[rules.rule]]`, fixed until a restart) or in
//! a file of `[[rule]]` tables that is reloaded on SIGHUP and when it
//! changes. The first rule whose conditions all hold decides: route to a
//! model, answer with a canned reply, or refuse.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RulesSettings {
    /// A TOML file of `[[rule]]` tables; reloaded on SIGHUP and when it
    /// changes (a file that does not validate leaves the old table on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// How often the file's modification time is checked, in seconds.
    pub reload_check_secs: u64,
    /// Rules written in the config itself (only without `file`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rule: Vec<RuleSettings>,
}

impl Default for RulesSettings {
    fn default() -> Self {
        RulesSettings {
            file: None,
            reload_check_secs: 5,
            rule: Vec::new(),
        }
    }
}

/// One rule: a name, conditions and an action.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    /// Names the rule in metrics, replies and the admin listing.
    pub name: String,
    /// Conditions, all of which must hold; none given: every request.
    #[serde(default)]
    pub when: RuleConditions,
    /// What happens to a matching request.
    pub then: RuleAction,
}

/// What a request must be like for a rule to apply. Lists match when any
/// entry matches; `labels` when every label given is equal.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuleConditions {
    /// The caller's principal ID.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<String>,
    /// One of the caller's roles (`user`, `admin`, `auditor`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// The dialogue's labels (a stateless completion has none).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The model the request asks for (or its dialogue's, or the default).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Words or phrases in the caller's newest message (ASCII letters
    /// compared case-insensitively).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    /// Regular expressions (Rust `regex` syntax) searched in the caller's
    /// newest message.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<String>,
    /// Tokens of the request's own messages (a turn's new message; all
    /// messages of a stateless completion), at least / at most.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Whether the request's messages carry images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<bool>,
    /// Whether the request carries tools (definitions, calls or results).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<bool>,
    /// Time of day, UTC, `HH:MM-HH:MM` (start included, end excluded; may
    /// wrap past midnight).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hours_utc: Option<String>,
}

/// A rule's action: exactly one of `route`, `reply` and `refuse`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuleAction {
    /// Send the request to this public model instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Answer with this text; no model is called or charged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// Refuse the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refuse: Option<RefuseSettings>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RefuseSettings {
    pub status: RefuseStatus,
    /// Told to the caller.
    pub message: String,
    /// With `resource_exhausted` and `unavailable`: when to retry.
    #[serde(default = "default_retry_after_secs")]
    pub retry_after_secs: u64,
}

fn default_retry_after_secs() -> u64 {
    30
}

/// The statuses a rule may refuse with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefuseStatus {
    InvalidArgument,
    PermissionDenied,
    FailedPrecondition,
    ResourceExhausted,
    Unavailable,
}

/// The rules file's shape.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    rule: Vec<RuleSettings>,
}

/// Reads a rules file (not yet validated against the models).
pub fn read_rule_file(path: &Path) -> Result<Vec<RuleSettings>, String> {
    if !path.is_file() {
        return Err(format!("rules file {} does not exist", path.display()));
    }
    use figment::providers::Format;
    figment::Figment::from(figment::providers::Toml::file(path))
        .extract::<RuleFile>()
        .map(|f| f.rule)
        .map_err(|e| format!("rules file {}: {e}", path.display()))
}

/// Longest rule name: names are metric labels.
const MAX_NAME: usize = 64;

/// Checks a rule table against the served models; the error names the rule.
pub fn validate_rules(rules: &[RuleSettings], models: &[&str]) -> Result<(), String> {
    let mut names = HashSet::new();
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("rule {:?} (#{})", rule.name, i + 1);
        let name_ok = !rule.name.is_empty()
            && rule.name.len() <= MAX_NAME
            && rule
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok {
            return Err(format!(
                "{at}: a name is 1 to {MAX_NAME} of ASCII letters, digits, '-', '_' and '.'"
            ));
        }
        if !names.insert(rule.name.as_str()) {
            return Err(format!("{at}: another rule has this name"));
        }
        check_conditions(&rule.when, models).map_err(|e| format!("{at}: when.{e}"))?;
        check_action(&rule.then, models).map_err(|e| format!("{at}: then.{e}"))?;
    }
    Ok(())
}

fn check_conditions(when: &RuleConditions, models: &[&str]) -> Result<(), String> {
    if let Some(m) = when.models.iter().find(|m| !models.contains(&m.as_str())) {
        return Err(format!("models: unknown model {m:?}"));
    }
    if let Some(role) = when
        .roles
        .iter()
        .find(|r| crate::auth::Role::parse(r).is_none())
    {
        return Err(format!(
            "roles: unknown role {role:?} (user, admin, auditor)"
        ));
    }
    if when.keywords.iter().any(|k| k.trim().is_empty()) {
        return Err("keywords: a keyword is empty".into());
    }
    for (i, pattern) in when.patterns.iter().enumerate() {
        regex::Regex::new(pattern).map_err(|e| format!("patterns[{i}]: {e}"))?;
    }
    if let (Some(min), Some(max)) = (when.min_tokens, when.max_tokens)
        && min > max
    {
        return Err(format!("min_tokens {min} is above max_tokens {max}"));
    }
    if let Some(hours) = &when.hours_utc {
        parse_hours(hours).map_err(|e| format!("hours_utc: {e}"))?;
    }
    Ok(())
}

fn check_action(then: &RuleAction, models: &[&str]) -> Result<(), String> {
    let given = [
        then.route.is_some(),
        then.reply.is_some(),
        then.refuse.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err("give exactly one of route, reply and refuse".into());
    }
    if let Some(model) = &then.route
        && !models.contains(&model.as_str())
    {
        return Err(format!(
            "route: unknown model {model:?} (known: {})",
            models.join(", ")
        ));
    }
    if then.reply.as_ref().is_some_and(|r| r.trim().is_empty()) {
        return Err("reply: the reply is empty".into());
    }
    if let Some(refuse) = &then.refuse
        && refuse.message.trim().is_empty()
    {
        return Err("refuse.message: the message is empty".into());
    }
    Ok(())
}

/// `HH:MM-HH:MM` as minutes of the day `(start, end)`.
pub fn parse_hours(text: &str) -> Result<(u16, u16), String> {
    let minutes = |hhmm: &str| -> Option<u16> {
        let (h, m) = hhmm.trim().split_once(':')?;
        let (h, m) = (h.parse::<u16>().ok()?, m.parse::<u16>().ok()?);
        (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
    };
    let bad = || format!("{text:?} is not HH:MM-HH:MM (UTC)");
    let (start, end) = text.split_once('-').ok_or_else(bad)?;
    let (start, end) = (
        minutes(start).ok_or_else(bad)?,
        minutes(end).ok_or_else(bad)?,
    );
    if start == end {
        return Err(format!("{text:?} is an empty range"));
    }
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(toml_text: &str) -> Vec<RuleSettings> {
        use figment::providers::Format;
        figment::Figment::from(figment::providers::Toml::string(toml_text))
            .extract::<RuleFile>()
            .unwrap()
            .rule
    }

    #[test]
    fn errors_name_the_rule_and_the_field() {
        let models = ["small", "large"];
        for (text, expected) in [
            (
                "[[rule]]\nname='a'\nthen={route='huge'}",
                "rule \"a\" (#1): then.route: unknown model \"huge\"",
            ),
            (
                "[[rule]]\nname='b'\nwhen={patterns=['(']}\nthen={reply='x'}",
                "rule \"b\" (#1): when.patterns[0]:",
            ),
            (
                "[[rule]]\nname='c'\nthen={reply='x', route='small'}",
                "rule \"c\" (#1): then.give exactly one",
            ),
            (
                "[[rule]]\nname='d'\nwhen={hours_utc='9-17'}\nthen={reply='x'}",
                "rule \"d\" (#1): when.hours_utc:",
            ),
            (
                "[[rule]]\nname='e'\nthen={reply='x'}\n[[rule]]\nname='e'\nthen={reply='y'}",
                "rule \"e\" (#2): another rule",
            ),
            (
                "[[rule]]\nname='f g'\nthen={reply='x'}",
                "rule \"f g\" (#1): a name is",
            ),
            (
                "[[rule]]\nname='h'\nwhen={roles=['root']}\nthen={reply='x'}",
                "when.roles: unknown role \"root\"",
            ),
        ] {
            let error = validate_rules(&rule(text), &models).unwrap_err();
            assert!(error.contains(expected), "{error} lacks {expected}");
        }
    }

    #[test]
    fn hours_may_wrap_past_midnight() {
        assert_eq!(parse_hours("22:00-06:30"), Ok((1320, 390)));
        assert_eq!(parse_hours("00:00-24:00"), Ok((0, 1440)));
        assert!(parse_hours("10:00-10:00").is_err());
        assert!(parse_hours("25:00-26:00").is_err());
    }
}
