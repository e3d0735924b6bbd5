//! The dead-letter file: deliveries that ran out of attempts, one JSON line
//! each in `dead-letter.jsonl` in the state directory, so nothing given up
//! on is lost without a trace.

use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};

use crate::event::{Event, rfc3339};

pub const FILE_NAME: &str = "dead-letter.jsonl";

/// Appends `record` as one line; failures are logged, never fatal. A line
/// only partly written (a full disk) is cut off again, so the next record
/// never lands glued to half of this one.
pub fn append(state_dir: &Path, record: &Value) {
    let path = state_dir.join(FILE_NAME);
    let result = std::fs::create_dir_all(state_dir).and_then(|()| {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        let before = file.metadata()?.len();
        let mut line = record.to_string();
        line.push('\n');
        file.write_all(line.as_bytes()).inspect_err(|_| {
            let _ = file.set_len(before);
        })
    });
    if let Err(e) = result {
        tracing::error!(file = %path.display(), error = %e, "cannot write the dead-letter file; the record is only in this log: {record}");
    }
}

/// The record of an event an action could not take at all.
pub fn record(action: &str, event: &Event, error: &str) -> Value {
    json!({
        "action": action,
        "event_id": event.id,
        "failed_at": rfc3339(std::time::SystemTime::now()),
        "error": error,
        "event": event.to_json(),
    })
}
