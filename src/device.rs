//! One device's presence and the pure rules of its transitions.
//!
//! No I/O and no clock reads: the caller passes the time in, so every rule
//! here is a fast unit test. The monitor owns the devices and turns the
//! transitions returned here into events.
//!
//! The rule that keeps alerts honest: `offline` fires once when a device is
//! seen offline and nobody has been told yet; `online` fires only to resolve
//! an `offline` that was fired. Repeats, and a first sighting online, are
//! silent.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::config::Rules;
use crate::event::EventKind;

/// How often, at most, an unrecognised payload is logged per device.
pub const UNRECOGNISED_WARNING_EVERY: Duration = Duration::from_secs(60);

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
}

/// A moment on both clocks: monotonic for durations, wall for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub mono: Instant,
    pub wall: SystemTime,
}

impl Now {
    pub fn read() -> Now {
        Now { mono: Instant::now(), wall: SystemTime::now() }
    }
}

#[derive(Debug, Clone)]
pub struct Device {
    pub id: String,
    pub topic: String,
    pub rules: Arc<Rules>,
    pub state: State,
    /// When the current state began (`None` while never seen).
    pub since: Option<Now>,
    /// When a message last arrived on the topic, and what it said (shortened).
    pub last_seen: Option<Now>,
    pub last_payload: String,
    /// When the device went offline, kept while an `offline` is unresolved.
    offline_since: Option<Now>,
    /// An `offline` has fired and no `online` has resolved it yet.
    alerted: bool,
    /// An offline waiting out its grace period, with the state it left.
    pending: Option<State>,
    last_warning: Option<Instant>,
    suppressed_warnings: u64,
}

/// What a message did to a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An event to fire.
    Fire(Transition),
    /// The state changed (or was confirmed) but nobody needs telling.
    Quiet,
    /// Offline, within its grace period: call `on_tick` at this moment.
    Wait(Instant),
    /// The payload means neither online nor offline. `warn` is false while
    /// the warning is rate-limited; `suppressed` counts warnings withheld
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
    pub fn new(id: impl Into<String>, topic: impl Into<String>, rules: Arc<Rules>) -> Device {
        Device {
            id: id.into(),
            topic: topic.into(),
            rules,
            state: State::Unknown,
            since: None,
            last_seen: None,
            last_payload: String::new(),
            offline_since: None,
            alerted: false,
            pending: None,
            last_warning: None,
            suppressed_warnings: 0,
        }
    }

    /// Applies one message on the device's status topic.
    pub fn on_message(&mut self, payload: &[u8], now: Now) -> Outcome {
        self.last_seen = Some(now);
        self.last_payload = preview(payload);
        if payload.is_empty() {
            // A cleared retained message: we no longer know. An unresolved
            // offline stays unresolved so a later online still closes it.
            self.enter(State::Unknown, now);
            return Outcome::Quiet;
        }
        let text = trim(payload);
        if self.rules.offline.iter().any(|p| p.as_bytes() == text) {
            self.go_offline(now)
        } else if self.rules.online.iter().any(|p| p.as_bytes() == text) {
            self.go_online(now)
        } else {
            self.unrecognised(now.mono)
        }
    }

    fn go_offline(&mut self, now: Now) -> Outcome {
        let previous = self.state;
        if previous != State::Offline {
            self.enter(State::Offline, now);
            if !self.alerted && self.pending.is_none() {
                self.offline_since = Some(now);
            }
        }
        if self.alerted || self.pending.is_some() {
            return Outcome::Quiet;
        }
        if !self.rules.grace.is_zero() {
            self.pending = Some(previous);
            return Outcome::Wait(now.mono + self.rules.grace);
        }
        self.fire_offline(previous)
    }

    /// Time passing: an offline that outlasted its grace fires now, late by
    /// the grace, with the moment it really went offline.
    pub fn on_tick(&mut self, now: Now) -> Outcome {
        let (Some(previous), Some(since)) = (self.pending, self.offline_since) else {
            return Outcome::Quiet;
        };
        if self.state != State::Offline {
            // Cleared while waiting: nothing to report.
            self.pending = None;
            self.offline_since = None;
            return Outcome::Quiet;
        }
        let due = since.mono + self.rules.grace;
        if now.mono < due {
            return Outcome::Wait(due);
        }
        self.pending = None;
        self.fire_offline(previous)
    }

    fn fire_offline(&mut self, previous: State) -> Outcome {
        self.alerted = true;
        Outcome::Fire(Transition {
            kind: EventKind::Offline,
            previous,
            offline_since: self.offline_since.map(|t| t.wall),
            offline_for: None,
        })
    }

    fn go_online(&mut self, now: Now) -> Outcome {
        let previous = self.state;
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
            offline_since: since.map(|t| t.wall),
            offline_for: since.map(|t| now.mono.saturating_duration_since(t.mono)),
        })
    }

    fn unrecognised(&mut self, now: Instant) -> Outcome {
        let due =
            self.last_warning.is_none_or(|last| now.saturating_duration_since(last) >= UNRECOGNISED_WARNING_EVERY);
        if due {
            self.last_warning = Some(now);
            let suppressed = std::mem::take(&mut self.suppressed_warnings);
            Outcome::Unrecognised { warn: true, suppressed }
        } else {
            self.suppressed_warnings += 1;
            Outcome::Unrecognised { warn: false, suppressed: self.suppressed_warnings }
        }
    }

    fn enter(&mut self, state: State, now: Now) {
        if self.state != state || self.since.is_none() {
            self.state = state;
            self.since = Some(now);
        }
    }
}

