//! The writer task: the one way from a decision to the actions.
//!
//! The monitor (and the reconnect action's escalations) send device
//! records and decided events here; the actions send their
//! acknowledgements. Whatever has queued up while the last transaction ran
//! goes into the next one (a storm of 2,000 offlines is a handful of
//! commits, not 2,000), and only after it commits are its events handed to
//! the dispatcher. So a notification is on disk before its first attempt,
//! and a crash at any moment either loses a decision nobody was told of
//! (the broker's retained state makes it again at the next start) or
//! leaves it pending, to be sent again with its id.
//!
//! The monitor marks, after the ops of each message from the broker, how
//! far it has taken messages in (`Op::Taken`); once the ops before a mark
//! are committed, the mark goes back to the session, which acknowledges
//! the messages up to it. The last such message is committed with them:
//! after a crash, it tells which of the messages the broker sends again
//! were already taken in.
//!
//! A commit that fails (disk full, read-only, no file descriptors) is
//! retried with backoff and logged once per outage of the disk; the events
//! of the failed batch go out anyway, since an alert late is worse than an
//! alert possibly repeated, and stay in the batch until it commits. A file
//! deleted under us is written back whole.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::db::{Batch, Db, DbError, Taken};
use super::{copy, reserve};
use crate::backoff::Backoff;
use crate::config::{Config, StateSync};
use crate::device::Saved;
use crate::event::Event;
use crate::metrics::Metrics;
use crate::throttle::Throttle;

/// Records taken into one transaction (past this, the rest waits for the
/// next): enough that a storm is a few commits, few enough that a batch
/// stays a few MiB.
const MAX_BATCH: usize = 8192;
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);
/// How often a quiet writer checks that its file is still there.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// Records held in memory while the disk fails, at most (about; decisions
/// are never dropped).
const MAX_HELD: usize = 100_000;

/// What the monitor tells the writer, in the order it decided it.
#[derive(Debug)]
pub enum Op {
    /// The newest records of some devices.
    Save(Vec<(String, Saved)>),
    /// A device no longer watched.
    Forget(String),
    /// A decided event, with the record of the device that decided it:
    /// both committed together, the event owed to each of its actions,
    /// then sent.
    Event(Box<Event>, Option<(String, Saved)>),
    /// A new config for the dispatcher, in order with the events.
    Reload(Arc<Config>),
    /// In a cluster: what was said of a device.
    Told(String, crate::cluster::Words),
    /// The ops before this are all of the messages up to the session's
    /// mark `mark`, the last of them `message`.
    Taken { mark: u64, message: Taken },
}

/// What the writer hands the dispatcher, in order: each event once it is
/// committed, and each new config where it came among them.
#[derive(Debug)]
pub enum Outgoing {
    Event(Arc<Event>),
    Reload(Arc<Config>),
}

/// An action is done with an event: (event id, action name).
pub type Ack = (String, String);

pub struct Writer {
    pub dir: std::path::PathBuf,
    pub sync: StateSync,
    pub db: Option<Db>,
    pub ops: mpsc::Receiver<Op>,
    pub acks: mpsc::UnboundedReceiver<Ack>,
    pub dispatch: mpsc::Sender<Outgoing>,
    /// In a cluster: where each event goes once every action is done with
    /// it (the leader tells the group).
    pub completed: Option<mpsc::UnboundedSender<Arc<Event>>>,
    /// How far the messages' decisions are committed, to the session.
    pub committed: tokio::sync::watch::Sender<u64>,
    pub metrics: Arc<Metrics>,
}

