//! `willwatch dead-letter list`: what actions gave up on, the records a
//! filter takes, as JSON lines or a table. `replay`, which sends them again,
//! lives with the actions it calls (`actions::replay`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{Line, Record};

/// Which records a command takes.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub action: Option<String>,
    /// Only records that failed within this long before now.
    pub since: Option<Duration>,
}

impl Filter {
    fn takes(&self, record: &Record, now: SystemTime) -> bool {
        let recent = match self.since {
            None => true,
            Some(within) => humantime::parse_rfc3339(&record.failed_at)
                .is_ok_and(|at| now.duration_since(at).unwrap_or_default() <= within),
        };
        recent && self.action.as_ref().is_none_or(|a| *a == record.action)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("cannot read the dead-letter file in {}: {source}", dir.display())]
    Read { dir: PathBuf, source: std::io::Error },
    #[error("cannot rewrite the dead-letter file in {}: {source} (delivered records are still listed; replaying them again sends them again, with the same ids)", dir.display())]
    Rewrite { dir: PathBuf, source: std::io::Error },
}

/// The records the filter takes, oldest first.
pub fn list(state_dir: &Path, filter: &Filter) -> Result<Vec<Record>, DeadLetterError> {
    let lines = super::read_all(state_dir).map_err(|source| DeadLetterError::Read { dir: state_dir.into(), source })?;
    let now = SystemTime::now();
    Ok(lines
        .into_iter()
        .filter_map(|l| match l {
            Line::Record(r) => Some(r),
            Line::Other(_) => None,
        })
        .filter(|r| filter.takes(r, now))
        .collect())
}

/// The records as a table people read.
pub fn table(records: &[Record]) -> String {
    let mut out = format!("{:<24} {:<12} {:<16} {:<8} {:<36} ERROR\n", "FAILED AT", "ACTION", "DEVICE", "EVENT", "ID");
    for r in records {
        let first = r.events.first();
        let field = |k: &str| first.and_then(|e| e[k].as_str()).unwrap_or("-").to_string();
        let device = if r.events.len() > 1 { format!("{} events", r.events.len()) } else { field("device") };
        out.push_str(&format!(
            "{:<24} {:<12} {:<16} {:<8} {:<36} {}\n",
            r.failed_at,
            r.action,
            device,
            field("event"),
            r.id,
            r.error
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, test_event};

    #[test]
    fn a_filter_takes_by_action_and_age() {
        let now = SystemTime::now();
        let event = test_event(EventKind::Offline, "pump-7");
        let mut old = Record::new("ops", "1", &[&event], "HTTP 503");
        old.failed_at = crate::event::rfc3339(now - Duration::from_secs(7200));
        let new = Record::new("pager", "2", &[&event], "HTTP 503");
        let hour = Filter { since: Some(Duration::from_secs(3600)), ..Filter::default() };
        assert!(!hour.takes(&old, now) && hour.takes(&new, now));
        let ops = Filter { action: Some("ops".into()), ..Filter::default() };
        assert!(ops.takes(&old, now) && !ops.takes(&new, now));
        let text = table(&[old, new]);
        assert!(text.contains("ops          pump-7           offline  1"), "{text}");
    }
}
