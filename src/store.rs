//! The state file: each device's state, since when, and whether its
//! offline was already notified, so a restart (even after SIGKILL) neither
//! repeats an alert nor loses one.
//!
//! The monitor hands over snapshots (it never touches the disk); the writer
//! task here keeps only the newest one and writes it atomically (temp file,
//! fsync, rename, fsync of the folder), so a storm of changes costs a few
//! writes, not thousands, and a crash leaves the old file or the new one,
//! never half of one. A file that cannot be read back is set aside (renamed)
//! and the daemon starts clean; a disk that refuses writes is reported and
//! monitoring goes on.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::device::{Saved, State};

pub const FILE_NAME: &str = "state.json";
const VERSION: u32 = 1;

/// A state file's bytes, encoded by the monitor (a compact copy: a fleet of
/// 100k devices is a few MB, where a copy of the table would be tens).
pub type Snapshot = Vec<u8>;

/// Where the monitor leaves the newest snapshot for the writer. A newer one
/// replaces one not yet taken, and the writer takes it out, so at most one
/// waits while one is written.
#[derive(Clone, Default)]
pub struct Mailbox {
    slot: Arc<std::sync::Mutex<(Option<Snapshot>, bool)>>,
    ready: Arc<Notify>,
}

impl Mailbox {
    pub fn put(&self, snapshot: Snapshot) {
        self.slot.lock().expect("never poisoned: no panics under the lock").0 = Some(snapshot);
        self.ready.notify_one();
    }

    /// No more snapshots will come.
    pub fn close(&self) {
        self.slot.lock().expect("never poisoned: no panics under the lock").1 = true;
        self.ready.notify_one();
    }

    fn take(&self) -> (Option<Snapshot>, bool) {
        let mut slot = self.slot.lock().expect("never poisoned: no panics under the lock");
        (slot.0.take(), slot.1)
    }
}

#[derive(Deserialize)]
struct File {
    version: u32,
    devices: HashMap<String, Record<String>>,
}

#[derive(Serialize, Deserialize)]
struct Record<T> {
    topic: T,
    state: T,
    since_ms: Option<u64>,
    offline_since_ms: Option<u64>,
    alerted: bool,
    seq: Option<i64>,
}

fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// The file's bytes for every device's saved state, written one device at
/// a time so no second copy of the fleet is ever built.
pub fn encode<'a>(devices: impl IntoIterator<Item = (&'a str, Saved)>, now: SystemTime) -> Snapshot {
    let mut out = format!("{{\"version\":{VERSION},\"saved_at_ms\":{},\"devices\":{{", to_ms(now)).into_bytes();
    for (i, (id, s)) in devices.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let record = Record {
            topic: s.topic.as_str(),
            state: s.state.as_str(),
            since_ms: s.since.map(to_ms),
            offline_since_ms: s.offline_since.map(to_ms),
            alerted: s.alerted,
            seq: s.seq,
        };
        serde_json::to_writer(&mut out, id).expect("writing to a Vec cannot fail");
        out.push(b':');
        serde_json::to_writer(&mut out, &record).expect("writing to a Vec cannot fail");
    }
    out.extend_from_slice(b"}}");
    out
}

/// The saved devices in a file's bytes, or why they cannot be trusted.
pub fn decode(bytes: &[u8]) -> Result<HashMap<String, Saved>, String> {
    let file: File = serde_json::from_slice(bytes).map_err(|e| format!("not a willwatch state file: {e}"))?;
    if file.version != VERSION {
        return Err(format!("state file version {} is not {VERSION}", file.version));
    }
    file.devices
        .into_iter()
        .map(|(id, r)| {
            let state = State::parse(&r.state).ok_or_else(|| format!("device {id}: unknown state `{}`", r.state))?;
            let saved = Saved {
                topic: r.topic,
                state,
                since: r.since_ms.map(from_ms),
                offline_since: r.offline_since_ms.map(from_ms),
                alerted: r.alerted,
                seq: r.seq,
            };
            Ok((id, saved))
        })
        .collect()
}

