//! TLS client settings for `mqtts://` brokers, built with rustls from PEM
//! files: the CA to trust (or the system roots) and an optional client
//! certificate for mutual TLS.
//!
//! Built when the config is loaded, so a missing or malformed file is
//! reported by `willwatch check` and never at 3 a.m. on a reconnect.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::file::MAX_PEM;
use super::outside::Outside;

/// Which input a TLS problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    Ca,
    Cert,
    Key,
    SystemRoots,
}

#[derive(Debug)]
pub struct TlsError {
    pub file: TlsFile,
    message: String,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

fn error(file: TlsFile, message: String) -> TlsError {
    TlsError { file, message }
}

/// A rustls client config trusting `ca` (else the system roots), with a
/// client certificate and key when given.
pub fn client_config(
    outside: &dyn Outside,
    ca: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(ca) => {
            for cert in read_certs(outside, ca, TlsFile::Ca, "ca_file")? {
                roots.add(cert).map_err(|e| {
                    error(TlsFile::Ca, format!("`ca_file` {}: unusable certificate: {e}", ca.display()))
                })?;
            }
        }
        None => {
            let (added, _) = roots.add_parsable_certificates(outside.system_roots());
            if added == 0 {
                return Err(error(
                    TlsFile::SystemRoots,
                    "no system CA certificates found to verify the broker; set `ca_file`".to_string(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| error(TlsFile::Ca, format!("TLS set-up failed: {e}")))?
        .with_root_certificates(roots);
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = read_certs(outside, cert, TlsFile::Cert, "cert_file")?;
            let bytes = outside
                .read(key, MAX_PEM)
                .map_err(|e| error(TlsFile::Key, format!("cannot read `key_file` {}: {e}", key.display())))?;
            let key_der = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
                error(TlsFile::Key, format!("`key_file` {}: no usable private key ({e})", key.display()))
            })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| error(TlsFile::Key, format!("`key_file` {} does not fit `cert_file`: {e}", key.display())))
        }
    }
}

/// The PEM certificates of `path` (the setting `key`), at least one.
pub(super) fn read_certs(
    outside: &dyn Outside,
    path: &Path,
    file: TlsFile,
    key: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes =
        outside.read(path, MAX_PEM).map_err(|e| error(file, format!("cannot read `{key}` {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(file, format!("`{key}` {}: not a PEM certificate file ({e})", path.display())))?;
    if certs.is_empty() {
        return Err(error(file, format!("`{key}` {}: no certificate in it (expected PEM)", path.display())));
    }
    Ok(certs)
}
