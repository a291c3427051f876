//! The gRPC port's connections: plain TCP, or TLS with rustls (ring). The
//! certificate is served through a resolver whose key can be swapped while
//! running: it is reloaded on SIGHUP and when the files change. With a
//! client CA configured, clients must present a certificate signed by it
//! (mTLS), and its subject can name the caller (see middleware/auth.rs).

use crate::config::TlsSettings;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// Longest a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handlers may learn of a connection (request extensions).
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote_addr: Option<SocketAddr>,
    /// The client's certificate, on mTLS connections.
    pub client_cert: Option<CertificateDer<'static>>,
}

/// A served connection, plain or TLS.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        match self {
            Conn::Plain(s) => PeerInfo {
                remote_addr: s.peer_addr().ok(),
                client_cert: None,
            },
            Conn::Tls(s) => {
                let (tcp, session) = s.get_ref();
                PeerInfo {
                    remote_addr: tcp.peer_addr().ok(),
                    client_cert: session
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.clone().into_owned()),
                }
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// The served certificate, swappable while running.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_file: String,
    key_file: String,
    current: RwLock<Arc<CertifiedKey>>,
    /// Modification times of the files last loaded.
    loaded: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

fn modified(path: &str) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load_key(cert_file: &str, key_file: &str) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| format!("{cert_file}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{cert_file}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{cert_file} holds no certificate"));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| format!("{key_file}: {e}"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("{key_file}: {e}"))?;
    Ok(CertifiedKey::new(certs, signing))
}

impl ReloadingCert {
    pub fn load(cert_file: &str, key_file: &str) -> Result<ReloadingCert, String> {
        let key = load_key(cert_file, key_file)?;
        Ok(ReloadingCert {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: RwLock::new(Arc::new(key)),
            loaded: Mutex::new((modified(cert_file), modified(key_file))),
        })
    }

    /// Loads the files again if `force` or they changed; a bad new pair is
    /// reported and the current one kept.
    pub fn reload(&self, force: bool) -> Result<bool, String> {
        let stamps = (modified(&self.cert_file), modified(&self.key_file));
        {
            let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
            if !force && *loaded == stamps {
                return Ok(false);
            }
        }
        let key = load_key(&self.cert_file, &self.key_file)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = stamps;
        Ok(true)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// The rustls configuration: HTTP/2 only, optional client certificates.
pub fn server_config(
    settings: &TlsSettings,
    cert: Arc<ReloadingCert>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &settings.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in
                CertificateDer::pem_file_iter(ca_file).map_err(|e| format!("{ca_file}: {e}"))?
            {
                roots
                    .add(ca.map_err(|e| format!("{ca_file}: {e}"))?)
                    .map_err(|e| format!("{ca_file}: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("{ca_file}: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts connections, doing TLS handshakes (bounded in time) off the
/// accept loop so a slow client cannot stall others.
pub fn incoming(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
) -> ReceiverStream<std::io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            match &tls {
                None => {
                    if tx.send(Ok(Conn::Plain(tcp))).await.is_err() {
                        return;
                    }
                }
                Some(acceptor) => {
                    let (acceptor, tx) = (acceptor.clone(), tx.clone());
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                let _ = tx.send(Ok(Conn::Tls(Box::new(stream)))).await;
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    });
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Reloads the certificate when its files changed (or `forced`: SIGHUP);
/// a failed reload keeps the previous one served.
pub fn reload_logged(cert: &ReloadingCert, forced: bool) {
    match cert.reload(forced) {
        Ok(true) => tracing::info!("TLS certificate reloaded"),
        Ok(false) => {}
        Err(e) => {
            tracing::error!(error = %e, "TLS certificate reload failed; still serving the previous one")
        }
    }
}

/// The principal a client certificate names: its subject's common name,
/// and organisation as the tenant (or the common name again).
pub fn certificate_subject(cert: &CertificateDer<'_>) -> Option<(String, String)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let cn = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let org = subject
        .iter_organization()
        .next()
        .and_then(|o| o.as_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| cn.clone());
    Some((cn, org))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn client_certificate_subjects_name_principal_and_tenant() {
        let cert = CertificateDer::from_pem_file(fixture("alice.pem")).unwrap();
        assert_eq!(
            certificate_subject(&cert),
            Some(("alice".into(), "acme".into()))
        );
    }

    #[test]
    fn a_bad_key_pair_is_refused_and_the_old_one_kept() {
        let dir = tempfile::TempDir::new().unwrap();
        let cert = dir.path().join("c.pem").display().to_string();
        let key = dir.path().join("k.pem").display().to_string();
        std::fs::copy(fixture("server.pem"), &cert).unwrap();
        std::fs::copy(fixture("server.key"), &key).unwrap();
        let reloading = ReloadingCert::load(&cert, &key).unwrap();
        assert!(
            !reloading.reload(false).unwrap(),
            "unchanged files are not reloaded"
        );
        std::fs::write(&key, "garbage").unwrap();
        assert!(reloading.reload(true).is_err());
    }
}
