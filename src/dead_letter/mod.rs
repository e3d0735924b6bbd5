//! The dead-letter file: what an action gave up on (a webhook delivery out
//! of time or attempts, an exec program that could not be started, an
//! event an action's full queue could not take), one JSON record a line in
//! `dead-letter.jsonl` in the state directory, so nothing given up on is
//! lost without a trace, and `willwatch dead-letter replay` can send it
//! again with its original ids.
//!
//! The file is bounded: past `MAX_SIZE` it becomes `dead-letter.jsonl.1`
//! and a new one starts; the records of the previous `.1` are discarded,
//! counted and logged. Every access holds `dead-letter.lock`, so a replay
//! rewriting the files never loses a record the daemon appends meanwhile.

pub mod command;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{Event, rfc3339};

pub const FILE_NAME: &str = "dead-letter.jsonl";
const ROTATED_NAME: &str = "dead-letter.jsonl.1";
const LOCK_NAME: &str = "dead-letter.lock";

/// The size past which the file is rotated.
pub const MAX_SIZE: u64 = 16 << 20;

/// One thing given up on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub action: String,
    /// The delivery's id (its `webhook-id`: the event's, or a batch's; an
    /// exec run's: the event's).
    pub id: String,
    pub failed_at: String,
    pub error: String,
    /// The webhook's URL, secrets redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The events, as actions receive them (`Event::to_json`).
    pub events: Vec<Value>,
}

impl Record {
    /// A record of `events` given up on by `action` now.
    pub fn new(action: &str, id: &str, events: &[&Event], error: &str) -> Record {
        Record {
            action: action.to_string(),
            id: id.to_string(),
            failed_at: rfc3339(std::time::SystemTime::now()),
            error: error.to_string(),
            url: None,
            events: events.iter().map(|e| e.to_json()).collect(),
        }
    }

    /// The same record (what a replay removes): same action, id and time.
    fn same(&self, other: &Record) -> bool {
        (&self.action, &self.id, &self.failed_at) == (&other.action, &other.id, &other.failed_at)
    }
}

/// A line of a dead-letter file: a record, or text that is not one (a
/// hand edit), which is kept as it is.
#[derive(Debug, Clone)]
pub enum Line {
    Record(Record),
    Other(String),
}

fn parse(text: &str) -> Vec<Line> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_or_else(|_| Line::Other(l.to_string()), Line::Record))
        .collect()
}

/// Runs `f` holding the lock of the dead-letter files.
fn locked<T>(state_dir: &Path, f: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
    std::fs::create_dir_all(state_dir)?;
    let lock = OpenOptions::new().create(true).truncate(false).write(true).open(state_dir.join(LOCK_NAME))?;
    lock.lock()?;
    f()
}

/// Appends `record`; returns how many records a rotation discarded. A line
/// only partly written (a full disk) is cut off again, so the next record
/// never lands glued to half of this one.
pub fn append(state_dir: &Path, record: &Record) -> std::io::Result<usize> {
    let mut line = serde_json::to_string(record).expect("a record always serialises");
    line.push('\n');
    locked(state_dir, || {
        let path = state_dir.join(FILE_NAME);
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        let mut discarded = 0;
        if size > 0 && size + line.len() as u64 > MAX_SIZE {
            let rotated = state_dir.join(ROTATED_NAME);
            discarded = std::fs::read_to_string(&rotated).map_or(0, |t| parse(&t).len());
            std::fs::rename(&path, &rotated)?;
        }
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        let before = file.metadata()?.len();
        file.write_all(line.as_bytes()).inspect_err(|_| {
            let _ = file.set_len(before);
        })?;
        Ok(discarded)
    })
}

/// The two files, oldest first.
fn paths(state_dir: &Path) -> [PathBuf; 2] {
    [state_dir.join(ROTATED_NAME), state_dir.join(FILE_NAME)]
}

fn read(path: &Path) -> std::io::Result<Vec<Line>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(parse(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Every line of both files, oldest first.
pub fn read_all(state_dir: &Path) -> std::io::Result<Vec<Line>> {
    locked(state_dir, || {
        let mut lines = Vec::new();
        for path in paths(state_dir) {
            lines.extend(read(&path)?);
        }
        Ok(lines)
    })
}

/// Removes these records (one line each) from the files, keeping whatever
/// else is there, including what was appended since they were read.
pub fn remove(state_dir: &Path, done: &[Record]) -> std::io::Result<()> {
    locked(state_dir, || {
        let mut left: Vec<&Record> = done.iter().collect();
        for path in paths(state_dir) {
            let lines = read(&path)?;
            let before = lines.len();
            let kept: Vec<Line> = lines
                .into_iter()
                .filter(|line| match line {
                    Line::Record(r) => match left.iter().position(|d| d.same(r)) {
                        Some(i) => {
                            left.swap_remove(i);
                            false
                        }
                        None => true,
                    },
                    Line::Other(_) => true,
                })
                .collect();
            if kept.len() != before {
                rewrite(&path, &kept)?;
            }
        }
        Ok(())
    })
}

/// Replaces a file's lines atomically (a crash leaves the old or the new).
fn rewrite(path: &Path, lines: &[Line]) -> std::io::Result<()> {
    let mut text = String::new();
    for line in lines {
        match line {
            Line::Record(r) => text.push_str(&serde_json::to_string(r).expect("a record always serialises")),
            Line::Other(raw) => text.push_str(raw),
        }
        text.push('\n');
    }
    let temporary = path.with_extension("jsonl.tmp");
    let mut file = File::create(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, test_event};

    fn record(device: &str) -> Record {
        let event = test_event(EventKind::Offline, device);
        Record::new("ops", &format!("id-{device}"), &[&event], "HTTP 503")
    }

    fn ids(dir: &Path) -> Vec<String> {
        read_all(dir)
            .unwrap()
            .into_iter()
            .map(|l| match l {
                Line::Record(r) => r.id,
                Line::Other(raw) => raw,
            })
            .collect()
    }

    #[test]
    fn records_append_read_back_and_are_removed_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (record("a"), record("b"));
        append(dir.path(), &a).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE_NAME))
            .unwrap()
            .write_all(b"not json\n")
            .unwrap();
        append(dir.path(), &b).unwrap();
        assert_eq!(ids(dir.path()), ["id-a", "not json", "id-b"]);
        remove(dir.path(), std::slice::from_ref(&a)).unwrap();
        assert_eq!(ids(dir.path()), ["not json", "id-b"], "what is not a record is kept");
    }

    #[test]
    fn past_the_size_cap_the_file_rotates_and_the_oldest_records_are_counted_as_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let mut big = record("big");
        big.error = "x".repeat((MAX_SIZE / 2) as usize);
        assert_eq!(append(dir.path(), &big).unwrap(), 0);
        assert_eq!(append(dir.path(), &big).unwrap(), 0, "the first rotation has no .1 to discard");
        assert!(dir.path().join(ROTATED_NAME).exists());
        assert_eq!(append(dir.path(), &record("c")).unwrap(), 0);
        assert_eq!(append(dir.path(), &big).unwrap(), 1, "the first record went with the old .1");
        assert!(std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len() <= MAX_SIZE);
        assert_eq!(ids(dir.path()), ["id-big", "id-c", "id-big"]);
    }
}
