//! The monitor: the single owner of the device table.
//!
//! It turns what the MQTT session saw into device transitions (through the
//! pure rules in `device.rs`), runs the devices' timers (grace periods,
//! heartbeats), and hands the resulting events to the action dispatcher.
//! It never does I/O and never waits on an action, so it keeps up with
//! whatever the broker delivers; the disk gets snapshots through the store.
//!
//! Around the broker connection:
//! - after every (re)connect the retained states replay; offlines seen in
//!   the next `settle` are held that long, so a replay that ends online
//!   fires nothing, and only real differences from the known state fire;
//! - while the broker is unreachable no device is declared offline: timers
//!   wait until it is back (heartbeat clocks restart then), and past
//!   `broker_alert_after` a `broker_down` event goes to `[broker] actions`;
//! - a burst of offlines asks the session to re-read the retained states,
//!   which catches wills the broker dropped under load.
//!
//! A reload swaps the config but keeps the state of every device still
//! watched.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use crate::actions;
use crate::config::{Config, Watch};
use crate::device::{Device, Now, Outcome, Saved, State};
use crate::event::{Event, EventKind, new_id};
use crate::metrics::{EventLabel, Metrics, StateLabel};
use crate::store;

/// How often, at most, the state is handed to the store.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(500);
/// This many offlines within `BURST_WINDOW` are a burst...
const BURST_SIZE: usize = 50;
const BURST_WINDOW: Duration = Duration::from_secs(10);
/// ...and the retained states are re-read this long after it began.
const RESYNC_AFTER_BURST: Duration = Duration::from_secs(3);

/// What the monitor is told, by the MQTT session and by the daemon.
#[derive(Debug)]
pub enum Input {
    Message { topic: String, payload: Bytes },
    Connected,
    Disconnected,
    Reload(Arc<Config>),
}

/// A request for every device's state, answered from the monitor's table.
#[derive(Debug)]
pub struct StatusQuery {
    pub reply: oneshot::Sender<Vec<DeviceView>>,
}

/// One device as `/status` shows it.
#[derive(Debug, Clone)]
pub struct DeviceView {
    pub id: String,
    pub topic: String,
    pub state: &'static str,
    pub since: Option<SystemTime>,
    pub last_seen: Option<SystemTime>,
    pub last_payload: String,
}

/// How many devices are in each state; for status lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub online: usize,
    pub offline: usize,
    pub unknown: usize,
}

impl Counts {
    fn add(&mut self, state: State, n: isize) {
        let slot = match state {
            State::Online => &mut self.online,
            State::Offline => &mut self.offline,
            State::Unknown => &mut self.unknown,
        };
        *slot = slot.saturating_add_signed(n);
    }
}

/// Where the monitor's results go.
pub struct Outputs {
    pub events: mpsc::Sender<actions::Input>,
    pub counts: watch::Sender<Counts>,
    pub snapshots: store::Mailbox,
    /// Asks the session to re-read the retained states of these topics.
    pub resync: mpsc::Sender<Vec<String>>,
    pub metrics: Arc<Metrics>,
}

/// The broker connection as the monitor tracks it.
struct Link {
    connected: bool,
    /// When it was lost (or the daemon started without it).
    lost_at: Now,
    /// `broker_down` has fired for this outage.
    alerted: bool,
    /// Offlines are held until then after a (re)connect.
    settle_until: Instant,
}

pub struct Monitor {
    config: Arc<Config>,
    /// Boxed: the tree's nodes then hold pointers, not half-empty slots of
    /// whole devices (a third less memory for a large fleet).
    devices: BTreeMap<String, Box<Device>>,
    counts: Counts,
    /// Device timers: when, and for which device; one per device, in `armed`.
    timers: BTreeSet<(Instant, String)>,
    armed: HashMap<String, Instant>,
    /// Topics already reported as clashing with another device's id.
    clashes: HashSet<String>,
    link: Link,
    recent_offlines: VecDeque<Instant>,
    /// A re-read of every known device's retained state is due then: after
    /// a burst of offlines, and every `resync`.
    resync_at: Option<Instant>,
    dirty: bool,
    out: Outputs,
}

impl Monitor {
    /// A monitor for `config`, taking back the `saved` states of devices it
    /// still watches.
    pub fn new(config: Arc<Config>, saved: HashMap<String, Saved>, out: Outputs) -> Monitor {
        let now = Now::read();
        let link = Link { connected: false, lost_at: now, alerted: false, settle_until: now.mono };
        let mut monitor = Monitor {
            config,
            devices: BTreeMap::new(),
            counts: Counts::default(),
            timers: BTreeSet::new(),
            armed: HashMap::new(),
            clashes: HashSet::new(),
            link,
            recent_offlines: VecDeque::new(),
            resync_at: None,
            dirty: false,
            out,
        };
        monitor.restore(saved, now);
        monitor.add_explicit_devices();
        monitor.recount();
        monitor
    }