fn trim(payload: &[u8]) -> &[u8] {
    payload.trim_ascii()
}

/// A payload as it may be shown: lossy UTF-8, at most 64 characters.
pub fn preview(payload: &[u8]) -> String {
    const MAX: usize = 64;
    let text = String::from_utf8_lossy(&payload[..payload.len().min(MAX * 4)]);
    let mut out: String = text.chars().take(MAX).collect();
    if payload.len() > out.len() {
        out.push_str(&format!("… ({} bytes)", payload.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(grace: u64) -> Arc<Rules> {
        Arc::new(Rules {
            online: vec!["online".into()],
            offline: vec!["offline".into(), "lost".into()],
            actions: vec!["log".into()],
            grace: Duration::from_secs(grace),
        })
    }

    fn device() -> Device {
        Device::new("pump-7", "plant/pump-7/status", rules(0))
    }

    fn device_with_grace(secs: u64) -> Device {
        Device::new("pump-7", "plant/pump-7/status", rules(secs))
    }

    #[test]
    fn offline_within_grace_waits_and_recovery_within_it_fires_nothing() {
        let clock = Clock::new();
        let mut d = device_with_grace(30);
        d.on_message(b"online", clock.after(0));
        assert_eq!(d.on_message(b"offline", clock.after(10)), Outcome::Wait(clock.after(40).mono));
        assert_eq!(d.on_message(b"offline", clock.after(20)), Outcome::Quiet);
        assert_eq!(d.on_tick(clock.after(25)), Outcome::Wait(clock.after(40).mono));
        assert_eq!(d.on_message(b"online", clock.after(30)), Outcome::Quiet);
        assert_eq!(d.on_tick(clock.after(40)), Outcome::Quiet);
        assert_eq!(d.state, State::Online);
    }

    #[test]
    fn offline_outlasting_grace_fires_once_late_with_the_true_start() {
        let clock = Clock::new();
        let mut d = device_with_grace(30);
        d.on_message(b"online", clock.after(0));
        d.on_message(b"offline", clock.after(10));
        let Outcome::Fire(t) = d.on_tick(clock.after(40)) else { panic!("no event") };
        assert_eq!((t.kind, t.previous), (EventKind::Offline, State::Online));
        assert_eq!(t.offline_since, Some(clock.after(10).wall));
        assert_eq!(d.on_tick(clock.after(41)), Outcome::Quiet);
        let Outcome::Fire(t) = d.on_message(b"online", clock.after(100)) else { panic!("no event") };
        assert_eq!(t.offline_for, Some(Duration::from_secs(90)));
    }

    #[test]
    fn cleared_message_during_grace_cancels_the_pending_offline() {
        let clock = Clock::new();
        let mut d = device_with_grace(30);
        d.on_message(b"offline", clock.after(0));
        d.on_message(b"", clock.after(5));
        assert_eq!(d.on_tick(clock.after(30)), Outcome::Quiet);
        assert_eq!(d.state, State::Unknown);
    }

    struct Clock(Now);

    impl Clock {
        fn new() -> Clock {
            Clock(Now::read())
        }
        fn after(&self, secs: u64) -> Now {
            let d = Duration::from_secs(secs);
            Now { mono: self.0.mono + d, wall: self.0.wall + d }
        }
    }

    fn fired(outcome: &Outcome) -> Option<EventKind> {
        match outcome {
            Outcome::Fire(t) => Some(t.kind),
            _ => None,
        }
    }

    #[test]
    fn first_online_is_a_quiet_baseline() {
        let clock = Clock::new();
        let mut d = device();
        assert_eq!(d.on_message(b"online", clock.after(0)), Outcome::Quiet);
        assert_eq!(d.state, State::Online);
    }

    #[test]
    fn offline_will_fires_offline_once() {
        let clock = Clock::new();
        let mut d = device();
        d.on_message(b"online", clock.after(0));
        assert_eq!(fired(&d.on_message(b"offline", clock.after(1))), Some(EventKind::Offline));
        assert_eq!(d.on_message(b"offline", clock.after(2)), Outcome::Quiet);
        assert_eq!(d.on_message(b"lost", clock.after(3)), Outcome::Quiet);
        assert_eq!(d.state, State::Offline);
    }

    #[test]
    fn unknown_device_seen_offline_fires_offline() {
        let clock = Clock::new();
        let mut d = device();
        let Outcome::Fire(t) = d.on_message(b"offline", clock.after(0)) else { panic!("no event") };
        assert_eq!((t.kind, t.previous), (EventKind::Offline, State::Unknown));
        assert_eq!(t.offline_since, Some(clock.after(0).wall));
    }

    #[test]
    fn recovery_fires_online_once_with_offline_duration() {
        let clock = Clock::new();
        let mut d = device();
        d.on_message(b"online", clock.after(0));
        d.on_message(b"offline", clock.after(10));
        d.on_message(b"offline", clock.after(20));
        let Outcome::Fire(t) = d.on_message(b"online", clock.after(75)) else { panic!("no event") };
        assert_eq!(t.kind, EventKind::Online);
        assert_eq!(t.previous, State::Offline);
        assert_eq!(t.offline_for, Some(Duration::from_secs(65)));
        assert_eq!(t.offline_since, Some(clock.after(10).wall));
        assert_eq!(d.on_message(b"online", clock.after(80)), Outcome::Quiet);
    }

    #[test]
    fn cleared_retained_message_makes_the_device_unknown_and_keeps_the_alert_open() {
        let clock = Clock::new();
        let mut d = device();
        d.on_message(b"offline", clock.after(0));
        assert_eq!(d.on_message(b"", clock.after(5)), Outcome::Quiet);
        assert_eq!(d.state, State::Unknown);
        let Outcome::Fire(t) = d.on_message(b"online", clock.after(30)) else { panic!("no event") };
        assert_eq!(t.previous, State::Unknown);
        assert_eq!(t.offline_for, Some(Duration::from_secs(30)));
    }

    #[test]
    fn offline_after_cleared_message_does_not_alert_twice() {
        let clock = Clock::new();
        let mut d = device();
        d.on_message(b"offline", clock.after(0));
        d.on_message(b"", clock.after(1));
        assert_eq!(d.on_message(b"offline", clock.after(2)), Outcome::Quiet);
    }

    #[test]
    fn payload_whitespace_is_ignored() {
        let clock = Clock::new();
        let mut d = device();
        assert_eq!(fired(&d.on_message(b" offline\n", clock.after(0))), Some(EventKind::Offline));
    }

    #[test]
    fn unrecognised_payload_changes_nothing_and_warns_at_most_once_a_minute() {
        let clock = Clock::new();
        let mut d = device();
        d.on_message(b"online", clock.after(0));
        assert_eq!(d.on_message(b"rebooting", clock.after(1)), Outcome::Unrecognised { warn: true, suppressed: 0 });
        assert_eq!(
            d.on_message(&[0xff, 0xfe, 0x00], clock.after(2)),
            Outcome::Unrecognised { warn: false, suppressed: 1 }
        );
        assert_eq!(d.on_message(b"{}", clock.after(30)), Outcome::Unrecognised { warn: false, suppressed: 2 });
        assert_eq!(d.on_message(b"x", clock.after(61)), Outcome::Unrecognised { warn: true, suppressed: 2 });
        assert_eq!(d.state, State::Online);
        assert_eq!(d.since, Some(clock.after(0)));
    }

    #[test]
    fn oversized_payload_is_just_unrecognised() {
        let clock = Clock::new();
        let mut d = device();
        let huge = vec![b'x'; 4 << 20];
        assert!(matches!(d.on_message(&huge, clock.after(0)), Outcome::Unrecognised { .. }));
        assert_eq!(d.state, State::Unknown);
    }
}
