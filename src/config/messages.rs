//! Configuration errors as users write keys: `server.listen` in TOML,
//! `DIALOGD_SERVER__LISTEN` in the environment — never figment's profile
//! prefix (`default.server.listen`) or its doubled backticks.

use figment::error::Kind;

/// One line per problem, joined with "; ".
pub fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| one(&e))
        .collect::<Vec<_>>()
        .join("; ")
}

fn one(e: &figment::Error) -> String {
    let mut path = e.path.clone();
    let what = match &e.kind {
        Kind::UnknownField(field, expected) => {
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            format!(
                "is not a configuration key here (known: {})",
                expected.join(", ")
            )
        }
        Kind::UnknownVariant(found, expected) => {
            format!("{found:?} is not one of {}", quoted(expected))
        }
        Kind::InvalidType(actual, expected) => format!("expected {expected}, found {actual}"),
        Kind::InvalidValue(actual, expected) => format!("expected {expected}, found {actual}"),
        Kind::MissingField(field) => {
            if path.last().map(String::as_str) != Some(field.as_ref()) {
                path.push(field.to_string());
            }
            "is required".into()
        }
        Kind::Message(message) => message.clone(),
        other => other.to_string(),
    };
    let from_env = e
        .metadata
        .as_ref()
        .is_some_and(|m| m.name.contains("environment"));
    let key = if path.is_empty() {
        "configuration".to_string()
    } else if from_env {
        format!("DIALOGD_{}", path.join("__").to_ascii_uppercase())
    } else {
        path.join(".")
    };
    let source = e
        .metadata
        .as_ref()
        .and_then(|m| m.source.as_ref())
        .and_then(|s| s.file_path())
        .map(|file| format!(" (in {})", file.display()))
        .unwrap_or_default();
    format!("{key}: {what}{source}")
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}