impl Writer {
    /// Sends `pending` (owed since before the start) first, then runs until
    /// `finish`: commits what is left, says what is still owed, returns.
    pub async fn run(self, pending: Vec<Event>, finish: CancellationToken) {
        let Writer { dir, sync, db, mut ops, mut acks, dispatch, completed, committed, metrics } = self;
        let mut state = State {
            dir,
            sync,
            db,
            dispatch: Some(dispatch),
            completed: completed.map(|to| Completions { to, owed: HashMap::new() }),
            metrics,
            failing: false,
            shedding: Throttle::new(Duration::from_secs(60)),
            copying: None,
        };
        let mut outgoing: Vec<Outgoing> = pending.into_iter().map(|e| Outgoing::Event(Arc::new(e))).collect();
        if !outgoing.is_empty() {
            tracing::info!(
                events = outgoing.len(),
                "sending notifications owed since before the restart, with their ids"
            );
        }
        state.forward(&mut outgoing).await;
        let mut batch = Batch::default();
        let mut retry = Backoff::new(RETRY_FIRST, RETRY_MAX);
        let mut retry_at: Option<Instant> = None;
        let mut ops_open = true;
        let mut check = tokio::time::interval(CHECK_EVERY);
        // The first tick is now: a copy of the state as it was found.
        let mut copy_tick = tokio::time::interval(copy::EVERY);
        // The last mark taken, not yet committed.
        let mut taken: Option<(u64, Taken)> = None;
        loop {
            let mut finishing = false;
            tokio::select! {
                biased;
                () = finish.cancelled() => finishing = true,
                op = ops.recv(), if ops_open => match op {
                    Some(op) => take(op, &mut batch, &mut outgoing, &mut taken),
                    None => ops_open = false,
                },
                Some(ack) = acks.recv() => state.acked(ack, &mut batch),
                () = sleep_until(retry_at) => {}
                _ = check.tick(), if retry_at.is_none() => {
                    state.keep_in_place().await;
                    state.reserve().await;
                }
                _ = copy_tick.tick(), if retry_at.is_none() => state.copy().await,
            }
            while batch.devices.len() + batch.events.len() + batch.acks.len() < MAX_BATCH {
                match ops.try_recv() {
                    Ok(op) => take(op, &mut batch, &mut outgoing, &mut taken),
                    Err(_) => match acks.try_recv() {
                        Ok(ack) => state.acked(ack, &mut batch),
                        Err(_) => break,
                    },
                }
            }
            let due = retry_at.is_none_or(|at| at <= Instant::now()) || finishing;
            if due && !batch.is_empty() {
                if let Some((_, message)) = &taken {
                    batch.taken = Some(message.clone());
                }
                match state.commit(&mut batch).await {
                    Ok(()) => {
                        retry.reset();
                        retry_at = None;
                    }
                    Err(e) if e.is_full() && state.release_reserve() => retry_at = Some(Instant::now()),
                    Err(e) => {
                        state.failed(&e, batch.events.len());
                        retry_at = Some(Instant::now() + retry.next_delay());
                    }
                }
            }
            if state.failing && batch.len() > MAX_HELD {
                state.shed(&mut batch);
            }
            // Committed, or the disk fails and the events went anyway: the
            // broker may forget the messages (holding them would stop it
            // sending).
            if (batch.is_empty() || state.failing)
                && let Some((mark, _)) = taken.take()
            {
                committed.send_replace(mark);
            }
            if finishing {
                // What is committed is owed and resumes at the next start.
                state.finish(&batch);
                state.copy_at_stop().await;
                return;
            }
            // Sent once committed; while the disk fails, at once: never held.
            if batch.is_empty() || state.failing {
                state.forward(&mut outgoing).await;
            }
            if !ops_open && outgoing.is_empty() {
                // Nothing more will be decided: let the dispatcher drain.
                state.dispatch = None;
            }
        }
    }
}

/// The writer's own state between turns.
struct State {
    dir: std::path::PathBuf,
    sync: StateSync,
    db: Option<Db>,
    dispatch: Option<mpsc::Sender<Outgoing>>,
    completed: Option<Completions>,
    metrics: Arc<Metrics>,
    /// The last commit failed; logged once until one succeeds.
    failing: bool,
    /// How often shedding is logged.
    shedding: Throttle,
    /// The copy being taken (`copy.rs`), if one is.
    copying: Option<tokio::task::JoinHandle<()>>,
}

impl State {
    /// Commits `batch` off the async threads; empties it when it committed.
    async fn commit(&mut self, batch: &mut Batch) -> Result<(), DbError> {
        let db = self.db.take();
        let (dir, sync) = (self.dir.clone(), self.sync);
        let work = std::mem::take(batch);
        let (db, work, result) = tokio::task::spawn_blocking(move || {
            let opened = match db {
                Some(db) => in_place(db),
                None => Db::open(&dir, sync),
            };
            match opened {
                Ok(mut db) => {
                    let result = db.commit(&work);
                    (Some(db), work, result)
                }
                Err(e) => (None, work, Err(e)),
            }
        })
        .await
        .expect("the commit never panics");
        self.db = db;
        if result.is_err() {
            *batch = work;
        } else if std::mem::take(&mut self.failing) {
            self.metrics.state_failing.set(0);
            tracing::info!(dir = %self.dir.display(), "state written again; every decision since the failure is recorded");
        }
        result
    }

