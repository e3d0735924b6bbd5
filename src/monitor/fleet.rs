//! The fleet core: every device, the broker link as the monitor sees it,
//! and the policies over them, with no I/O, no awaits and no clock reads.
//!
//! The shell (`mod.rs`) reads the clock once per turn, calls one method
//! here with that time, and carries out the `Effect`s it takes back with
//! `drain`. So settle, re-reads, broker down/up, grace, heartbeats and
//! reloads are millisecond unit tests (`tests.rs`).
//!
//! The policies around the broker connection:
//! - after every (re)connect the retained states replay; offlines in it
//!   are held (`settle`, `confirm_within`), so a replay that ends online
//!   fires nothing, and only real differences from the known state fire;
//! - once the subscriptions are acknowledged and the replay had time to
//!   arrive, every known device whose retained state did not come is
//!   re-read, and only those: a replay cut short by the broker's queue
//!   limit is completed within seconds;
//! - while the broker is unreachable no device is declared offline: timers
//!   wait until it is back (heartbeat clocks restart then), and past
//!   `broker_alert_after` a `broker_down` event fires;
//! - a storm of offlines big enough for the broker to have dropped some of
//!   its wills schedules one re-read of the devices not known offline;
//! - what the broker's own lifecycle produces (the wills it publishes as it
//!   stops, replays from its store or our session's queue, a store it
//!   lost) is checked against its present state before it notifies
//!   (`confirm.rs`).
//!
//! What a restart must remember is saved two ways. A decided event carries
//! its device's record, so both are committed in one transaction before
//! the event goes anywhere. Every other change (a device first seen, a
//! grace period begun) only marks the device dirty, and the shell saves
//! the dirty ones in batches (`take_saves`): losing those to a crash costs
//! nothing the broker's retained states do not tell again, and a retained
//! burst of 100,000 new devices never waits for the disk.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use compact_str::CompactString;

use crate::config::{Config, DeviceSpec, Watch};
use crate::connection::{CLASH, YOUNG};
use crate::device::{Device, Durable, Now, Outcome, Saved, State, preview};
use crate::event::{Event, EventKind, new_id};
use crate::metrics::{EventLabel, Metrics, PatternLabel};
use crate::payload::Reading;
use crate::sparkplug::topic::Topic as SparkplugTopic;
use crate::throttle::Throttle;
use crate::topic::{MAX_DEVICE_ID, MAX_DEVICE_TOPIC};
use confirm::{Confirm, Source};
use devices::Devices;
use room::Room;

mod cluster;
mod confirm;
mod devices;
mod order;
pub use order::{Cursor, Sort};
mod room;
mod sparkplug;

/// This many offlines within `BURST_WINDOW` may have overflowed a broker's
/// queue for us (mosquitto's default is 1,000 messages)...
pub const BURST_SIZE: usize = 500;
pub const BURST_WINDOW: Duration = Duration::from_secs(10);
/// ...so the devices not known offline are re-read this long after.
pub const RESYNC_AFTER_BURST: Duration = Duration::from_secs(3);
/// How often, at most, refused new devices are logged.
pub const REFUSALS_LOG_EVERY: Duration = Duration::from_secs(60);
/// The least time left for a replay to arrive after the last SUBACK.
pub const REPLAY_WAIT: Duration = Duration::from_secs(1);

/// How long a child's offline waits while its parent is offline: until the
/// parent is back, then `REPLAY_WAIT` for the child's own state.
const PARENT_HOLD: Duration = Duration::from_secs(10 * 365 * 86_400);
/// How long a live offline waits for its probe: until it is back
/// (`Fleet::on_probed`), overdue, or the link goes.
const PROBE_HOLD: Duration = PARENT_HOLD;

/// What the shell is asked to do.
#[derive(Debug)]
pub enum Effect {
    /// Commit the event (and its device's record with it), then send it.
    Fire(Box<Event>, Option<(String, Saved)>),
    /// Forget a device no longer watched.
    Forget(String),
    /// Re-read the retained states of these exact topics.
    Resync(Vec<String>),
    /// Ask a Sparkplug edge node for a rebirth, on its command topic.
    Rebirth(String),
    /// Send probe `n` through the broker.
    Probe(u64),
    /// Hand the new config to the actions (in order with the events).
    Reload(Arc<Config>),
    /// A device changed state: for the history and the live page.
    Transition(crate::transition::Transition),
}

/// How many devices are in each state; for status lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub online: usize,
    pub offline: usize,
    pub unknown: usize,
    /// Devices whose offline was notified and is not resolved yet
    /// (whatever their state now: a cleared retained state leaves it so).
    pub notified: usize,
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

/// One device as `/status` shows it.
#[derive(Debug, Clone)]
pub struct DeviceView {
    pub id: String,
    pub topic: String,
    pub state: &'static str,
    pub since: Option<SystemTime>,
    pub last_seen: Option<SystemTime>,
    pub last_payload: String,
    /// Its offline was notified and is not resolved yet.
    pub notified: bool,
    /// While an offline waits out its grace period: how long until it fires.
    pub grace_left: Option<Duration>,
    /// Why it is offline when it did not say so (`parent X offline`).
    pub cause: Option<String>,
    /// Heard from since the last connect (its retained state or a message).
    pub confirmed: bool,
}

/// Which page of the devices `/status` wants: in `sort` (offline, unknown,
/// online, then by id; or by id); those after `after` (a previous page's
/// `next`, of the same sort), at most `limit`, optionally of one state
/// only.
#[derive(Debug, Clone, Default)]
pub struct PageQuery {
    /// This device only (alerts link to it).
    pub device: Option<String>,
    /// Devices whose id, lowercased, contains this (lowercase) text.
    pub contains: Option<String>,
    pub state: Option<State>,
    pub sort: Sort,
    pub after: Option<Cursor>,
    pub limit: usize,
}

