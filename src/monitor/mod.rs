//! The monitor: the single owner of the device table.
//!
//! - `fleet`: the pure core, every device and every policy (settle,
//!   re-reads, broker down/up, grace, heartbeats, reload), time passed in;
//! - this file: the thin async shell around it. Each turn it takes one
//!   input (a message, a link change, a reload, a timer, a status query),
//!   reads the clock once, calls the core, and carries out its effects:
//!   decisions and device records to the state writer (which commits them
//!   before any action sees them), re-read requests to the MQTT session,
//!   counts to whoever shows them.
//!
//! In a `[cluster]` it also owns the instance's `Cluster`: messages under
//! the cluster's prefix go to it, and a decided event is fired only when
//! the cluster says this instance fires it (the leader; the broker's own
//! alerts, whoever led when it was lost). A standby keeps the device's
//! record and leaves the event to the leader; a takeover fires what the
//! group did not notify (`Fleet::take_over`).
//!
//! After each message from the broker that waits for its acknowledgement
//! it hands the writer the records the message changed and its mark
//! (`Op::Taken`): the session acknowledges the message once that is
//! committed. What the broker sends again at the run's first connect goes
//! through `redelivered.rs` (what the saved state holds is dropped).
//!
//! It never touches the disk and never waits on an action, so it keeps up
//! with whatever the broker delivers.

mod fleet;
mod held;
mod redelivered;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, Output};
use crate::config::Config;
use crate::device::{Now, Saved};
use crate::event::{Event, EventKind};
use crate::metrics::{Metrics, StateLabel};
use crate::mqtt::{Ask, Inbound, Mark};
use crate::store::{Op, Taken};
pub use fleet::{Counts, Cursor, DeviceView, Effect, Fleet, PageQuery, Sort, StatusPage, rank};
use held::Held;
use redelivered::Redelivered;

/// A request for a page of devices, answered from the monitor's table.
#[derive(Debug)]
pub struct StatusQuery {
    pub page: PageQuery,
    pub reply: oneshot::Sender<StatusPage>,
}

/// How often the dirty devices' records are handed to the writer...
const SAVE_EVERY: Duration = Duration::from_millis(100);
/// ...and how many in one op.
const SAVE_BATCH: usize = 4096;

/// In a cluster, the monitor takes a turn at least this often...
const CLUSTER_TICK: Duration = Duration::from_millis(200);
/// ...so a longer gap between two turns means it did not run: it may have
/// been replaced meanwhile (`Cluster::on_stalled`).
const STALLED: Duration = Duration::from_secs(1);

/// A status query waits at most this long behind a flood of messages (the
/// monitor takes messages first): then one is answered in between, so a
/// page is read in its chunks' turns however busy intake is, and
/// detection gives up at most one chunk's work (`MONITOR_CHUNK` devices,
/// about a millisecond) in this time.
const QUERY_TURN: Duration = Duration::from_millis(10);

/// A leader's word that has not come back from the broker in this long
/// (its ACL refuses the publish, the broker drops it): its notifications
/// go out anyway, logged.
const HOLD_MAX: Duration = Duration::from_secs(10);

/// What woke the monitor for a turn.
enum Woke {
    Inbound(Inbound),
    Reload(Arc<Config>),
    Timer,
    Query(StatusQuery),
    Completed(Arc<Event>),
    Save,
    ClusterTick,
}

/// What the monitor listens to.
pub struct Inputs {
    /// The MQTT session's traffic.
    pub inbound: mpsc::Receiver<Inbound>,
    /// New configs, from the daemon.
    pub reloads: mpsc::Receiver<Arc<Config>>,
    pub queries: mpsc::Receiver<StatusQuery>,
    /// Events every action is done with (in a cluster: the leader says so).
    pub completed: mpsc::UnboundedReceiver<Arc<Event>>,
}