    fn failed(&mut self, error: &DbError, events: usize) {
        self.metrics.state_write_errors.inc();
        self.metrics.state_failing.set(1);
        if !std::mem::replace(&mut self.failing, true) {
            tracing::error!(dir = %self.dir.display(), error = %error, events,
                what = "state_write_failing", "cannot write the state; retrying with backoff. Alerts go out meanwhile, but a crash before the disk is back may repeat or miss one");
        }
    }

    /// Keeps what a failing disk makes pile up bounded: events already done
    /// net out; past that, the oldest acknowledgements go (their events
    /// stay owed on disk and are sent again, same id, at the next start).
    /// Decisions are never dropped: they are bounded by what the actions
    /// hold.
    fn shed(&mut self, batch: &mut Batch) {
        let netted = batch.net();
        let excess = batch.len().saturating_sub(MAX_HELD).min(batch.acks.len());
        batch.acks.drain(..excess);
        if excess > 0 {
            self.metrics.state_acks_dropped.inc_by(excess as u64);
        }
        if let Some(suppressed) = self.shedding.allow(std::time::Instant::now()) {
            tracing::warn!(
                netted,
                dropped_acknowledgements = excess,
                suppressed,
                held = batch.len(),
                "the disk is still failing; holding less: notifications done meanwhile may be sent again (same id) at the next start"
            );
        }
    }

    /// Takes the last good copy of the state, off the async threads: the
    /// commits wait for the bytes to be copied, not for them to reach the
    /// disk. Not while one is under way nor without a state file.
    async fn copy(&mut self) {
        if self.copying.as_ref().is_some_and(|c| !c.is_finished()) {
            return;
        }
        let Some(db) = self.db.take() else { return };
        let dir = self.dir.clone();
        let (db, copied) = tokio::task::spawn_blocking(move || {
            let copied = copy::take(&db, &dir);
            (db, copied)
        })
        .await
        .expect("the copy never panics");
        self.db = Some(db);
        let dir = self.dir.clone();
        self.copying = Some(tokio::task::spawn_blocking(move || {
            if let Err(e) = copied.and_then(|()| copy::seal(&dir)) {
                tracing::warn!(error = %e, "cannot take a copy of the state database; the last one stays");
            }
        }));
    }

    /// At a clean stop, a copy of the final state.
    async fn copy_at_stop(&mut self) {
        if let Some(copying) = self.copying.take() {
            let _ = copying.await;
        }
        if self.failing {
            return;
        }
        self.copy().await;
        if let Some(copying) = self.copying.take() {
            let _ = copying.await;
        }
    }

    /// The disk is full: gives the reserved room back so the commit can be
    /// made again at once; whether there was room to give.
    fn release_reserve(&mut self) -> bool {
        if !reserve::release(&self.dir) {
            return false;
        }
        self.metrics.state_reserve_bytes.set(0);
        tracing::error!(dir = %self.dir.display(), bytes = reserve::SIZE,
            "the disk is full: released the room reserved for the state; it is reserved again once the disk has room");
        true
    }

    /// Reserves the room again once the disk has it.
    async fn reserve(&mut self) {
        if self.metrics.state_reserve_bytes.get() > 0 {
            return;
        }
        let dir = self.dir.clone();
        let reserved = tokio::task::spawn_blocking(move || reserve::ensure(&dir)).await.unwrap_or_default();
        if reserved > 0 {
            self.metrics.state_reserve_bytes.set(reserved as i64);
            tracing::info!(dir = %self.dir.display(), bytes = reserved, "room for the state is reserved");
        }
    }

    /// Checks, when idle, that the file is still there; writes it back if
    /// not. Off the async threads: writing back is a copy of the file.
    async fn keep_in_place(&mut self) {
        let Some(db) = self.db.take() else { return };
        let checked = tokio::task::spawn_blocking(move || in_place(db)).await.expect("the check never panics");
        match checked {
            Ok(db) => self.db = Some(db),
            Err(e) => tracing::error!(error = %e, "cannot write the state database back; retrying at the next change"),
        }
    }

    async fn forward(&mut self, outgoing: &mut Vec<Outgoing>) {
        let Some(dispatch) = &self.dispatch else {
            outgoing.clear();
            return;
        };
        for input in std::mem::take(outgoing) {
            if let (Some(completed), Outgoing::Event(event)) = (&mut self.completed, &input) {
                completed.owe(event);
            }
            if dispatch.send(input).await.is_err() {
                tracing::error!("the action dispatcher is gone; notifications stay owed until the next start");
                self.dispatch = None;
                return;
            }
        }
    }