/// One page of devices, the whole fleet's counts, and where the next page
/// starts (if there is one).
#[derive(Debug)]
pub struct StatusPage {
    pub devices: Vec<DeviceView>,
    pub counts: Counts,
    pub next: Option<Cursor>,
    /// In a `[cluster]`: this instance's role, the epoch, the peers.
    pub cluster: Option<crate::cluster::View>,
}

/// Which `[[device]]` a device came from, for counting per pattern.
fn pattern_key(spec: &crate::config::DeviceSpec) -> usize {
    Arc::as_ptr(&spec.rules) as usize
}

/// The most devices one `/status` answer filtered by id reads (about a
/// millisecond of the monitor's time; the next answer goes on).
const SCAN: usize = 5_000;

/// Whether `id` contains `lower` (lowercase), ignoring case; without an
/// allocation when both are ASCII, as ids mostly are.
fn contains_ignoring_case(id: &str, lower: &str) -> bool {
    if id.is_ascii() && lower.is_ascii() {
        let (id, lower) = (id.as_bytes(), lower.as_bytes());
        return lower.is_empty() || id.windows(lower.len()).any(|w| w.eq_ignore_ascii_case(lower));
    }
    id.to_lowercase().contains(lower)
}

/// Where a state sorts on `/status`: offline first.
pub fn rank(state: State) -> u8 {
    match state {
        State::Offline => 0,
        State::Unknown => 1,
        State::Online => 2,
    }
}

/// The broker connection as the fleet tracks it.
struct Link {
    connected: bool,
    /// When it was last lost (or the daemon started without it).
    lost_at: Now,
    /// When the outage began: the first loss since the link was last
    /// stable (a connection that dies young does not end it).
    outage_began: Now,
    /// `broker_down` has fired for this outage.
    alerted: bool,
    /// When the current connection came. One that dies within `CLASH` did
    /// not end the outage, and `broker_up` waits until one lasts `YOUNG`.
    up_since: Instant,
    /// Offlines are held until then after a (re)connect.
    settle_until: Instant,
    /// Connections so far; a device heard in this one says so (`Device::heard_in`).
    connects: u32,
    /// When to look for known devices the replay did not deliver.
    replay_check_at: Option<Instant>,
    /// The connect's probe came back: what the broker queued for us is in,
    /// and a message now is live.
    probed: bool,
    /// An offline read from the broker's store fires no earlier.
    confirm_until: Instant,
    /// When to look for devices not heard since the connect.
    confirm_check_at: Option<Instant>,
    /// The broker restarted and kept its store: what it replays may be
    /// older than the devices, and only a fresh message confirms one.
    fresh_only: bool,
    /// The broker is known to have restarted before this connection.
    restarted: bool,
    /// From a connect to its confirm check.
    confirming: bool,
    /// From a connect to its replay check: queued messages are kept.
    queue_open: bool,
}

pub struct Fleet {
    config: Arc<Config>,
    devices: Devices,
    counts: Counts,
    /// Device timers: when, and for which device; one per device, in `armed`.
    timers: BTreeSet<(Instant, CompactString)>,
    armed: HashMap<CompactString, Instant>,
    /// Topics already reported as clashing with another device's id.
    clashes: HashSet<String>,
    /// The room each pattern has for devices (`max_devices`), and what it
    /// holds; keyed by the pattern's rules (one `Arc` per `[[device]]` of
    /// the current config), so a new device costs no formatting.
    room: Room,
    /// The ids some device names as its `parent`.
    parents: HashSet<String>,
    /// The known devices of each parent (by `parent`, or a Sparkplug
    /// device's edge node).
    children: HashMap<CompactString, Vec<CompactString>>,
    /// Malformed Sparkplug payloads are logged at most this often.
    malformed: Throttle,
    /// Every device by the state it is shown in, then by id: what
    /// `/status` pages walk (`order.rs`).
    order: order::Order,
    /// New devices refused for a topic or id too long are logged at most
    /// this often.
    too_long: Throttle,
    /// The state was lost at the start (`store::open`) and the start's
    /// picture of the fleet is not yet confirmed: what fires may repeat
    /// an alert sent before the loss (`unlinked`). Not in a cluster, whose
    /// ids follow from the group's words.
    lost: bool,
    /// Unlinked alerts are logged at most this often.
    unlinked: Throttle,
    link: Link,
    recent_offlines: VecDeque<Instant>,
    /// A re-read of the devices not known offline is due then: after a
    /// storm, and every `resync`.
    resync_at: Option<Instant>,
    metrics: Arc<Metrics>,
    effects: Vec<Effect>,
    /// Devices whose record changed since it was last saved.
    dirty: Vec<CompactString>,
    confirm: Confirm,
    /// Since when this instance has seen the fleet live (its start, or its
    /// last connect): of what happened before, only the broker's state
    /// then reached it.
    view_since: SystemTime,
}

impl Fleet {
    /// A fleet for `config`, taking back the `saved` states of devices it
    /// still watches (the others are forgotten on disk too).
    pub fn new(config: Arc<Config>, saved: HashMap<String, Saved>, metrics: Arc<Metrics>, now: Now) -> Fleet {
        let link = Link {
            connected: false,
            lost_at: now,
            outage_began: now,
            alerted: false,
            up_since: now.mono,
            settle_until: now.mono,
            connects: 0,
            replay_check_at: None,
            probed: false,
            confirm_until: now.mono,
            confirm_check_at: None,
            fresh_only: false,
            restarted: false,
            confirming: false,
            queue_open: false,
        };
        let mut fleet = Fleet {
            room: Room::new(&config, None),
            config,
            devices: Devices::default(),
            counts: Counts::default(),
            timers: BTreeSet::new(),
            armed: HashMap::new(),
            clashes: HashSet::new(),
            parents: HashSet::new(),
            children: HashMap::new(),
            malformed: Throttle::new(REFUSALS_LOG_EVERY),
            order: order::Order::default(),
            too_long: Throttle::new(REFUSALS_LOG_EVERY),
            lost: false,
            unlinked: Throttle::new(REFUSALS_LOG_EVERY),
            link,
            recent_offlines: VecDeque::new(),
            resync_at: None,
            metrics,
            effects: Vec::new(),
            dirty: Vec::new(),
            confirm: Confirm::default(),
            view_since: now.wall,
        };
        fleet.restore(saved, now);
        fleet.add_explicit_devices();
        fleet.recount();
        fleet.metrics.patterns_known(fleet.room.labels());
        fleet
    }

