//! Authentication, scopes and tenant isolation over the wire: every RPC
//! against every kind of credential, and no refused call changes data.

use crate::helpers::*;
use dialogd::auth::keys;
use dialogd::config::{ApiKeySettings, AuthMode};
use dialogd::pb::dialogue::v1 as pb;
use std::collections::HashMap;
use tonic::Code;

const JWT_SECRET_ENV: &str = "DIALOGD_TEST_JWT_SECRET_SECURITY";

/// A server requiring credentials, with keys for a cast of callers; the
/// failed-authentication limit is off (these tests send wrong credentials
/// by the hundred), except where a test turns it on.
pub async fn secured_app() -> (TestApp, HashMap<&'static str, String>) {
    secured_app_limiting(0).await
}

/// `secured_app` allowing `max_failures` failed authentications a minute.
async fn secured_app_limiting(max_failures: u32) -> (TestApp, HashMap<&'static str, String>) {
    // Unique per test module: the process environment is shared.
    unsafe { std::env::set_var(JWT_SECRET_ENV, "test-secret-test-secret-test-secret!") };
    // (key id, tenant, roles, narrowed scopes)
    type Person = (
        &'static str,
        &'static str,
        &'static [&'static str],
        Option<&'static [&'static str]>,
    );
    let people: [Person; 6] = [
        ("alice", "acme", &["user"], None),
        ("bob", "acme", &["user"], None),
        ("eve", "evil", &["user"], None),
        ("reader", "acme", &["user"], Some(&["dialogue:read"])),
        ("admin", "ops", &["admin"], None),
        ("auditor", "ops", &["auditor"], None),
    ];
    let mut bearer = HashMap::new();
    let mut entries = Vec::new();
    for (id, tenant, roles, scopes) in people {
        let (key, secret) = keys::generate(id);
        bearer.insert(id, key);
        // Reader shares alice's principal: same owner, read-only scope.
        let principal = (id == "reader").then(|| "alice".to_string());
        let tenant = if id == "reader" { "acme" } else { tenant };
        entries.push(ApiKeySettings {
            id: id.into(),
            hash: keys::hash_for_config(&secret),
            principal,
            tenant: tenant.into(),
            roles: roles
                .iter()
                .map(|r| dialogd::auth::Role::parse(r).unwrap())
                .collect(),
            scopes: scopes.map(|s| {
                s.iter()
                    .map(|x| dialogd::auth::Scope::parse(x).unwrap())
                    .collect()
            }),
            ..Default::default()
        });
    }
    let app = spawn_app_with(move |s| {
        s.auth.mode = AuthMode::Required;
        s.auth.api_keys = entries;
        s.auth.jwt.hs256_secret_env = Some(JWT_SECRET_ENV.into());
        s.auth.max_failures_per_minute = max_failures;
    })
    .await;
    (app, bearer)
}

pub fn with_auth<T>(message: T, key: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(k) = key {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {k}").parse().unwrap());
    }
    request
}

#[derive(Debug, Clone, Copy)]
enum Rpc {
    Create,
    Get,
    List,
    Update,
    Delete,
    ListTurns,
    Converse,
    ConverseStream,
    ListModels,
}

const ALL: [Rpc; 9] = [
    Rpc::Create,
    Rpc::Get,
    Rpc::List,
    Rpc::Update,
    Rpc::Delete,
    Rpc::ListTurns,
    Rpc::Converse,
    Rpc::ConverseStream,
    Rpc::ListModels,
];