/// Where the monitor's results go.
pub struct Outputs {
    /// Decisions and records, to the state writer.
    pub store: mpsc::Sender<Op>,
    pub counts: watch::Sender<Counts>,
    /// Asks the session to re-read retained states, or to ask Sparkplug
    /// nodes for a rebirth.
    pub asks: mpsc::Sender<Ask>,
    /// Transitions, to the history writer (none when history is off).
    pub history: Option<std::sync::mpsc::SyncSender<crate::transition::Transition>>,
    /// Transitions, to whoever watches live (the page's event stream).
    pub live: tokio::sync::broadcast::Sender<Arc<crate::transition::Transition>>,
    pub metrics: Arc<Metrics>,
}

pub struct Monitor {
    fleet: Fleet,
    cluster: Option<Cluster>,
    /// In a cluster, a leader's decisions wait here until the group has its
    /// word on them: those of the word numbered so, and those not yet said.
    held: Held<Op>,
    out: Outputs,
    /// Rate-limits the warning of a full history queue.
    history_full: crate::throttle::Throttle,
    /// The last message taken in whose mark the writer has not been given.
    marked: Option<(Mark, String)>,
    redelivered: Redelivered,
    /// This turn's moment: the clock is read once a turn (`run`).
    turn: Now,
}

impl Monitor {
    /// A monitor for `config`, taking back the `saved` states of devices it
    /// still watches.
    /// In a cluster, `told` is the group's last word on each device, as
    /// saved (`None`: this state never belonged to a member, and the
    /// outages it notified itself, less those still `owed`, are taken as
    /// the group's). `taken`: the last message the saved state holds.
    /// `lost`: the state database was lost at this start.
    pub fn new(
        config: Arc<Config>,
        saved: std::collections::HashMap<String, Saved>,
        told: Option<std::collections::HashMap<String, crate::cluster::Words>>,
        owed: &std::collections::HashSet<String>,
        taken: Option<Taken>,
        lost: bool,
        out: Outputs,
    ) -> Monitor {
        let turn = Now::read();
        let mut fleet = Fleet::new(Arc::clone(&config), saved, Arc::clone(&out.metrics), turn);
        if lost {
            fleet.state_was_lost();
        }
        let cluster = config.cluster.clone().map(|settings| match told {
            Some(told) => {
                let run = this_run(&settings);
                Cluster::new(settings, &config.presence.offline, told, run)
            }
            None => {
                let mut outages = fleet.outages();
                outages.retain(|device, _| !owed.contains(device));
                let run = this_run(&settings);
                let mut cluster = Cluster::new(settings, &config.presence.offline, outages, run);
                cluster.save_all();
                cluster
            }
        });
        Monitor {
            fleet,
            cluster,
            held: Held::default(),
            out,
            history_full: crate::throttle::Throttle::new(Duration::from_secs(60)),
            marked: None,
            redelivered: Redelivered::new(taken),
            turn,
        }
    }