    /// The state was lost at this start (`store::Loaded::lost`).
    pub fn state_was_lost(&mut self) {
        self.lost = self.config.cluster.is_none();
    }

    /// The effects of the calls since the last drain, in order.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Effect> {
        self.effects.drain(..)
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    fn restore(&mut self, saved: HashMap<String, Saved>, now: Now) {
        let mut dropped = 0;
        for (id, saved) in saved {
            match self.config.resolve(&saved.topic) {
                Some((resolved, spec)) if resolved == id.as_str() => {
                    let mut device = Device::new(id.as_str(), saved.topic.as_str(), Arc::clone(&spec.rules));
                    device.restore(&saved, now);
                    // An offline seen and not yet notified when the state was
                    // saved (waiting for its grace or its probe): it waits
                    // again, as a suspect, for the next connect's
                    // confirmation; nothing may ever tell it again (a
                    // Sparkplug death, a will that is not retained).
                    if device.resume_offline(now.mono + PROBE_HOLD) {
                        self.confirm.suspects.push(CompactString::from(id.as_str()));
                    }
                    self.devices.get_or_insert_with(&id, || device);
                    self.arm(&id);
                }
                _ => {
                    dropped += 1;
                    self.effects.push(Effect::Forget(id));
                }
            }
        }
        if dropped > 0 {
            tracing::info!(dropped, "saved devices no longer in the config were forgotten");
        }
    }

    /// A retained state (a replay after a connect, a re-read): an offline
    /// in it waits for the confirmation window (`confirm.rs`).
    pub fn on_message(&mut self, topic: &str, payload: &[u8], now: Now) {
        self.message(topic, payload, Source::Stored, now);
    }

    /// A message published just now (an offline waits for a probe's round
    /// trip), or queued for us by the broker while we were away
    /// (`persistent_session`: kept for the replay check).
    pub fn on_live_message(&mut self, topic: &str, payload: &[u8], now: Now) {
        self.message(topic, payload, self.source(false), now);
    }

    /// A message the last run got and did not take in (a crash came
    /// first), sent again: applied at once (`Source::Unfinished`).
    pub fn on_unfinished_message(&mut self, topic: &str, payload: &[u8], now: Now) {
        self.message(topic, payload, Source::Unfinished, now);
    }

    /// The device whose status `topic` carries, if one is watched there.
    pub fn device_of(&self, topic: &str) -> Option<&str> {
        let (id, _) = self.config.resolve(topic)?;
        self.devices.get(&id).map(|d| d.id.as_str())
    }

    fn message(&mut self, topic: &str, payload: &[u8], source: Source, now: Now) {
        self.metrics.messages.inc();
        let unix = now.wall.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        self.metrics.last_message.set(unix.as_secs_f64());
        let config = Arc::clone(&self.config);
        if let Some(sparkplug) = SparkplugTopic::parse(topic)
            && let Some(spec) = config.resolve_sparkplug(&sparkplug)
        {
            self.sparkplug_message(&sparkplug, spec, payload, source == Source::Unfinished, now);
            return;
        }
        if source == Source::Queued && config.resolve(topic).is_some() && self.keep_queued(topic, payload) {
            return;
        }
        self.status_message(topic, payload, source, now);
    }

    /// A message on a topic that is no Sparkplug one: a device's status
    /// (or its heartbeat).
    fn status_message(&mut self, topic: &str, payload: &[u8], source: Source, now: Now) {
        let config = Arc::clone(&self.config);
        let Some((id, spec)) = config.resolve(topic) else {
            if let Some(id) = config.resolve_heartbeat(topic) {
                self.on_heartbeat(&id, now);
            } else {
                tracing::debug!(topic = %topic, "message on a topic no device watches");
            }
            return;
        };
        let id = CompactString::from(id);
        if !self.admit(&id, spec, topic, now) {
            return;
        }
        let Some(device) = self.devices.get(&id) else { return };
        if device.topic != topic {
            if self.clashes.insert(topic.to_string()) {
                tracing::warn!(device = %device.id, topic = %topic, watched_topic = %device.topic,
                    "ignoring topic: its device id is already watched on another topic");
            }
            return;
        }
        let reading = crate::payload::read(payload, &device.rules);
        self.apply(&id, reading, preview(payload), source, now);
    }

