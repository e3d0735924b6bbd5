//! One device's presence and the pure rules of its transitions.
//!
//! No I/O and no clock reads: the caller passes the time in, so every rule
//! here is a fast unit test. The monitor owns the devices, turns the
//! transitions returned here into events, and calls `on_tick` when a
//! returned `Wait` falls due.
//!
//! The rule that keeps alerts honest: `offline` fires once when a device is
//! seen offline and nobody has been told yet; `online` fires only to resolve
//! an `offline` that was fired. Repeats, and a first sighting online, are
//! silent. On top of it:
//! - grace: an offline waits out `grace` (or a longer hold the caller asks
//!   for, such as the settle window after a reconnect) before it fires; back
//!   within it, nothing fires;
//! - silence: with `heartbeat_timeout`, a device heard from by nothing for
//!   that long is offline even without a will;
//! - stale wills: with `seq_field` (or Sparkplug's `bdSeq`), a death whose
//!   sequence is not the current birth's is ignored, unless it is a few
//!   sessions later (`MISSED_SESSIONS`: a birth we missed); a birth of the
//!   session that just died is ignored too (the will overtook it).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use compact_str::CompactString;

use crate::config::Rules;
use crate::event::EventKind;
use crate::payload::{Reading, read};
use crate::throttle::Throttle;
pub use sparkplug::{OVERTAKING_WINDOW, REBIRTH_EVERY};

mod moment;
mod sparkplug;

pub use moment::{Mono, Stamp, Wall};

/// A death at most this many sessions after the birth we know is of a
/// session whose birth was missed (published while willwatch was away, or
/// its record lost to a crash before it was saved): a real death. Any
/// other sequence but the current birth's is an earlier session's.
pub const MISSED_SESSIONS: i64 = 8;

/// The bit of `Device::heard` that says a message was fresh.
const FRESH: u32 = 1 << 31;

/// How often, at most, an unrecognised payload is logged per device.
pub const UNRECOGNISED_WARNING_EVERY: Duration = Duration::from_secs(60);

/// The payload reported for an offline found by silence.
pub const SILENCE: &str = "(silent)";

/// The payload reported for a device whose retained status the broker no
/// longer had after a reconnect, and that did not speak since.
pub const NOT_SEEN: &str = "(not seen since the broker restarted)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Unknown,
    Online,
    Offline,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Online => "online",
            State::Offline => "offline",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        [State::Unknown, State::Online, State::Offline].into_iter().find(|k| k.as_str() == s)
    }
}

/// A moment on both clocks: monotonic for durations and timers (a wall
/// clock step changes nothing), wall for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub mono: Instant,
    pub wall: SystemTime,
}

impl Now {
    pub fn read() -> Now {
        Now { mono: Instant::now(), wall: SystemTime::now() }
    }

    /// The moment `wall` on this clock pair (for state read back from disk).
    pub fn at_wall(self, wall: SystemTime) -> Now {
        let ago = self.wall.duration_since(wall).unwrap_or(Duration::ZERO);
        Now { mono: self.mono.checked_sub(ago).unwrap_or(self.mono), wall }
    }
}

/// The part of a device a restart remembers, for telling cheaply whether
/// it changed.
pub type Durable = (State, bool, Option<i64>, Option<Mono>);

/// What survives a restart, in wall-clock time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    pub topic: String,
    pub state: State,
    pub since: Option<SystemTime>,
    pub offline_since: Option<SystemTime>,
    pub alerted: bool,
    pub seq: Option<i64>,
}