    /// Runs until `stop` fires (the daemon stops its intake) or the session
    /// hangs up. Dropping the monitor then closes the writer's input, which
    /// commits what is left and lets the actions drain.
    pub async fn run(mut self, mut inputs: Inputs, stop: CancellationToken) {
        self.perform().await;
        let mut save_tick = tokio::time::interval(SAVE_EVERY);
        save_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut cluster_tick = tokio::time::interval(CLUSTER_TICK);
        cluster_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_turn = self.turn.mono;
        let mut last_query = self.turn.mono;
        loop {
            let wake = self.fleet.next_wake();
            // By the last turn's clock: a turn under a flood is short.
            let waited = self.turn.mono.saturating_duration_since(last_query);
            let overdue = if waited >= QUERY_TURN { inputs.queries.try_recv().ok() } else { None };
            let woke = if let Some(query) = overdue {
                Woke::Query(query)
            } else {
                tokio::select! {
                biased;
                () = stop.cancelled() => break,
                message = inputs.inbound.recv() => match message {
                    Some(message) => Woke::Inbound(message),
                    None => break,
                },
                Some(config) = inputs.reloads.recv() => Woke::Reload(config),
                () = sleep_until(wake) => Woke::Timer,
                Some(query) = inputs.queries.recv() => Woke::Query(query),
                Some(event) = inputs.completed.recv() => Woke::Completed(event),
                // Last: a burst of messages is handled before its records
                // are saved, so the disk's work never slows the burst.
                _ = save_tick.tick(), if self.fleet.has_saves() => Woke::Save,
                _ = cluster_tick.tick(), if self.cluster.is_some() => Woke::ClusterTick,
                }
            };
            // The turn's one reading of the clock.
            self.turn = Now::read();
            let now = self.turn;
            match woke {
                Woke::Inbound(message) => {
                    self.check_stall(&mut last_turn);
                    if !matches!(message, Inbound::Message { .. } | Inbound::Connected { .. }) {
                        self.redelivered.close();
                    }
                    let cluster = self.cluster.as_mut();
                    match (message, cluster) {
                        (Inbound::Message { topic, payload, retained, redelivered, mark }, _) => {
                            self.on_message(&topic, payload, retained, redelivered, mark, now);
                            if let Some(mark) = mark {
                                self.marked = Some((mark, topic));
                            }
                        }
                        (Inbound::Probed(n), _) => self.fleet.on_probed(n, now),
                        (Inbound::Restarted { session_present }, _) => self.fleet.broker_restarted(
                            session_present,
                            "its uptime is shorter than our last connection",
                            now,
                        ),
                        (Inbound::Connected { session_present, restarted, behind }, c) => {
                            c.map(Cluster::on_connected);
                            if behind {
                                self.fleet.fell_behind();
                            }
                            self.fleet.on_connected(now, session_present, restarted);
                        }
                        (Inbound::Subscribed, c) => {
                            c.map(Cluster::on_subscribed);
                            self.fleet.on_subscribed(now);
                        }
                        (Inbound::Disconnected, c) => {
                            c.map(Cluster::on_disconnected);
                            self.fleet.on_disconnected(now);
                        }
                    }
                }
                Woke::Reload(config) => self.fleet.reload(config),
                Woke::Timer => {
                    // A thawed leader's first turn may be a timer's: it must
                    // not fire what came due while it was frozen as a leader.
                    self.check_stall(&mut last_turn);
                    self.fleet.on_tick(now);
                }
                Woke::Query(query) => {
                    last_query = now.mono;
                    let mut page = self.fleet.page(&query.page, now.mono);
                    page.cluster = self.cluster.as_ref().map(Cluster::view);
                    let _ = query.reply.send(page);
                }
                Woke::Completed(event) => {
                    self.check_stall(&mut last_turn);
                    if let Some(cluster) = &mut self.cluster {
                        cluster.completed(&event);
                    }
                }
                Woke::Save => self.save(false).await,
                Woke::ClusterTick => {
                    self.check_stall(&mut last_turn);
                    self.release_overdue().await;
                }
            }
            self.perform().await;
            self.mark_taken().await;
        }
        if let Some(cluster) = &mut self.cluster {
            cluster.stop();
            self.perform().await;
            // Said, if not yet confirmed: better sent than lost.
            let held = self.held.sent_and_waiting();
            self.send_to_writer(held).await;
        }
        self.save(true).await;
    }

