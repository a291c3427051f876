//! API key lifetimes, rotation and the networks callers may come from,
//! over gRPC and HTTP, with callers on other loopback addresses
//! (127.0.0.2, 127.0.0.3: all of 127/8 is the loopback interface).

use crate::helpers::*;
use crate::process::{ServerProcess, binary};
use crate::security::with_auth;
use dialogd::auth::keys;
use dialogd::config::{ApiKeySettings, AuthMode, Settings};
use dialogd::pb::dialogue::v1 as pb;
use std::net::IpAddr;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;

/// A key for `id` in `tenant` (user role) with `customize`d limits; the
/// bearer credential and its config entry.
fn key(
    id: &str,
    tenant: &str,
    customize: impl FnOnce(&mut ApiKeySettings),
) -> (String, ApiKeySettings) {
    let (bearer, secret) = keys::generate(id);
    let mut entry = ApiKeySettings {
        id: id.into(),
        hash: keys::hash_for_config(&secret),
        tenant: tenant.into(),
        roles: vec![dialogd::auth::Role::User],
        ..Default::default()
    };
    customize(&mut entry);
    (bearer, entry)
}

fn auditor(settings: &mut Settings) -> String {
    let (bearer, mut entry) = key("auditor", "ops", |_| {});
    entry.roles = vec![dialogd::auth::Role::Auditor];
    settings.auth.api_keys.push(entry);
    bearer
}

/// A gRPC channel to `app` whose connection comes from `source`.
async fn channel_from(app: &TestApp, source: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .local_address(Some(source.parse().unwrap()))
        .connect()
        .await
        .expect("connects from another loopback address")
}

async fn list_from(app: &TestApp, source: &str, bearer: &str) -> Result<(), tonic::Status> {
    let mut client =
        pb::dialogue_service_client::DialogueServiceClient::new(channel_from(app, source).await);
    client
        .list_dialogues(with_auth(pb::ListDialoguesRequest::default(), Some(bearer)))
        .await
        .map(|_| ())
}