/// Ids, topics and payload previews are `CompactString`s: up to 24 bytes
/// live inline, so most devices of a large fleet cost no allocation for
/// them (`dev-12345`, `bench/dev-12345/status`, `online`).
#[derive(Debug, Clone)]
pub struct Device {
    pub id: CompactString,
    pub topic: CompactString,
    pub rules: Arc<Rules>,
    pub state: State,
    /// When the current state began (`None` while never seen).
    since: Option<Stamp>,
    /// When a message last arrived on the topic, and what it said (shortened).
    last_seen: Option<Wall>,
    pub last_payload: CompactString,
    /// When the device went offline, kept while an `offline` is unresolved.
    offline_since: Option<Stamp>,
    /// An `offline` has fired and no `online` has resolved it yet.
    alerted: bool,
    /// An offline waiting out its grace: the state it left, and when it fires.
    pending: Option<(State, Mono)>,
    /// When silence would make the device offline (with `heartbeat_timeout`).
    silent_at: Option<Mono>,
    /// Offline because it fell silent, not because it said so.
    silenced: bool,
    /// What few devices need, boxed so the others carry one pointer.
    rare: Option<Box<Rare>>,
    /// The monitor's count of broker connections when a message on the
    /// status topic last arrived (tells whose retained state the replay
    /// after a connect has not delivered), in the low 31 bits; the top bit
    /// says a message of that connection was not a retained one (published
    /// or queued for us since, not read from the broker's store). One word,
    /// so a device stays at 160 bytes.
    heard: u32,
    /// What a restart remembers changed since the monitor last saved it.
    pub dirty: bool,
}

/// The part of a device few devices use.
#[derive(Debug, Clone, Default)]
struct Rare {
    /// The sequence of the current birth (with `seq_field`; a Sparkplug
    /// node's `bdSeq`).
    seq: Option<i64>,
    /// When an unrecognised payload was last logged, and how many since
    /// were not.
    warnings: Option<Throttle>,
    /// A Sparkplug node's message sequence (0–255) last seen.
    stream: Option<u8>,
    /// When a Sparkplug node was last asked for a rebirth.
    rebirth_asked: Option<Mono>,
}

/// What a message or a tick did to a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An event to fire.
    Fire(Transition),
    /// The state changed (or was confirmed) but nobody needs telling.
    Quiet,
    /// Call `on_tick` at this moment (a grace period or a heartbeat).
    Wait(Instant),
    /// A will from an earlier session than the current birth: ignored.
    Stale { seq: i64, current: i64 },
    /// A birth of the session whose death just came (a will that overtook
    /// the birth on its way): ignored.
    StaleBirth { seq: i64 },
    /// The payload means neither online nor offline. `warn` is false while
    /// the warning is rate-limited; with `warn`, `suppressed` counts warnings withheld
    /// since the last one shown.
    Unrecognised { warn: bool, suppressed: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub kind: EventKind,
    pub previous: State,
    pub offline_since: Option<SystemTime>,
    pub offline_for: Option<Duration>,
}

impl Device {
    pub fn new(id: impl Into<CompactString>, topic: impl Into<CompactString>, rules: Arc<Rules>) -> Device {
        Device {
            id: id.into(),
            topic: topic.into(),
            rules,
            state: State::Unknown,
            since: None,
            last_seen: None,
            last_payload: CompactString::default(),
            offline_since: None,
            alerted: false,
            pending: None,
            silent_at: None,
            silenced: false,
            rare: None,
            heard: 0,
            dirty: false,
        }
    }

    /// The sequence of the current birth (with `seq_field`).
    fn seq(&self) -> Option<i64> {
        self.rare.as_ref().and_then(|r| r.seq)
    }

    fn set_seq(&mut self, seq: Option<i64>) {
        if seq.is_some() || self.rare.is_some() {
            self.rare.get_or_insert_default().seq = seq;
        }
    }

    /// When the current state began (`None` while never seen).
    pub fn since(&self) -> Option<SystemTime> {
        self.since.map(|t| t.wall.into())
    }

    /// When the device went offline, while an `offline` is unresolved.
    pub fn offline_since(&self) -> Option<SystemTime> {
        self.offline_since.map(|t| t.wall.into())
    }

    /// When a message last arrived on the topic.
    pub fn last_seen(&self) -> Option<SystemTime> {
        self.last_seen.map(SystemTime::from)
    }

    /// What to write to disk.
    pub fn saved(&self) -> Saved {
        Saved {
            topic: self.topic.to_string(),
            state: self.state,
            since: self.since(),
            offline_since: self.offline_since.map(|t| t.wall.into()),
            alerted: self.alerted,
            seq: self.seq(),
        }
    }