    /// A message from the broker; `redelivered`: sent again (under its
    /// mark's packet id).
    fn on_message(
        &mut self,
        topic: &str,
        payload: bytes::Bytes,
        retained: bool,
        redelivered: bool,
        mark: Option<Mark>,
        now: Now,
    ) {
        if let Some(cluster) = &mut self.cluster
            && cluster.owns(topic)
        {
            cluster.on_message(topic, &payload);
            return;
        }
        if let Some(mark) = mark.filter(|_| redelivered && !retained && self.redelivered.open()) {
            if self.redelivered.unfinished(mark.pkid, topic) {
                self.fleet.on_unfinished_message(topic, &payload, now);
            } else {
                tracing::debug!(topic = %topic, pkid = mark.pkid, "dropped a message sent again that the saved state already holds");
            }
            return;
        }
        if !redelivered {
            self.redelivered.close();
        }
        if retained {
            self.fleet.on_message(topic, &payload, now);
        } else {
            self.fleet.on_live_message(topic, &payload, now);
        }
        // A standby that reads an offline the group already notified (its
        // word came first) takes it as that outage.
        if let Some(cluster) = &self.cluster
            && cluster.role() == crate::cluster::Role::Standby
            && let Some(id) = self.fleet.device_of(topic)
            && let Some(last) = cluster.last_word(id)
        {
            let (id, last) = (id.to_string(), last.clone());
            self.fleet.group_said(&id, &last, now);
        }
    }

    /// Gives the writer the mark of the last message taken in, behind the
    /// records it changed (and, in a cluster, behind the decisions held
    /// for the group's word): the session acknowledges the message once
    /// the writer has committed them. Not while a live offline waits for
    /// its probe (a crash then must get that message again).
    async fn mark_taken(&mut self) {
        if self.fleet.deciding() {
            return;
        }
        let Some((mark, topic)) = self.marked.take() else { return };
        self.save(true).await;
        let op = Op::Taken { mark: mark.n, message: Taken { pkid: mark.pkid, topic } };
        if let Some(op) = self.held.behind(op)
            && self.out.store.send(op).await.is_err()
        {
            tracing::error!("the state writer is gone; decisions are no longer recorded");
        }
    }

    /// Hands the dirty devices' records to the writer, in batches; only as
    /// many as the writer has room for, unless `all` (at the end).
    async fn save(&mut self, all: bool) {
        while self.fleet.has_saves() {
            let permit = if all {
                self.out.store.reserve().await
            } else {
                match self.out.store.try_reserve() {
                    Ok(permit) => Ok(permit),
                    Err(mpsc::error::TrySendError::Full(())) => return,
                    Err(mpsc::error::TrySendError::Closed(())) => Err(mpsc::error::SendError(())),
                }
            };
            let Ok(permit) = permit else {
                tracing::error!("the state writer is gone; device states are no longer saved");
                return;
            };
            permit.send(Op::Save(self.fleet.take_saves(SAVE_BATCH)));
        }
    }

    /// Carries out what the last call decided, then shows the counts.
    async fn perform(&mut self) {
        let before = *self.out.counts.borrow();
        self.perform_cluster().await;
        let effects: Vec<Effect> = self.fleet.drain().collect();
        // Rebirth requests go to the session together: one at a time
        // would overflow its queue in a storm.
        let mut rebirths = Vec::new();
        for effect in effects {
            let op = match effect {
                Effect::Fire(event, device) => match self.fire(event, device) {
                    Some(op) => op,
                    None => continue,
                },
                Effect::Forget(id) => Op::Forget(id),
                Effect::Reload(config) => Op::Reload(config),
                Effect::Transition(entry) => {
                    self.transition(entry);
                    continue;
                }
                Effect::Probe(n) => {
                    self.ask(Ask::Probe(n));
                    continue;
                }
                Effect::Resync(topics) => {
                    self.ask(Ask::Reread(topics));
                    continue;
                }
                Effect::Rebirth(topic) => {
                    rebirths.push(topic);
                    continue;
                }
            };
            // The writer only queues, so this waits for nothing slow.
            if self.out.store.send(op).await.is_err() {
                tracing::error!("the state writer is gone; decisions are no longer recorded");
            }
        }
        if !rebirths.is_empty() {
            self.ask(Ask::Rebirth(rebirths));
        }
        // What the leader just decided, to the group.
        self.perform_cluster().await;
        let counts = self.fleet.counts();
        if counts != before {
            for (state, n) in [("online", counts.online), ("offline", counts.offline), ("unknown", counts.unknown)] {
                self.out.metrics.devices.get_or_create(&StateLabel { state }).set(n as i64);
            }
            self.out.counts.send_replace(counts);
        }
    }
}