    /// Makes sure the device `id` of `spec` is known, seen on `topic`;
    /// false when it is new and its pattern has no room for it (refused,
    /// counted and logged per pattern). Exact devices always fit.
    /// A topic or id too long is refused too (counted, logged).
    fn admit(&mut self, id: &CompactString, spec: &DeviceSpec, topic: &str, now: Now) -> bool {
        if self.devices.contains(id) {
            return true;
        }
        if topic.len() > MAX_DEVICE_TOPIC || id.len() > MAX_DEVICE_ID {
            self.metrics.devices_refused_too_long.inc();
            if let Some(suppressed) = self.too_long.allow(now.mono) {
                // Its length and how it starts: the whole of it is the flood.
                let end = (0..=topic.len().min(64)).rev().find(|&i| topic.is_char_boundary(i)).unwrap_or(0);
                let start = &topic[..end];
                tracing::warn!(topic_start = %start, topic_bytes = topic.len(), id_bytes = id.len(),
                    max_topic_bytes = MAX_DEVICE_TOPIC, max_id_bytes = MAX_DEVICE_ID, suppressed,
                    what = "device_refused_too_long", "new device refused: its topic or id is too long");
            }
            return false;
        }
        // Seen for the first time: a pattern's device, if it has room.
        let key = pattern_key(spec);
        if !self.room.take(key) {
            let free = self.room.free();
            let limit = self.room.limit;
            if let Some(share) = self.room.share_mut(key) {
                let label = PatternLabel { pattern: share.label.clone() };
                self.metrics.devices_refused.get_or_create(&label).inc();
                if let Some(suppressed) = share.refusals.allow(now.mono) {
                    tracing::warn!(topic = %topic, pattern = %share.label, in_pattern = share.held, share = share.share,
                        pattern_max_devices = share.cap, free, max_devices = limit, suppressed,
                        what = "device_refused", "new device refused: its pattern has no room left (max_devices)");
                }
            }
            return false;
        }
        self.counts.add(State::Unknown, 1);
        let rules = Arc::clone(&spec.rules);
        self.devices.get_or_insert_with(id, || Device::new(id.clone(), topic, rules));
        self.adopt(id);
        self.reorder(id);
        true
    }

    /// Applies what a message on its status topic said to the device `id`:
    /// an offline is held by its parent's outage, for the confirmation
    /// window when it came from the store or the queue, for a probe when
    /// it is live (`confirm.rs`).
    fn apply(&mut self, id: &str, reading: Reading, shown: CompactString, source: Source, now: Now) {
        if self.defer_recovery(id, reading, &shown, source) {
            if let Some(device) = self.devices.get_mut(id) {
                device.heard(self.link.connects, false);
            }
            return;
        }
        let parent_down = self.parent_down_of(id).map(str::to_string);
        if source == Source::Live && parent_down.is_none() && matches!(reading, Reading::Online { .. }) {
            // Back while its live offline waits for the probe: the device's
            // own word came through the broker after its will, as the probe
            // would have, so the outage was real (and fires now, unless its
            // grace is still running: then it is a flap).
            self.confirmed_by_device(id, now);
        }
        let stored_hold = self.stored_hold(now.mono);
        self.heard(id, source != Source::Stored);
        let Some(device) = self.devices.get_mut(id) else { return };
        let before = device.state;
        let durable = device.durable();
        let late = matches!(source, Source::Queued | Source::Unfinished);
        let hold = match (&parent_down, source) {
            (Some(_), _) => PARENT_HOLD,
            (None, Source::Live) => PROBE_HOLD,
            (None, Source::Unfinished) => Duration::ZERO,
            (None, _) => stored_hold,
        };
        let outcome = device.on_reading(reading, shown, now, hold);
        let mut check_node = false;
        if reading == Reading::Cleared && before != State::Unknown {
            // Its retained status vanished (cleared by hand, an MQTT 5 will
            // whose expiry passed): unconfirmed until it speaks, and looked
            // at again `confirm_within` from now.
            device.unheard_in(self.link.connects);
            let at = now.mono + self.config.broker.confirm_within;
            let check = self.link.confirm_check_at.get_or_insert(at);
            *check = (*check).max(at);
        }
        if let (Some(parent), Outcome::Wait(_)) = (&parent_down, &outcome)
            && device.state == State::Offline
            && before != State::Offline
        {
            tracing::info!(device = %device.id, topic = %device.topic, parent = %parent, cause = %format!("parent {parent} offline"),
                what = "device_inhibited", "device offline while its parent is offline: its offline actions are inhibited");
        }
        match &outcome {
            Outcome::Unrecognised { warn, suppressed } => {
                self.metrics.unrecognized.inc();
                if *warn {
                    tracing::warn!(device = %device.id, topic = %device.topic, payload = %device.last_payload,
                        suppressed, what = "payload_unrecognised", "payload is neither an online nor an offline payload; state unchanged");
                }
            }
            Outcome::Stale { seq, current } if device.rules.sparkplug.is_some() => {
                // Eclipse Tahu's reference code (and its copies) sends a
                // birth one ahead of its will: a death that matches no birth
                // is checked, not ignored. A live node answers the rebirth
                // request; a dead one is offline when the answer is due.
                tracing::info!(device = %device.id, topic = %device.topic, seq, current,
                    "a death whose bdSeq is not the current birth's: asking the node for a rebirth to tell whether it lives");
                check_node = true;
            }
            Outcome::Stale { seq, current } => {
                tracing::info!(device = %device.id, topic = %device.topic, seq, current,
                    what = "stale_will", "ignoring a will from an earlier session (its sequence is not the current birth's)");
            }
            Outcome::StaleBirth { seq } => {
                tracing::info!(device = %device.id, topic = %device.topic, seq,
                    "ignoring a birth of the session whose death just came (the will overtook it)");
            }
            _ => {}
        }
        if source == Source::Queued && before != State::Offline && matches!(outcome, Outcome::Wait(_)) {
            self.confirm.late.insert(id.into());
        }
        let awaits_probe = source == Source::Live
            && parent_down.is_none()
            && before != State::Offline
            && device.state == State::Offline
            && matches!(outcome, Outcome::Wait(_));
        self.follow(id, before, durable, outcome, late, now);
        if awaits_probe {
            self.await_probe(id, now);
        }
        if source == Source::Unfinished && matches!(reading, Reading::Offline { .. }) {
            // Restored from disk held (the last run saw this offline and
            // crashed before deciding it): it was live, it fires.
            self.release_held(id, now, true);
        }
        if check_node {
            self.ask_rebirths(vec![id.into()], now);
        }
    }

    fn on_heartbeat(&mut self, id: &str, now: Now) {
        if !self.devices.contains(id) {
            tracing::debug!(device = %id, "heartbeat from a device not seen on its status topic yet");
            return;
        }
        self.heard(id, true);
        let Some(device) = self.devices.get_mut(id) else { return };
        let (before, durable) = (device.state, device.durable());
        let outcome = device.on_heartbeat(now);
        self.follow(id, before, durable, outcome, false, now);
    }

