//! The state database: SQLite in WAL mode, synchronous, in `state.db`.
//!
//! Two tables. `devices` holds what a restart must remember of each device
//! (state, since when, whether its offline was notified, its sequence),
//! one row per device, updated in place: a change costs one row, whatever
//! the fleet's size. `outbox` holds every decided notification not yet
//! acknowledged by its action, one row per (event, action), in decision
//! order: a row is written in the same transaction as the device state that
//! decided it, before the first attempt, and deleted when the action is
//! done. What is still there at start-up is sent again with its id.
//!
//! Every call here is synchronous and may block on the disk: the writer
//! task runs them off the async threads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::cluster::Words;
use crate::config::StateSync;
use crate::device::{Saved, State};
use crate::event::{Event, EventKind};

pub const FILE_NAME: &str = "state.db";
/// Bumped when the tables change; older files are migrated or refused.
const SCHEMA_VERSION: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot create the state directory {dir}: {source}")]
    Dir { dir: PathBuf, source: std::io::Error },
    #[error("state database {file}: {source}")]
    Sqlite { file: PathBuf, source: rusqlite::Error },
    #[error("state database {file} has schema version {found}, newer than this willwatch's {SCHEMA_VERSION}")]
    Newer { file: PathBuf, found: i64 },
}

impl DbError {
    /// The disk is full.
    pub fn is_full(&self) -> bool {
        match self {
            DbError::Sqlite { source, .. } => source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull),
            DbError::Dir { source, .. } => source.kind() == std::io::ErrorKind::StorageFull,
            DbError::Newer { .. } => false,
        }
    }
}

/// The size the write-ahead log is cut back to after a checkpoint.
pub const WAL_LIMIT: i64 = 4 << 20;

/// One unit of work, committed whole or not at all.
#[derive(Debug, Default)]
pub struct Batch {
    /// The newest record of each changed device; `None`: forget it.
    pub devices: HashMap<String, Option<Saved>>,
    /// Decided events, in order; one outbox row per action each.
    pub events: Vec<Arc<Event>>,
    /// (event id, action) pairs that are done.
    pub acks: Vec<(String, String)>,
    /// In a cluster: what was said of each changed device.
    pub told: HashMap<String, Words>,
    /// The last message whose decisions this batch holds (with those
    /// committed before).
    pub taken: Option<Taken>,
}

/// A message from the broker, as it is known again when the broker sends
/// it a second time (same packet id, same topic): the last one whose
/// decisions are committed tells, after a crash, which of those sent
/// again were already taken in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub pkid: u16,
    pub topic: String,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty() && self.events.is_empty() && self.acks.is_empty() && self.told.is_empty()
    }

    /// Records held: what a failing disk makes pile up.
    pub fn len(&self) -> usize {
        self.devices.len() + self.events.len() + self.acks.len() + self.told.len()
    }

    /// Drops the events of this (never committed) batch that every one of
    /// their actions has already acknowledged, with those
    /// acknowledgements: done before they were written, they need no row.
    /// Returns how many events went.
    pub fn net(&mut self) -> usize {
        let mut done: HashMap<&str, usize> = HashMap::new();
        for (id, _) in &self.acks {
            *done.entry(id.as_str()).or_default() += 1;
        }
        let finished: std::collections::HashSet<String> = self
            .events
            .iter()
            .filter(|e| done.get(e.id.as_str()).is_some_and(|n| *n >= e.actions.len()))
            .map(|e| e.id.clone())
            .collect();
        self.events.retain(|e| !finished.contains(&e.id));
        self.acks.retain(|(id, _)| !finished.contains(id));
        finished.len()
    }
}

/// What a start-up finds on disk.
#[derive(Debug, Default)]
pub struct Loaded {
    pub devices: HashMap<String, Saved>,
    /// Notifications decided but not acknowledged, oldest first, each with
    /// the actions still owed.
    pub pending: Vec<Event>,
    /// What a cluster said of each device; `None` when this state never
    /// belonged to a cluster member.
    pub told: Option<HashMap<String, Words>>,
    /// The last message taken in by the run that wrote this state.
    pub taken: Option<Taken>,
    /// The state database was lost (corrupt, empty, gone): this is its
    /// last good copy, or nothing.
    pub lost: bool,
}

