//! The fleet's rule for what the broker's own lifecycle produces: **an
//! offline is notified only when the device is gone while the broker is up
//! and serving.** Everything else is checked against the broker's present
//! state first.
//!
//! - A live offline (a will published just now) waits for a probe: a
//!   message the session sends itself through the broker. Its return
//!   proves the broker was still serving after the will; a broker that
//!   shuts down gracefully publishes every client's will and then stops
//!   reading, so its wills never see their probe back. They are suspects,
//!   and wait like stored offlines after the next connect.
//! - An offline read from the broker's store (a retained replay, a
//!   re-read) or from the session's queue fires only if the device is
//!   still offline `confirm_within` after the connect: a device the broker
//!   restart took down reconnects and says so meanwhile.
//! - What the broker queued for us (everything before the connect's own
//!   probe comes back) may be old, or replayed from a store that went back
//!   in time: it is kept, the latest per topic, and used at the replay
//!   check only for the devices whose retained state did not come.
//! - A device whose retained state the broker no longer has after a
//!   connect, and that says nothing within `confirm_within`, is
//!   unconfirmed: shown so, counted, and if it was online notified as not
//!   seen since the broker restarted (a broker that lost its store cannot
//!   tell us of the deaths it lost).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use compact_str::CompactString;

use super::{Effect, Fleet, REPLAY_WAIT};
use crate::device::{Now, State};
use crate::payload::Reading;
use crate::throttle::Throttle;

/// A probe not back in this long, while the link is up: the broker is
/// serving (it kept our connection) and drops or refuses our probes; the
/// offlines waiting for it fire, and this is logged.
pub const PROBE_WAIT: Duration = Duration::from_secs(2);
/// Queued messages kept at most (the latest per topic); past it the device
/// is re-read instead.
const QUEUED_MAX: usize = 100_000;
/// How often, at most, overdue probes are logged.
const OVERDUE_LOG_EVERY: Duration = Duration::from_secs(60);

/// Where a message came from, which decides how far its offline is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The broker's retained store (a replay after a connect, a re-read).
    Stored,
    /// The session's queue: published while we were away, or replayed.
    Queued,
    /// Published while we are connected.
    Live,
    /// Got live by the last run, which crashed before taking it in; sent
    /// again by the broker (`monitor/redelivered.rs`). It was live: it is
    /// not held again.
    Unfinished,
}

/// The probes and what waits for them.
pub struct Confirm {
    next: u64,
    /// The probe on its way, and when it was asked for.
    out: Option<(u64, Instant)>,
    /// Devices whose live offline waits for the probe numbered so (or a later one).
    awaiting: Vec<(CompactString, u64)>,
    /// Devices whose offline's probe never came back before the link went
    /// (or that were saved offline and not yet notified).
    pub(super) suspects: Vec<CompactString>,
    /// The link went with wills waiting for their probe: the signature of
    /// a broker that published them as it shut down.
    wills_unconfirmed: bool,
    /// What the broker queued for us, latest per status topic, until the
    /// replay check.
    queued: HashMap<String, Vec<u8>>,
    /// Queued messages not kept past `QUEUED_MAX` on this connection.
    queued_dropped: usize,
    /// Devices whose waiting offline was queued for us while we were
    /// away: it fires flagged `seen_late`.
    pub(super) late: HashSet<CompactString>,
    /// Recoveries read from the broker's store after a connect to a broker
    /// that restarted and kept its store, of devices whose outage was
    /// notified: the store may be older than the devices (a snapshot), so
    /// they wait for the confirm check, and the device's own word.
    recoveries: HashMap<CompactString, (Reading, CompactString)>,
    /// The devices the last confirm check found unconfirmed and not
    /// confirmed since: what `willwatch_devices_unconfirmed` counts.
    unconfirmed: HashSet<CompactString>,
    overdue: Throttle,
}

impl Default for Confirm {
    fn default() -> Confirm {
        Confirm {
            next: 1,
            out: None,
            awaiting: Vec::new(),
            suspects: Vec::new(),
            wills_unconfirmed: false,
            queued: HashMap::new(),
            queued_dropped: 0,
            late: HashSet::new(),
            recoveries: HashMap::new(),
            unconfirmed: HashSet::new(),
            overdue: Throttle::new(OVERDUE_LOG_EVERY),
        }
    }
}

impl Fleet {
    /// Where a message that arrived now came from.
    pub(super) fn source(&self, retained: bool) -> Source {
        match (retained, self.link.probed) {
            (true, _) => Source::Stored,
            (false, false) => Source::Queued,
            (false, true) => Source::Live,
        }
    }

