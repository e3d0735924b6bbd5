//! Certificates made by a test: a CA, a server certificate for
//! 127.0.0.1/localhost signed by it, and a client certificate.

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use super::broker::TlsFiles;

/// A CA, a server certificate for 127.0.0.1/localhost and a client
/// certificate, as PEM files in `dir`.
pub struct Pki {
    pub ca: std::path::PathBuf,
    pub server: TlsFiles,
    pub client_cert: std::path::PathBuf,
    pub client_key: std::path::PathBuf,
}

pub fn make_pki(dir: &Path, name: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |names: Vec<String>, cn: &str| {
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()], "localhost");
    let (client_cert, client_key) = leaf(Vec::new(), "willwatch");

    let write = |file: &str, text: &str| {
        let path = dir.join(format!("{name}-{file}"));
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca = write("ca.pem", &ca_cert.pem());
    Pki {
        server: TlsFiles {
            ca: ca.clone(),
            cert: write("server.pem", &server_cert),
            key: write("server.key", &server_key),
        },
        ca,
        client_cert: write("client.pem", &client_cert),
        client_key: write("client.key", &client_key),
    }
}