/// GET /v1/dialogues from `source` with `headers`: the HTTP status and the
/// error's `status` field, if any.
async fn http_list_from(
    app: &TestApp,
    source: &str,
    bearer: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let client = plain_http()
        .local_address(source.parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    let mut request = client
        .get(format!("http://{}/v1/dialogues", app.addr))
        .bearer_auth(bearer);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    (
        status,
        body["error"]["status"].as_str().unwrap_or("").to_string(),
    )
}

async fn audited(app: &TestApp, auditor: &str) -> Vec<pb::AuditEvent> {
    app.api
        .list_audit_events(with_auth(
            pb::ListAuditEventsRequest::default(),
            Some(auditor),
        ))
        .await
        .unwrap()
        .events
}

#[tokio::test]
async fn keys_outside_their_validity_are_refused_like_wrong_ones_and_audited() {
    let hour = 3600;
    let now = dialogd::dialogue::model::Time::now().0 / 1_000_000_000;
    let (current, current_entry) = key("current", "acme", |k| {
        k.not_before = Some(keys::format_time(now - hour));
        k.expires = Some(keys::format_time(now + hour));
    });
    let (expired, expired_entry) = key("expired", "acme", |k| {
        k.expires = Some(keys::format_time(now - 1))
    });
    let (early, early_entry) = key("early", "acme", |k| {
        k.not_before = Some(keys::format_time(now + hour))
    });
    let mut auditor_key = String::new();
    let app = spawn_app_with(|s| {
        s.auth.mode = AuthMode::Required;
        s.auth.max_failures_per_minute = 0;
        s.auth.api_keys = vec![current_entry, expired_entry, early_entry];
        auditor_key = auditor(s);
    })
    .await;
    let wrong = format!("{}x", current);
    assert!(list_from(&app, "127.0.0.1", &current).await.is_ok());
    for refused in [&expired, &early, &wrong] {
        let status = list_from(&app, "127.0.0.1", refused).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{refused}");
        // Nothing tells an expired key from a wrong one.
        assert_eq!(status.message(), "invalid or expired credentials");
        let (http, _) = http_list_from(&app, "127.0.0.1", refused, &[]).await;
        assert_eq!(http, 401);
    }
    let refusals = audited(&app, &auditor_key)
        .await
        .into_iter()
        .filter(|e| e.status == "Unauthenticated" && e.action.contains("ListDialogues"))
        .count();
    assert_eq!(refusals, 6, "each refused call (gRPC and HTTP) is audited");
}

#[tokio::test]
async fn bad_key_times_and_networks_stop_the_start_naming_the_key() {
    for (customize, expected) in [
        (
            Box::new(|k: &mut ApiKeySettings| k.expires = Some("next tuesday".into()))
                as Box<dyn FnOnce(&mut ApiKeySettings)>,
            "auth.api_keys \"k\": expires",
        ),
        (
            Box::new(|k: &mut ApiKeySettings| {
                k.not_before = Some("2027-02-01T00:00:00Z".into());
                k.expires = Some("2027-01-01T00:00:00Z".into());
            }),
            "not_before must come before expires",
        ),
        (
            Box::new(|k: &mut ApiKeySettings| k.allowed_networks = vec!["10.0.0.0/33".into()]),
            "allowed_networks[0]",
        ),
    ] {
        let (_, entry) = key("k", "acme", customize);
        let mut settings = test_settings(std::path::Path::new("/nonexistent"));
        settings.auth.mode = AuthMode::Required;
        settings.auth.api_keys = vec![entry];
        let err = settings.validate().unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
    }
}

#[tokio::test]
async fn the_global_allow_list_refuses_other_addresses_whatever_their_key() {
    let (alice, alice_entry) = key("alice", "acme", |_| {});
    let mut auditor_key = String::new();
    let app = spawn_app_with(|s| {
        s.auth.mode = AuthMode::Required;
        s.auth.max_failures_per_minute = 0;
        s.auth.api_keys = vec![alice_entry];
        s.auth.allowed_networks = vec!["127.0.0.1/32".into(), "::1/128".into()];
        auditor_key = auditor(s);
    })
    .await;
    assert!(list_from(&app, "127.0.0.1", &alice).await.is_ok());
    let wrong = format!("{alice}x");
    for bearer in [&alice, &wrong] {
        let status = list_from(&app, "127.0.0.2", bearer).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(
            error_reason(&status).as_deref(),
            Some("ADDRESS_NOT_ALLOWED")
        );
        assert_eq!(
            http_list_from(&app, "127.0.0.2", bearer, &[]).await,
            (403, "PERMISSION_DENIED".to_string())
        );
    }
    // Probes still reach the health check.
    let mut health = HealthClient::new(channel_from(&app, "127.0.0.2").await);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(serving.status, 1);
    let refused: Vec<_> = audited(&app, &auditor_key)
        .await
        .into_iter()
        .filter(|e| e.status == "PermissionDenied")
        .collect();
    assert_eq!(
        refused.len(),
        4,
        "gRPC and HTTP refusals audited: {refused:?}"
    );
    assert!(refused.iter().all(|e| e.client_ip == "127.0.0.2"));
}

#[tokio::test]
async fn a_key_bound_to_a_network_is_refused_elsewhere_before_its_secret_is_checked() {
    let (bound, bound_entry) = key("bound", "acme", |k| {
        k.allowed_networks = vec!["127.0.0.2/32".into()]
    });
    let app = spawn_app_with(|s| {
        s.auth.mode = AuthMode::Required;
        s.auth.max_failures_per_minute = 0;
        s.auth.api_keys = vec![bound_entry];
    })
    .await;
    assert!(list_from(&app, "127.0.0.2", &bound).await.is_ok());
    assert_eq!(http_list_from(&app, "127.0.0.2", &bound, &[]).await.0, 200);
    let wrong = format!("{bound}x");
    for bearer in [&bound, &wrong] {
        let status = list_from(&app, "127.0.0.1", bearer).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "same answer, right or wrong secret"
        );
        assert_eq!(http_list_from(&app, "127.0.0.1", bearer, &[]).await.0, 403);
    }
    // From its own network a wrong secret is still just wrong.
    let status = list_from(&app, "127.0.0.2", &wrong).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let (alice, alice_entry) = key("alice", "acme", |_| {});
    let mut auditor_key = String::new();
    let app = spawn_app_with(|s| {
        s.auth.mode = AuthMode::Required;
        s.auth.api_keys = vec![alice_entry];
        s.auth.trusted_proxies = vec!["127.0.0.3".into()];
        s.auth.allowed_networks = vec!["192.0.2.0/24".into(), "127.0.0.1".into()];
        auditor_key = auditor(s);
    })
    .await;
    let via_proxy = [("x-forwarded-for", "192.0.2.7")];
    assert_eq!(
        http_list_from(&app, "127.0.0.3", &alice, &via_proxy)
            .await
            .0,
        200
    );
    let forwarded = [("forwarded", "for=\"192.0.2.8:4711\";proto=https")];
    assert_eq!(
        http_list_from(&app, "127.0.0.3", &alice, &forwarded)
            .await
            .0,
        200
    );
    // The same header from a caller that is no trusted proxy: ignored.
    assert_eq!(
        http_list_from(&app, "127.0.0.2", &alice, &via_proxy)
            .await
            .0,
        403
    );
    // A forged first hop is passed over: the proxy's own hop is the caller.
    let forged = [("x-forwarded-for", "192.0.2.7, 198.51.100.1")];
    assert_eq!(
        http_list_from(&app, "127.0.0.3", &alice, &forged).await.0,
        403
    );
    // gRPC metadata is the same header.
    let mut client = pb::dialogue_service_client::DialogueServiceClient::new(
        channel_from(&app, "127.0.0.3").await,
    );
    let mut request = with_auth(pb::ListDialoguesRequest::default(), Some(&alice));
    request
        .metadata_mut()
        .insert("x-forwarded-for", "192.0.2.9".parse().unwrap());
    assert!(client.list_dialogues(request).await.is_ok());
    // The audit names the caller, not the proxy.
    let ips: Vec<String> = audited(&app, &auditor_key)
        .await
        .into_iter()
        .filter(|e| e.status == "PermissionDenied")
        .map(|e| e.client_ip)
        .collect();
    assert_eq!(ips.len(), 2, "{ips:?}");
    assert!(ips.contains(&"127.0.0.2".to_string()) && ips.contains(&"198.51.100.1".to_string()));
}

