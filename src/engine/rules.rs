//! Traffic rules: an ordered table, evaluated before the model call, whose
//! first matching rule routes the request to another model, answers it
//! with a canned reply or refuses it. The table can be replaced while
//! serving (a reloaded rules file); hit counts carry over by rule name.

use super::EngineError;
use crate::auth::{Principal, Role};
use crate::config::{RefuseStatus, RuleSettings, parse_hours};
use crate::dialogue::model::{ContentPart, Time};
use aho_corasick::AhoCorasick;
use regex::RegexSet;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a rule is asked about a request.
pub struct RuleInput<'a> {
    pub caller: &'a Principal,
    /// The dialogue's labels (None for a stateless completion).
    pub labels: Option<&'a BTreeMap<String, String>>,
    /// The model asked for, after defaults.
    pub model: &'a str,
    /// The caller's newest message.
    pub newest: &'a [ContentPart],
    pub images: bool,
    pub tools: bool,
    /// Tokens of the request's own messages; counted only if a rule asks.
    pub tokens: &'a dyn Fn() -> u64,
}

/// What the first matching rule decided.
pub struct Decision {
    pub rule: Arc<str>,
    pub action: Decided,
}

pub enum Decided {
    /// Call this public model instead.
    Route(String),
    /// Answer with this text, calling no model.
    Reply(String),
    Refuse(EngineError),
}

/// One rule as the admin listing shows it.
pub struct RuleView {
    pub name: String,
    /// route, reply or refuse.
    pub action: &'static str,
    /// The rule as configured, JSON.
    pub definition: String,
    pub hits: u64,
}

/// The rule table in force, replaceable while serving.
pub struct RuleBook {
    table: RwLock<Arc<Vec<Rule>>>,
    /// Where the rules come from (a file's path, or `config`).
    source: String,
    /// When the table in force was put in.
    loaded: RwLock<Time>,
}

impl Default for RuleBook {
    /// No rules.
    fn default() -> Self {
        RuleBook {
            table: RwLock::default(),
            source: "config".into(),
            loaded: RwLock::new(Time::now()),
        }
    }
}

struct Rule {
    name: Arc<str>,
    when: Conditions,
    then: Action,
    hits: Arc<AtomicU64>,
    settings: RuleSettings,
}

enum Action {
    Route(String),
    Reply(String),
    Refuse {
        status: RefuseStatus,
        message: String,
        retry_after: Duration,
    },
}

impl Action {
    fn label(&self) -> &'static str {
        match self {
            Action::Route(_) => "route",
            Action::Reply(_) => "reply",
            Action::Refuse { .. } => "refuse",
        }
    }
}

struct Conditions {
    principals: Vec<String>,
    tenants: Vec<String>,
    roles: Vec<Role>,
    labels: BTreeMap<String, String>,
    models: Vec<String>,
    keywords: Option<AhoCorasick>,
    patterns: Option<RegexSet>,
    min_tokens: Option<u64>,
    max_tokens: Option<u64>,
    images: Option<bool>,
    tools: Option<bool>,
    /// Minutes of the UTC day, start included, end excluded.
    hours: Option<(u16, u16)>,
}