    /// Runs until `input` closes; then hands over the last snapshot, and
    /// dropping the monitor closes the dispatcher's input, which drains the
    /// actions.
    pub async fn run(mut self, mut input: mpsc::Receiver<Input>, mut queries: mpsc::Receiver<StatusQuery>) {
        let mut snapshot_tick = tokio::time::interval(SNAPSHOT_EVERY);
        snapshot_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = self.next_wake();
            tokio::select! {
                message = input.recv() => match message {
                    Some(Input::Message { topic, payload }) => self.on_message(topic, &payload).await,
                    Some(Input::Connected) => self.on_connected().await,
                    Some(Input::Disconnected) => self.on_disconnected(),
                    Some(Input::Reload(config)) => self.reload(config).await,
                    None => break,
                },
                () = sleep_until(wake) => self.on_wake().await,
                Some(query) = queries.recv() => {
                    let _ = query.reply.send(self.view());
                }
                _ = snapshot_tick.tick() => self.snapshot(),
            }
        }
        self.dirty = true;
        self.snapshot();
        self.out.snapshots.close();
    }

    fn restore(&mut self, saved: HashMap<String, Saved>, now: Now) {
        let mut dropped = 0;
        for (id, saved) in saved {
            match self.config.resolve(&saved.topic) {
                Some((resolved, spec)) if resolved == id.as_str() => {
                    let mut device = Device::new(id.clone(), saved.topic.clone(), Arc::clone(&spec.rules));
                    device.restore(&saved, now);
                    self.devices.insert(id, Box::new(device));
                }
                _ => dropped += 1,
            }
        }
        if dropped > 0 {
            tracing::info!(dropped, "saved devices no longer in the config were forgotten");
        }
    }

    async fn on_message(&mut self, topic: String, payload: &[u8]) {
        let now = Now::read();
        self.out.metrics.messages.inc();
        let Some((id, spec)) = self.config.resolve(&topic) else {
            if let Some(id) = self.config.resolve_heartbeat(&topic).map(|id| id.into_owned()) {
                self.on_heartbeat(&id, now).await;
            } else {
                tracing::debug!(topic = %topic, "message on a topic no device watches");
            }
            return;
        };
        let id = id.into_owned();
        if !self.devices.contains_key(&id) {
            // A pattern device seen for the first time.
            self.counts.add(State::Unknown, 1);
        }
        let rules = Arc::clone(&spec.rules);
        let device = self.devices.entry(id.clone()).or_insert_with(|| Box::new(Device::new(id, topic.clone(), rules)));
        if device.topic != topic {
            if self.clashes.insert(topic.clone()) {
                tracing::warn!(device = %device.id, topic = %topic, watched_topic = %device.topic,
                    "ignoring topic: its device id is already watched on another topic");
            }
            return;
        }
        let before = device.state;
        let hold = self.link.settle_until.saturating_duration_since(now.mono);
        let outcome = device.on_message(payload, now, hold);
        match &outcome {
            Outcome::Unrecognised { warn, suppressed } => {
                self.out.metrics.unrecognized.inc();
                if *warn {
                    tracing::warn!(device = %device.id, topic = %topic, payload = %device.last_payload,
                        suppressed, "payload is neither an online nor an offline payload; state unchanged");
                }
            }
            Outcome::Stale { seq, current } => {
                tracing::info!(device = %device.id, topic = %topic, seq, current,
                    "ignoring a will from an earlier session (its sequence is not the current birth's)");
            }
            _ => {}
        }
        let id = device.id.clone();
        self.follow(&id, before, outcome, now).await;
    }

    async fn on_heartbeat(&mut self, id: &str, now: Now) {
        let Some(device) = self.devices.get_mut(id) else {
            tracing::debug!(device = %id, "heartbeat from a device not seen on its status topic yet");
            return;
        };
        let before = device.state;
        let outcome = device.on_heartbeat(now);
        self.follow(id, before, outcome, now).await;
    }

    /// Acts on what a device reported: fires events, arms its timer, keeps
    /// the counts current, marks the state for saving.
    async fn follow(&mut self, id: &str, before: State, outcome: Outcome, now: Now) {
        let Some(device) = self.devices.get(id) else { return };
        let after = device.state;
        match outcome {
            Outcome::Fire(t) => {
                let event = Event {
                    id: new_id(),
                    kind: t.kind,
                    device: device.id.clone(),
                    topic: device.topic.clone(),
                    payload: device.last_payload.clone(),
                    previous: t.previous.as_str(),
                    at: now.wall,
                    offline_since: t.offline_since,
                    offline_for: t.offline_for,
                    attempts: None,
                    actions: device.rules.actions.iter().cloned().collect(),
                };
                self.dirty = true;
                self.out.metrics.transitions.get_or_create(&EventLabel { event: t.kind.as_str() }).inc();
                if t.kind == EventKind::Offline {
                    self.note_offline(now.mono);
                }
                // The dispatcher only enqueues, so this waits for nothing slow.
                let _ = self.out.events.send(actions::Input::Event(event)).await;
            }
            Outcome::Wait(_) if after == State::Offline && before != State::Offline => {
                tracing::debug!(device = %device.id, topic = %device.topic, "device offline; holding it for its grace period");
            }
            Outcome::Quiet if after != before => {
                tracing::debug!(device = %device.id, topic = %device.topic, state = after.as_str(), "device state");
            }
            _ => {}
        }
        if after != before {
            self.dirty = true;
            self.counts.add(before, -1);
            self.counts.add(after, 1);
            self.publish_counts();
        }
        self.arm(id);
    }

    /// Keeps one timer entry per device, at its earliest need.
    fn arm(&mut self, id: &str) {
        let next = self.devices.get(id).and_then(|d| d.next_timer());
        let current = self.armed.get(id).copied();
        if let (Some(next), Some(current)) = (next, current)
            && current <= next
        {
            // The earlier entry fires first and re-arms.
            return;
        }
        if let Some(current) = current {
            self.timers.remove(&(current, id.to_string()));
            self.armed.remove(id);
        }
        if let Some(next) = next {
            self.timers.insert((next, id.to_string()));
            self.armed.insert(id.to_string(), next);
        }
    }

    /// The earliest moment something is due, if any.
    fn next_wake(&self) -> Option<Instant> {
        let timers = if self.link.connected {
            self.timers.first().map(|(at, _)| (*at).max(self.link.settle_until))
        } else {
            None
        };
        let broker = (!self.link.connected && !self.link.alerted && !self.config.broker.actions.is_empty())
            .then(|| self.link.lost_at.mono + self.config.broker.alert_after);
        let resync = self.resync_at.filter(|_| self.link.connected);
        [timers, broker, resync].into_iter().flatten().min()
    }

    async fn on_wake(&mut self) {
        let now = Now::read();
        if self.link.connected && self.resync_at.is_some_and(|at| at <= now.mono) {
            self.resync_at = self.periodic_resync(now.mono);
            self.request_resync();
        }
        if !self.link.connected {
            if !self.link.alerted && now.mono >= self.link.lost_at.mono + self.config.broker.alert_after {
                self.link.alerted = true;
                self.broker_event(EventKind::BrokerDown, now).await;
            }
            return;
        }
        if now.mono < self.link.settle_until {
            return;
        }
        while let Some((at, id)) = self.timers.first().cloned() {
            if at > now.mono {
                break;
            }
            self.timers.pop_first();
            self.armed.remove(&id);
            let Some(device) = self.devices.get_mut(&id) else { continue };
            let before = device.state;
            let outcome = device.on_tick(now);
            self.follow(&id, before, outcome, now).await;
        }
    }

    async fn on_connected(&mut self) {
        let now = Now::read();
        self.link.connected = true;
        self.link.settle_until = now.mono + self.config.broker.settle;
        self.resync_at = self.periodic_resync(now.mono);
        if self.link.alerted {
            self.link.alerted = false;
            self.broker_event(EventKind::BrokerUp, now).await;
        }
        // Silence while we could not hear is ours, not the devices'.
        let ids: Vec<String> = self.devices.keys().cloned().collect();
        for id in ids {
            if let Some(device) = self.devices.get_mut(&id) {
                device.forgive_silence(now);
            }
            self.arm(&id);
        }
    }

    fn on_disconnected(&mut self) {
        if self.link.connected {
            self.link.connected = false;
            self.link.lost_at = Now::read();
        }
    }

    async fn broker_event(&mut self, kind: EventKind, now: Now) {
        let broker = &self.config.broker;
        let down_for = now.mono.saturating_duration_since(self.link.lost_at.mono);
        let event = Event {
            id: new_id(),
            kind,
            device: broker.client_id.clone(),
            topic: broker.url.clone(),
            payload: String::new(),
            previous: if kind == EventKind::BrokerDown { "connected" } else { "disconnected" },
            at: now.wall,
            offline_since: Some(self.link.lost_at.wall),
            offline_for: (kind == EventKind::BrokerUp).then_some(down_for),
            attempts: None,
            actions: broker.actions.iter().cloned().collect(),
        };
        if kind == EventKind::BrokerDown {
            tracing::error!(broker = %broker.url, down_for = ?down_for, "broker unreachable past broker_alert_after");
        } else {
            tracing::info!(broker = %broker.url, down_for = ?down_for, "broker reachable again");
        }
        let _ = self.out.events.send(actions::Input::Event(event)).await;
    }

    fn periodic_resync(&self, now: Instant) -> Option<Instant> {
        let every = self.config.broker.resync;
        (!every.is_zero()).then(|| now + every)
    }

    /// Asks the session to re-read the retained states of known devices.
    fn request_resync(&mut self) {
        let topics: Vec<String> = self.devices.values().map(|d| d.topic.clone()).collect();
        if topics.is_empty() {
            return;
        }
        tracing::info!(devices = topics.len(), "re-reading the retained states of known devices");
        // Full: a re-read is already queued, which covers this one.
        let _ = self.out.resync.try_send(topics);
    }

    /// Counts offlines; a burst schedules a re-read of the retained states.
    fn note_offline(&mut self, now: Instant) {
        self.recent_offlines.push_back(now);
        while self.recent_offlines.front().is_some_and(|t| now.saturating_duration_since(*t) > BURST_WINDOW) {
            self.recent_offlines.pop_front();
        }
        let soon = now + RESYNC_AFTER_BURST;
        if self.recent_offlines.len() >= BURST_SIZE && self.resync_at.is_none_or(|at| at > soon) {
            self.resync_at = Some(soon);
            self.recent_offlines.clear();
        }
    }

    /// Hands the state to the store when it changed.
    fn snapshot(&mut self) {
        if !std::mem::take(&mut self.dirty) {
            return;
        }
        let snapshot = store::encode(self.devices.iter().map(|(id, d)| (id.as_str(), d.saved())), SystemTime::now());
        self.out.snapshots.put(snapshot);
    }

    async fn reload(&mut self, config: Arc<Config>) {
        let before: BTreeSet<String> = self.devices.keys().cloned().collect();
        self.config = config;
        let config = Arc::clone(&self.config);
        self.devices.retain(|id, device| match config.resolve(&device.topic) {
            Some((new_id, spec)) if new_id == id.as_str() => {
                device.rules = Arc::clone(&spec.rules);
                true
            }
            _ => false,
        });
        self.clashes.clear();
        self.add_explicit_devices();
        let after: BTreeSet<String> = self.devices.keys().cloned().collect();
        let added: Vec<&String> = after.difference(&before).collect();
        let removed: Vec<&String> = before.difference(&after).collect();
        tracing::info!(
            added = ?added,
            removed = ?removed,
            devices = after.len(),
            "config reloaded: {} device(s) added, {} removed, {} kept with their state",
            added.len(),
            removed.len(),
            after.len() - added.len()
        );
        for id in removed {
            if let Some(at) = self.armed.remove(id) {
                self.timers.remove(&(at, id.clone()));
            }
        }
        self.recount();
        self.dirty = true;
        let _ = self.out.events.send(actions::Input::Reload(Arc::clone(&self.config))).await;
    }

    fn add_explicit_devices(&mut self) {
        for spec in &self.config.devices {
            if let Watch::Device { id, topic } = &spec.watch {
                self.devices
                    .entry(id.clone())
                    .or_insert_with(|| Box::new(Device::new(id.clone(), topic.clone(), Arc::clone(&spec.rules))));
            }
        }
    }

    fn recount(&mut self) {
        let mut counts = Counts::default();
        for device in self.devices.values() {
            counts.add(device.state, 1);
        }
        self.counts = counts;
        self.publish_counts();
    }

    fn publish_counts(&self) {
        let c = self.counts;
        for (state, n) in [("online", c.online), ("offline", c.offline), ("unknown", c.unknown)] {
            self.out.metrics.devices.get_or_create(&StateLabel { state }).set(n as i64);
        }
        self.out.counts.send_replace(c);
    }

    fn view(&self) -> Vec<DeviceView> {
        self.devices
            .values()
            .map(|d| DeviceView {
                id: d.id.clone(),
                topic: d.topic.clone(),
                state: d.state.as_str(),
                since: d.since.map(|t| t.wall),
                last_seen: d.last_seen,
                last_payload: d.last_payload.clone(),
            })
            .collect()
    }
}

/// Sleeps until `at`, or for ever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}
