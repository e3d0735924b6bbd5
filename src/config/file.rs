//! Reading the files a config names (the config itself, passwords, secrets,
//! certificates): only regular files, and only up to a size that makes
//! sense, so `/dev/zero` cannot fill memory and a FIFO cannot hang `check`.

use std::io::Read;
use std::path::Path;

/// The config file, at most.
pub const MAX_CONFIG: u64 = 16 << 20;
/// A password or secret file, at most.
pub const MAX_SECRET: u64 = 64 << 10;
/// A PEM certificate or key file, at most.
pub const MAX_PEM: u64 = 1 << 20;

/// The bytes of the regular file at `path`, if it holds at most `max`.
pub fn read_small(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("larger than {max} bytes")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_and_big_files_are_refused() {
        assert!(read_small(Path::new("/dev/zero"), MAX_SECRET).unwrap_err().to_string().contains("regular"));
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 100]).unwrap();
        assert!(read_small(&big, 99).unwrap_err().to_string().contains("larger than 99"));
        assert_eq!(read_small(&big, 100).unwrap().len(), 100);
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        assert!(read_small(&fifo, MAX_SECRET).unwrap_err().to_string().contains("regular"));
    }
}