impl RuleBook {
    /// A book holding `rules` (validated by `config::validate_rules`)
    /// from `source`.
    pub fn new(rules: &[RuleSettings], source: &str) -> Result<RuleBook, String> {
        let book = RuleBook {
            source: source.to_owned(),
            ..RuleBook::default()
        };
        book.replace(rules)?;
        Ok(book)
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// When the table in force was put in.
    pub fn loaded(&self) -> Time {
        *self.loaded.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `rules` in force; rules keep their hit counts by name.
    pub fn replace(&self, rules: &[RuleSettings]) -> Result<(), String> {
        let counts: HashMap<Arc<str>, Arc<AtomicU64>> = self
            .current()
            .iter()
            .map(|r| (r.name.clone(), r.hits.clone()))
            .collect();
        let compiled = rules
            .iter()
            .map(|settings| {
                let mut rule = compile(settings)?;
                if let Some(hits) = counts.get(&rule.name) {
                    rule.hits = hits.clone();
                }
                Ok(rule)
            })
            .collect::<Result<Vec<_>, String>>()?;
        // A poisoned lock only means a panic elsewhere; the table is whole.
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(compiled);
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = Time::now();
        Ok(())
    }

    fn current(&self) -> Arc<Vec<Rule>> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The first rule matching `input`, counted as a hit.
    pub fn decide(&self, input: &RuleInput) -> Option<Decision> {
        let table = self.current();
        if table.is_empty() {
            return None;
        }
        let tokens = std::cell::OnceCell::new();
        let count = || *tokens.get_or_init(|| (input.tokens)());
        let minute = minute_of_day(SystemTime::now());
        let rule = table.iter().find(|r| r.when.hold(input, &count, minute))?;
        rule.hits.fetch_add(1, Ordering::Relaxed);
        crate::meter::rule_hit(&rule.name, rule.then.label());
        let action = match &rule.then {
            Action::Route(model) => Decided::Route(model.clone()),
            Action::Reply(text) => Decided::Reply(text.clone()),
            Action::Refuse {
                status,
                message,
                retry_after,
            } => Decided::Refuse(EngineError::RuleRefused {
                status: *status,
                message: message.clone(),
                retry_after: *retry_after,
            }),
        };
        Some(Decision {
            rule: rule.name.clone(),
            action,
        })
    }

    /// The rules in order, with their hits.
    pub fn list(&self) -> Vec<RuleView> {
        self.current()
            .iter()
            .map(|r| RuleView {
                name: r.name.to_string(),
                action: r.then.label(),
                definition: serde_json::to_string(&r.settings).unwrap_or_default(),
                hits: r.hits.load(Ordering::Relaxed),
            })
            .collect()
    }
}

fn compile(settings: &RuleSettings) -> Result<Rule, String> {
    let when = &settings.when;
    let at =
        |what: &str, e: &dyn std::fmt::Display| format!("rule {:?}: {what}: {e}", settings.name);
    let keywords = match when.keywords.is_empty() {
        true => None,
        false => Some(
            AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build(&when.keywords)
                .map_err(|e| at("when.keywords", &e))?,
        ),
    };
    let patterns = match when.patterns.is_empty() {
        true => None,
        false => Some(RegexSet::new(&when.patterns).map_err(|e| at("when.patterns", &e))?),
    };
    let hours = match &when.hours_utc {
        Some(h) => Some(parse_hours(h).map_err(|e| at("when.hours_utc", &e))?),
        None => None,
    };
    let then = &settings.then;
    let action = match (&then.route, &then.reply, &then.refuse) {
        (Some(model), None, None) => Action::Route(model.clone()),
        (None, Some(text), None) => Action::Reply(text.clone()),
        (None, None, Some(refuse)) => Action::Refuse {
            status: refuse.status,
            message: refuse.message.clone(),
            retry_after: Duration::from_secs(refuse.retry_after_secs),
        },
        _ => return Err(at("then", &"give exactly one of route, reply and refuse")),
    };
    Ok(Rule {
        name: settings.name.as_str().into(),
        when: Conditions {
            principals: when.principals.clone(),
            tenants: when.tenants.clone(),
            roles: when.roles.iter().filter_map(|r| Role::parse(r)).collect(),
            labels: when.labels.clone(),
            models: when.models.clone(),
            keywords,
            patterns,
            min_tokens: when.min_tokens,
            max_tokens: when.max_tokens,
            images: when.images,
            tools: when.tools,
            hours,
        },
        then: action,
        hits: Arc::default(),
        settings: settings.clone(),
    })
}

impl Conditions {
    /// Cheap conditions first; tokens are counted last, and only once.
    fn hold(&self, input: &RuleInput, tokens: &dyn Fn() -> u64, minute: u16) -> bool {
        let caller = input.caller;
        let listed =
            |list: &[String], value: &str| list.is_empty() || list.iter().any(|v| v == value);
        listed(&self.principals, &caller.id)
            && listed(&self.tenants, &caller.tenant)
            && listed(&self.models, input.model)
            && (self.roles.is_empty() || self.roles.iter().any(|r| caller.roles.contains(r)))
            && self.images.is_none_or(|want| want == input.images)
            && self.tools.is_none_or(|want| want == input.tools)
            && self.labels.iter().all(|(k, v)| {
                input
                    .labels
                    .is_some_and(|labels| labels.get(k).is_some_and(|have| have == v))
            })
            && self
                .hours
                .is_none_or(|(start, end)| in_hours(minute, start, end))
            && self.text_matches(input.newest)
            && (self.min_tokens.is_none() && self.max_tokens.is_none() || {
                let n = tokens();
                self.min_tokens.is_none_or(|min| n >= min)
                    && self.max_tokens.is_none_or(|max| n <= max)
            })
    }

    fn text_matches(&self, message: &[ContentPart]) -> bool {
        if self.keywords.is_none() && self.patterns.is_none() {
            return true;
        }
        let texts = crate::dialogue::content::filtered_texts(message);
        let keyword = self
            .keywords
            .as_ref()
            .is_none_or(|k| texts.iter().any(|t| k.is_match(*t)));
        keyword
            && self
                .patterns
                .as_ref()
                .is_none_or(|p| texts.iter().any(|t| p.is_match(t)))
    }
}

fn in_hours(minute: u16, start: u16, end: u16) -> bool {
    match start < end {
        true => (start..end).contains(&minute),
        // Wraps past midnight.
        false => minute >= start || minute < end,
    }
}

fn minute_of_day(now: SystemTime) -> u16 {
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    u16::try_from((secs % 86_400) / 60).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_wrap_past_midnight() {
        assert!(in_hours(23 * 60, 22 * 60, 6 * 60));
        assert!(in_hours(60, 22 * 60, 6 * 60));
        assert!(!in_hours(12 * 60, 22 * 60, 6 * 60));
        assert!(in_hours(9 * 60, 9 * 60, 17 * 60));
        assert!(!in_hours(17 * 60, 9 * 60, 17 * 60));
    }
}
