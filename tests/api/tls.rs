//! TLS on the gRPC port: served with the configured certificate, reloaded
//! when its files change, and with a client CA, mTLS whose certificate
//! subject is the caller.

use crate::helpers::*;
use dialogd::config::{Settings, TlsSettings};
use dialogd::pb::dialogue::v1 as pb;
use dialogd::startup::Application;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tempfile::TempDir;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

/// Starts a server with `tls`; returns its address and keeps it running.
async fn start_tls(dir: &Path, tls: TlsSettings) -> SocketAddr {
    let mut settings: Settings = test_settings(dir);
    settings.server.tls = Some(tls);
    let app = Application::build(settings)
        .await
        .expect("TLS server starts");
    let addr = app.local_addr();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    addr
}

async fn channel(
    addr: SocketAddr,
    ca: &str,
    identity: Option<&str>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(ca)))
        .domain_name("localhost");
    if let Some(name) = identity {
        tls = tls.identity(Identity::from_pem(
            read(&format!("{name}.pem")),
            read(&format!("{name}.key")),
        ));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

async fn list_models(channel: Channel) -> Result<(), tonic::Status> {
    Api::new(channel)
        .list_models(pb::ListModelsRequest {})
        .await
        .map(|_| ())
}

fn server_tls(cert: String, key: String) -> TlsSettings {
    TlsSettings {
        cert_file: cert,
        key_file: key,
        client_ca_file: None,
        reload_check_secs: 1,
        client_cert_roles: vec![dialogd::auth::Role::User],
    }
}

#[tokio::test]
async fn serves_grpc_over_tls_only() {
    let dir = TempDir::new().unwrap();
    let addr = start_tls(
        dir.path(),
        server_tls(fixture("server.pem"), fixture("server.key")),
    )
    .await;
    list_models(channel(addr, "ca.pem", None).await.unwrap())
        .await
        .unwrap();
    // A client that does not trust the server's CA cannot connect...
    assert!(channel(addr, "ca2.pem", None).await.is_err());
    // ...nor can one speaking plaintext.
    let plain = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await;
    match plain {
        Err(_) => {}
        Ok(ch) => assert!(list_models(ch).await.is_err()),
    }
}

#[tokio::test]
async fn a_changed_certificate_is_served_without_a_restart() {
    let dir = TempDir::new().unwrap();
    let (cert, key) = (dir.path().join("tls.pem"), dir.path().join("tls.key"));
    std::fs::copy(fixture("server.pem"), &cert).unwrap();
    std::fs::copy(fixture("server.key"), &key).unwrap();
    let addr = start_tls(
        dir.path(),
        server_tls(cert.display().to_string(), key.display().to_string()),
    )
    .await;
    list_models(channel(addr, "ca.pem", None).await.unwrap())
        .await
        .unwrap();

    // Rotate to a certificate from another CA: key first, then cert.
    std::fs::copy(fixture("server2.key"), &key).unwrap();
    std::fs::copy(fixture("server2.pem"), &cert).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(ch) = channel(addr, "ca2.pem", None).await
            && list_models(ch).await.is_ok()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        channel(addr, "ca.pem", None).await.is_err(),
        "the old certificate is gone"
    );
}

#[tokio::test]
async fn with_mtls_the_client_certificate_is_the_caller() {
    let dir = TempDir::new().unwrap();
    let mut tls = server_tls(fixture("server.pem"), fixture("server.key"));
    tls.client_ca_file = Some(fixture("ca.pem"));
    let addr = start_tls(dir.path(), tls).await;

    // No client certificate: the handshake is refused.
    let anonymous = channel(addr, "ca.pem", None).await;
    match anonymous {
        Err(_) => {}
        Ok(ch) => assert!(list_models(ch).await.is_err()),
    }

    let alice = Api::new(channel(addr, "ca.pem", Some("alice")).await.unwrap());
    alice
        .create_dialogue(pb::CreateDialogueRequest {
            dialogue: Some(pb::Dialogue {
                dialogue_id: "alices".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let bob = Api::new(channel(addr, "ca.pem", Some("bob")).await.unwrap());
    let err = bob
        .get_dialogue(pb::GetDialogueRequest {
            name: name("alices"),
            last_turns: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::NotFound,
        "bob's certificate names another principal"
    );
    alice
        .get_dialogue(pb::GetDialogueRequest {
            name: name("alices"),
            last_turns: 0,
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn sighup_reloads_the_certificate_of_a_running_process() {
    let dir = TempDir::new().unwrap();
    let (cert, key) = (dir.path().join("tls.pem"), dir.path().join("tls.key"));
    std::fs::copy(fixture("server.pem"), &cert).unwrap();
    std::fs::copy(fixture("server.key"), &key).unwrap();
    let config = dir.path().join("dialogd.toml");
    std::fs::write(
        &config,
        format!(
            "[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n# Only the signal reloads within this test.\nreload_check_secs = 3600\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::start_with(&data, &["--config", config.to_str().unwrap()]).await;
    let addr = server.addr;
    list_models(channel(addr, "ca.pem", None).await.unwrap())
        .await
        .unwrap();

    std::fs::copy(fixture("server2.key"), &key).unwrap();
    std::fs::copy(fixture("server2.pem"), &cert).unwrap();
    assert!(
        channel(addr, "ca2.pem", None).await.is_err(),
        "no reload before the signal"
    );
    let pid = server.child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(ch) = channel(addr, "ca2.pem", None).await
            && list_models(ch).await.is_ok()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "SIGHUP did not reload the certificate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.kill9().await;
}
