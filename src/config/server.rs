//! `[server]`: where and how the gRPC port (and the HTTP front on it) is
//! served.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address the gRPC server binds; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Upper bound of a decoded request message, in bytes.
    pub max_request_bytes: usize,
    /// How long in-flight calls and streams may run on after SIGTERM/SIGINT.
    pub drain_timeout_secs: u64,
    /// How long a request's body may take to arrive, from the request's
    /// start (a trickling caller is cut off after it).
    pub request_read_timeout_secs: u64,
    /// A WebSocket client that takes no frame for this long is closed
    /// (1008), so a slow reader never makes the server buffer without bound.
    pub websocket_send_timeout_ms: u64,
    /// Browser origins (`https://app.example.com`, or `*`) allowed to call
    /// gRPC-Web and the HTTP routes cross-origin; empty: no CORS headers.
    pub cors_allowed_origins: Vec<String>,
    /// TLS for the gRPC port; plain HTTP/2 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            max_request_bytes: 16 * 1024 * 1024,
            drain_timeout_secs: 30,
            request_read_timeout_secs: 30,
            websocket_send_timeout_ms: 30_000,
            cors_allowed_origins: Vec::new(),
            tls: None,
        }
    }
}

impl ServerSettings {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.max_request_bytes < 1024 {
            return Err("server.max_request_bytes must be at least 1024".into());
        }
        if !(100..=600_000).contains(&self.websocket_send_timeout_ms) {
            return Err("server.websocket_send_timeout_ms must be 100 to 600000".into());
        }
        if !(1..=3600).contains(&self.request_read_timeout_secs) {
            return Err("server.request_read_timeout_secs must be 1 to 3600".into());
        }
        if let Some(tls) = &self.tls {
            tls.validate()?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// PEM CA certificates: when set, clients must present a certificate
    /// signed by one of them (mTLS).
    #[serde(default)]
    pub client_ca_file: Option<String>,
    /// How often the certificate files are checked for changes, in seconds
    /// (they are also reloaded on SIGHUP).
    #[serde(default = "default_reload_check_secs")]
    pub reload_check_secs: u64,
    /// Roles of callers known only by their client certificate (subject CN
    /// = principal, O = tenant), when no bearer credential is sent.
    #[serde(default = "default_roles")]
    pub client_cert_roles: Vec<crate::auth::Role>,
}

impl TlsSettings {
    fn validate(&self) -> Result<(), String> {
        for (key, path) in [
            ("cert_file", Some(&self.cert_file)),
            ("key_file", Some(&self.key_file)),
            ("client_ca_file", self.client_ca_file.as_ref()),
        ] {
            if let Some(p) = path
                && !Path::new(p).is_file()
            {
                return Err(format!("server.tls.{key}: {p} is not a readable file"));
            }
        }
        if self.reload_check_secs == 0 {
            return Err("server.tls.reload_check_secs must be at least 1".into());
        }
        Ok(())
    }
}

fn default_reload_check_secs() -> u64 {
    10
}

fn default_roles() -> Vec<crate::auth::Role> {
    vec![crate::auth::Role::User]
}