/// Runs `dialogd` with `args`; its standard output.
fn dialogd(args: &[&str]) -> String {
    let out = std::process::Command::new(binary())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The key a keygen output shows, and its config entry.
fn split_keygen(output: &str) -> (String, String) {
    let key = output
        .lines()
        .find_map(|l| l.strip_prefix("# dk_"))
        .map(|k| format!("dk_{k}"))
        .expect("a key line");
    let entry: String = output
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    (key, entry)
}

#[tokio::test]
async fn keygen_makes_a_successor_that_overlaps_and_the_expiry_gauge_shows_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dialogd.toml");
    let (old_key, old_entry) = split_keygen(&dialogd(&[
        "keygen",
        "--id",
        "app",
        "--tenant",
        "acme",
        "--valid-days",
        "30",
    ]));
    std::fs::write(&config, format!("[auth]\nmode = \"required\"\n{old_entry}")).unwrap();
    let config_arg = config.to_str().unwrap();
    let successor = dialogd(&["--config", config_arg, "keygen", "--successor-of", "app"]);
    assert!(successor.contains("principal = \"app\""), "{successor}");
    assert!(
        successor.contains("expires = "),
        "successors expire: {successor}"
    );
    let (new_key, new_entry) = split_keygen(&successor);
    std::fs::write(
        &config,
        format!("[auth]\nmode = \"required\"\n{old_entry}{new_entry}"),
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start_with(&data, &["--config", config_arg]).await;
    let api = server.api().await;
    let create = with_auth(
        pb::CreateDialogueRequest {
            dialogue: Some(pb::Dialogue::default()),
        },
        Some(&old_key),
    );
    let made = api.create_dialogue(create).await.unwrap();
    // Both keys are the same principal: the successor sees the dialogue.
    let seen = api
        .get_dialogue(with_auth(
            pb::GetDialogueRequest {
                name: made.name.clone(),
                ..Default::default()
            },
            Some(&new_key),
        ))
        .await
        .unwrap();
    assert_eq!(seen.name, made.name);
    let metrics = reqwest::get(format!("http://{}/metrics", server.metrics_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let days: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("dialogd_api_key_earliest_expiry_days "))
        .expect("the earliest expiry gauge")
        .parse()
        .unwrap();
    assert!(
        (29.9..=30.0).contains(&days),
        "the 30-day key comes first: {days}"
    );
    assert!(metrics.contains("dialogd_api_key_expires_timestamp_seconds{key_id=\"app\"}"));
    server.kill9().await;
}

#[tokio::test]
async fn a_principal_bound_to_a_network_is_refused_elsewhere_with_any_credential() {
    const SECRET_ENV: &str = "DIALOGD_TEST_PRINCIPAL_NETWORKS_SECRET";
    const SECRET: &str = "principal-networks-secret-of-32-bytes!";
    unsafe { std::env::set_var(SECRET_ENV, SECRET) };
    let (key, entry) = key("svc-key", "acme", |k| k.principal = Some("svc-a".into()));
    let app = spawn_app_with(|s| {
        s.auth.mode = AuthMode::Required;
        s.auth.max_failures_per_minute = 0;
        s.auth.api_keys = vec![entry];
        s.auth.jwt.hs256_secret_env = Some(SECRET_ENV.into());
        s.auth
            .principal_networks
            .insert("svc-a".into(), vec!["127.0.0.2/32".into()]);
    })
    .await;
    let issuer = dialogd::auth::jwt::JwtIssuer::new("dialogd", "dialogd", SECRET.as_bytes());
    let now = u64::try_from(dialogd::dialogue::model::Time::now().0 / 1_000_000_000).unwrap();
    let svc = dialogd::auth::Principal::new(
        "svc-a".into(),
        "acme".into(),
        [dialogd::auth::Role::User].into(),
        None,
    );
    let token = issuer.issue(&svc, now, 300).unwrap();
    let forged = dialogd::auth::jwt::JwtIssuer::new(
        "dialogd",
        "dialogd",
        b"another-secret-of-at-least-32-bytes!",
    )
    .issue(&svc, now, 300)
    .unwrap();
    for credential in [&key, &token] {
        assert!(list_from(&app, "127.0.0.2", credential).await.is_ok());
        let status = list_from(&app, "127.0.0.1", credential).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(
            http_list_from(&app, "127.0.0.1", credential, &[]).await.0,
            403
        );
    }
    // Elsewhere a forged token gets the same answer as a good one; from
    // the principal's network it is just invalid.
    let status = list_from(&app, "127.0.0.1", &forged).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = list_from(&app, "127.0.0.2", &forged).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}