pub struct Db {
    path: PathBuf,
    sync: StateSync,
    conn: Connection,
    /// The file's inode when opened: a different one (or none) means the
    /// file was deleted or replaced under us.
    inode: u64,
}

impl Db {
    /// Opens (or creates) `dir/state.db`, committing as `sync` says.
    pub fn open(dir: &Path, sync: StateSync) -> Result<Db, DbError> {
        std::fs::create_dir_all(dir).map_err(|source| DbError::Dir { dir: dir.to_path_buf(), source })?;
        let path = dir.join(FILE_NAME);
        let sqlite = |source| DbError::Sqlite { file: path.clone(), source };
        let conn = Connection::open(&path).map_err(sqlite)?;
        // Exclusive, and so before WAL: the log's index lives in this
        // process's memory, not in a shared `-shm` file mapped into it (a
        // write to that mapping on a full or unwritable disk kills the
        // process with SIGBUS; here it is an error the writer retries).
        // Only the daemon opens this file, and a second daemon on the same
        // state directory is refused.
        // FULL: a commit is on the platter, not only in the OS, before the
        // notification it records goes out (NORMAL: in the OS). A small
        // cache: the work is writes of a few rows.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE").map_err(sqlite)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sqlite)?;
        conn.pragma_update(None, "synchronous", sync.pragma()).map_err(sqlite)?;
        conn.pragma_update(None, "cache_size", -256).map_err(sqlite)?;
        // The log is checkpointed every 1,000 pages (4 MiB) and cut back to
        // `WAL_LIMIT` after: a burst does not leave it large on disk.
        conn.pragma_update(None, "journal_size_limit", WAL_LIMIT).map_err(sqlite)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(sqlite)?;
        let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sqlite)?;
        if found > SCHEMA_VERSION {
            return Err(DbError::Newer { file: path, found });
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS devices (
                 id TEXT PRIMARY KEY,
                 topic TEXT NOT NULL,
                 state TEXT NOT NULL,
                 since_ms INTEGER,
                 offline_since_ms INTEGER,
                 alerted INTEGER NOT NULL,
                 seq INTEGER
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS outbox (
                 n INTEGER PRIMARY KEY AUTOINCREMENT,
                 event_id TEXT NOT NULL,
                 action TEXT NOT NULL,
                 event TEXT NOT NULL,
                 UNIQUE (event_id, action)
             );
             CREATE TABLE IF NOT EXISTS intake (
                 k INTEGER PRIMARY KEY CHECK (k = 0),
                 pkid INTEGER NOT NULL,
                 topic TEXT NOT NULL
             );",
        )
        .map_err(sqlite)?;
        // Written only when it changes: opening needs no room on a full disk.
        if found != SCHEMA_VERSION {
            conn.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(sqlite)?;
        }
        let inode = inode(&path).unwrap_or_default();
        Ok(Db { path, sync, conn, inode })
    }

