//! The JSON state file of earlier versions (`state.json`), read once so an
//! upgrade keeps every device's state and open alert; the database takes
//! over from there and the file is renamed `state.json.imported`.

use std::collections::HashMap;
use std::path::Path;
use std::time::SystemTime;

use serde::Deserialize;

use super::db::from_ms;
use crate::device::{Saved, State};

pub const FILE_NAME: &str = "state.json";

#[derive(Deserialize)]
struct File {
    version: u32,
    devices: HashMap<String, Record>,
}

#[derive(Deserialize)]
struct Record {
    topic: String,
    state: String,
    since_ms: Option<i64>,
    offline_since_ms: Option<i64>,
    alerted: bool,
    seq: Option<i64>,
}

/// The devices in an old state file, or why they cannot be trusted.
pub fn decode(bytes: &[u8], now: SystemTime) -> Result<HashMap<String, Saved>, String> {
    let file: File = serde_json::from_slice(bytes).map_err(|e| format!("not a willwatch state file: {e}"))?;
    if file.version != 1 {
        return Err(format!("state file version {} is not 1", file.version));
    }
    file.devices
        .into_iter()
        .map(|(id, r)| {
            let state = State::parse(&r.state).ok_or_else(|| format!("device {id}: unknown state `{}`", r.state))?;
            let saved = Saved {
                topic: r.topic,
                state,
                since: r.since_ms.map(|ms| from_ms(ms, now)),
                offline_since: r.offline_since_ms.map(|ms| from_ms(ms, now)),
                alerted: r.alerted,
                seq: r.seq,
            };
            Ok((id, saved))
        })
        .collect()
}

/// The old file in `dir`, if there is one worth importing.
pub fn read(dir: &Path) -> Option<HashMap<String, Saved>> {
    let path = dir.join(FILE_NAME);
    let bytes = std::fs::read(&path).ok()?;
    match decode(&bytes, SystemTime::now()) {
        Ok(devices) => Some(devices),
        Err(problem) => {
            tracing::error!(file = %path.display(), error = %problem, "old state file cannot be imported; ignoring it");
            None
        }
    }
}

/// Renames the imported file so it is never imported twice.
pub fn retire(dir: &Path) {
    let path = dir.join(FILE_NAME);
    if let Err(e) = std::fs::rename(&path, dir.join(format!("{FILE_NAME}.imported"))) {
        tracing::warn!(file = %path.display(), error = %e, "could not rename the imported state file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_state_file_reads_with_its_alerts() {
        let text = br#"{"version":1,"saved_at_ms":0,"devices":{"pump-7":{"topic":"plant/pump-7/status",
            "state":"offline","since_ms":1000,"offline_since_ms":1000,"alerted":true,"seq":null}}}"#;
        let devices = decode(text, SystemTime::now()).unwrap();
        assert!(devices["pump-7"].alerted);
        assert_eq!(devices["pump-7"].state, State::Offline);
        assert!(decode(b"{}", SystemTime::now()).is_err());
        assert!(decode(br#"{"version":9,"devices":{}}"#, SystemTime::now()).is_err());
    }
}
