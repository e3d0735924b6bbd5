//! What survives a restart, even a SIGKILL: every device's state and every
//! notification decided but not yet acknowledged by its action.
//!
//! - `db`: the SQLite file (`state.db`, WAL mode) and its transactions;
//! - `writer`: the task that commits decisions before they reach the
//!   actions, and records what the actions finished;
//! - `copy`: the last good copy, which takes the place of a state
//!   database found corrupt, empty or gone at a start;
//! - `reserve`: room kept on the disk for the commits of a full one;
//! - `legacy`: the JSON state file of earlier versions, imported once.
//!
//! Why SQLite rather than a journal of our own: one row per device is
//! updated in place, so a change costs the same at 100 devices and at a
//! million, with no compaction to write; a transaction makes a device's
//! new state and the notifications it decided land together or not at
//! all; and a write-ahead log makes a commit one append and one fsync.
//! Only the daemon opens the file (exclusive locking: the log's index is in
//! its memory, no `-shm` file is mapped, so a full or unwritable disk is an
//! error and never a SIGBUS).

mod copy;
mod db;
mod legacy;
pub mod reserve;
mod writer;

use std::path::Path;
use std::time::SystemTime;

use crate::config::StateSync;

pub use db::{Batch, Db, DbError, FILE_NAME, Loaded, Taken};
pub use writer::{Ack, Op, Outgoing, Writer};

/// Opens the state database in `dir` and reads it back. A corrupt file is
/// set aside (renamed), and so is an empty one; the last good copy takes
/// their place (and that of a file gone since a copy was taken), else the
/// daemon starts clean, logged either way. A file that cannot be opened at
/// all (a missing or read-only disk) is logged, and the writer keeps trying
/// to open it while monitoring goes on. A file another process holds (a
/// second daemon on the same directory) is refused.
pub fn open(dir: &Path, sync: StateSync) -> Result<(Option<Db>, Loaded), InUse> {
    // An earlier run leaves its reserved room (and, after a SIGKILL, its
    // log): a state database gone without a copy then is lost, not new.
    let ran_before = reserve::left_by_an_earlier_run(dir) || dir.join(format!("{FILE_NAME}-wal")).exists();
    if std::fs::create_dir_all(dir).is_ok() && reserve::ensure(dir) == 0 {
        tracing::warn!(dir = %dir.display(), bytes = reserve::SIZE,
            "cannot reserve room for the state: a disk that fills up may lose decisions");
    }
    // SQLite takes an empty file for a new database (and then ignores the
    // log beside it, which cannot be replayed onto another file): it is
    // not one here.
    let mut lost = false;
    match std::fs::metadata(dir.join(FILE_NAME)).map(|m| m.len()) {
        Ok(0) => {
            lost = true;
            let aside = set_aside(dir);
            tracing::error!(file = %dir.join(FILE_NAME).display(), set_aside = %aside, "state database is empty");
            recover(dir, "empty");
        }
        Err(_) if copy::exists(dir) => {
            lost = true;
            // Its log belongs to the file that is gone: replayed onto the
            // copy it would mix two states, or corrupt it.
            let aside = set_aside(dir);
            tracing::error!(file = %dir.join(FILE_NAME).display(), set_aside = %aside,
                "state database is missing (its good copy is there)");
            recover(dir, "missing");
        }
        Err(_) if ran_before => {
            lost = true;
            let aside = set_aside(dir);
            tracing::error!(file = %dir.join(FILE_NAME).display(), set_aside = %aside,
                "state database is missing (an earlier run left its other files)");
            recover(dir, "missing");
        }
        _ => {}
    }
    // On a full disk the reserved room is given back for the start itself.
    let load = || {
        let attempt = || Db::open(dir, sync).and_then(|db| db.load().map(|loaded| (db, loaded)));
        match attempt() {
            Err(e) if e.is_full() && reserve::release(dir) => {
                tracing::error!(dir = %dir.display(), bytes = reserve::SIZE, "the disk is full: released the room reserved for the state");
                attempt()
            }
            done => done,
        }
    };
    let (mut db, mut loaded) = match load() {
        Ok((db, loaded)) => (db, loaded),
        Err(DbError::Sqlite { source, .. })
            if source.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) =>
        {
            return Err(InUse { file: dir.join(FILE_NAME) });
        }
        Err(DbError::Sqlite { source, .. }) if is_corrupt(&source) => {
            lost = true;
            let aside = set_aside(dir);
            tracing::error!(file = %dir.join(FILE_NAME).display(), set_aside = %aside, error = %source,
                "state database is corrupt; set it aside");
            let restored = recover(dir, "corrupt").then(load);
            match restored {
                Some(Ok(restored)) => restored,
                Some(Err(e)) => {
                    let aside = set_aside(dir);
                    tracing::error!(error = %e, set_aside = %aside, "the good copy cannot be read either; starting clean");
                    match Db::open(dir, sync) {
                        Ok(db) => (db, Loaded::default()),
                        Err(e) => return Ok(unavailable(dir, sync, e)),
                    }
                }
                None => match Db::open(dir, sync) {
                    Ok(db) => (db, Loaded::default()),
                    Err(e) => return Ok(unavailable(dir, sync, e)),
                },
            }
        }
        Err(e) => return Ok(unavailable(dir, sync, e)),
    };
    if loaded.devices.is_empty()
        && let Some(devices) = legacy::read(dir)
    {
        let batch = Batch {
            devices: devices.iter().map(|(id, s)| (id.clone(), Some(s.clone()))).collect(),
            ..Batch::default()
        };
        match db.commit(&batch) {
            Ok(()) => {
                tracing::info!(devices = devices.len(), "imported the state file of an earlier version");
                legacy::retire(dir);
                loaded.devices = devices;
            }
            Err(e) => tracing::error!(error = %e, "cannot import the state file of an earlier version"),
        }
    }
    loaded.lost = lost;
    tracing::info!(file = %db.path().display(), devices = loaded.devices.len(), owed = loaded.pending.len(), what = "state_restored", "state restored");
    Ok((Some(db), loaded))
}