    /// How long an offline read from the store or the queue is held now.
    pub(super) fn stored_hold(&self, now: Instant) -> Duration {
        self.link.settle_until.max(self.link.confirm_until).saturating_duration_since(now)
    }

    /// Keeps a message the broker queued for us until the replay check;
    /// false once that is past (it is then applied at once, as queued).
    pub(super) fn keep_queued(&mut self, topic: &str, payload: &[u8]) -> bool {
        if !self.link.queue_open {
            return false;
        }
        let confirm = &mut self.confirm;
        if confirm.queued.len() >= QUEUED_MAX && !confirm.queued.contains_key(topic) {
            // Not applied: the device is re-read at the replay check
            // (counted, and said there once).
            confirm.queued_dropped += 1;
            return true;
        }
        confirm.queued.insert(topic.to_string(), payload.to_vec());
        true
    }

    /// Whether `reading`, read from the store for the device `id`, is a
    /// recovery that must wait for the confirm check; it is kept if so.
    pub(super) fn defer_recovery(&mut self, id: &str, reading: Reading, shown: &CompactString, source: Source) -> bool {
        let notified = self.devices.get(id).is_some_and(|d| d.notified());
        let deferred = source == Source::Stored
            && self.link.confirming
            && self.link.fresh_only
            && notified
            && matches!(reading, Reading::Online { .. });
        if deferred {
            self.confirm.recoveries.insert(id.into(), (reading, shown.clone()));
        } else if source != Source::Queued {
            // A later word of the device's own overrides what the store said.
            self.confirm.recoveries.remove(id);
        }
        deferred
    }

    /// A message of the device `id` arrived in this connection (`fresh`:
    /// not read from the broker's store). One that the last confirm check
    /// counted unconfirmed and that this confirms leaves the count.
    pub(super) fn heard(&mut self, id: &str, fresh: bool) {
        let (connects, fresh_only) = (self.link.connects, self.link.fresh_only);
        let Some(device) = self.devices.get_mut(id) else { return };
        device.heard(connects, fresh);
        if device.confirmed(connects, fresh_only) && self.confirm.unconfirmed.remove(id) {
            self.metrics.devices_unconfirmed.set(self.confirm.unconfirmed.len() as i64);
        }
    }

    /// A live offline of `id` waits for a probe sent after it.
    pub(super) fn await_probe(&mut self, id: &str, now: Now) {
        let confirm = &mut self.confirm;
        let need = match confirm.out {
            Some((n, _)) => n + 1,
            None => confirm.next,
        };
        confirm.awaiting.push((id.into(), need));
        if confirm.out.is_none() {
            self.send_probe(now.mono);
        }
    }

    fn send_probe(&mut self, now: Instant) {
        let n = self.confirm.next;
        self.confirm.next += 1;
        self.confirm.out = Some((n, now));
        self.effects.push(Effect::Probe(n));
    }

    /// Probe `n` of this connection came back: 0 (the connect's) says the
    /// queue is in; any other releases the offlines that waited for it.
    pub fn on_probed(&mut self, n: u64, now: Now) {
        if !self.link.connected {
            return;
        }
        if n == 0 {
            self.queue_drained();
            return;
        }
        if self.confirm.out.is_some_and(|(out, _)| out <= n) {
            self.confirm.out = None;
        }
        self.release_awaiting(n, now);
    }

    /// Fires the offlines that waited for probe `n` or an earlier one, and
    /// sends the next probe for those that came later.
    fn release_awaiting(&mut self, n: u64, now: Now) {
        let (ready, later): (Vec<_>, Vec<_>) = self.confirm.awaiting.drain(..).partition(|(_, need)| *need <= n);
        self.confirm.awaiting = later;
        for (id, _) in ready {
            self.release_held(&id, now, false);
        }
        if !self.confirm.awaiting.is_empty() && self.confirm.out.is_none() {
            self.send_probe(now.mono);
        }
    }

    /// A live message of `id` came through the broker after the offline
    /// that waits for a probe: it proves what the probe would, for this
    /// device.
    pub(super) fn confirmed_by_device(&mut self, id: &str, now: Now) {
        let before = self.confirm.awaiting.len();
        self.confirm.awaiting.retain(|(device, _)| device != id);
        if self.confirm.awaiting.len() < before {
            self.release_held(id, now, false);
        }
    }