    /// Takes back what was saved before a restart. A pending grace period is
    /// not saved: the next offline message restarts it from `offline_since`.
    /// A device that was not offline gets a fresh heartbeat clock, so one
    /// that hangs without a will is still found by its silence.
    pub fn restore(&mut self, saved: &Saved, now: Now) -> Outcome {
        self.state = saved.state;
        self.since = saved.since.map(|t| now.at_wall(t).into());
        self.offline_since = saved.offline_since.map(|t| now.at_wall(t).into());
        self.alerted = saved.alerted;
        self.set_seq(saved.seq);
        self.quiet_or_heartbeat(now)
    }

    /// Restored offline and not notified: the offline was seen and waited
    /// (a grace period, a probe) when the state was saved. It waits again,
    /// until `until` or the caller releases it; whether it does.
    pub fn resume_offline(&mut self, until: Instant) -> bool {
        if self.state != State::Offline || self.alerted || self.pending.is_some() {
            return false;
        }
        if self.offline_since.is_none() {
            self.offline_since = self.since;
        }
        self.pending = Some((State::Online, until.into()));
        true
    }

    /// What a restart must remember changed: the fields of `saved` but the
    /// topic, compared cheaply on every message.
    pub fn durable(&self) -> Durable {
        (self.state, self.alerted, self.seq(), self.offline_since.map(|t| t.mono))
    }

    /// Applies one message on the device's status topic. `hold` is a
    /// minimum grace the caller imposes (the settle window after a
    /// reconnect), on top of the device's own.
    pub fn on_message(&mut self, payload: &[u8], now: Now, hold: Duration) -> Outcome {
        self.on_reading(read(payload, &self.rules), preview(payload), now, hold)
    }

    /// Applies what a message said (`shown`: the payload as `/status` and
    /// events show it).
    pub fn on_reading(&mut self, reading: Reading, shown: CompactString, now: Now, hold: Duration) -> Outcome {
        self.last_seen = Some(now.wall.into());
        self.last_payload = shown;
        match reading {
            Reading::Cleared => {
                // We no longer know. An unresolved offline stays unresolved
                // so a later online still closes it.
                self.enter(State::Unknown, now);
                self.quiet_or_heartbeat(now)
            }
            Reading::Offline { seq: Some(seq) }
                if self.seq().is_some_and(|current| current != seq && !self.later_session(current, seq)) =>
            {
                Outcome::Stale { seq, current: self.seq().unwrap_or_default() }
            }
            Reading::Offline { seq } => {
                if seq.is_some() {
                    // The session that died (a later one than the birth we
                    // know when that birth was missed): its birth, if it
                    // comes late, is stale.
                    self.set_seq(seq);
                }
                self.go_offline(now, hold)
            }
            Reading::Online { seq: Some(seq) } if self.overtaken(seq, now) => Outcome::StaleBirth { seq },
            Reading::Online { seq } => {
                if seq.is_some() {
                    self.set_seq(seq);
                }
                match self.go_online(now) {
                    Outcome::Quiet => self.quiet_or_heartbeat(now),
                    fired => fired,
                }
            }
            Reading::Unrecognised => self.unrecognised(now.mono),
        }
    }

    /// Offline with the device it is reached through (a Sparkplug node's
    /// death): nothing was heard from it, so `last_seen` stays as it was.
    pub fn offline_with_parent(&mut self, shown: CompactString, now: Now, hold: Duration) -> Outcome {
        self.last_payload = shown;
        self.go_offline(now, hold)
    }

    /// A message on the device's heartbeat topic: proof of life only.
    pub fn on_heartbeat(&mut self, now: Now) -> Outcome {
        self.last_seen = Some(now.wall.into());
        if self.state == State::Offline && self.silenced {
            // Offline by silence: a heartbeat is the device back.
            return match self.go_online(now) {
                Outcome::Quiet => self.quiet_or_heartbeat(now),
                fired => fired,
            };
        }
        self.quiet_or_heartbeat(now)
    }