    /// Acts on what a device reported: fires events, saves what changed,
    /// arms its timer, keeps the counts current.
    fn follow(&mut self, id: &str, before: State, durable: Durable, outcome: Outcome, late: bool, now: Now) {
        let Some(device) = self.devices.get(id) else { return };
        let after = device.state;
        let changed = device.durable() != durable;
        if after != before {
            let cause = match after {
                State::Online => "birth",
                State::Unknown => "cleared",
                State::Offline if device.last_payload == crate::device::SILENCE => "silence",
                State::Offline if device.last_payload == sparkplug::NODE_OFFLINE => "parent",
                State::Offline => "will",
            };
            let offline_for = match &outcome {
                Outcome::Fire(t) if t.kind == EventKind::Online => t.offline_for,
                _ => None,
            };
            self.effects.push(Effect::Transition(crate::transition::Transition {
                device: device.id.clone(),
                at: now.wall,
                from: before.as_str(),
                to: after.as_str(),
                cause,
                payload: device.last_payload.clone(),
                offline_for,
            }));
        }
        match outcome {
            Outcome::Fire(t) => {
                let late = late || (t.kind == EventKind::Offline && self.confirm.late.contains(id));
                let event = self.event(device, &t, late, now);
                let record = (device.id.to_string(), device.saved());
                if self.lost && !device.confirmed(self.link.connects, true) {
                    self.unlinked(&event, now);
                }
                self.metrics.transitions.get_or_create(&EventLabel { event: t.kind.as_str() }).inc();
                if t.kind == EventKind::Offline {
                    self.note_offline(now.mono);
                }
                self.effects.push(Effect::Fire(Box::new(event), Some(record)));
            }
            Outcome::Wait(_) if after == State::Offline && before != State::Offline => {
                tracing::debug!(device = %device.id, topic = %device.topic, what = "device_grace", "device offline; holding it for its grace period");
                self.mark_dirty(id);
            }
            _ if changed => {
                if after != before {
                    tracing::debug!(device = %device.id, topic = %device.topic, state = after.as_str(), what = "device_state", "device state");
                }
                self.mark_dirty(id);
            }
            _ => {}
        }
        if after != before {
            self.counts.add(before, -1);
            self.counts.add(after, 1);
            self.reorder(id);
            if self.is_parent(id) {
                for child in self.children_of(id) {
                    self.reorder(&child);
                }
            }
        }
        if after != before && self.is_parent(id) {
            if after == State::Offline {
                self.hold_children(id, now);
            } else if before == State::Offline {
                self.release_children(id, now);
            }
        }
        let (was, is) = (durable.1, self.devices.get(id).is_some_and(Device::notified));
        if was != is {
            self.counts.notified = if is { self.counts.notified + 1 } else { self.counts.notified.saturating_sub(1) };
        }
        self.arm(id);
    }

    fn is_offline(&self, id: &str) -> bool {
        self.devices.get(id).is_some_and(|d| d.state == State::Offline)
    }

    /// Whether some device is reached through `id`.
    fn is_parent(&self, id: &str) -> bool {
        self.parents.contains(id) || self.children.contains_key(id)
    }

    /// The known devices reached through `id`.
    fn children_of(&self, id: &str) -> Vec<CompactString> {
        self.children.get(id).cloned().unwrap_or_default()
    }

    /// Files a device just added under its parent.
    fn adopt(&mut self, id: &str) {
        if let Some(parent) = self.devices.get(id).and_then(|d| d.rules.parent_of(id)) {
            self.children.entry(parent.into()).or_default().push(id.into());
        }
    }

    /// The parent `id` went offline: its children's waiting offlines wait
    /// for it (one alert for the bridge, not one per bulb). A Sparkplug
    /// node's devices are offline with it, held the same way.
    fn hold_children(&mut self, id: &str, now: Now) {
        let children = self.children_of(id);
        tracing::info!(device = %id, children = children.len(),
            "a parent is offline: its children are shown offline and their offline actions inhibited");
        let sparkplug = self.devices.get(id).is_some_and(|d| d.rules.sparkplug.is_some());
        for child in children {
            let Some(device) = self.devices.get_mut(&child) else { continue };
            if sparkplug && device.state != State::Offline {
                let (before, durable) = (device.state, device.durable());
                let outcome = device.offline_with_parent(sparkplug::NODE_OFFLINE.into(), now, PARENT_HOLD);
                self.follow(&child, before, durable, outcome, false, now);
            } else if device.hold_until(now.mono + PARENT_HOLD) {
                self.arm(&child);
            }
        }
    }

    /// The parent `id` is back: its children return to what they report;
    /// their retained states are read again (a Sparkplug node's devices
    /// send their births), and an offline still held after that fires as
    /// the child's own.
    fn release_children(&mut self, id: &str, now: Now) {
        let children = self.children_of(id);
        let mut topics = Vec::with_capacity(children.len());
        for child in &children {
            if let Some(device) = self.devices.get_mut(child) {
                if device.rules.sparkplug.is_none() {
                    topics.push(device.topic.to_string());
                }
                if device.hold_until(now.mono + self.config.broker.settle.max(REPLAY_WAIT)) {
                    self.arm(child);
                }
            }
        }
        if !topics.is_empty() {
            self.effects.push(Effect::Resync(topics));
        }
    }

    fn mark_dirty(&mut self, id: &str) {
        if let Some(device) = self.devices.get_mut(id)
            && !std::mem::replace(&mut device.dirty, true)
        {
            self.dirty.push(id.into());
        }
    }

