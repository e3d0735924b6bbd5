//! Availability history: every transition of every device (from, to, when,
//! why, the payload, how long an outage lasted) in `history.db`, an SQLite
//! database of its own in the state directory, kept for `[history] keep`.
//!
//! The monitor hands transitions over without waiting (`writer.rs` batches
//! them into one transaction on a thread of its own), so a burst or a
//! storm never waits for history; when its queue is full an entry is
//! dropped, counted and logged. A history database that cannot be opened
//! is set aside and started anew; one that still fails turns history off,
//! never detection. `report.rs` turns transitions into uptime figures, `pages.rs` reads
//! them a page at a time, for `willwatch history` and the HTTP routes.

pub mod bars;
pub mod command;
pub mod pages;
pub mod report;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, params};

use crate::transition::Transition;

pub const FILE_NAME: &str = "history.db";

/// One transition as read back.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Row {
    pub device: String,
    pub at_ms: i64,
    pub from: String,
    pub to: String,
    pub cause: String,
    pub payload: String,
    pub offline_for_ms: Option<i64>,
}

/// A transition with its place in the table, for paging.
#[derive(Debug, Clone, PartialEq)]
pub struct Numbered {
    pub n: i64,
    pub row: Row,
}

/// A state as the history writes it, as the static name the figures use
/// (anything else is unknown).
fn state_name(s: &str) -> &'static str {
    crate::device::State::parse(s).map_or("unknown", crate::device::State::as_str)
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history database {}: {source}", file.display())]
    Sqlite { file: PathBuf, source: rusqlite::Error },
    #[error("cannot create the state directory {}: {source}", dir.display())]
    Dir { dir: PathBuf, source: std::io::Error },
}

pub fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis().min(i64::MAX as u128) as i64
}

pub struct History {
    conn: Connection,
    path: PathBuf,
}