    /// Time passing: a grace period that ran out fires its offline (late by
    /// the grace, with the moment the device really went offline); a
    /// device silent past its heartbeat timeout goes offline.
    pub fn on_tick(&mut self, now: Now) -> Outcome {
        if let Some((previous, due)) = self.pending {
            if self.state != State::Offline {
                // Cleared while waiting: nothing to report.
                self.pending = None;
                self.offline_since = None;
            } else if now.mono < Instant::from(due) {
                return Outcome::Wait(due.into());
            } else {
                self.pending = None;
                return self.fire_offline(previous);
            }
        }
        match self.silent_at {
            Some(at) if now.mono >= Instant::from(at) && self.state != State::Offline => self.unheard(SILENCE, now),
            Some(at) if self.state != State::Offline => Outcome::Wait(at.into()),
            _ => Outcome::Quiet,
        }
    }

    /// Restarts the heartbeat clock (after the broker was unreachable: the
    /// silence was ours, not the device's).
    pub fn forgive_silence(&mut self, now: Now) -> Outcome {
        if self.silent_at.is_some() { self.quiet_or_heartbeat(now) } else { Outcome::Quiet }
    }

    /// A message on its topics arrived in connection `connects`; `fresh`
    /// when it was not read from the broker's retained store.
    pub fn heard(&mut self, connects: u32, fresh: bool) {
        if !self.heard_in(connects) {
            self.heard = connects & !FRESH;
        }
        if fresh {
            self.heard |= FRESH;
        }
    }

    /// Its retained status vanished (cleared, or expired): not heard in
    /// connection `connects` after all.
    pub fn unheard_in(&mut self, connects: u32) {
        self.heard = connects.wrapping_sub(1) & !FRESH;
    }

    /// Whether a message on its topics arrived in connection `connects`.
    pub fn heard_in(&self, connects: u32) -> bool {
        self.heard & !FRESH == connects & !FRESH
    }

    /// Heard from in connection `connects` (by a fresh message, when the
    /// broker's store may be older than the devices).
    pub fn confirmed(&self, connects: u32, fresh_only: bool) -> bool {
        self.heard_in(connects) && (self.heard & FRESH != 0 || !fresh_only)
    }

    /// Whether an `offline` was notified and no `online` resolved it yet.
    pub fn notified(&self) -> bool {
        self.alerted
    }

    /// Its outage is the one another instance of a cluster notified, since
    /// `since`: it counts as notified (a grace still waited out here ends,
    /// and it does not fire again) and dates from then. Whether anything
    /// changed.
    pub fn notified_elsewhere(&mut self, since: SystemTime, now: Now) -> bool {
        if self.state != State::Offline {
            return false;
        }
        let changed = self.pending.is_some() || !self.alerted || self.offline_since() != Some(since);
        self.pending = None;
        self.alerted = true;
        self.offline_since = Some(now.at_wall(since).into());
        changed
    }

    /// Moves the moment a waiting offline fires (its parent went offline,
    /// or came back); whether one was waiting.
    pub fn hold_until(&mut self, due: Instant) -> bool {
        match &mut self.pending {
            Some((_, at)) => {
                *at = due.into();
                true
            }
            None => false,
        }
    }

    /// Lets a waiting offline fire at the end of its own grace period (now,
    /// if that is past) instead of a hold the caller imposed; whether one
    /// was waiting.
    pub fn release(&mut self, now: Instant) -> bool {
        let from = self.offline_since.map_or(now, |t| t.mono.into());
        self.hold_until((from + self.rules.grace).max(now))
    }

    /// The broker no longer has its retained status (after a reconnect, or
    /// it vanished) and it did not speak since: offline, as by silence (an
    /// outage already notified is not a second one).
    pub fn not_seen(&mut self, now: Now) -> Outcome {
        if self.state == State::Offline {
            return Outcome::Quiet;
        }
        self.pending = None;
        self.unheard(NOT_SEEN, now)
    }

