//! The history writer: a thread of its own that takes transitions from a
//! bounded queue, writes whatever has queued up in one transaction, and
//! prunes what is older than `keep` once an hour, and the oldest rows
//! whenever the database holds more than `max_size` (down to 90% of it, so
//! it does not prune at every batch). The monitor only ever
//! `try_send`s to it. While the room reserved for the state is not held
//! (a full disk took it), it writes nothing (dropped, counted): what the
//! disk has left is the state's.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant, SystemTime};

use super::History;
use crate::metrics::Metrics;
use crate::transition::Transition;

/// Transitions waiting for the writer before new ones are dropped
/// (counted). A 100k-device burst on two busy cores overflowed a queue of
/// 16k by 8,664 entries; the queue's memory is taken as it fills (about
/// 9 MiB full).
pub const QUEUE: usize = 65_536;

const BATCH: usize = 8192;
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The running writer: the queue into it, and its thread.
pub struct Writer {
    pub queue: SyncSender<Transition>,
    pub thread: std::thread::JoinHandle<()>,
}

/// Starts the writer for `dir`, keeping `keep` of history in at most
/// `max_size` bytes; `None` when `keep` is zero (history off).
pub fn spawn(dir: PathBuf, keep: Duration, max_size: u64, metrics: Arc<Metrics>) -> std::io::Result<Option<Writer>> {
    if keep.is_zero() {
        return Ok(None);
    }
    let (queue, entries) = sync_channel(QUEUE);
    let thread = std::thread::Builder::new()
        .name("history".into())
        .spawn(move || run(&dir, keep, max_size, &entries, &metrics))?;
    Ok(Some(Writer { queue, thread }))
}

/// Opens the database; one that cannot be opened is set aside once and
/// started anew.
fn open(dir: &std::path::Path) -> Option<History> {
    match History::open(dir) {
        Ok(history) => Some(history),
        Err(first) => {
            let path = dir.join(super::FILE_NAME);
            let aside = dir.join(format!("{}.corrupt-{}", super::FILE_NAME, super::ms(SystemTime::now())));
            let moved = std::fs::rename(&path, &aside);
            tracing::error!(error = %first, set_aside = %aside.display(), moved = moved.is_ok(),
                what = "history_set_aside", "the history database cannot be used; it is set aside and started anew");
            match History::open(dir) {
                Ok(history) => Some(history),
                Err(e) => {
                    tracing::error!(error = %e, "history is off until the next start (detection goes on)");
                    None
                }
            }
        }
    }
}

fn run(dir: &std::path::Path, keep: Duration, max_size: u64, entries: &Receiver<Transition>, metrics: &Metrics) {
    let Some(mut history) = open(dir) else {
        for _ in entries.iter() {
            metrics.history_dropped.inc();
        }
        return;
    };
    let mut pruned_at: Option<Instant> = None;
    let mut short = crate::throttle::Throttle::new(Duration::from_secs(60));
    loop {
        if pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            pruned_at = Some(Instant::now());
            match history.prune(SystemTime::now() - keep) {
                Ok(0) => {}
                Ok(rows) => tracing::info!(rows, keep = ?keep, "history older than keep pruned"),
                Err(e) => tracing::warn!(error = %e, "cannot prune the history"),
            }
        }
        let first = match entries.recv_timeout(PRUNE_EVERY) {
            Ok(entry) => entry,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match entries.try_recv() {
                Ok(entry) => batch.push(entry),
                Err(_) => break,
            }
        }
        if !crate::store::reserve::held(dir) {
            metrics.history_dropped.inc_by(batch.len() as u64);
            if let Some(suppressed) = short.allow(Instant::now()) {
                tracing::error!(dir = %dir.display(), lost = batch.len(), suppressed,
                    "the room reserved for the state is given up (a full disk): transitions are left out of the history until it is back");
            }
        } else if let Err(e) = history.append(&batch) {
            metrics.history_dropped.inc_by(batch.len() as u64);
            tracing::error!(error = %e, lost = batch.len(), "cannot write the history; these transitions are not in it");
        } else {
            keep_within(&history, max_size, metrics);
        }
    }
}

/// Past `max_size`, the oldest rows go (down to 90% of it), counted and
/// logged.
fn keep_within(history: &History, max_size: u64, metrics: &Metrics) {
    match history.used_bytes() {
        Ok(used) if used > max_size => match history.prune_to(max_size / 10 * 9) {
            Ok(rows) => {
                metrics.history_pruned_for_size.inc_by(rows as u64);
                tracing::warn!(
                    rows,
                    used,
                    max_size,
                    what = "history_pruned_for_size",
                    "the history reached [history] max_size; its oldest transitions were removed"
                );
            }
            Err(e) => tracing::warn!(error = %e, "cannot prune the history to its size"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the history's size"),
    }
}