    /// Whether some device's record waits to be saved.
    pub fn has_saves(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// The current record of the device `id`, if it is watched.
    pub fn record(&self, id: &str) -> Option<Saved> {
        self.devices.get(id).map(Device::saved)
    }

    /// The current records of up to `max` dirty devices, now clean.
    pub fn take_saves(&mut self, max: usize) -> Vec<(String, Saved)> {
        let from = self.dirty.len().saturating_sub(max);
        let ids: Vec<CompactString> = self.dirty.drain(from..).collect();
        ids.into_iter()
            .filter_map(|id| {
                let device = self.devices.get_mut(&id)?;
                device.dirty = false;
                let saved = device.saved();
                Some((id.to_string(), saved))
            })
            .collect()
    }

    /// The actions of `names` that run on `kind`: each gets one
    /// notification to acknowledge.
    fn actions_for(&self, names: &[String], kind: EventKind) -> Arc<[String]> {
        // The built-in log (not in `actions`) takes every event.
        names
            .iter()
            .filter(|name| self.config.actions.get(name.as_str()).is_none_or(|s| s.runs_on(kind)))
            .cloned()
            .collect()
    }

    /// The event of `device`'s transition `t`.
    fn event(&self, device: &Device, t: &crate::device::Transition, late: bool, now: Now) -> Event {
        Event { seen_late: late, ..self.event_with_id(device, t, now, new_id()) }
    }

    /// Decided from the broker's store (the device has not spoken live
    /// since the connect) while a start that lost its state takes it in:
    /// `event` may repeat an alert notified before the loss, under a new
    /// id (nothing it could follow from survived). Said, and counted.
    fn unlinked(&mut self, event: &Event, now: Now) {
        self.metrics.events_unlinked.inc();
        if let Some(suppressed) = self.unlinked.allow(now.mono) {
            tracing::error!(device = %event.device, event = %event.kind, event_id = %event.id, suppressed, unlinked = true,
                "the state was lost at the start: this alert, decided from what the broker kept, may repeat one sent before the loss, under a new id");
        }
    }

    /// The event of `device`'s transition `t`, under `id`.
    fn event_with_id(&self, device: &Device, t: &crate::device::Transition, now: Now, id: String) -> Event {
        let device_id = device.id.as_str();
        Event {
            id,
            kind: t.kind,
            device: device_id.to_string(),
            topic: device.topic.to_string(),
            payload: device.last_payload.to_string(),
            previous: t.previous.as_str(),
            at: now.wall,
            offline_since: t.offline_since,
            offline_for: t.offline_for,
            attempts: None,
            severity: device.rules.severity.clone(),
            seen_late: false,
            sparkplug: device.rules.sparkplug.is_some(),
            epoch: None,
            children_offline: (t.kind == EventKind::Offline && self.is_parent(device_id)).then(|| {
                self.children_of(device_id)
                    .iter()
                    .filter(|c| self.devices.get(c).is_some_and(|d| !d.notified()))
                    .count()
            }),
            actions: self.actions_for(&device.rules.actions, t.kind),
        }
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
            self.timers.remove(&(current, id.into()));
            self.armed.remove(id);
        }
        if let Some(next) = next {
            self.timers.insert((next, id.into()));
            self.armed.insert(id.into(), next);
        }
    }

    /// The earliest moment something is due, if any.
    pub fn next_wake(&self) -> Option<Instant> {
        let link = &self.link;
        let timers =
            if link.connected { self.timers.first().map(|(at, _)| (*at).max(link.settle_until)) } else { None };
        let broker = (!link.connected && !link.alerted && !self.config.broker.actions.is_empty())
            .then(|| link.lost_at.mono + self.config.broker.alert_after);
        let resync = self.resync_at.filter(|_| link.connected);
        let replay = link.replay_check_at.filter(|_| link.connected);
        let up = (link.connected && link.alerted).then_some(link.up_since + YOUNG);
        let confirm = link.confirm_check_at.filter(|_| link.connected);
        [timers, broker, resync, replay, up, confirm, self.probe_due()].into_iter().flatten().min()
    }

    /// Time passing: whatever `next_wake` promised and is due by `now`.
    pub fn on_tick(&mut self, now: Now) {
        if !self.link.connected {
            if !self.link.alerted
                && !self.config.broker.actions.is_empty()
                && now.mono >= self.link.lost_at.mono + self.config.broker.alert_after
            {
                self.link.alerted = true;
                self.broker_event(EventKind::BrokerDown, now);
            }
            return;
        }
        if self.link.alerted && now.mono >= self.link.up_since + YOUNG {
            self.link.alerted = false;
            self.broker_event(EventKind::BrokerUp, now);
        }
        if self.probe_due().is_some_and(|at| at <= now.mono) {
            self.probe_overdue(now);
        }
        if self.link.replay_check_at.is_some_and(|at| at <= now.mono) {
            self.link.replay_check_at = None;
            let queued = self.apply_queued(now);
            self.reread_unheard(queued, now);
            self.schedule_confirm_check(now.mono);
        }
        if self.link.confirm_check_at.is_some_and(|at| at <= now.mono) {
            self.link.confirm_check_at = None;
            self.confirm_check(now);
        }
        if self.resync_at.is_some_and(|at| at <= now.mono) {
            self.resync_at = self.periodic_resync(now.mono);
            self.reread_not_offline(now);
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
            let (before, durable) = (device.state, device.durable());
            let outcome = device.on_tick(now);
            self.follow(&id, before, durable, outcome, false, now);
        }
    }