impl Monitor {
    /// What the cluster asked for: its messages to the session, a
    /// takeover to the fleet, its last words to the writer; then the role
    /// to `/metrics`.
    async fn perform_cluster(&mut self) {
        let Some(cluster) = &mut self.cluster else { return };
        if let Some(seq) = cluster.flush() {
            self.held.sent(seq, self.turn.mono);
        }
        let outputs: Vec<Output> = cluster.drain().collect();
        let mut ops = Vec::new();
        for output in outputs {
            match output {
                Output::Publish { topic, payload, retain } => self.ask(Ask::Publish { topic, payload, retain }),
                Output::TakeOver => {
                    let cluster = self.cluster.as_mut().expect("in a cluster");
                    self.out.metrics.cluster_takeovers.inc();
                    // Under the ids they were decided under, or follow from.
                    let left = cluster.take_left();
                    for (mut event, record) in
                        self.fleet.take_over(cluster.told(), cluster.in_flight(), left, self.turn)
                    {
                        event.epoch = Some(cluster.epoch());
                        cluster.decided(&event);
                        self.held.decided(Op::Event(event, record));
                    }
                }
                Output::Told(device, words) => {
                    if let Some(cluster) = &self.cluster
                        && cluster.role() == crate::cluster::Role::Standby
                        && let Some(last) = cluster.last_word(&device)
                    {
                        let last = last.clone();
                        self.fleet.group_said(&device, &last, self.turn);
                    }
                    ops.push(Op::Told(device, words));
                }
                Output::Confirmed(seq) => {
                    ops.extend(self.held.confirmed(seq));
                }
                Output::Unconfirmed => {
                    let held = self.held.sent_and_waiting();
                    ops.extend(held.into_iter().filter_map(|op| self.undecide(op)));
                }
            }
        }
        self.send_to_writer(ops).await;
        let cluster = self.cluster.as_ref().expect("in a cluster");
        let metrics = &self.out.metrics;
        metrics.cluster_leader.set(i64::from(cluster.role() == crate::cluster::Role::Leader));
        metrics.cluster_epoch.set(cluster.epoch() as i64);
        metrics.cluster_peers.set(cluster.peers_up() as i64);
    }

    /// Sends what waited for its word past `HOLD_MAX`: an alert late is
    /// worse than one the group may repeat under the same id.
    async fn release_overdue(&mut self) {
        let overdue = self.held.overdue(self.turn.mono, HOLD_MAX);
        if !overdue.is_empty() {
            tracing::warn!(held = overdue.len(), after = ?HOLD_MAX,
                "the cluster's word on these notifications did not come back from the broker (may this instance publish under willwatch/cluster/?); sending them anyway");
            self.send_to_writer(overdue).await;
        }
    }

    /// A decision held for the group's word that will not go out from
    /// here: its device's record is still saved; a takeover fires it
    /// again, under the same id.
    fn undecide(&mut self, op: Op) -> Option<Op> {
        match op {
            Op::Event(event, record) => {
                if let Some(cluster) = &mut self.cluster {
                    cluster.undecided(&event.device);
                }
                tracing::debug!(device = %event.device, event = %event.kind, event_id = %event.id,
                    "the broker went before the cluster had our word on this transition; left to whoever leads");
                record.map(|r| Op::Save(vec![r]))
            }
            other => Some(other),
        }
    }

