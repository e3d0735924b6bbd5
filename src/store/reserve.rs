//! Room kept for the state on a disk that fills up: `state.reserve`, a
//! file of `SIZE` bytes beside the database. When a commit fails because
//! the disk is full, the writer deletes it and commits again at once, so
//! the decisions of a full disk are still saved (and a restart does not
//! decide them again under new ids). Once there is room again, it is
//! written back.
//!
//! The history writer writes nothing while the room is not held: on a
//! disk that filled up, what the state was given is the state's.
//!
//! `SIZE` covers the write-ahead log at its cap (`db::WAL_LIMIT`, 4 MiB)
//! and the checkpoint that empties it, twice over.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The reserved room, in bytes.
pub const SIZE: u64 = 8 << 20;
const FILE_NAME: &str = "state.reserve";

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Whether an earlier run reserved room in `dir` (a first start finds none).
pub fn left_by_an_earlier_run(dir: &Path) -> bool {
    path(dir).exists()
}

/// Makes sure the room is reserved (writes the file, really allocated and
/// on disk); the bytes reserved after, 0 when the disk has no room for it.
pub fn ensure(dir: &Path) -> u64 {
    let path = path(dir);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == SIZE) {
        return SIZE;
    }
    let written = std::fs::File::create(&path).and_then(|mut file| {
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..SIZE / chunk.len() as u64 {
            file.write_all(&chunk)?;
        }
        file.sync_all()
    });
    match written {
        Ok(()) => SIZE,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            tracing::debug!(file = %path.display(), error = %e, "cannot reserve room for the state yet");
            0
        }
    }
}

/// Whether the room is reserved (not given up to a full disk).
pub fn held(dir: &Path) -> bool {
    std::fs::metadata(path(dir)).is_ok_and(|m| m.len() == SIZE)
}

/// Gives the reserved room back to the disk; whether there was any.
pub fn release(dir: &Path) -> bool {
    std::fs::remove_file(path(dir)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_is_reserved_once_released_and_reserved_again() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ensure(dir.path()), SIZE);
        assert_eq!(std::fs::metadata(path(dir.path())).unwrap().len(), SIZE);
        assert_eq!(ensure(dir.path()), SIZE, "already there");
        assert!(release(dir.path()));
        assert!(!release(dir.path()), "nothing left to release");
        assert_eq!(ensure(dir.path()), SIZE);
    }
}
