//! The history writer: a thread of its own that takes transitions from a
//! bounded queue, writes whatever has queued up in one transaction, and
//! prunes what is older than `keep` once an hour, and the oldest rows
//! whenever the database holds more than `max_size` (`Room`: down to 90%
//! of it, a few rows at a time between batches). The monitor only ever
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
    let mut room = Room { max_size, round: None, logged: crate::throttle::Throttle::new(Duration::from_secs(60)) };
    // A smaller `max_size` than the file holds is met from the start.
    room.keep(&history, metrics);
    loop {
        if pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            pruned_at = Some(Instant::now());
            match history.prune(SystemTime::now() - keep) {
                Ok(0) => {}
                Ok(rows) => tracing::info!(rows, keep = ?keep, "history older than keep pruned"),
                Err(e) => tracing::warn!(error = %e, "cannot prune the history"),
            }
        }
        // A round of removals goes on while nothing waits to be written.
        let idle = if room.pruning() { Duration::ZERO } else { PRUNE_EVERY };
        let first = match entries.recv_timeout(idle) {
            Ok(entry) => entry,
            Err(RecvTimeoutError::Timeout) => {
                room.keep(&history, metrics);
                continue;
            }
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
            room.keep(&history, metrics);
        }
    }
}

/// Rows removed at a time while the history is over its size: each
/// removal holds the writer (about 0.3 s for this many on a slow disk),
/// so transitions are written between them and the queue does not fill.
const PRUNE_ROWS: u32 = 20_000;

/// Keeps `history.db` within `max_size`: past it, a round of removals
/// starts, the oldest rows first, a `PRUNE_ROWS` at a time between the
/// writer's batches, until it holds at most 90% of it; counted, and logged
/// when the round ends (at most once a minute: a small `max_size` under a
/// flood ends a round every fraction of a second).
struct Room {
    max_size: u64,
    /// Rows removed in the round under way, if one is.
    round: Option<usize>,
    logged: crate::throttle::Throttle,
}

impl Room {
    fn pruning(&self) -> bool {
        self.round.is_some()
    }

    fn keep(&mut self, history: &History, metrics: &Metrics) {
        let used = match history.used_bytes() {
            Ok(used) => used,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the history's size");
                return;
            }
        };
        let removed = match self.round {
            None if used <= self.max_size => return,
            None => 0,
            Some(removed) => removed,
        };
        if used <= self.max_size / 10 * 9 {
            self.round = None;
            if let Some(suppressed) = self.logged.allow(Instant::now()) {
                tracing::warn!(
                    rows = removed,
                    used,
                    max_size = self.max_size,
                    suppressed,
                    what = "history_pruned_for_size",
                    "the history reached [history] max_size; its oldest transitions were removed"
                );
            }
            return;
        }
        match history.prune_oldest(PRUNE_ROWS) {
            Ok(rows) => {
                metrics.history_pruned_for_size.inc_by(rows as u64);
                // Nothing left to remove: the round is over whatever the size.
                self.round = if rows == 0 { None } else { Some(removed + rows) };
            }
            Err(e) => {
                self.round = None;
                tracing::warn!(error = %e, "cannot prune the history to its size");
            }
        }
    }
}
