//! Certificates for the TLS tests, made by the tests themselves (rcgen): a
//! CA, a server certificate for `localhost` and `127.0.0.1`, and a client
//! certificate, written as PEM files into a directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// PEM files of one test PKI.
#[derive(Clone, Debug)]
pub struct TestPki {
    /// The CA's certificate.
    pub ca: PathBuf,
    /// The server's certificate (signed by the CA) and key.
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
    /// A client certificate signed by the CA (common name `client_name`).
    pub client_cert: PathBuf,
    /// Its private key.
    pub client_key: PathBuf,
    /// A cluster node's certificate (signed by the CA, naming `localhost`
    /// and `127.0.0.1`, for both server and client authentication: a node
    /// accepts its peers and connects to them).
    pub node_cert: PathBuf,
    /// Its private key.
    pub node_key: PathBuf,
}

impl TestPki {
    /// Makes a CA named `name` and its server and client certificates in
    /// `dir` (files prefixed with `name`). The server certificate names
    /// `localhost` and `127.0.0.1`; the client's common name is
    /// `client_name`.
    pub fn generate(dir: &Path, name: &str, client_name: &str) -> TestPki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");

        let leaf = |sans: Vec<String>, cn: &str, usage: &[ExtendedKeyUsagePurpose]| {
            let mut params = CertificateParams::new(sans).expect("leaf params");
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = usage.to_vec();
            let key = KeyPair::generate().expect("leaf key");
            let cert = params.signed_by(&key, &ca).expect("leaf certificate");
            (cert.pem(), key.serialize_pem())
        };
        let (server_pem, server_key_pem) = leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            "localhost",
            &[ExtendedKeyUsagePurpose::ServerAuth],
        );
        let (client_pem, client_key_pem) = leaf(
            vec![format!("{client_name}.client")],
            client_name,
            &[ExtendedKeyUsagePurpose::ClientAuth],
        );
        let (node_pem, node_key_pem) = leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            "node",
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        let write = |file: &str, text: &str| {
            let path = dir.join(format!("{name}-{file}"));
            std::fs::write(&path, text).expect("write PEM");
            path
        };
        TestPki {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_pem),
            server_key: write("server.key", &server_key_pem),
            client_cert: write("client.pem", &client_pem),
            client_key: write("client.key", &client_key_pem),
            node_cert: write("node.pem", &node_pem),
            node_key: write("node.key", &node_key_pem),
        }
    }
}