    /// A CONNACK. `session_present`: the broker still had our session;
    /// `restarted`: the session saw the broker restart (it refused a
    /// connection meanwhile).
    pub fn on_connected(&mut self, now: Now, session_present: bool, restarted: bool) {
        let lost_session = self.config.broker.persistent_session && !session_present && self.link.connects > 0;
        self.link.restarted = false;
        self.link.fresh_only = false;
        let sign = if restarted {
            Some("it refused a connection meanwhile")
        } else if lost_session {
            Some("it lost our session")
        } else if self.wills_unconfirmed() {
            Some("it published wills as it went")
        } else {
            None
        };
        if let Some(sign) = sign {
            self.broker_restarted(session_present, sign, now);
        }
        self.view_since = now.wall;
        let link = &mut self.link;
        link.connected = true;
        link.connects = link.connects.wrapping_add(1);
        link.settle_until = now.mono + self.config.broker.settle;
        link.replay_check_at = None;
        link.up_since = now.mono;
        link.probed = false;
        link.confirming = true;
        link.queue_open = true;
        link.confirm_until = now.mono + self.config.broker.confirm_within;
        link.confirm_check_at = None;
        self.resync_at = self.periodic_resync(now.mono);
        // Silence while we could not hear is ours, not the devices'.
        let ids: Vec<CompactString> = self.devices.iter().map(|d| d.id.clone()).collect();
        for id in ids {
            if let Some(device) = self.devices.get_mut(&id) {
                device.forgive_silence(now);
            }
            self.arm(&id);
        }
        self.hold_suspects();
        self.probe_connect(now.mono);
    }

    /// Every subscription of this connection is acknowledged: the replay
    /// is under way, and what has not come soon will be re-read.
    pub fn on_subscribed(&mut self, now: Now) {
        if self.link.connected {
            self.link.replay_check_at = Some(now.mono + self.config.broker.settle.max(REPLAY_WAIT));
        }
    }

    pub fn on_disconnected(&mut self, now: Now) {
        let link = &mut self.link;
        if link.connected {
            link.connected = false;
            link.replay_check_at = None;
            link.confirm_check_at = None;
            link.probed = false;
            // A connection that died at once did not end the outage.
            if now.mono.saturating_duration_since(link.up_since) >= CLASH {
                link.lost_at = now;
                if !link.alerted {
                    link.outage_began = now;
                }
            }
            self.probes_lost();
        }
    }

    fn broker_event(&mut self, kind: EventKind, now: Now) {
        let broker = &self.config.broker;
        let end = if kind == EventKind::BrokerUp { self.link.up_since } else { now.mono };
        let down_for = end.saturating_duration_since(self.link.outage_began.mono);
        let event = Event {
            id: new_id(),
            kind,
            device: broker.client_id.clone(),
            topic: broker.url.clone(),
            payload: String::new(),
            previous: if kind == EventKind::BrokerDown { "connected" } else { "disconnected" },
            at: now.wall,
            offline_since: Some(self.link.outage_began.wall),
            offline_for: (kind == EventKind::BrokerUp).then_some(down_for),
            attempts: None,
            severity: None,
            seen_late: false,
            children_offline: None,
            sparkplug: false,
            epoch: None,
            actions: self.actions_for(&broker.actions, kind),
        };
        if kind == EventKind::BrokerDown {
            tracing::error!(broker = %broker.url, down_for = ?down_for, what = "broker_unreachable", "broker unreachable past broker_alert_after");
        } else {
            tracing::info!(broker = %broker.url, down_for = ?down_for, what = "broker_reachable", "broker reachable again");
        }
        self.effects.push(Effect::Fire(Box::new(event), None));
    }

    fn periodic_resync(&self, now: Instant) -> Option<Instant> {
        let every = self.config.broker.resync;
        (!every.is_zero()).then(|| now + every)
    }

    /// Re-reads the known devices the replay of this connection missed,
    /// `queued` (heard only from what the broker queued for us) among
    /// them. A Sparkplug device not online is asked too: a birth published
    /// while willwatch was away is never kept for it (QoS 0), even when the
    /// death before it was.
    fn reread_unheard(&mut self, queued: Vec<CompactString>, now: Now) {
        let connects = self.link.connects;
        let missed = |d: &Device| !d.heard_in(connects) || (d.rules.sparkplug.is_some() && d.state != State::Online);
        let mut unheard: Vec<CompactString> = self.devices.iter().filter(|d| missed(d)).map(|d| d.id.clone()).collect();
        unheard.extend(queued);
        if !unheard.is_empty() {
            tracing::info!(
                devices = unheard.len(),
                known = self.devices.len(),
                "known devices whose retained state did not arrive after the connect; re-reading just those"
            );
            self.reread(unheard, now);
        }
    }

    /// Re-reads every device not known offline: a will the broker dropped
    /// can only hide among them.
    fn reread_not_offline(&mut self, now: Now) {
        let ids: Vec<CompactString> =
            self.devices.iter().filter(|d| d.state != State::Offline).map(|d| d.id.clone()).collect();
        if !ids.is_empty() {
            tracing::info!(devices = ids.len(), "re-reading the retained states of the devices not known offline");
            self.reread(ids, now);
        }
    }

    /// Re-reads the retained states of `ids`; Sparkplug devices, which
    /// have none, are asked for a rebirth instead.
    fn reread(&mut self, ids: Vec<CompactString>, now: Now) {
        let (sparkplug, plain): (Vec<CompactString>, Vec<CompactString>) =
            ids.into_iter().partition(|id| self.devices.get(id).is_some_and(|d| d.rules.sparkplug.is_some()));
        let topics: Vec<String> =
            plain.iter().filter_map(|id| self.devices.get(id)).map(|d| d.topic.to_string()).collect();
        if !topics.is_empty() {
            self.effects.push(Effect::Resync(topics));
        }
        if !sparkplug.is_empty() {
            self.ask_rebirths(sparkplug, now);
        }
    }

    /// Counts offlines; a storm schedules one re-read (never sooner than a
    /// re-read already due).
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