    /// Takes an acknowledgement into the batch; in a cluster, tells when an
    /// event has all of its.
    fn acked(&mut self, ack: Ack, batch: &mut Batch) {
        if let Some(completed) = &mut self.completed {
            completed.acked(&ack.0);
        }
        batch.acks.push(ack);
    }

    /// Says what the last commit left owed.
    fn finish(&self, batch: &Batch) {
        if !batch.is_empty() {
            tracing::error!(dir = %self.dir.display(), events = batch.events.len(), devices = batch.devices.len(),
                acknowledgements = batch.acks.len(), "stopping with changes the disk did not take");
        }
        match self.db.as_ref().map(Db::pending) {
            Some(Ok(0)) | None => {}
            Some(Ok(owed)) => {
                tracing::warn!(
                    owed,
                    what = "owed_kept",
                    "notifications not yet done are kept; they resume at the next start"
                )
            }
            Some(Err(e)) => tracing::error!(error = %e, "cannot count the notifications still owed"),
        }
    }
}

/// Events handed to the actions and not done yet, counted down by their
/// acknowledgements (a cluster's leader tells the group what is done).
struct Completions {
    to: mpsc::UnboundedSender<Arc<Event>>,
    owed: HashMap<String, (Arc<Event>, usize)>,
}

impl Completions {
    fn owe(&mut self, event: &Arc<Event>) {
        if event.actions.is_empty() {
            let _ = self.to.send(Arc::clone(event));
        } else {
            self.owed.insert(event.id.clone(), (Arc::clone(event), event.actions.len()));
        }
    }

    fn acked(&mut self, id: &str) {
        let Some((_, left)) = self.owed.get_mut(id) else { return };
        *left -= 1;
        if *left == 0
            && let Some((event, _)) = self.owed.remove(id)
        {
            let _ = self.to.send(event);
        }
    }
}

/// `db`, written back whole first if its file was deleted or replaced.
fn in_place(db: Db) -> Result<Db, DbError> {
    if db.still_in_place() {
        return Ok(db);
    }
    let file = db.path().to_path_buf();
    let db = db.rewrite()?;
    tracing::warn!(file = %file.display(), what = "state_rewritten", "the state database was deleted or replaced; wrote it back whole");
    Ok(db)
}

fn take(op: Op, batch: &mut Batch, outgoing: &mut Vec<Outgoing>, taken: &mut Option<(u64, Taken)>) {
    match op {
        Op::Save(records) => {
            batch.devices.extend(records.into_iter().map(|(id, saved)| (id, Some(saved))));
        }
        Op::Forget(id) => {
            batch.devices.insert(id, None);
        }
        Op::Event(event, device) => {
            if let Some((id, saved)) = device {
                batch.devices.insert(id, Some(saved));
            }
            let event: Arc<Event> = Arc::from(event);
            batch.events.push(Arc::clone(&event));
            outgoing.push(Outgoing::Event(event));
        }
        Op::Reload(config) => outgoing.push(Outgoing::Reload(config)),
        Op::Told(device, told) => {
            batch.told.insert(device, told);
        }
        Op::Taken { mark, message } => *taken = Some((mark, message)),
    }
}

