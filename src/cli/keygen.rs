//! `dialogd keygen`: a new API key, or the successor of a configured one
//! for a rotation. The key is printed once and stored nowhere; the config
//! entry carries only its hash.

use crate::auth::keys;
use crate::config::{ApiKeySettings, Settings};
use std::process::ExitCode;

const DAY: i64 = 86_400;

pub struct KeygenOptions {
    pub id: Option<String>,
    pub tenant: Option<String>,
    pub roles: String,
    /// Days until the new key expires (`expires`), if it should.
    pub valid_days: Option<u32>,
    /// A configured key id the new key succeeds.
    pub successor_of: Option<String>,
    /// Days the old key stays valid beside its successor (default 14).
    pub overlap_days: Option<u32>,
}

fn now_secs() -> i64 {
    crate::dialogue::model::Time::now().0 / 1_000_000_000
}

fn usage(message: &str) -> ExitCode {
    eprintln!("dialogd keygen: {message}");
    ExitCode::from(2)
}

/// Runs `keygen` with `settings` (needed only for `--successor-of`).
pub fn run(options: KeygenOptions, settings: Option<Result<Settings, String>>) -> ExitCode {
    let now = now_secs();
    if settings.is_some() && options.successor_of.is_none() {
        return usage("--config is read only with --successor-of");
    }
    if options.overlap_days.is_some() && options.successor_of.is_none() {
        return usage("--overlap-days is for --successor-of (the old key's overlap)");
    }
    let mut old_expiry = None;
    let mut entry = match &options.successor_of {
        None => {
            let (Some(id), Some(tenant)) = (options.id.clone(), options.tenant.clone()) else {
                return usage("--id and --tenant are needed (or --successor-of)");
            };
            let roles: Vec<&str> = options.roles.split(',').map(str::trim).collect();
            let mut parsed = Vec::new();
            for role in roles {
                match crate::auth::Role::parse(role) {
                    Some(r) => parsed.push(r),
                    None => return usage(&format!("unknown role {role:?} (user, admin, auditor)")),
                }
            }
            ApiKeySettings {
                id,
                tenant,
                roles: parsed,
                ..Default::default()
            }
        }
        Some(old_id) => {
            let settings = match settings {
                Some(Ok(s)) => s,
                Some(Err(e)) => return usage(&e),
                None => return usage("--successor-of needs --config naming the server's config"),
            };
            old_expiry = settings
                .auth
                .api_keys
                .iter()
                .find(|k| &k.id == old_id)
                .and_then(|k| k.limits().ok()?.expires);
            match successor(&settings, old_id, options.id.clone(), now) {
                Ok(entry) => entry,
                Err(e) => return usage(&e),
            }
        }
    };
    if !keys::valid_id(&entry.id) {
        return usage("the key id must be 1 to 64 of a-z, 0-9 and '-'");
    }
    entry.expires = options
        .valid_days
        .or(options.successor_of.as_ref().map(|_| 90))
        .map(|days| keys::format_time(now + i64::from(days) * DAY));
    let (key, secret) = keys::generate(&entry.id);
    entry.hash = keys::hash_for_config(&secret);
    println!(
        "# API key {} (shown once; give it to the client, keep it secret):",
        entry.id
    );
    println!("# {key}");
    if let Some(old) = &options.successor_of {
        // Never later than the old key's own expiry.
        let overlap_end = now + i64::from(options.overlap_days.unwrap_or(14)) * DAY;
        let retire = keys::format_time(old_expiry.map_or(overlap_end, |t| t.min(overlap_end)));
        println!("#");
        println!("# It succeeds {old:?} and acts as the same principal. Add this entry, move");
        println!("# clients to the new key, then retire the old one: set");
        println!("#   expires = {retire:?}");
        println!("# on the entry with id = {old:?}, and remove that entry once it has expired.");
    }
    println!();
    print!("{}", config_entry(&entry));
    ExitCode::SUCCESS
}

/// A key acting as `old_id`'s principal with its tenant, roles, scopes
/// and networks, named `new_id` or `<old id without date>-<yyyymmdd>`.
fn successor(
    settings: &Settings,
    old_id: &str,
    new_id: Option<String>,
    now: i64,
) -> Result<ApiKeySettings, String> {
    let keys = &settings.auth.api_keys;
    let old = keys
        .iter()
        .find(|k| k.id == old_id)
        .ok_or_else(|| format!("no key {old_id:?} in auth.api_keys of the config"))?;
    let id = new_id.unwrap_or_else(|| {
        let date: String = keys::format_time(now)
            .chars()
            .filter(char::is_ascii_digit)
            .take(8)
            .collect();
        let base = match old_id.rsplit_once('-') {
            Some((base, tail)) if tail.len() == 8 && tail.bytes().all(|b| b.is_ascii_digit()) => {
                base
            }
            _ => old_id,
        };
        format!("{base}-{date}")
    });
    if keys.iter().any(|k| k.id == id) {
        return Err(format!(
            "a key {id:?} exists already: name the new one with --id"
        ));
    }
    Ok(ApiKeySettings {
        id,
        hash: String::new(),
        principal: Some(old.principal.clone().unwrap_or_else(|| old.id.clone())),
        tenant: old.tenant.clone(),
        roles: old.roles.clone(),
        scopes: old.scopes.clone(),
        not_before: None,
        expires: None,
        allowed_networks: old.allowed_networks.clone(),
    })
}

/// The `[[auth.api_keys]]` TOML of `entry`.
fn config_entry(entry: &ApiKeySettings) -> String {
    let list = |items: Vec<String>| {
        let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
        format!("[{}]", quoted.join(", "))
    };
    let mut out = String::from("[[auth.api_keys]]\n");
    out += &format!("id = {:?}\nhash = {:?}\n", entry.id, entry.hash);
    if let Some(p) = &entry.principal {
        out += &format!("principal = {p:?}\n");
    }
    out += &format!("tenant = {:?}\n", entry.tenant);
    let roles = entry
        .roles
        .iter()
        .map(|r| role_name(*r).to_string())
        .collect();
    out += &format!("roles = {}\n", list(roles));
    if let Some(scopes) = &entry.scopes {
        out += &format!(
            "scopes = {}\n",
            list(scopes.iter().map(|s| s.as_str().into()).collect())
        );
    }
    if !entry.allowed_networks.is_empty() {
        out += &format!(
            "allowed_networks = {}\n",
            list(entry.allowed_networks.clone())
        );
    }
    if let Some(t) = &entry.expires {
        out += &format!("expires = {t:?}\n");
    }
    out
}

fn role_name(role: crate::auth::Role) -> &'static str {
    match role {
        crate::auth::Role::User => "user",
        crate::auth::Role::Admin => "admin",
        crate::auth::Role::Auditor => "auditor",
    }
}