    /// Swaps the config, keeping the state of every device still watched.
    pub fn reload(&mut self, config: Arc<Config>) {
        let before: BTreeSet<CompactString> = self.devices.iter().map(|d| d.id.clone()).collect();
        self.config = config;
        let config = Arc::clone(&self.config);
        self.devices.retain(|device| match config.resolve(&device.topic) {
            Some((new_id, spec)) if new_id == device.id.as_str() => {
                device.rules = Arc::clone(&spec.rules);
                true
            }
            _ => false,
        });
        self.clashes.clear();
        self.room = Room::new(&config, Some(&self.room));
        self.add_explicit_devices();
        let after: BTreeSet<CompactString> = self.devices.iter().map(|d| d.id.clone()).collect();
        let added: Vec<&CompactString> = after.difference(&before).collect();
        let removed: Vec<&CompactString> = before.difference(&after).collect();
        tracing::info!(
            added = ?added,
            removed = ?removed,
            devices = after.len(),
            what = "config_reloaded", "config reloaded: {} device(s) added, {} removed, {} kept with their state",
            added.len(),
            removed.len(),
            after.len() - added.len()
        );
        for id in removed {
            if let Some(at) = self.armed.remove(id) {
                self.timers.remove(&(at, id.clone()));
            }
            self.effects.push(Effect::Forget(id.to_string()));
        }
        self.recount();
        self.metrics.patterns_known(self.room.labels());
        self.effects.push(Effect::Reload(Arc::clone(&self.config)));
    }

    fn add_explicit_devices(&mut self) {
        for spec in &self.config.devices {
            if let Watch::Device { id, topic } = &spec.watch {
                self.devices
                    .get_or_insert_with(id, || Device::new(id.as_str(), topic.as_str(), Arc::clone(&spec.rules)));
            }
        }
    }

    fn recount(&mut self) {
        self.parents = self.config.devices.iter().filter_map(|d| d.rules.parent.clone()).collect();
        let mut counts = Counts::default();
        let mut children: HashMap<CompactString, Vec<CompactString>> = HashMap::new();
        for device in self.devices.iter() {
            counts.add(device.state, 1);
            counts.notified += usize::from(device.notified());
            if let Some((_, spec)) = self.config.resolve(&device.topic)
                && !matches!(spec.watch, Watch::Device { .. })
            {
                self.room.count(pattern_key(spec));
            }
            if let Some(parent) = device.rules.parent_of(&device.id) {
                children.entry(parent.into()).or_default().push(device.id.clone());
            }
        }
        self.counts = counts;
        self.children = children;
        self.order.clear();
        let shown: Vec<(CompactString, u8)> =
            self.devices.iter().map(|d| (d.id.clone(), rank(self.shown_state(d)))).collect();
        for (id, rank) in shown {
            self.order.set(&id, rank);
        }
    }

    /// Puts `id` where `/status` shows it now (nowhere once it is gone).
    fn reorder(&mut self, id: &str) {
        match self.devices.get(id).map(|d| rank(self.shown_state(d))) {
            Some(rank) => self.order.set(id, rank),
            None => self.order.remove(id),
        }
    }

    /// One page of `/status`: the devices after the cursor in the order
    /// kept for it (`order.rs`), so a page costs its own size, not the
    /// fleet's. A filter by id (`contains`) reads at most `SCAN` devices a
    /// page: a page with fewer matches ends where the reading stopped, and
    /// `next` goes on from there.
    pub fn page(&self, query: &PageQuery, now: Instant) -> StatusPage {
        if let Some(id) = &query.device {
            let devices = self.devices.get(id).map(|d| self.view(d, now)).into_iter().collect();
            return StatusPage { devices, counts: self.shown_counts(), next: None, cluster: None };
        }
        let limit = query.limit.max(1);
        let mut devices = Vec::with_capacity(limit.min(1024));
        let (mut last, mut more) = (None, false);
        for (scanned, (r, id)) in self.order.walk(query.sort, query.after.as_ref(), query.state.map(rank)).enumerate() {
            if devices.len() == limit || scanned == SCAN {
                more = true;
                break;
            }
            last = Some((r, id));
            if query.contains.as_deref().is_some_and(|q| !contains_ignoring_case(id, q)) {
                continue;
            }
            if let Some(d) = self.devices.get(id) {
                devices.push(self.view(d, now));
            }
        }
        let next = last.filter(|_| more).map(|(r, id)| Cursor::at(query.sort, r, id));
        StatusPage { devices, counts: self.shown_counts(), next, cluster: None }
    }

    /// The parent, if it is offline: the device is shown offline for it.
    fn parent_down<'d>(&self, d: &'d Device) -> Option<&'d str> {
        d.rules.parent_of(&d.id).filter(|p| self.is_offline(p))
    }

    /// The parent of the device `id`, if it is offline.
    fn parent_down_of(&self, id: &str) -> Option<&str> {
        self.devices.get(id).and_then(|d| self.parent_down(d))
    }

    /// The state `/status` shows: offline while the parent is.
    fn shown_state(&self, d: &Device) -> State {
        if self.parent_down(d).is_some() { State::Offline } else { d.state }
    }

    /// The counts `/status` shows: children of an offline parent as offline.
    fn shown_counts(&self) -> Counts {
        Counts {
            offline: self.order.count(rank(State::Offline)),
            unknown: self.order.count(rank(State::Unknown)),
            online: self.order.count(rank(State::Online)),
            ..self.counts
        }
    }

    fn view(&self, d: &Device, now: Instant) -> DeviceView {
        let parent = self.parent_down(d);
        DeviceView {
            id: d.id.to_string(),
            topic: d.topic.to_string(),
            state: self.shown_state(d).as_str(),
            cause: parent.map(|p| format!("parent {p} offline")),
            since: d.since(),
            last_seen: d.last_seen(),
            last_payload: d.last_payload.to_string(),
            notified: d.notified(),
            // Held for the parent, not waiting out a grace period.
            grace_left: d.grace_until().filter(|_| parent.is_none()).map(|due| due.saturating_duration_since(now)),
            confirmed: d.confirmed(self.link.connects, self.link.fresh_only),
        }
    }
}

#[cfg(test)]
mod tests;