/// Sleeps until `at`, or for ever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::State;
    use crate::event::{EventKind, test_event};

    fn record() -> (String, Saved) {
        let saved = Saved {
            topic: "plant/pump-7/status".into(),
            state: State::Offline,
            since: None,
            offline_since: None,
            alerted: true,
            seq: None,
        };
        ("pump-7".into(), saved)
    }

    async fn poll<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(value) = check() {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_failing_disk_delays_no_alert_and_the_decision_is_recorded_once_it_is_back() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        // A file where the folder should be: nothing can be written there.
        std::fs::write(&dir, b"").unwrap();
        let (ops_tx, ops) = mpsc::channel(16);
        let (_acks_tx, acks) = mpsc::unbounded_channel();
        let (dispatch, mut dispatched) = mpsc::channel(16);
        let metrics = Metrics::new();
        let writer = Writer {
            dir: dir.clone(),
            sync: StateSync::Full,
            db: None,
            ops,
            acks,
            dispatch,
            completed: None,
            committed: tokio::sync::watch::channel(0).0,
            metrics: Arc::clone(&metrics),
        };
        let finish = CancellationToken::new();
        let task = tokio::spawn(writer.run(Vec::new(), finish.clone()));

        ops_tx.send(Op::Event(Box::new(test_event(EventKind::Offline, "pump-7")), Some(record()))).await.unwrap();
        let sent = tokio::time::timeout(Duration::from_secs(5), dispatched.recv()).await.unwrap().unwrap();
        assert!(matches!(sent, Outgoing::Event(e) if e.device == "pump-7"), "sent although not recorded");
        assert!(metrics.state_write_errors.get() >= 1);

        assert_eq!(metrics.state_failing.get(), 1);

        std::fs::remove_file(&dir).unwrap();
        poll("the retried commit", || (metrics.state_failing.get() == 0).then_some(())).await;
        let retries = metrics.state_write_errors.get();
        assert!(dispatched.try_recv().is_err(), "sent once, not again when recorded");
        finish.cancel();
        task.await.unwrap();
        assert_eq!(metrics.state_write_errors.get(), retries);
        let loaded = Db::open(&dir, StateSync::Full).unwrap().load().unwrap();
        assert!(loaded.devices["pump-7"].alerted);
        assert_eq!(loaded.pending.len(), 1);
    }

    #[tokio::test]
    async fn a_mark_goes_back_once_the_decisions_before_it_are_committed_with_their_message() {
        let dir = tempfile::tempdir().unwrap();
        let (ops_tx, ops) = mpsc::channel(16);
        let (_acks_tx, acks) = mpsc::unbounded_channel();
        let (dispatch, _dispatched) = mpsc::channel(16);
        let (committed, mut marks) = tokio::sync::watch::channel(0);
        let writer = Writer {
            dir: dir.path().into(),
            sync: StateSync::Full,
            db: Some(Db::open(dir.path(), StateSync::Full).unwrap()),
            ops,
            acks,
            dispatch,
            completed: None,
            committed,
            metrics: Metrics::new(),
        };
        let finish = CancellationToken::new();
        let task = tokio::spawn(writer.run(Vec::new(), finish.clone()));
        let will = Taken { pkid: 9, topic: "devices/pump-7/status".into() };
        ops_tx.send(Op::Event(Box::new(test_event(EventKind::Offline, "pump-7")), Some(record()))).await.unwrap();
        ops_tx.send(Op::Taken { mark: 3, message: will.clone() }).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), marks.wait_for(|m| *m == 3)).await.unwrap().unwrap();
        // A message that decided nothing: its mark goes back at once, and
        // the last message committed stays the one that decided.
        ops_tx.send(Op::Taken { mark: 4, message: Taken { pkid: 10, topic: "x".into() } }).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), marks.wait_for(|m| *m == 4)).await.unwrap().unwrap();
        // Killed, not stopped: what it committed before the marks went back.
        task.abort();
        let _ = task.await;
        let loaded = poll("the writer's connection to close", || Db::open(dir.path(), StateSync::Full).ok()).await;
        let loaded = loaded.load().unwrap();
        assert_eq!(loaded.pending.len(), 1, "the decision is committed before its mark goes back");
        assert_eq!(loaded.taken, Some(will));
        drop(finish);
    }

    #[tokio::test]
    async fn an_acknowledged_event_is_no_longer_owed() {
        let dir = tempfile::tempdir().unwrap();
        let (ops_tx, ops) = mpsc::channel(16);
        let (acks_tx, acks) = mpsc::unbounded_channel();
        let (dispatch, mut dispatched) = mpsc::channel(16);
        let db = Db::open(dir.path(), StateSync::Full).unwrap();
        let writer = Writer {
            dir: dir.path().into(),
            sync: StateSync::Full,
            db: Some(db),
            ops,
            acks,
            dispatch,
            completed: None,
            committed: tokio::sync::watch::channel(0).0,
            metrics: Metrics::new(),
        };
        let finish = CancellationToken::new();
        let task = tokio::spawn(writer.run(Vec::new(), finish.clone()));
        ops_tx.send(Op::Event(Box::new(test_event(EventKind::Offline, "pump-7")), Some(record()))).await.unwrap();
        let Some(Outgoing::Event(event)) = dispatched.recv().await else { panic!("not sent") };
        acks_tx.send((event.id.clone(), "log".into())).unwrap();
        finish.cancel();
        task.await.unwrap();
        let loaded = Db::open(dir.path(), StateSync::Full).unwrap().load().unwrap();
        assert!(loaded.pending.is_empty(), "acknowledged, so no longer owed");
        assert!(loaded.devices["pump-7"].alerted);
    }
}