/// This process's hold on its state directory: one daemon a directory.
/// Released when dropped (or when the process dies, even by SIGKILL).
pub struct Lock {
    _held: nix::fcntl::Flock<std::fs::File>,
}

/// Takes the state directory `dir` for this process (`state.lock`, an
/// exclusive `flock`); another daemon holding it is refused.
pub fn lock(dir: &Path) -> Result<Option<Lock>, InUse> {
    let file = dir.join("state.lock");
    let opened = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&file));
    let Ok(opened) = opened else {
        // An unwritable directory: the writer reports it and keeps trying.
        return Ok(None);
    };
    match nix::fcntl::Flock::lock(opened, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(held) => Ok(Some(Lock { _held: held })),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(InUse { file }),
        Err(_) => Ok(None),
    }
}

/// The state database is held by another process.
#[derive(Debug, thiserror::Error)]
#[error(
    "state database {file} is in use by another process (a second willwatch with the same state_dir?): \
     give each daemon its own state_dir, or stop the other one"
)]
pub struct InUse {
    pub file: std::path::PathBuf,
}

/// Puts the last good copy in place of a state database that is `what`
/// (corrupt, empty, missing); whether there was one. Logged either way:
/// a start without the state notifies every open outage again.
fn recover(dir: &Path, what: &'static str) -> bool {
    let file = dir.join(FILE_NAME);
    match copy::restore(dir) {
        Some(taken) => {
            let age = SystemTime::now().duration_since(taken).unwrap_or_default().as_secs();
            tracing::error!(file = %file.display(), state = what, copy_age_secs = age,
                "restored the last good copy of the state database: what was decided since it was taken may be notified again, under new ids (counted in willwatch_events_unlinked_total)");
            true
        }
        None => {
            tracing::error!(file = %file.display(), state = what,
                "no good copy of the state database to restore: starting clean, every open outage may be notified again, under new ids (counted in willwatch_events_unlinked_total)");
            false
        }
    }
}

/// The state database cannot be opened to write: its state is read if it
/// can be (so what the writer commits once it can is made on it, never on
/// an empty picture).
fn unavailable(dir: &Path, sync: StateSync, e: DbError) -> (Option<Db>, Loaded) {
    match Db::open_read_only(dir, sync).and_then(|db| db.load()) {
        Ok(loaded) => {
            tracing::error!(error = %e, devices = loaded.devices.len(), owed = loaded.pending.len(),
                "cannot write the state database; its state is read, monitoring goes on and the writer keeps trying");
            (None, loaded)
        }
        Err(read) => {
            tracing::error!(error = %e, read_error = %read,
                "cannot open the state database; monitoring goes on and the writer keeps trying");
            (None, Loaded::default())
        }
    }
}

fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt))
}

/// Renames the database (and its WAL) aside; returns the new name.
fn set_aside(dir: &Path) -> String {
    let stamp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis();
    let aside = dir.join(format!("{FILE_NAME}.corrupt-{stamp}"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::rename(
            format!("{}{suffix}", dir.join(FILE_NAME).display()),
            format!("{}{suffix}", aside.display()),
        );
    }
    aside.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_file_is_set_aside_and_nothing_is_restored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"this is not a database, not even close to one....").unwrap();
        let (db, loaded) = open(dir.path(), StateSync::Full).unwrap();
        assert!(db.is_some(), "a fresh database replaces it");
        assert!(loaded.devices.is_empty());
        let aside = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
            .count();
        assert_eq!(aside, 1);
    }

    #[test]
    fn an_old_state_file_is_imported_once() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"{"version":1,"saved_at_ms":0,"devices":{"pump-7":{"topic":"plant/pump-7/status",
            "state":"offline","since_ms":1000,"offline_since_ms":1000,"alerted":true,"seq":null}}}"#;
        std::fs::write(dir.path().join(legacy::FILE_NAME), text).unwrap();
        let (db, loaded) = open(dir.path(), StateSync::Full).unwrap();
        assert!(loaded.devices["pump-7"].alerted);
        assert!(!dir.path().join(legacy::FILE_NAME).exists());
        drop(db);
        let (_, again) = open(dir.path(), StateSync::Full).unwrap();
        assert!(again.devices["pump-7"].alerted, "kept in the database");
    }

    #[test]
    fn a_state_directory_another_daemon_holds_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        assert!(held.is_some());
        assert!(matches!(lock(dir.path()), Err(InUse { .. })), "a second holder is refused");
        drop(held);
        assert!(matches!(lock(dir.path()), Ok(Some(_))), "free again once the first is gone");
    }

    #[test]
    fn a_state_database_another_process_holds_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (held, _) = open(dir.path(), StateSync::Full).unwrap();
        let second = open(dir.path(), StateSync::Full);
        assert!(matches!(second, Err(InUse { .. })), "the second opener is refused");
        drop(held);
        assert!(open(dir.path(), StateSync::Full).is_ok(), "free again once the first is gone");
    }
}