    /// Lets the held offline of `id` fire at the end of its own grace
    /// (unless its parent is down): it is confirmed.
    pub(super) fn release_held(&mut self, id: &str, now: Now, late: bool) {
        if self.parent_down_of(id).is_some() {
            return;
        }
        let Some(device) = self.devices.get_mut(id) else { return };
        if device.state != State::Offline || !device.release(now.mono) {
            return;
        }
        let (before, durable) = (device.state, device.durable());
        let outcome = device.on_tick(now);
        self.follow(id, before, durable, outcome, late, now);
    }

    /// Whether a live offline waits for its probe: the message that brought
    /// it is not taken in until it is decided (it is not acknowledged: a
    /// crash meanwhile gets it again).
    pub fn deciding(&self) -> bool {
        !self.confirm.awaiting.is_empty()
    }

    /// When the probe on its way is overdue, if one is.
    pub(super) fn probe_due(&self) -> Option<Instant> {
        self.confirm.out.filter(|_| self.link.connected).map(|(_, at)| at + PROBE_WAIT)
    }

    /// A probe overdue with the link up: the broker serves but our probes
    /// do not come back (its ACL, a full queue). What waited fires; past
    /// the connect's probe, messages are taken as live.
    pub(super) fn probe_overdue(&mut self, now: Now) {
        let Some((n, _)) = self.confirm.out.take() else { return };
        self.metrics.probes_overdue.inc();
        if let Some(suppressed) = self.confirm.overdue.allow(now.mono) {
            tracing::warn!(topic = %crate::connection::probe_topic(&self.config.broker.client_id), after = ?PROBE_WAIT, suppressed,
                "a probe did not come back through the broker (may this client publish and subscribe there?); what waited for it goes on now");
        }
        if n == 0 {
            self.queue_drained();
        } else {
            self.release_awaiting(n, now);
        }
    }

    /// The connect's probe is back (or overdue): what the broker queued for
    /// us is in, and a message now is live. Offlines that came meanwhile
    /// get their probe.
    fn queue_drained(&mut self) {
        self.link.probed = true;
        if self.confirm.out.is_some_and(|(n, _)| n == 0) {
            self.confirm.out = None;
        }
    }

    /// A new connection: the connect's probe (0) is on its way.
    pub(super) fn probe_connect(&mut self, now: Instant) {
        self.confirm.out = Some((0, now));
    }

    /// The link went: offlines still waiting for their probe are suspects.
    pub(super) fn probes_lost(&mut self) {
        let confirm = &mut self.confirm;
        confirm.out = None;
        confirm.wills_unconfirmed = !confirm.awaiting.is_empty();
        confirm.suspects.extend(confirm.awaiting.drain(..).map(|(id, _)| id));
        confirm.queued.clear();
        confirm.queued_dropped = 0;
        // What that connection's store said is for its replay alone.
        confirm.recoveries.clear();
    }

    /// We fell behind before the last link went (this process stalled,
    /// the broker's answer to our keep-alive never came): wills read from
    /// that backlog lost their probes with the connection, which says
    /// nothing of the broker. They stay suspects.
    pub fn fell_behind(&mut self) {
        self.confirm.wills_unconfirmed = false;
    }

    /// Whether the last link went with wills waiting for their probe: the
    /// signature of a broker shutting down (not the offlines restored from
    /// disk, which are suspects too). Asked once a connect.
    pub(super) fn wills_unconfirmed(&mut self) -> bool {
        std::mem::take(&mut self.confirm.wills_unconfirmed)
    }

    /// The broker restarted (it refused a connection while we were away,
    /// its uptime says so, it lost our session, or it published wills as
    /// it went). With our session it kept its store too, which may be older
    /// than the devices: only a fresh message confirms one. Without, its
    /// store holds only what was published since.
    pub fn broker_restarted(&mut self, session_present: bool, sign: &'static str, now: Now) {
        if !std::mem::replace(&mut self.link.restarted, true) {
            tracing::info!(session_present, sign, within = ?self.config.broker.confirm_within,
                "the broker restarted: every device must say it is there within confirm_within");
        }
        self.link.fresh_only = session_present;
        if self.link.connected && !self.link.confirming {
            // Known after this connection's confirm check (the uptime comes
            // when the broker publishes it): look again now.
            self.link.confirm_check_at = Some(now.mono);
        }
    }