    /// Opens `dir/state.db` to read only: its state, when it cannot be
    /// written (an immutable or read-only file).
    pub fn open_read_only(dir: &Path, sync: StateSync) -> Result<Db, DbError> {
        let path = dir.join(FILE_NAME);
        let sqlite = |source| DbError::Sqlite { file: path.clone(), source };
        use rusqlite::OpenFlags;
        let readable = |conn: Connection| {
            conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
            conn.query_row("SELECT count(*) FROM devices", [], |_| Ok(()))?;
            Ok(conn)
        };
        // An immutable file cannot be locked, nor its log opened: read as
        // immutable (without the log: what a crash left in it is not seen).
        let uri_path = path.display().to_string().replace('%', "%25").replace('?', "%3f").replace('#', "%23");
        let immutable = format!("file:{uri_path}?immutable=1");
        let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(readable)
            .or_else(|_| {
                Connection::open_with_flags(&immutable, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI)
                    .and_then(readable)
            })
            .map_err(sqlite)?;
        let inode = inode(&path).unwrap_or_default();
        Ok(Db { path, sync, conn, inode })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Everything saved: device states (corrupt rows are skipped and
    /// logged) and the pending notifications.
    pub fn load(&self) -> Result<Loaded, DbError> {
        let sqlite = |source| DbError::Sqlite { file: self.path.clone(), source };
        let mut loaded = Loaded::default();
        let mut rows = self
            .conn
            .prepare("SELECT id, topic, state, since_ms, offline_since_ms, alerted, seq FROM devices")
            .map_err(sqlite)?;
        let devices = rows
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, bool>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                ))
            })
            .map_err(sqlite)?;
        let now = SystemTime::now();
        for row in devices {
            let (id, topic, state, since, offline_since, alerted, seq) = row.map_err(sqlite)?;
            let Some(state) = State::parse(&state) else {
                tracing::error!(file = %self.path.display(), device = %id, state = %state, "skipping a saved device with an unknown state");
                continue;
            };
            let saved = Saved {
                topic,
                state,
                since: since.map(|ms| from_ms(ms, now)),
                offline_since: offline_since.map(|ms| from_ms(ms, now)),
                alerted,
                seq,
            };
            loaded.devices.insert(id, saved);
        }
        let mut rows = self.conn.prepare("SELECT event_id, action, event FROM outbox ORDER BY n").map_err(sqlite)?;
        let pending =
            rows.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get::<_, String>(2)?))).map_err(sqlite)?;
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut owed: Vec<Vec<String>> = Vec::new();
        for row in pending {
            let (id, action, body) = row.map_err(sqlite)?;
            if let Some(&i) = index.get(&id) {
                owed[i].push(action);
                continue;
            }
            match serde_json::from_str::<Stored>(&body).ok().and_then(|s| s.into_event(&id)) {
                Some(event) => {
                    index.insert(id, loaded.pending.len());
                    loaded.pending.push(event);
                    owed.push(vec![action]);
                }
                None => tracing::error!(file = %self.path.display(), event_id = %id, action = %action,
                    "skipping a pending notification that cannot be read back"),
            }
        }
        for (event, actions) in loaded.pending.iter_mut().zip(owed) {
            event.actions = Arc::from(actions);
        }
        loaded.told = self.load_told().map_err(sqlite)?;
        loaded.taken = self
            .conn
            .query_row("SELECT pkid, topic FROM intake WHERE k = 0", [], |r| {
                Ok(Taken { pkid: r.get(0)?, topic: r.get(1)? })
            })
            .optional()
            .map_err(sqlite)?;
        Ok(loaded)
    }

    /// Commits `batch` in one transaction: events first, then device rows,
    /// then acknowledgements (an event acknowledged before its first commit
    /// succeeded still nets out to nothing pending).
    pub fn commit(&mut self, batch: &Batch) -> Result<(), DbError> {
        let file = self.path.clone();
        let sqlite = |source| DbError::Sqlite { file: file.clone(), source };
        let tx = self.conn.transaction().map_err(sqlite)?;
        {
            let mut insert = tx
                .prepare_cached("INSERT OR IGNORE INTO outbox (event_id, action, event) VALUES (?1, ?2, ?3)")
                .map_err(sqlite)?;
            for event in &batch.events {
                let body = serde_json::to_string(&Stored::of(event)).expect("an event always serialises");
                for action in event.actions.iter() {
                    insert.execute(params![event.id, action, body]).map_err(sqlite)?;
                }
            }
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO devices (id, topic, state, since_ms, offline_since_ms, alerted, seq)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (id) DO UPDATE SET topic = ?2, state = ?3, since_ms = ?4,
                         offline_since_ms = ?5, alerted = ?6, seq = ?7",
                )
                .map_err(sqlite)?;
            let mut forget = tx.prepare_cached("DELETE FROM devices WHERE id = ?1").map_err(sqlite)?;
            for (id, saved) in &batch.devices {
                match saved {
                    Some(s) => upsert
                        .execute(params![
                            id,
                            s.topic,
                            s.state.as_str(),
                            s.since.map(to_ms),
                            s.offline_since.map(to_ms),
                            s.alerted,
                            s.seq
                        ])
                        .map_err(sqlite)?,
                    None => forget.execute(params![id]).map_err(sqlite)?,
                };
            }
            let mut ack =
                tx.prepare_cached("DELETE FROM outbox WHERE event_id = ?1 AND action = ?2").map_err(sqlite)?;
            for (id, action) in &batch.acks {
                ack.execute(params![id, action]).map_err(sqlite)?;
            }
            if let Some(taken) = &batch.taken {
                tx.prepare_cached(
                    "INSERT INTO intake (k, pkid, topic) VALUES (0, ?1, ?2)
                     ON CONFLICT (k) DO UPDATE SET pkid = ?1, topic = ?2",
                )
                .map_err(sqlite)?
                .execute(params![taken.pkid, taken.topic])
                .map_err(sqlite)?;
            }
            if !batch.told.is_empty() {
                tx.execute_batch(TOLD_TABLE).map_err(sqlite)?;
                let mut upsert = tx
                    .prepare_cached(
                        "INSERT INTO cluster_told (device, words) VALUES (?1, ?2)
                         ON CONFLICT (device) DO UPDATE SET words = ?2",
                    )
                    .map_err(sqlite)?;
                let mut delete = tx.prepare_cached("DELETE FROM cluster_told WHERE device = ?1").map_err(sqlite)?;
                for (device, words) in &batch.told {
                    if words.last().is_none() {
                        delete.execute(params![device]).map_err(sqlite)?;
                    } else {
                        let json = serde_json::to_string(words).expect("words always serialise");
                        upsert.execute(params![device, json]).map_err(sqlite)?;
                    }
                }
            }
        }
        tx.commit().map_err(sqlite)
    }

    /// What a cluster said of each device, if this state ever was a
    /// member's (the table is made by the first write of one). A row that
    /// cannot be read is skipped, logged.
    fn load_told(&self) -> Result<Option<HashMap<String, Words>>, rusqlite::Error> {
        let exists: bool = self.conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'cluster_told'",
            [],
            |r| r.get(0),
        )?;
        if !exists {
            return Ok(None);
        }
        let mut rows = self.conn.prepare("SELECT device, words FROM cluster_told")?;
        let mut told = HashMap::new();
        for row in rows.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (device, json) = row?;
            match serde_json::from_str::<Words>(&json) {
                Ok(words) => {
                    told.insert(device, words);
                }
                Err(e) => tracing::error!(file = %self.path.display(), device = %device, error = %e,
                    "skipping what the cluster said of a device: it cannot be read back"),
            }
        }
        Ok(Some(told))
    }

    /// How many (event, action) notifications are still owed.
    pub fn pending(&self) -> Result<i64, DbError> {
        self.conn
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(|source| DbError::Sqlite { file: self.path.clone(), source })
    }

    /// Writes a consistent copy of the database to `to`: the log is
    /// checkpointed into the file first, and nothing writes meanwhile (the
    /// copy is this connection's own work).
    pub fn copy_to(&self, to: &Path) -> Result<(), DbError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|source| DbError::Sqlite { file: self.path.clone(), source })?;
        let dir = self.path.parent().map(Path::to_path_buf).unwrap_or_default();
        std::fs::copy(&self.path, to).map(drop).map_err(|source| DbError::Dir { dir, source })
    }

    /// Whether the file we write is still the one at our path (it may have
    /// been deleted or replaced while we run).
    pub fn still_in_place(&self) -> bool {
        inode(&self.path) == Some(self.inode)
    }

    /// Writes what this connection still sees back to our path, after the
    /// file was deleted or replaced under us, and reopens it.
    pub fn rewrite(self) -> Result<Db, DbError> {
        let dir = self.path.parent().map(Path::to_path_buf).unwrap_or_default();
        let rebuilt = dir.join(format!("{FILE_NAME}.rebuild"));
        let sqlite = |source| DbError::Sqlite { file: rebuilt.clone(), source };
        std::fs::create_dir_all(&dir).map_err(|source| DbError::Dir { dir: dir.clone(), source })?;
        let _ = std::fs::remove_file(&rebuilt);
        self.conn.execute("VACUUM INTO ?1", params![rebuilt.to_string_lossy()]).map_err(sqlite)?;
        let (path, sync) = (self.path.clone(), self.sync);
        // Closing checkpoints and removes whatever WAL sits at our path, so
        // no stale log is replayed into the rebuilt file.
        drop(self);
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        std::fs::rename(&rebuilt, &path).map_err(|source| DbError::Dir { dir: dir.clone(), source })?;
        Db::open(&dir, sync)
    }

    /// For tests of failing disks: refuse every write from now on (or again
    /// accept them).
    #[cfg(test)]
    pub fn refuse_writes(&self, refuse: bool) {
        self.conn.pragma_update(None, "query_only", refuse).unwrap();
    }
}

fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

pub fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis().min(i64::MAX as u128) as i64
}

/// A saved time, never later than `now`: a file from a machine whose clock
/// ran ahead (or a hand-edited one) must not put timers in the far future.
pub fn from_ms(ms: i64, now: SystemTime) -> SystemTime {
    (UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)).min(now)
}

/// What a cluster said of each device (`cluster::Words`, as JSON): made
/// by a member's first write, so a state without it never belonged to one.
const TOLD_TABLE: &str = "CREATE TABLE IF NOT EXISTS cluster_told (
    device TEXT PRIMARY KEY,
    words TEXT NOT NULL
) WITHOUT ROWID;";

/// An event as the outbox keeps it (its id and actions are columns).
#[derive(Serialize, Deserialize)]
struct Stored {
    kind: String,
    device: String,
    topic: String,
    payload: String,
    previous: String,
    at_ms: i64,
    offline_since_ms: Option<i64>,
    offline_for_ms: Option<u64>,
    attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    severity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    children_offline: Option<usize>,
    #[serde(default)]
    seen_late: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    sparkplug: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    epoch: Option<u64>,
}

impl Stored {
    fn of(e: &Event) -> Stored {
        Stored {
            kind: e.kind.as_str().to_string(),
            device: e.device.clone(),
            topic: e.topic.clone(),
            payload: e.payload.clone(),
            previous: e.previous.to_string(),
            at_ms: to_ms(e.at),
            offline_since_ms: e.offline_since.map(to_ms),
            offline_for_ms: e.offline_for.map(|d| d.as_millis() as u64),
            attempts: e.attempts,
            severity: e.severity.clone(),
            children_offline: e.children_offline,
            seen_late: e.seen_late,
            sparkplug: e.sparkplug,
            epoch: e.epoch,
        }
    }

