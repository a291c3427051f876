//! Which certificate authorities outbound HTTPS (model backends, webhook
//! callbacks) trusts: the system's bundle when the machine has one, so a
//! private CA added there works; else — an image without
//! `/etc/ssl/certs`, FROM scratch — the Mozilla roots built into the
//! binary (webpki-root-certs). Without this fallback the HTTP client
//! refuses to build at all, and with it the server, even when nothing
//! configured speaks HTTPS.

use std::sync::LazyLock;

/// Whether the system has CA certificates; looked for once.
static SYSTEM_HAS_ROOTS: LazyLock<bool> = LazyLock::new(|| {
    let found = !rustls_native_certs::load_native_certs().certs.is_empty();
    if !found {
        tracing::info!(
            "no system CA certificates found: outbound HTTPS trusts the Mozilla roots built in (webpki-root-certs)"
        );
    }
    found
});

/// A blocking client (for the trace exporter's own thread) trusting the
/// same roots; rustls's provider installed first, as for every client.
pub fn blocking_client(timeout: std::time::Duration) -> Result<reqwest::blocking::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = reqwest::blocking::Client::builder().timeout(timeout);
    let builder = if *SYSTEM_HAS_ROOTS {
        builder
    } else {
        builder.tls_certs_only(built_in_roots())
    };
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

fn built_in_roots() -> impl Iterator<Item = reqwest::Certificate> {
    webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .filter_map(|der| reqwest::Certificate::from_der(der.as_ref()).ok())
}

/// `builder` trusting the system's roots, or the built-in ones.
pub fn with_trusted_roots(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    if *SYSTEM_HAS_ROOTS {
        return builder;
    }
    builder.tls_certs_only(built_in_roots())
}