    /// A new connection: suspects wait as stored offlines do.
    pub(super) fn hold_suspects(&mut self) {
        let until = self.link.confirm_until;
        for id in std::mem::take(&mut self.confirm.suspects) {
            if self.parent_down_of(&id).is_some() {
                continue;
            }
            if let Some(device) = self.devices.get_mut(&id)
                && device.state == State::Offline
                && device.hold_until(until)
            {
                tracing::info!(device = %id, topic = %device.topic, "an offline not notified when the link went (or willwatch stopped): held until the device has had time to reconnect");
                self.arm(&id);
            }
        }
    }

    /// The replay is in: what the broker queued for us counts for the
    /// devices the replay said nothing of. Returns those devices: their
    /// retained state is still to be read (a full queue drops what came
    /// after their message there, a will included).
    pub(super) fn apply_queued(&mut self, now: Now) -> Vec<CompactString> {
        let connects = self.link.connects;
        self.link.queue_open = false;
        let queued = std::mem::take(&mut self.confirm.queued);
        let dropped = std::mem::take(&mut self.confirm.queued_dropped);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                kept = QUEUED_MAX,
                "more messages were queued for us than are kept; their devices are re-read instead"
            );
        }
        let config = Arc::clone(&self.config);
        let mut applied = Vec::new();
        for (topic, payload) in queued {
            let id = config.resolve(&topic).map(|(id, _)| CompactString::from(id));
            match id.as_ref().and_then(|id| self.devices.get_mut(id)).filter(|d| d.heard_in(connects)) {
                // The device spoke since the store was written: fresh.
                Some(device) => device.heard(connects, true),
                None => {
                    applied.extend(id);
                    self.status_message(&topic, &payload, Source::Queued, now);
                }
            }
        }
        if !applied.is_empty() {
            tracing::info!(
                queued = applied.len(),
                "applied what the broker queued for us to the devices its retained states did not cover"
            );
        }
        applied
    }

    /// When to look for devices not heard since the connect: after the
    /// re-read of the replay check had its time, and not before
    /// `confirm_within`.
    pub(super) fn schedule_confirm_check(&mut self, now: Instant) {
        let reread = now + self.config.broker.settle.max(REPLAY_WAIT) + REPLAY_WAIT;
        self.link.confirm_check_at = Some(reread.max(self.link.confirm_until));
    }

    /// `confirm_within` after the connect (or after a retained status
    /// vanished): devices still not heard are unconfirmed; those known
    /// online (or whose retained status vanished) that keep a retained
    /// status are notified as not seen since the broker restarted.
    pub(super) fn confirm_check(&mut self, now: Now) {
        self.link.confirming = false;
        let (connects, fresh_only) = (self.link.connects, self.link.fresh_only);
        for (id, (reading, shown)) in std::mem::take(&mut self.confirm.recoveries) {
            let spoke = self.devices.get(&id).is_some_and(|d| d.confirmed(connects, true));
            if fresh_only && !spoke {
                tracing::info!(device = %id, "a recovery read from the store of a broker that restarted is not taken: the device has not spoken since");
            } else {
                self.apply(&id, reading, shown, Source::Stored, now);
            }
        }
        let unheard: Vec<(CompactString, bool)> = self
            .devices
            .iter()
            .filter(|d| !d.confirmed(connects, fresh_only) && d.rules.sparkplug.is_none())
            // Known online, or known once and its retained status vanished.
            .map(|d| (d.id.clone(), d.rules.retained && d.state != State::Offline && d.since().is_some()))
            .collect();
        self.confirm.unconfirmed = unheard.iter().map(|(id, _)| id.clone()).collect();
        self.metrics.devices_unconfirmed.set(unheard.len() as i64);
        // What was queued and waited has fired or came back by now.
        self.confirm.late.clear();
        let mut notified = 0usize;
        for (id, gone) in &unheard {
            if !gone || self.parent_down_of(id).is_some() {
                continue;
            }
            let Some(device) = self.devices.get_mut(id) else { continue };
            let (before, durable) = (device.state, device.durable());
            let outcome = device.not_seen(now);
            notified += 1;
            tracing::warn!(device = %id, topic = %device.topic, "device not seen since the broker restarted: its retained status is gone and it said nothing since");
            self.follow(id, before, durable, outcome, false, now);
        }
        tracing::info!(
            devices = self.devices.len(),
            unconfirmed = unheard.len(),
            not_seen = notified,
            "connection confirmed: devices not heard since the connect are unconfirmed"
        );
        // What the broker kept at the start is taken in: what fires from
        // now on happened since.
        self.lost = false;
    }
}