    /// Hands ops that were held to the writer. The device records they
    /// carry are taken anew: saves made while they waited are newer, and
    /// must not be overwritten by the older ones (a device forgotten
    /// meanwhile is not written back).
    async fn send_to_writer(&mut self, ops: Vec<Op>) {
        let current = |(id, _): (String, Saved)| self.fleet.record(&id).map(|saved| (id, saved));
        let ops: Vec<Op> = ops
            .into_iter()
            .map(|op| match op {
                Op::Event(event, record) => Op::Event(event, record.and_then(current)),
                Op::Save(records) => Op::Save(records.into_iter().filter_map(current).collect()),
                other => other,
            })
            .collect();
        for op in ops {
            if self.out.store.send(op).await.is_err() {
                tracing::error!("the state writer is gone; decisions are no longer recorded");
                return;
            }
        }
    }

    /// In a cluster: a gap since the last turn longer than `STALLED`
    /// means this instance did not run (`Cluster::on_stalled`).
    fn check_stall(&mut self, last_turn: &mut Instant) {
        let now = self.turn.mono;
        let gap = now.duration_since(*last_turn);
        *last_turn = now;
        if gap > STALLED
            && let Some(cluster) = &mut self.cluster
        {
            cluster.on_stalled(gap);
        }
    }

    /// A decided event: to the writer when this instance fires it (in a
    /// cluster, stamped with the epoch); a standby saves only the device's
    /// record and leaves the event to the leader.
    fn fire(&mut self, mut event: Box<Event>, device: Option<(String, Saved)>) -> Option<Op> {
        let Some(cluster) = &mut self.cluster else { return Some(Op::Event(event, device)) };
        if cluster.fires(event.kind) {
            event.epoch = Some(cluster.epoch());
            if !matches!(event.kind, EventKind::Offline | EventKind::Online) {
                return Some(Op::Event(event, device));
            }
            // A device's transition goes out once the group has our word.
            event.id = cluster.id_for(&event);
            cluster.decided(&event);
            self.held.decided(Op::Event(event, device));
            return None;
        }
        self.out.metrics.cluster_left_to_leader.inc();
        tracing::debug!(device = %event.device, event = %event.kind, "standby: left to the leader");
        if cluster.left_to_leader(&event) {
            self.out.metrics.cluster_left_dropped.inc();
        }
        device.map(|record| Op::Save(vec![record]))
    }

    /// Hands a transition to the history (never waiting: a full queue
    /// drops it, counted) and to live watchers, if any.
    fn transition(&mut self, entry: crate::transition::Transition) {
        if self.out.live.receiver_count() > 0 {
            let _ = self.out.live.send(Arc::new(entry.clone()));
        }
        if let Some(history) = &self.out.history
            && let Err(std::sync::mpsc::TrySendError::Full(_)) = history.try_send(entry)
        {
            self.out.metrics.history_dropped.inc();
            if let Some(suppressed) = self.history_full.allow(self.turn.mono) {
                tracing::warn!(
                    suppressed,
                    "the history writer is behind; transitions are dropped from the history (counted)"
                );
            }
        }
    }

    /// Passes a request to the session. It takes requests as they come and
    /// queues them (merged), so this fails only while it hangs: then the
    /// request is dropped, logged.
    fn ask(&self, ask: Ask) {
        if let Err(e) = self.out.asks.try_send(ask) {
            let topics = match e.into_inner() {
                Ask::Reread(topics) | Ask::Rebirth(topics) => topics.len(),
                Ask::Publish { .. } | Ask::Probe(_) => 1,
            };
            tracing::warn!(topics, "the session is not taking requests; this one is dropped");
        }
    }
}

/// Sleeps until `at`, or for ever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// This run of the cluster instance `settings` names, read off the
/// process and the clock.
fn this_run(settings: &crate::cluster::Settings) -> crate::cluster::wire::Run {
    crate::cluster::wire::Run {
        at: crate::cluster::millis(std::time::SystemTime::now()) * 1000,
        asking: crate::cluster::wire::asking(&settings.host),
    }
}