/// Calls `rpc` on dialogue `target` with `key`; Ok or the status code.
async fn call(app: &TestApp, rpc: Rpc, target: &str, key: Option<&str>) -> Result<(), Code> {
    let d = app.api.clone();
    let result = match rpc {
        Rpc::Create => d
            .create_dialogue(with_auth(
                pb::CreateDialogueRequest {
                    dialogue: Some(pb::Dialogue::default()),
                },
                key,
            ))
            .await
            .map(|_| ()),
        Rpc::Get => d
            .get_dialogue(with_auth(
                pb::GetDialogueRequest {
                    name: name(target),
                    last_turns: 5,
                    ..Default::default()
                },
                key,
            ))
            .await
            .map(|_| ()),
        Rpc::List => d
            .list_dialogues(with_auth(pb::ListDialoguesRequest::default(), key))
            .await
            .map(|_| ()),
        Rpc::Update => d
            .update_dialogue(with_auth(
                pb::UpdateDialogueRequest {
                    dialogue: Some(pb::Dialogue {
                        name: name(target),
                        system_prompt: "hijacked".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(pbjson_types::FieldMask {
                        paths: vec!["system_prompt".into()],
                    }),
                },
                key,
            ))
            .await
            .map(|_| ()),
        Rpc::Delete => d
            .delete_dialogue(with_auth(
                pb::DeleteDialogueRequest { name: name(target) },
                key,
            ))
            .await
            .map(|_| ()),
        Rpc::ListTurns => d
            .list_turns(with_auth(
                pb::ListTurnsRequest {
                    parent: name(target),
                    ..Default::default()
                },
                key,
            ))
            .await
            .map(|_| ()),
        Rpc::Converse => d
            .converse_with(with_auth(converse_request(target, "intrusion"), key))
            .await
            .map(|_| ()),
        Rpc::ConverseStream => match d
            .converse_stream(with_auth(converse_request(target, "intrusion"), key))
            .await
        {
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            },
            Err(e) => Err(e),
        },
        Rpc::ListModels => app
            .list_models(with_auth(pb::ListModelsRequest {}, key))
            .await
            .map(|_| ()),
    };
    result.map_err(|s| s.code())
}

/// alice's dialogue as alice sees it: (turn count, system prompt).
async fn snapshot(app: &TestApp, alice: &str) -> (i64, String) {
    let got = app
        .get_dialogue(with_auth(
            pb::GetDialogueRequest {
                name: name("a1"),
                last_turns: 0,
                ..Default::default()
            },
            Some(alice),
        ))
        .await
        .unwrap();
    (got.turn_count, got.system_prompt)
}

#[tokio::test]
async fn every_rpc_refuses_every_wrong_credential_without_changing_data() {
    let (app, key) = secured_app().await;
    let alice = key["alice"].as_str();
    app.create_dialogue(with_auth(
        pb::CreateDialogueRequest {
            dialogue: Some(pb::Dialogue {
                dialogue_id: "a1".into(),
                system_prompt: "alice's".into(),
                ..Default::default()
            }),
        },
        Some(alice),
    ))
    .await
    .unwrap();
    app.converse_with(with_auth(
        converse_request("a1", "private words"),
        Some(alice),
    ))
    .await
    .unwrap();
    let before = snapshot(&app, alice).await;

    let expired = expired_token();
    let wrong_secret = format!("{}x", &key["alice"]);
    let cases: [(&str, Option<&str>); 5] = [
        ("no token", None),
        ("bad token", Some(&wrong_secret)),
        ("expired token", Some(&expired)),
        ("garbage", Some("not-a-credential")),
        (
            "forged key id",
            Some("dk_alice_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        ),
    ];
    for rpc in ALL {
        for (what, credential) in cases {
            assert_eq!(
                call(&app, rpc, "a1", credential).await,
                Err(Code::Unauthenticated),
                "{rpc:?} with {what}"
            );
        }
        // Wrong scope: the auditor holds no dialogue or model scopes.
        assert_eq!(
            call(&app, rpc, "a1", Some(&key["auditor"])).await,
            Err(Code::PermissionDenied),
            "{rpc:?} as auditor"
        );
    }
    // A read-only key of alice herself may read but not write.
    for rpc in [Rpc::Get, Rpc::List, Rpc::ListTurns] {
        assert_eq!(
            call(&app, rpc, "a1", Some(&key["reader"])).await,
            Ok(()),
            "{rpc:?} as reader"
        );
    }
    for rpc in [
        Rpc::Create,
        Rpc::Update,
        Rpc::Delete,
        Rpc::Converse,
        Rpc::ConverseStream,
        Rpc::ListModels,
    ] {
        assert_eq!(
            call(&app, rpc, "a1", Some(&key["reader"])).await,
            Err(Code::PermissionDenied),
            "{rpc:?} as reader"
        );
    }
    // Another principal of the same tenant, and another tenant: the
    // dialogue does not exist for them.
    for other in ["bob", "eve"] {
        for rpc in [
            Rpc::Get,
            Rpc::Update,
            Rpc::Delete,
            Rpc::ListTurns,
            Rpc::Converse,
            Rpc::ConverseStream,
        ] {
            assert_eq!(
                call(&app, rpc, "a1", Some(&key[other])).await,
                Err(Code::NotFound),
                "{rpc:?} as {other}"
            );
        }
        // Their own calls work, and their list never shows alice's.
        assert_eq!(call(&app, Rpc::Create, "", Some(&key[other])).await, Ok(()));
        let listed = app
            .list_dialogues(with_auth(
                pb::ListDialoguesRequest::default(),
                Some(&key[other]),
            ))
            .await
            .unwrap();
        assert_eq!(listed.dialogues.len(), 1, "{other} sees only their own");
        assert!(listed.dialogues.iter().all(|d| d.dialogue_id != "a1"));
    }
    // No refused call changed alice's dialogue.
    assert_eq!(snapshot(&app, alice).await, before);

    // The right principal can do everything (delete last).
    for rpc in ALL.into_iter().filter(|r| !matches!(r, Rpc::Delete)) {
        assert_eq!(
            call(&app, rpc, "a1", Some(alice)).await,
            Ok(()),
            "{rpc:?} as alice"
        );
    }
    assert_eq!(call(&app, Rpc::Delete, "a1", Some(alice)).await, Ok(()));
}

/// A JWT for alice that expired an hour ago (signed with the server's secret).
fn expired_token() -> String {
    let issuer = dialogd::auth::jwt::JwtIssuer::new(
        "dialogd",
        "dialogd",
        b"test-secret-test-secret-test-secret!",
    );
    let principal = dialogd::auth::Principal::new(
        "alice".into(),
        "acme".into(),
        [dialogd::auth::Role::User].into(),
        None,
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    issuer.issue(&principal, now - 3600, 60).unwrap()
}

#[tokio::test]
async fn admins_see_any_dialogues_metadata_but_not_its_content() {
    let (app, key) = secured_app().await;
    app.create_dialogue(with_auth(
        pb::CreateDialogueRequest {
            dialogue: Some(pb::Dialogue {
                dialogue_id: "secret-plans".into(),
                system_prompt: "confidential".into(),
                labels: [("team".to_string(), "x".to_string())].into(),
                ..Default::default()
            }),
        },
        Some(&key["alice"]),
    ))
    .await
    .unwrap();
    app.converse_with(with_auth(
        converse_request("secret-plans", "the password is 42"),
        Some(&key["alice"]),
    ))
    .await
    .unwrap();
    let alice = pb::DialogueOwner {
        tenant: "acme".into(),
        principal: "alice".into(),
    };
    let get_as = |caller: &'static str, owner: Option<pb::DialogueOwner>| {
        let d = app.api.clone();
        let request = with_auth(
            pb::GetDialogueRequest {
                name: name("secret-plans"),
                last_turns: 10,
                owner,
                view: 0,
            },
            Some(&key[caller]),
        );
        async move { d.get_dialogue(request).await }
    };
    // Dialogue IDs are per owner: without the owner the admin asks for
    // their own `secret-plans`, which does not exist.
    assert_eq!(
        get_as("admin", None).await.unwrap_err().code(),
        Code::NotFound
    );
    let seen = get_as("admin", Some(alice.clone())).await.unwrap();
    assert_eq!((seen.turn_count, seen.labels["team"].as_str()), (2, "x"));
    assert_eq!(seen.owner, Some(alice.clone()));
    assert!(seen.system_prompt.is_empty() && seen.recent_turns.is_empty() && seen.state.is_none());
    // Content stays out of reach.
    assert_eq!(
        call(&app, Rpc::ListTurns, "secret-plans", Some(&key["admin"])).await,
        Err(Code::NotFound)
    );
    // Naming someone else's owner is an admin's privilege only.
    for caller in ["bob", "eve", "auditor"] {
        let refused = get_as(caller, Some(alice.clone())).await.unwrap_err();
        assert!(
            matches!(refused.code(), Code::NotFound | Code::PermissionDenied),
            "{caller}: {refused:?}"
        );
        assert!(!refused.message().contains("acme"), "{caller}: {refused:?}");
    }
}

#[tokio::test]
async fn each_owner_has_its_own_dialogue_ids_so_taking_one_reveals_nothing() {
    let (app, key) = secured_app().await;
    let create = |caller: &'static str, prompt: &'static str| {
        let d = app.api.clone();
        let request = with_auth(
            pb::CreateDialogueRequest {
                dialogue: Some(pb::Dialogue {
                    dialogue_id: "chat-1".into(),
                    system_prompt: prompt.into(),
                    ..Default::default()
                }),
            },
            Some(&key[caller]),
        );
        async move { d.create_dialogue(request).await }
    };
    let mine = create("alice", "alice's").await.unwrap();
    assert_eq!(
        (mine.name.as_str(), mine.dialogue_id.as_str()),
        ("dialogues/chat-1", "chat-1")
    );
    // Bob (same tenant) and eve (another tenant) take the same ID: no
    // ALREADY_EXISTS that would reveal alice's dialogue.
    for other in ["bob", "eve"] {
        let theirs = create(other, "not alice's").await.unwrap();
        assert_eq!(theirs.name, "dialogues/chat-1");
        assert_eq!(theirs.owner.unwrap().principal, other);
    }
    assert_eq!(
        create("alice", "again").await.unwrap_err().code(),
        Code::AlreadyExists
    );
    // Each converses with, reads and deletes only their own.
    for caller in ["alice", "bob"] {
        app.converse_with(with_auth(
            converse_request("chat-1", caller),
            Some(&key[caller]),
        ))
        .await
        .unwrap();
    }
    assert_eq!(
        call(&app, Rpc::Delete, "chat-1", Some(&key["eve"])).await,
        Ok(())
    );
    for (caller, prompt) in [("alice", "alice's"), ("bob", "not alice's")] {
        let got = app
            .get_dialogue(with_auth(
                pb::GetDialogueRequest {
                    name: name("chat-1"),
                    last_turns: 10,
                    ..Default::default()
                },
                Some(&key[caller]),
            ))
            .await
            .unwrap();
        assert_eq!(got.system_prompt, prompt);
        assert_eq!(got.recent_turns.len(), 2, "{caller}");
        assert_eq!(
            got.recent_turns[0].content[0].kind,
            Some(pb::content_part::Kind::Text(caller.into()))
        );
    }
    assert_eq!(
        call(&app, Rpc::Get, "chat-1", Some(&key["eve"])).await,
        Err(Code::NotFound)
    );
}

#[tokio::test]
async fn issued_tokens_work_expire_and_carry_only_granted_scopes() {
    let (app, key) = secured_app().await;
    let auth = app.api.clone();
    let secret = key["alice"].splitn(3, '_').nth(2).unwrap().to_string();
    let issued = auth
        .issue_token(pb::IssueTokenRequest {
            grant_type: "client_credentials".into(),
            client_id: "alice".into(),
            client_secret: secret.clone(),
            scopes: vec!["dialogue:read".into()],
        })
        .await
        .unwrap();
    assert_eq!(
        (issued.token_type.as_str(), issued.expires_in),
        ("Bearer", 900)
    );
    assert_eq!(issued.scopes, ["dialogue:read"]);
    let token = issued.access_token.as_str();
    assert_eq!(call(&app, Rpc::List, "", Some(token)).await, Ok(()));
    assert_eq!(
        call(&app, Rpc::Create, "", Some(token)).await,
        Err(Code::PermissionDenied)
    );

    // Wrong secret, unknown client, scopes the key lacks.
    let refused =
        |client_id: &str, client_secret: &str, scopes: Vec<String>| pb::IssueTokenRequest {
            grant_type: String::new(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            scopes,
        };
    let err = auth
        .issue_token(refused("alice", "wrong", vec![]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = auth
        .issue_token(refused("nobody", &secret, vec![]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = auth
        .issue_token(refused("alice", &secret, vec!["admin".into()]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // The whole key works as the secret too.
    auth.issue_token(refused("alice", &key["alice"], vec![]))
        .await
        .unwrap();
}

#[tokio::test]
async fn health_and_reflection_need_no_credentials() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let (app, _) = secured_app().await;
    // No authorization header on either call.
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers without credentials")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let answer = ServerReflectionClient::new(app.channel.clone())
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection answers without credentials")
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a list of services: {answer:?}")
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "dialogue.v1.DialogueService")
    );
    // While a protected method is refused without them.
    let refused = app.get("anything", 0).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn keygen_prints_a_key_and_a_config_entry_that_match() {
    let output = tokio::process::Command::new(binary())
        .args([
            "keygen",
            "--id",
            "ci-bot",
            "--tenant",
            "acme",
            "--roles",
            "user,admin",
        ])
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("# dk_"))
        .map(|k| format!("dk_{k}"))
        .unwrap();
    let toml_part: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    #[derive(serde::Deserialize)]
    struct Auth {
        api_keys: Vec<ApiKeySettings>,
    }
    #[derive(serde::Deserialize)]
    struct Doc {
        auth: Auth,
    }
    let doc: Doc = toml::from_str(&toml_part).expect("valid TOML");
    let entry = &doc.auth.api_keys[0];
    assert_eq!(
        (entry.id.as_str(), entry.tenant.as_str()),
        ("ci-bot", "acme")
    );
    let parsed = keys::parse(&key).unwrap();
    assert!(keys::matches(
        parsed.secret,
        &keys::parse_hash(&entry.hash).unwrap()
    ));
    assert!(
        !text.contains(parsed.secret) || text.contains(&key),
        "the secret appears only inside the key line"
    );
}

mod content_filter {
    use crate::helpers::*;
    use crate::upstream::FakeUpstream;
    use dialogd::config::{BackendSettings, TimeoutSettings};
    use dialogd::pb::dialogue::v1 as pb;
    use pb::converse_stream_response::Event;
    use tonic::Code;

    /// A model whose replies contain the blocked term BADWORD mid-way.
    async fn filtered_app(fake: &FakeUpstream) -> TestApp {
        let url = fake.openai_url();
        spawn_app_with(move |s| {
            s.content_filter.blocked_terms = vec!["badword".into(), "forbidden topic".into()];
            s.backends.insert(
                "up".into(),
                BackendSettings::Openai {
                    base_url: url,
                    api_key_env: None,
                    chat_path: "/chat/completions".into(),
                    api_key_header: None,
                    headers: Default::default(),
                    timeouts: TimeoutSettings::default(),
                },
            );
            s.models[0].backend = Some("up".into());
        })
        .await
    }

    #[tokio::test]
    async fn a_message_with_a_blocked_term_is_refused_and_not_stored() {
        let fake = FakeUpstream::start("fine").await;
        let app = filtered_app(&fake).await;
        app.create("f").await;
        let err = app
            .converse("f", "let us discuss the Forbidden Topic now")
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(error_reason(&err).as_deref(), Some("CONTENT_BLOCKED"));
        assert_eq!(violated_fields(&err), ["content"]);
        assert!(
            !err.message().to_lowercase().contains("forbidden"),
            "the term is not echoed"
        );
        assert_eq!(fake.request_count(), 0, "never sent upstream");
        assert!(app.all_turns("f").await.is_empty());
    }

    #[tokio::test]
    async fn a_streamed_reply_is_cut_before_the_blocked_term() {
        let fake = FakeUpstream::start("clean words then BADWORD and more").await;
        fake.set_token_delay(std::time::Duration::from_millis(5));
        let app = filtered_app(&fake).await;
        app.create("s").await;
        let (events, error) = app.stream(converse_request("s", "hello")).await;
        assert!(error.is_none(), "{error:?}");
        let sent: String = events
            .iter()
            .filter_map(|e| match e {
                Event::Delta(d) => Some(d.text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(sent, "clean words then ");
        let Some(Event::End(end)) = events.last() else {
            panic!("no end")
        };
        assert_eq!(end.finish_reason, pb::FinishReason::ContentFilter as i32);
        let stored = app.all_turns("s").await;
        assert_eq!(turn_text(&stored[1]), "clean words then ");

        // Unary replies are cut the same way.
        let reply = app.converse("s", "again").await.unwrap();
        assert_eq!(turn_text(reply.turn.as_ref().unwrap()), "clean words then ");
        assert_eq!(reply.finish_reason, pb::FinishReason::ContentFilter as i32);
    }
}

mod abuse_limits {
    use crate::helpers::*;
    use dialogd::pb::dialogue::v1 as pb;
    use std::time::Duration;
    use tonic::Code;
    use tonic_types::StatusExt;

    #[tokio::test]
    async fn request_rate_limits_answer_with_retry_info_and_recover() {
        let app = spawn_app_with(|s| {
            s.limits.requests_per_second = 2;
            s.limits.request_burst = 2;
        })
        .await;
        // The answer's metadata is the point here: the raw client keeps it.
        let mut models = app.models.clone();
        let first = models.list_models(pb::ListModelsRequest {}).await.unwrap();
        assert_eq!(first.metadata().get("x-ratelimit-remaining").unwrap(), "1");
        models.list_models(pb::ListModelsRequest {}).await.unwrap();
        let err = models
            .list_models(pb::ListModelsRequest {})
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert_eq!(error_reason(&err).as_deref(), Some("RATE_LIMITED"));
        let wait = err.get_details_retry_info().unwrap().retry_delay.unwrap();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert_eq!(err.metadata().get("retry-after").unwrap(), "1");
        assert_eq!(err.metadata().get("x-ratelimit-remaining").unwrap(), "0");
        // After the advertised wait, calls go through again.
        tokio::time::sleep(wait + Duration::from_millis(20)).await;
        models.list_models(pb::ListModelsRequest {}).await.unwrap();
    }

    #[tokio::test]
    async fn a_caller_may_hold_only_so_many_streams() {
        let app = spawn_app_with(|s| {
            s.limits.max_streams_per_principal = 1;
            set_echo_delay(s, 100);
        })
        .await;
        app.create("one").await;
        app.create("two").await;
        let mut first = app
            .converse_stream(converse_request("one", "a b c"))
            .await
            .unwrap();
        let (_, error) = app.stream(converse_request("two", "x")).await;
        let error = error.expect("second stream refused");
        assert_eq!(error.code(), Code::ResourceExhausted);
        assert_eq!(error_reason(&error).as_deref(), Some("STREAM_LIMIT"));
        while first.message().await.unwrap().is_some() {}
        // The finished stream's task gives its slot back as it ends.
        let mut error = None;
        eventually(
            "the finished stream's slot freed",
            Duration::from_secs(5),
            async || {
                error = app.stream(converse_request("two", "x")).await.1;
                error.as_ref().and_then(error_reason).as_deref() != Some("STREAM_LIMIT")
            },
        )
        .await;
        assert!(error.is_none(), "{error:?}");
        assert!(app.all_turns("two").await.len() == 2);
    }

    #[tokio::test]
    async fn a_spent_token_budget_refuses_turns_until_it_refills() {
        let app = spawn_app_with(|s| s.limits.tokens_per_minute = 10).await;
        app.create("tok").await;
        // The echo backend reports 6 prompt + 7 completion words: 13 > 10.
        app.converse("tok", "a b c d e f").await.unwrap();
        let err = app.converse("tok", "more").await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert_eq!(error_reason(&err).as_deref(), Some("TOKEN_RATE_LIMITED"));
        let wait = err.get_details_retry_info().unwrap().retry_delay.unwrap();
        // 4 tokens short at 10 a minute: about 24 s.
        assert!(
            wait > Duration::from_secs(20) && wait < Duration::from_secs(30),
            "{wait:?}"
        );
        assert_eq!(app.get("tok", 0).await.unwrap().turn_count, 2);
    }

    #[tokio::test]
    async fn an_overloaded_server_sheds_calls_instead_of_queueing() {
        let app = spawn_app_with(|s| {
            s.limits.max_in_flight = 1;
            set_echo_delay(s, 300);
        })
        .await;
        app.create("busy").await;
        let slow = {
            let client = app.api.clone();
            tokio::spawn(async move { client.converse_with(converse_request("busy", "a b")).await })
        };
        // A sleep, not a probe: the slow call's one slot is the state, and
        // any probe call would compete for that very slot.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let err = app.get("busy", 0).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert_eq!(error_reason(&err).as_deref(), Some("OVERLOADED"));
        // Probes still answer while the server sheds calls.
        tonic_health::pb::health_client::HealthClient::new(app.channel.clone())
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
        slow.await.unwrap().unwrap();
        app.get("busy", 0).await.unwrap();
    }
}

mod audit {
    use super::{secured_app, with_auth};
    use crate::helpers::*;
    use dialogd::audit::{AuditEvent, AuditFilter, AuditLog};
    use dialogd::dialogue::model::Time;
    use dialogd::pb::dialogue::v1 as pb;
    use std::time::Duration;
    use tonic::Code;

    async fn events(
        app: &TestApp,
        auditor: &str,
        principal: &str,
        action: &str,
    ) -> Vec<pb::AuditEvent> {
        app.list_audit_events(with_auth(
            pb::ListAuditEventsRequest {
                principal: principal.into(),
                action: action.into(),
                ..Default::default()
            },
            Some(auditor),
        ))
        .await
        .unwrap()
        .events
    }

    #[tokio::test]
    async fn mutations_and_refusals_are_audited_without_content() {
        let (app, key) = secured_app().await;
        let (alice, auditor) = (key["alice"].as_str(), key["auditor"].as_str());
        let d = app.api.clone();
        d.create_dialogue(with_auth(
            pb::CreateDialogueRequest {
                dialogue: Some(pb::Dialogue {
                    dialogue_id: "audited".into(),
                    ..Default::default()
                }),
            },
            Some(alice),
        ))
        .await
        .unwrap();
        d.converse_with(with_auth(
            converse_request("audited", "private words"),
            Some(alice),
        ))
        .await
        .unwrap();
        let mut request = with_auth(
            pb::GetDialogueRequest {
                name: name("audited"),
                last_turns: 0,
                ..Default::default()
            },
            Some(alice),
        );
        request
            .metadata_mut()
            .insert("x-request-id", "req-read-1".parse().unwrap());
        d.get_dialogue(request).await.unwrap();
        let bob_delete = d
            .delete_dialogue(with_auth(
                pb::DeleteDialogueRequest {
                    name: name("audited"),
                },
                Some(&key["bob"]),
            ))
            .await
            .unwrap_err();
        assert_eq!(bob_delete.code(), Code::NotFound);
        let mut request = with_auth(
            pb::DeleteDialogueRequest {
                name: name("audited"),
            },
            Some(alice),
        );
        request
            .metadata_mut()
            .insert("x-request-id", "req-del-7".parse().unwrap());
        d.delete_dialogue(request).await.unwrap();
        let bad = d
            .list_dialogues(with_auth(
                pb::ListDialoguesRequest::default(),
                Some("dk_alice_wrongwrongwrong"),
            ))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::Unauthenticated);

        // Events are appended in the background: wait for all five.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let all = loop {
            let all = events(&app, auditor, "", "").await;
            if all.len() >= 5 || tokio::time::Instant::now() > deadline {
                break all;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let summary: Vec<(String, String, String, String)> = all
            .iter()
            .map(|e| {
                let method = e.action.rsplit('/').next().unwrap().to_string();
                (
                    e.principal.clone(),
                    method,
                    e.resource.clone(),
                    e.status.clone(),
                )
            })
            .collect();
        let expect = |p: &str, m: &str, r: &str, s: &str| {
            (p.to_string(), m.to_string(), r.to_string(), s.to_string())
        };
        assert_eq!(
            summary,
            [
                expect("alice", "CreateDialogue", "dialogues/audited", "Ok"),
                expect("alice", "Converse", "dialogues/audited", "Ok"),
                expect("bob", "DeleteDialogue", "dialogues/audited", "NotFound"),
                expect("alice", "DeleteDialogue", "dialogues/audited", "Ok"),
                expect("", "ListDialogues", "", "Unauthenticated"),
            ],
            "reads are not audited; mutations and refusals are"
        );
        let delete = &all[3];
        assert_eq!(
            (delete.request_id.as_str(), delete.tenant.as_str()),
            ("req-del-7", "acme")
        );
        assert_eq!(delete.client_ip, "127.0.0.1");
        assert!(delete.time.is_some() && delete.duration_ms >= 0.0);
        let dump = format!("{all:?}");
        assert!(
            !dump.contains("private words"),
            "no content in the audit log"
        );
        assert!(!dump.contains(alice), "no keys in the audit log");

        // Filters, and who may read the log.
        assert_eq!(events(&app, auditor, "bob", "").await.len(), 1);
        assert_eq!(events(&app, auditor, "", "DeleteDialogue").await.len(), 2);
        let err = app
            .list_audit_events(with_auth(
                pb::ListAuditEventsRequest::default(),
                Some(alice),
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
    }

    #[tokio::test]
    async fn the_retention_sweep_erases_old_events_only() {
        let dir = tempfile::TempDir::new().unwrap();
        let settings = test_settings(dir.path());
        let store = dialogd::store::sled::SledStore::open(&settings.store).unwrap();
        let event = |days_ago: i64, action: &str| AuditEvent {
            time: Time::now().saturating_add_secs(-days_ago * 86_400),
            request_id: "r".into(),
            principal: "p".into(),
            tenant: "t".into(),
            client_ip: "127.0.0.1".into(),
            action: action.into(),
            resource: String::new(),
            status: "Ok".into(),
            duration_ms: 1.0,
        };
        store.append_audit(&event(100, "old")).await.unwrap();
        store.append_audit(&event(1, "recent")).await.unwrap();
        let cutoff = Time::now().saturating_add_secs(-90 * 86_400);
        assert_eq!(store.sweep_audit(cutoff).await.unwrap(), 1);
        let (left, _) = store
            .list_audit(&AuditFilter::default(), None, 10)
            .await
            .unwrap();
        let actions: Vec<&str> = left.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["recent"]);
    }
}

/// Guessing keys is not free: an address is refused (429, RESOURCE_EXHAUSTED
/// with retry info, audited) after 20 failures in a minute; the real key
/// keeps working from elsewhere, and its id's failures never refuse it.
#[tokio::test]
async fn failed_authentications_are_limited_per_address_without_locking_out_the_key() {
    let (app, keys) = secured_app_limiting(20).await;
    let real = keys["alice"].clone();
    let wrong = "dk_alice_not-the-secret";
    // The attacker comes from another loopback address.
    let attacker = plain_http()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let url = format!("http://{}/v1/dialogues", app.addr);
    let try_key = async |key: &str| {
        let response = attacker.get(&url).bearer_auth(key).send().await.unwrap();
        let retry_after = response.headers().get("retry-after").cloned();
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap();
        (status, retry_after, body)
    };
    for n in 0..20 {
        let (status, ..) = try_key(wrong).await;
        assert_eq!(status, 401, "attempt {n}");
    }
    let (status, retry_after, body) = try_key(wrong).await;
    assert_eq!(status, 429, "{body}");
    assert!(retry_after.is_some());
    assert!(
        body.to_string().contains("TOO_MANY_AUTH_FAILURES"),
        "{body}"
    );
    // The address is shut out, right key or not.
    let (status, ..) = try_key(&real).await;
    assert_eq!(status, 429);

    // From the real client's address the key still works...
    app.api
        .list_dialogues(with_auth(pb::ListDialoguesRequest::default(), Some(&real)))
        .await
        .expect("the real key is not locked out");
    // ...while more wrong secrets for its id are refused as too many.
    let err = app
        .api
        .list_dialogues(with_auth(pb::ListDialoguesRequest::default(), Some(wrong)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    use tonic_types::StatusExt;
    assert!(err.get_details_retry_info().is_some());

    // Audited (events are written just after the answers).
    eventually(
        "the refusals audited",
        std::time::Duration::from_secs(5),
        async || {
            let events = app
                .api
                .list_audit_events(with_auth(
                    pb::ListAuditEventsRequest {
                        page_size: 1000,
                        ..Default::default()
                    },
                    Some(&keys["auditor"]),
                ))
                .await
                .unwrap()
                .events;
            let refused = events
                .iter()
                .filter(|e| e.status == "ResourceExhausted" && e.client_ip == "127.0.0.2")
                .count();
            refused == 2
        },
    )
    .await;
}
