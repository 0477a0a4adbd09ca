//! TLS for the client port and the metrics port (rustls, ring provider).
//!
//! `logbookd --tls-cert FILE --tls-key FILE` serves TLS 1.2 and 1.3 only:
//! a client speaking clear text to a TLS port fails its handshake and is
//! closed. `--tls-client-ca FILE` also asks every client for a certificate
//! signed by one of the CAs in FILE (mutual TLS): a client without one is
//! refused during the handshake, before it can send a request. Files are
//! PEM; the key may be PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
//!
//! Why ring and not aws-lc-rs (rustls' default provider): aws-lc builds C
//! and assembly with cmake, minutes of every cold CI build on two cores,
//! for no difference that matters at the handshake rates of an event
//! store's long-lived connections.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Where the server's certificate, key and (optionally) client CAs are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CAs whose certificates clients must present (PEM); `None`: no client
    /// certificate is asked for.
    pub client_ca: Option<PathBuf>,
}

/// A loaded TLS configuration, ready to accept connections.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
    client_auth: bool,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the files and checks that the key matches the certificate.
    /// Errors name the file and what is wrong with it.
    pub fn load(files: &TlsFiles) -> Result<ServerTls, String> {
        let chain = read_certs(&files.cert)?;
        let key = PrivateKeyDer::from_pem_file(&files.key)
            .map_err(|e| format!("{}: no usable private key: {e}", files.key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = match &files.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(path)? {
                    roots.add(cert).map_err(|e| {
                        format!("{}: not a usable CA certificate: {e}", path.display())
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(chain, key)
            .map_err(|e| format!("{} and {}: {e}", files.cert.display(), files.key.display()))?;
        Ok(ServerTls {
            config: Arc::new(config),
            client_auth: files.client_ca.is_some(),
        })
    }

    /// An acceptor for one connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.config))
    }

    /// Whether clients must present a certificate.
    pub fn client_auth(&self) -> bool {
        self.client_auth
    }
}

/// The replication port's mutual TLS, from `--cluster-tls-cert`, `-key`
/// and `-ca`. Errors name the file and what is wrong with it.
pub fn load_peer_tls(
    cert: &Path,
    key: &Path,
    ca: &Path,
) -> Result<logbook_consensus::tcp::PeerTls, String> {
    let chain = read_certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("{}: no usable private key: {e}", key.display()))?;
    let roots = read_certs(ca)?;
    logbook_consensus::tcp::PeerTls::new(chain, key_der, roots).map_err(|e| {
        format!(
            "{}, {} and {}: {e}",
            cert.display(),
            key.display(),
            ca.display()
        )
    })
}

/// Every certificate in a PEM file; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::write(&key, "").unwrap();
        let files = TlsFiles {
            cert: cert.clone(),
            key,
            client_ca: None,
        };
        let e = ServerTls::load(&files).unwrap_err();
        assert!(
            e.contains("cert.pem") && e.contains("no certificate"),
            "{e}"
        );
        let missing = TlsFiles {
            cert: dir.path().join("absent.pem"),
            ..files
        };
        let e = ServerTls::load(&missing).unwrap_err();
        assert!(e.contains("absent.pem"), "{e}");
    }
}