impl History {
    /// Opens (or creates) the database for writing.
    pub fn open(dir: &Path) -> Result<History, HistoryError> {
        std::fs::create_dir_all(dir).map_err(|source| HistoryError::Dir { dir: dir.to_path_buf(), source })?;
        let path = dir.join(FILE_NAME);
        let sqlite = |source| HistoryError::Sqlite { file: path.clone(), source };
        let conn = Connection::open(&path).map_err(sqlite)?;
        // A rollback journal, not a write-ahead log: the page and the
        // `willwatch history` command read this file from connections of
        // their own, and a log would share its index with them through a
        // mapped `-shm` file (a write to it on a full or unwritable disk
        // kills the process with SIGBUS). The journal is emptied after each
        // commit, so it is never larger than one batch. History is not a
        // decision: the OS having it is enough.
        conn.pragma_update(None, "journal_mode", "TRUNCATE").map_err(sqlite)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(sqlite)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(sqlite)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS transitions (
                 device TEXT NOT NULL,
                 at_ms INTEGER NOT NULL,
                 from_state TEXT NOT NULL,
                 to_state TEXT NOT NULL,
                 cause TEXT NOT NULL,
                 payload TEXT NOT NULL,
                 offline_for_ms INTEGER
             );
             CREATE INDEX IF NOT EXISTS transitions_device_at ON transitions (device, at_ms);
             CREATE INDEX IF NOT EXISTS transitions_at ON transitions (at_ms);",
        )
        .map_err(sqlite)?;
        Ok(History { conn, path })
    }

    /// Opens an existing database read-only (the `willwatch history`
    /// command, beside a running daemon).
    pub fn open_read(dir: &Path) -> Result<History, HistoryError> {
        let path = dir.join(FILE_NAME);
        let sqlite = |source| HistoryError::Sqlite { file: path.clone(), source };
        let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sqlite)?;
        // The writer's commit holds the file for a moment: wait it out.
        conn.busy_timeout(Duration::from_secs(5)).map_err(sqlite)?;
        Ok(History { conn, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends entries in one transaction.
    pub fn append(&mut self, entries: &[Transition]) -> Result<(), HistoryError> {
        let sqlite = |source| HistoryError::Sqlite { file: self.path.clone(), source };
        let tx = self.conn.transaction().map_err(sqlite)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO transitions (device, at_ms, from_state, to_state, cause, payload, offline_for_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(sqlite)?;
            for e in entries {
                let offline_for = e.offline_for.map(|d| d.as_millis().min(i64::MAX as u128) as i64);
                insert
                    .execute(params![
                        e.device.as_str(),
                        ms(e.at),
                        e.from,
                        e.to,
                        e.cause,
                        e.payload.as_str(),
                        offline_for
                    ])
                    .map_err(sqlite)?;
            }
        }
        tx.commit().map_err(sqlite)
    }

    /// Removes what is older than `before`; how many rows went.
    pub fn prune(&self, before: SystemTime) -> Result<usize, HistoryError> {
        self.conn
            .execute("DELETE FROM transitions WHERE at_ms < ?1", [ms(before)])
            .map_err(|source| HistoryError::Sqlite { file: self.path.clone(), source })
    }

    /// Bytes the database holds: its pages less the free ones (what the
    /// oldest rows' removal gave back is reused before the file grows).
    pub fn used_bytes(&self) -> Result<u64, HistoryError> {
        let pragma = |name: &str| self.conn.pragma_query_value(None, name, |row| row.get::<_, i64>(0));
        let used = (|| Ok((pragma("page_count")? - pragma("freelist_count")?) * pragma("page_size")?))()
            .map_err(|source| HistoryError::Sqlite { file: self.path.clone(), source })?;
        Ok(u64::try_from(used).unwrap_or(0))
    }

    /// Removes the `rows` oldest rows (first written first, whatever gaps
    /// earlier removals left in their numbers); how many went.
    pub fn prune_oldest(&self, rows: u32) -> Result<usize, HistoryError> {
        self.conn
            .execute(
                "DELETE FROM transitions WHERE rowid IN (SELECT rowid FROM transitions ORDER BY rowid LIMIT ?1)",
                [i64::from(rows)],
            )
            .map_err(|source| HistoryError::Sqlite { file: self.path.clone(), source })
    }

    /// Each device's state before `from` (the `to` of its last transition
    /// before it) and its transitions in `[from, to)`, one device at a
    /// time in id order: `device` alone, or every device after `after`.
    /// `each` says whether to go on. Only rows up to `rows` (a `last_row`
    /// of before) are read: what was written since is left out. One pass
    /// over the `(device, at_ms)` index with one device's transitions in
    /// memory, however large the history.
    /// The last row written: `each_device` up to it reads the history as
    /// it is now, however much is written meanwhile.
    pub fn last_row(&self) -> Result<i64, HistoryError> {
        self.conn
            .query_row("SELECT COALESCE(MAX(rowid), 0) FROM transitions", [], |row| row.get(0))
            .map_err(|source| HistoryError::Sqlite { file: self.path.clone(), source })
    }

    pub fn each_device(
        &self,
        device: Option<&str>,
        after: Option<&str>,
        (from, to): (i64, i64),
        rows: i64,
        mut each: impl FnMut(&str, Option<&'static str>, &[(i64, &'static str)]) -> bool,
    ) -> Result<(), HistoryError> {
        let sqlite = |source| HistoryError::Sqlite { file: self.path.clone(), source };
        let (sql, key) = match device {
            Some(id) => (
                "SELECT device, at_ms, to_state FROM transitions WHERE device = ?1 AND at_ms < ?2 AND rowid <= ?3 ORDER BY at_ms, rowid",
                id,
            ),
            None => (
                "SELECT device, at_ms, to_state FROM transitions WHERE device > ?1 AND at_ms < ?2 AND rowid <= ?3 ORDER BY device, at_ms, rowid",
                after.unwrap_or(""),
            ),
        };
        let mut query = self.conn.prepare(sql).map_err(sqlite)?;
        let mut rows = query.query(params![key, to, rows]).map_err(sqlite)?;
        let mut current = String::new();
        let mut before: Option<&'static str> = None;
        let mut changes: Vec<(i64, &'static str)> = Vec::new();
        while let Some(row) = rows.next().map_err(sqlite)? {
            let id = row.get_ref(0).map_err(sqlite)?.as_str().map_err(|e| sqlite(e.into()))?;
            if id != current {
                if !current.is_empty() && !each(&current, before, &changes) {
                    return Ok(());
                }
                current.clear();
                current.push_str(id);
                (before, changes) = (None, Vec::new());
            }
            let at: i64 = row.get(1).map_err(sqlite)?;
            let state = state_name(row.get_ref(2).map_err(sqlite)?.as_str().map_err(|e| sqlite(e.into()))?);
            if at < from {
                before = Some(state);
            } else {
                changes.push((at, state));
            }
        }
        if !current.is_empty() {
            each(&current, before, &changes);
        }
        Ok(())
    }

    /// Up to `limit` transitions of `device` since `from`, in time order,
    /// after the one `after` names (`(at_ms, n)` of `Numbered`).
    pub fn transitions_page(
        &self,
        device: &str,
        from: i64,
        after: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<Vec<Numbered>, HistoryError> {
        let sqlite = |source| HistoryError::Sqlite { file: self.path.clone(), source };
        let (at, n) = after.unwrap_or((i64::MIN, i64::MIN));
        let mut query = self
            .conn
            .prepare(
                "SELECT rowid, device, at_ms, from_state, to_state, cause, payload, offline_for_ms FROM transitions
                 WHERE device = ?1 AND at_ms >= ?2 AND (at_ms, rowid) > (?3, ?4) ORDER BY at_ms, rowid LIMIT ?5",
            )
            .map_err(sqlite)?;
        let rows = query
            .query_map(params![device, from, at, n, limit.min(i64::MAX as usize) as i64], |r| {
                Ok(Numbered {
                    n: r.get(0)?,
                    row: Row {
                        device: r.get(1)?,
                        at_ms: r.get(2)?,
                        from: r.get(3)?,
                        to: r.get(4)?,
                        cause: r.get(5)?,
                        payload: r.get(6)?,
                        offline_for_ms: r.get(7)?,
                    },
                })
            })
            .map_err(sqlite)?;
        rows.collect::<Result<_, _>>().map_err(sqlite)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `device`'s transition from `from` to `to` at `at_s` seconds.
    pub(in crate::history) fn entry(device: &str, at_s: u64, from: &'static str, to: &'static str) -> Transition {
        Transition {
            device: device.into(),
            at: UNIX_EPOCH + Duration::from_secs(at_s),
            from,
            to,
            cause: "will",
            payload: to.into(),
            offline_for: None,
        }
    }

    #[test]
    fn transitions_read_back_per_device_in_order_and_old_ones_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::open(dir.path()).unwrap();
        h.append(&[entry("a", 10, "unknown", "online"), entry("b", 20, "unknown", "online")]).unwrap();
        h.append(&[entry("a", 30, "online", "offline"), entry("a", 40, "offline", "online")]).unwrap();
        let read = History::open_read(dir.path()).unwrap();
        let mut seen = Vec::new();
        read.each_device(None, None, (35_000, 100_000), i64::MAX, |id, before, changes| {
            seen.push((id.to_string(), before, changes.to_vec()));
            true
        })
        .unwrap();
        assert_eq!(
            seen,
            [("a".to_string(), Some("offline"), vec![(40_000, "online")]), ("b".to_string(), Some("online"), vec![])]
        );
        assert_eq!(h.prune(UNIX_EPOCH + Duration::from_secs(25)).unwrap(), 2);
        let mut left = 0;
        read.each_device(None, Some("a"), (0, 100_000), i64::MAX, |_, _, _| {
            left += 1;
            true
        })
        .unwrap();
        assert_eq!(left, 0, "after `a`, nothing: b's only row was pruned");
    }

    #[test]
    fn the_oldest_rows_go_first_and_what_they_took_is_counted_free() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::open(dir.path()).unwrap();
        let rows: Vec<Transition> = (0..20_000u64)
            .map(|i| Transition {
                payload: "x".repeat(200).into(),
                ..entry(&format!("d-{}", i % 100), i, "online", "offline")
            })
            .collect();
        h.append(&rows).unwrap();
        let before = h.used_bytes().unwrap();
        assert!(before > 4 << 20, "{before} bytes");
        assert_eq!(h.prune_oldest(15_000).unwrap(), 15_000);
        let after = h.used_bytes().unwrap();
        assert!(after < before / 3, "{before} bytes, then {after}");
        let (oldest, newest, left): (i64, i64, i64) = h
            .conn
            .query_row("SELECT min(at_ms), max(at_ms), count(*) FROM transitions", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!((oldest, newest, left), (15_000_000, 19_999_000, 5_000), "exactly the oldest went");
        assert_eq!(h.prune_oldest(10_000).unwrap(), 5_000);
        assert_eq!(h.prune_oldest(10_000).unwrap(), 0, "an empty history has nothing to give");
    }
}