/// Reads the state file in `dir`. Missing: nothing saved. Unreadable or
/// corrupt: logged, renamed aside, nothing saved.
pub fn load(dir: &Path) -> HashMap<String, Saved> {
    let path = dir.join(FILE_NAME);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return HashMap::new(),
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "cannot read the state file; starting without it");
            return HashMap::new();
        }
    };
    match decode(&bytes) {
        Ok(saved) => {
            tracing::info!(file = %path.display(), devices = saved.len(), "state restored");
            saved
        }
        Err(problem) => {
            let aside = dir.join(format!("{FILE_NAME}.corrupt-{}", to_ms(SystemTime::now())));
            let moved = std::fs::rename(&path, &aside);
            tracing::error!(file = %path.display(), set_aside = %aside.display(), renamed = moved.is_ok(), error = %problem,
                "state file is corrupt; set it aside and starting clean");
            HashMap::new()
        }
    }
}

/// Writes each new snapshot until the mailbox is closed and empty. A
/// failing disk is logged once per failing streak.
pub async fn run(dir: PathBuf, mailbox: Mailbox) {
    let mut failing = false;
    loop {
        mailbox.ready.notified().await;
        let (snapshot, closed) = mailbox.take();
        if let Some(snapshot) = snapshot {
            let target = dir.clone();
            let result = tokio::task::spawn_blocking(move || write_atomic(&target, &snapshot))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            match result {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!(dir = %dir.display(), "state file written again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::error!(dir = %dir.display(), error = %e,
                        "cannot write the state file; monitoring goes on, but a restart will not remember alerts");
                }
                Err(_) => {}
            }
        }
        if closed && mailbox.take().0.is_none() {
            return;
        }
    }
}

fn write_atomic(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(FILE_NAME))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(state: State, alerted: bool) -> Saved {
        Saved {
            topic: "plant/pump-7/status".into(),
            state,
            since: Some(from_ms(1_800_000_000_000)),
            offline_since: alerted.then(|| from_ms(1_799_999_000_000)),
            alerted,
            seq: Some(3),
        }
    }

    #[test]
    fn a_snapshot_reads_back_as_it_was_written() {
        let devices = [("pump-7", saved(State::Offline, true)), ("fa\"n", saved(State::Online, false))];
        let back = decode(&encode(devices.clone(), SystemTime::now())).unwrap();
        assert_eq!(back["pump-7"], devices[0].1);
        assert_eq!(back["fa\"n"], devices[1].1);
    }

    #[test]
    fn truncated_or_foreign_files_are_refused() {
        let bytes = encode([("a", saved(State::Online, false))], SystemTime::now());
        assert!(decode(&bytes[..bytes.len() / 2]).is_err());
        assert!(decode(b"{}").is_err());
        assert!(decode(br#"{"version":9,"saved_at_ms":0,"devices":{}}"#).is_err());
        let bad_state = String::from_utf8(bytes).unwrap().replace("\"online\"", "\"sideways\"");
        assert!(decode(bad_state.as_bytes()).unwrap_err().contains("sideways"));
    }

    #[test]
    fn corrupt_file_is_set_aside_and_nothing_is_restored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"{\"version\":1,\"devi").unwrap();
        assert!(load(dir.path()).is_empty());
        assert!(!dir.path().join(FILE_NAME).exists());
        let aside = std::fs::read_dir(dir.path()).unwrap().filter_map(Result::ok).count();
        assert_eq!(aside, 1);
    }

    #[test]
    fn atomic_write_replaces_the_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), b"one").unwrap();
        write_atomic(dir.path(), b"two").unwrap();
        assert_eq!(std::fs::read(dir.path().join(FILE_NAME)).unwrap(), b"two");
        assert!(!dir.path().join(format!("{FILE_NAME}.tmp")).exists());
    }
}
