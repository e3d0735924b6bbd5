//! The last good copy of the state database (`state.db.good`): taken by
//! the writer at the start, every `EVERY` and at a clean stop, through its
//! own connection (the only one: `Db::copy_to`), which only waits for the
//! bytes to be copied; the copy reaches the disk and its place beside the
//! writer (`seal`). When the
//! state database is corrupt, empty or gone at a start, the copy takes its
//! place: what was decided since the copy may be decided again, but not
//! everything, as a clean start would.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::db::{Db, DbError, FILE_NAME};

/// The copy's file name, beside `state.db`.
pub const COPY_NAME: &str = "state.db.good";
/// How often the writer takes a copy.
pub const EVERY: Duration = Duration::from_secs(300);

fn path(dir: &Path) -> PathBuf {
    dir.join(COPY_NAME)
}

fn partial(dir: &Path) -> PathBuf {
    dir.join(format!("{COPY_NAME}.partial"))
}

/// Copies `db` (in `dir`) beside it; `seal` puts the copy in place.
pub fn take(db: &Db, dir: &Path) -> Result<(), DbError> {
    let _ = std::fs::remove_file(partial(dir));
    let copied = db.copy_to(&partial(dir));
    if copied.is_err() {
        let _ = std::fs::remove_file(partial(dir));
    }
    copied
}

/// Puts the copy `take` wrote in place of the last one once it is whole on
/// disk.
pub fn seal(dir: &Path) -> Result<(), DbError> {
    let partial = partial(dir);
    let dir_error = |source| DbError::Dir { dir: dir.to_path_buf(), source };
    let sealed = std::fs::File::open(&partial)
        .and_then(|f| f.sync_all())
        .and_then(|()| std::fs::rename(&partial, path(dir)))
        .and_then(|()| std::fs::File::open(dir))
        .and_then(|d| d.sync_all());
    if sealed.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    sealed.map_err(dir_error)
}

/// Puts the last good copy in place of `dir/state.db` (whose files must be
/// out of the way); when it was taken, if there is one.
pub fn restore(dir: &Path) -> Option<SystemTime> {
    let copy = path(dir);
    let taken = std::fs::metadata(&copy).and_then(|m| m.modified()).ok()?;
    match std::fs::copy(&copy, dir.join(FILE_NAME)) {
        Ok(_) => Some(taken),
        Err(e) => {
            tracing::error!(file = %copy.display(), error = %e, "cannot put the last good copy of the state in place");
            None
        }
    }
}

/// Whether `dir` has a copy to restore.
pub fn exists(dir: &Path) -> bool {
    path(dir).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StateSync;
    use crate::store::{Batch, Db};

    #[test]
    fn a_copy_restores_what_was_committed_when_it_was_taken() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(dir.path(), StateSync::Full).unwrap();
        let saved = crate::device::Saved {
            topic: "t/pump".into(),
            state: crate::device::State::Offline,
            since: None,
            offline_since: None,
            alerted: true,
            seq: None,
        };
        let batch = Batch { devices: [("pump".to_string(), Some(saved))].into(), ..Batch::default() };
        db.commit(&batch).unwrap();
        take(&db, dir.path()).unwrap();
        seal(dir.path()).unwrap();
        assert!(exists(dir.path()));
        drop(db);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(dir.path().join(format!("{FILE_NAME}{suffix}")));
        }
        assert!(restore(dir.path()).is_some());
        let loaded = Db::open(dir.path(), StateSync::Full).unwrap().load().unwrap();
        assert!(loaded.devices["pump"].alerted);
    }

    #[test]
    fn without_a_copy_nothing_is_restored() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!exists(dir.path()));
        assert_eq!(restore(dir.path()), None);
    }
}