    /// Offline because nothing was heard (`shown` says how it was found):
    /// a heartbeat or any word brings it back.
    fn unheard(&mut self, shown: &'static str, now: Now) -> Outcome {
        self.silent_at = None;
        self.silenced = true;
        self.last_payload = shown.into();
        let previous = self.state;
        self.enter(State::Offline, now);
        if self.alerted {
            // Still the outage already notified (its retained will was
            // cleared, then nothing): not a second one.
            return Outcome::Quiet;
        }
        self.offline_since = Some(now.into());
        self.fire_offline(previous)
    }

    /// While an offline waits out its grace period: when it will fire.
    pub fn grace_until(&self) -> Option<Instant> {
        self.pending.map(|(_, due)| due.into())
    }

    /// The earliest timer this device needs, if any.
    pub fn next_timer(&self) -> Option<Instant> {
        let first = match (self.pending.map(|(_, due)| due), self.silent_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        first.map(Instant::from)
    }

    /// After a message: the heartbeat clock restarts (and any answer that
    /// was expected came).
    fn quiet_or_heartbeat(&mut self, now: Now) -> Outcome {
        match self.rules.heartbeat_timeout {
            Some(timeout) if self.state != State::Offline => {
                let at = now.mono + timeout;
                self.silent_at = Some(at.into());
                Outcome::Wait(at)
            }
            _ => {
                self.silent_at = None;
                Outcome::Quiet
            }
        }
    }

    fn go_offline(&mut self, now: Now, hold: Duration) -> Outcome {
        let previous = self.state;
        self.silent_at = None;
        self.silenced = false;
        if previous != State::Offline {
            self.enter(State::Offline, now);
            if !self.alerted && self.pending.is_none() {
                self.offline_since = Some(now.into());
            }
        }
        if self.alerted || self.pending.is_some() {
            return Outcome::Quiet;
        }
        let wait = self.rules.grace.max(hold);
        if !wait.is_zero() {
            let from = self.offline_since.map_or(now.mono, |t| t.mono.into());
            let due = (from + self.rules.grace).max(now.mono + hold);
            self.pending = Some((previous, due.into()));
            return Outcome::Wait(due);
        }
        self.fire_offline(previous)
    }

    fn fire_offline(&mut self, previous: State) -> Outcome {
        self.alerted = true;
        Outcome::Fire(Transition {
            kind: EventKind::Offline,
            previous,
            offline_since: self.offline_since.map(|t| t.wall.into()),
            offline_for: None,
        })
    }

    fn go_online(&mut self, now: Now) -> Outcome {
        let previous = self.state;
        self.silenced = false;
        if previous != State::Online {
            self.enter(State::Online, now);
        }
        if self.pending.take().is_some() {
            // Back within the grace period: a flap, not an outage.
            self.offline_since = None;
            return Outcome::Quiet;
        }
        if !self.alerted {
            return Outcome::Quiet;
        }
        self.alerted = false;
        let since = self.offline_since.take();
        Outcome::Fire(Transition {
            kind: EventKind::Online,
            previous,
            offline_since: since.map(|t| t.wall.into()),
            offline_for: since.map(|t| now.mono.saturating_duration_since(t.mono.into())),
        })
    }

    fn unrecognised(&mut self, now: Instant) -> Outcome {
        let rare = self.rare.get_or_insert_default();
        let throttle = rare.warnings.get_or_insert_with(|| Throttle::new(UNRECOGNISED_WARNING_EVERY));
        match throttle.allow(now) {
            Some(suppressed) => Outcome::Unrecognised { warn: true, suppressed },
            None => Outcome::Unrecognised { warn: false, suppressed: 0 },
        }
    }

    fn enter(&mut self, state: State, now: Now) {
        if self.state != state || self.since.is_none() {
            self.state = state;
            self.since = Some(now.into());
        }
    }
}

/// A payload as it may be shown: lossy UTF-8, at most 64 characters.
pub fn preview(payload: &[u8]) -> CompactString {
    const MAX: usize = 64;
    let text = String::from_utf8_lossy(&payload[..payload.len().min(MAX * 4)]);
    let mut out: CompactString = text.chars().take(MAX).collect();
    if payload.len() > out.len() {
        out.push_str(&format!("… ({} bytes)", payload.len()));
    }
    out
}

#[cfg(test)]
mod tests;
