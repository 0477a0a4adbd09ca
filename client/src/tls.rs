//! TLS to a server started with `--tls-cert` ([`TlsOptions`]).

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// How to reach a server over TLS: the CAs its certificate must chain to,
/// the name it must carry, and optionally this client's own certificate
/// (for a server started with `--tls-client-ca`).
///
/// ```no_run
/// use logbook_client::{ClientOptions, TlsOptions};
///
/// # fn demo() -> std::io::Result<()> {
/// let tls = TlsOptions::from_ca_file("ca.pem", "logbook.internal")?
///     .client_identity_files("client.pem", "client.key")?;
/// let options = ClientOptions::default().tls(tls);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TlsOptions {
    roots: Arc<RootCertStore>,
    server_name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
    identity: bool,
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsOptions")
            .field("server_name", &self.server_name)
            .field("cas", &self.roots.len())
            .field("client_identity", &self.identity)
            .finish()
    }
}

impl TlsOptions {
    /// Trusts the CA certificates in the PEM file `ca` and expects the
    /// server's certificate to name `server_name` (a DNS name or an IP
    /// address).
    pub fn from_ca_file(ca: impl AsRef<Path>, server_name: &str) -> io::Result<TlsOptions> {
        let ca = ca.as_ref();
        let pem = std::fs::read(ca).map_err(|e| with_path(ca, e))?;
        TlsOptions::from_ca_pem(&pem, server_name).map_err(|e| with_path(ca, e))
    }

    /// [`TlsOptions::from_ca_file`] with the PEM text itself.
    pub fn from_ca_pem(pem: &[u8], server_name: &str) -> io::Result<TlsOptions> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(invalid)?;
            roots.add(cert).map_err(invalid)?;
        }
        if roots.is_empty() {
            return Err(invalid("no CA certificate in the PEM text"));
        }
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| invalid(format!("server name {server_name:?}: {e}")))?;
        let roots = Arc::new(roots);
        let config = builder()?
            .with_root_certificates(Arc::clone(&roots))
            .with_no_client_auth();
        Ok(TlsOptions {
            roots,
            server_name,
            config: Arc::new(config),
            identity: false,
        })
    }

    /// Presents the certificate chain in the PEM file `cert` (leaf first),
    /// with the private key in the PEM file `key`, to a server that asks
    /// for one.
    pub fn client_identity_files(
        self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> io::Result<TlsOptions> {
        let (cert, key) = (cert.as_ref(), key.as_ref());
        let cert_pem = std::fs::read(cert).map_err(|e| with_path(cert, e))?;
        let key_pem = std::fs::read(key).map_err(|e| with_path(key, e))?;
        self.client_identity_pem(&cert_pem, &key_pem)
    }

    /// [`TlsOptions::client_identity_files`] with the PEM texts themselves.
    pub fn client_identity_pem(self, cert: &[u8], key: &[u8]) -> io::Result<TlsOptions> {
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        if chain.is_empty() {
            return Err(invalid("no certificate in the client's PEM text"));
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(invalid)?;
        let config = builder()?
            .with_root_certificates(Arc::clone(&self.roots))
            .with_client_auth_cert(chain, key)
            .map_err(invalid)?;
        Ok(TlsOptions {
            config: Arc::new(config),
            identity: true,
            ..self
        })
    }

    /// The name the server's certificate must carry.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }

    pub(crate) fn connector(&self) -> (tokio_rustls::TlsConnector, ServerName<'static>) {
        (
            tokio_rustls::TlsConnector::from(Arc::clone(&self.config)),
            self.server_name.clone(),
        )
    }
}

/// A client configuration builder on the ring provider (see the server's
/// `tls` module for why not aws-lc-rs), TLS 1.2 and 1.3.
fn builder() -> io::Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>> {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(invalid)
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pem_and_names_are_refused() {
        let e = TlsOptions::from_ca_pem(b"nothing here", "localhost").unwrap_err();
        assert!(e.to_string().contains("no CA certificate"), "{e}");
        let e = TlsOptions::from_ca_file("/nonexistent/ca.pem", "localhost").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }
}