    fn into_event(self, id: &str) -> Option<Event> {
        let far = SystemTime::now() + Duration::from_secs(365 * 86_400);
        Some(Event {
            id: id.to_string(),
            kind: self.kind.parse::<EventKind>().ok()?,
            device: self.device,
            topic: self.topic,
            payload: self.payload,
            previous: crate::event::previous_state(&self.previous)?,
            at: from_ms(self.at_ms, far),
            offline_since: self.offline_since_ms.map(|ms| from_ms(ms, far)),
            offline_for: self.offline_for_ms.map(Duration::from_millis),
            attempts: self.attempts,
            severity: self.severity,
            children_offline: self.children_offline,
            seen_late: self.seen_late,
            sparkplug: self.sparkplug,
            epoch: self.epoch,
            actions: Arc::from(Vec::new()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::test_event;

    fn saved(state: State, alerted: bool) -> Saved {
        let base = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        Saved {
            topic: "plant/pump-7/status".into(),
            state,
            since: Some(base),
            offline_since: alerted.then(|| base - Duration::from_secs(60)),
            alerted,
            seq: Some(3),
        }
    }

    fn event(id: &str, actions: &[&str]) -> Arc<Event> {
        let mut e = test_event(EventKind::Offline, "pump-7");
        e.id = id.into();
        e.actions = actions.iter().map(|a| a.to_string()).collect::<Vec<_>>().into();
        e.offline_since = Some(e.at - Duration::from_secs(5));
        Arc::new(e)
    }

    fn fresh() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), StateSync::Full).unwrap();
        (dir, db)
    }

    #[test]
    fn the_write_ahead_log_is_cut_back_after_a_burst() {
        let (dir, mut db) = fresh();
        let batch = |round: usize, n: usize| Batch {
            devices: (0..n)
                .map(|i| (format!("device-{round}-{i}-{}", "x".repeat(40)), Some(saved(State::Online, false))))
                .collect(),
            ..Batch::default()
        };
        // One transaction past the checkpoint size, then the ordinary ones.
        db.commit(&batch(0, 60_000)).unwrap();
        for round in 1..20 {
            db.commit(&batch(round, 1_000)).unwrap();
        }
        let wal = std::fs::metadata(dir.path().join(format!("{FILE_NAME}-wal"))).unwrap().len();
        assert!(wal <= WAL_LIMIT as u64 + (1 << 20), "the log is {wal} bytes");
    }

    /// pump-7 notified offline, the event owed to the log action.
    fn an_alert() -> Batch {
        let mut batch = Batch::default();
        batch.devices.insert("pump-7".into(), Some(saved(State::Offline, true)));
        batch.events.push(event("e1", &["log"]));
        batch
    }

    #[test]
    fn devices_and_pending_events_read_back_as_committed() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(dir.path(), StateSync::Full).unwrap();
        let mut batch = Batch::default();
        batch.devices.insert("pump-7".into(), Some(saved(State::Offline, true)));
        batch.devices.insert("fa\"n".into(), Some(saved(State::Online, false)));
        batch.events.push(event("e1", &["log", "hook"]));
        batch.events.push(event("e2", &["hook"]));
        db.commit(&batch).unwrap();
        drop(db);
        let loaded = Db::open(dir.path(), StateSync::Full).unwrap().load().unwrap();
        assert_eq!(loaded.devices["pump-7"], saved(State::Offline, true));
        assert_eq!(loaded.devices["fa\"n"], saved(State::Online, false));
        let ids: Vec<&str> = loaded.pending.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["e1", "e2"], "oldest first");
        assert_eq!(&*loaded.pending[0].actions, ["log".to_string(), "hook".to_string()]);
        assert_eq!(loaded.pending[0].to_json(), event("e1", &[]).to_json(), "the same event, to the byte");
    }

    #[test]
    fn an_acknowledged_action_is_not_owed_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(dir.path(), StateSync::Full).unwrap();
        let mut batch = Batch::default();
        batch.events.push(event("e1", &["log", "hook"]));
        batch.acks.push(("e1".into(), "log".into()));
        db.commit(&batch).unwrap();
        let loaded = db.load().unwrap();
        assert_eq!(&*loaded.pending[0].actions, ["hook".to_string()]);
        let acks = Batch { acks: vec![("e1".into(), "hook".into())], ..Batch::default() };
        db.commit(&acks).unwrap();
        assert!(db.load().unwrap().pending.is_empty());
        assert_eq!(db.pending().unwrap(), 0);
    }

    #[test]
    fn events_done_before_they_were_written_net_out_of_a_batch() {
        let mut batch = Batch::default();
        batch.events.push(event("e1", &["log", "hook"]));
        batch.events.push(event("e2", &["log"]));
        batch.acks.push(("e1".into(), "log".into()));
        batch.acks.push(("e2".into(), "log".into()));
        batch.acks.push(("e0".into(), "hook".into()));
        assert_eq!(batch.net(), 1);
        let ids: Vec<&str> = batch.events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["e1"], "e1 still owes its hook");
        assert_eq!(batch.acks, [("e1".to_string(), "log".to_string()), ("e0".to_string(), "hook".to_string())]);
    }

    #[test]
    fn a_forgotten_device_is_gone_and_one_row_per_device_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(dir.path(), StateSync::Full).unwrap();
        for state in [State::Online, State::Offline, State::Online] {
            let mut batch = Batch::default();
            batch.devices.insert("pump-7".into(), Some(saved(state, false)));
            db.commit(&batch).unwrap();
        }
        assert_eq!(db.load().unwrap().devices["pump-7"].state, State::Online);
        let mut batch = Batch::default();
        batch.devices.insert("pump-7".into(), None);
        db.commit(&batch).unwrap();
        assert!(db.load().unwrap().devices.is_empty());
    }

    #[test]
    fn a_failed_commit_changes_nothing_and_the_same_batch_commits_later() {
        let (_dir, mut db) = fresh();
        let batch = an_alert();
        db.refuse_writes(true);
        assert!(db.commit(&batch).is_err());
        db.refuse_writes(false);
        assert!(db.load().unwrap().devices.is_empty());
        db.commit(&batch).unwrap();
        assert_eq!(db.load().unwrap().pending.len(), 1);
    }

    #[test]
    fn a_file_deleted_while_running_is_written_back_whole() {
        let (dir, mut db) = fresh();
        let batch = an_alert();
        db.commit(&batch).unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.path().display()));
        }
        assert!(!db.still_in_place());
        let db = db.rewrite().unwrap();
        assert!(db.still_in_place());
        drop(db);
        let loaded = Db::open(dir.path(), StateSync::Full).unwrap().load().unwrap();
        assert_eq!(loaded.devices["pump-7"], saved(State::Offline, true));
        assert_eq!(loaded.pending.len(), 1);
    }

    #[test]
    fn a_saved_time_in_the_future_is_read_as_now() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(from_ms(i64::MAX, now), now);
        assert_eq!(from_ms(-5, now), UNIX_EPOCH);
        assert_eq!(from_ms(1_000, now), UNIX_EPOCH + Duration::from_secs(1));
    }
}
