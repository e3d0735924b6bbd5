//! What validating a config takes from outside its text: the files it
//! names, environment variables, the host's name and the system's CA
//! certificates. Validation is pure over this interface: `System` is the
//! real machine, and the unit tests of `validate` pass a made-up one, so
//! every rule is tested with no file, variable or host of the machine.

use std::ffi::OsString;
use std::path::Path;

use rustls::pki_types::CertificateDer;

use super::file;

pub trait Outside {
    /// An environment variable, when set.
    fn var(&self, name: &str) -> Option<OsString>;
    /// The bytes of the regular file at `path`, if it holds at most `max`.
    fn read(&self, path: &Path, max: u64) -> std::io::Result<Vec<u8>>;
    /// Whether `path` is a regular file, and its permission bits.
    fn mode(&self, path: &Path) -> std::io::Result<(bool, u32)>;
    /// The host's name (gethostname(2)).
    fn host_name(&self) -> Option<String>;
    /// The certificates the system trusts.
    fn system_roots(&self) -> Vec<CertificateDer<'static>>;

    /// As `read`, as UTF-8 text.
    fn read_text(&self, path: &Path, max: u64) -> std::io::Result<String> {
        String::from_utf8(self.read(path, max)?)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
    }
}

/// This machine.
pub struct System;

impl Outside for System {
    fn var(&self, name: &str) -> Option<OsString> {
        std::env::var_os(name)
    }

    fn read(&self, path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
        file::read_small(path, max)
    }

    fn mode(&self, path: &Path) -> std::io::Result<(bool, u32)> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).map(|m| (m.is_file(), m.permissions().mode()))
    }

    /// gethostname(2), not /proc/sys: the unit's ProcSubset=pid hides that.
    fn host_name(&self) -> Option<String> {
        let host = nix::unistd::gethostname().ok()?.to_string_lossy().trim().to_string();
        (!host.is_empty()).then_some(host)
    }

    fn system_roots(&self) -> Vec<CertificateDer<'static>> {
        rustls_native_certs::load_native_certs().certs
    }
}
