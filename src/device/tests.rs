//! The device rules, one behaviour per test, with time passed in.

use super::*;

fn rules(grace: u64) -> Rules {
    Rules { offline: vec!["offline".into(), "lost".into()], grace: Duration::from_secs(grace), ..Rules::builtin() }
}

fn device_with(rules: Rules) -> Device {
    Device::new("pump-7", "plant/pump-7/status", Arc::new(rules))
}

fn device() -> Device {
    device_with(rules(0))
}

struct Clock(Now);

impl Clock {
    fn new() -> Clock {
        Clock(Now::read())
    }
    fn after(&self, secs: u64) -> Now {
        self.after_ms(secs * 1000)
    }
    fn after_ms(&self, ms: u64) -> Now {
        let d = Duration::from_millis(ms);
        Now { mono: self.0.mono + d, wall: self.0.wall + d }
    }
}

/// A message with no hold.
fn msg(d: &mut Device, payload: &[u8], now: Now) -> Outcome {
    d.on_message(payload, now, Duration::ZERO)
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
    assert_eq!(msg(&mut d, b"online", clock.after(0)), Outcome::Quiet);
    assert_eq!(d.state, State::Online);
}

#[test]
fn offline_will_fires_offline_once() {
    let clock = Clock::new();
    let mut d = device();
    msg(&mut d, b"online", clock.after(0));
    assert_eq!(fired(&msg(&mut d, b"offline", clock.after(1))), Some(EventKind::Offline));
    assert_eq!(msg(&mut d, b"offline", clock.after(2)), Outcome::Quiet);
    assert_eq!(msg(&mut d, b"lost", clock.after(3)), Outcome::Quiet);
    assert_eq!(d.state, State::Offline);
}

#[test]
fn unknown_device_seen_offline_fires_offline() {
    let clock = Clock::new();
    let mut d = device();
    let Outcome::Fire(t) = msg(&mut d, b"offline", clock.after(0)) else { panic!("no event") };
    assert_eq!((t.kind, t.previous), (EventKind::Offline, State::Unknown));
    assert_eq!(t.offline_since, Some(clock.after(0).wall));
}

#[test]
fn recovery_fires_online_once_with_offline_duration() {
    let clock = Clock::new();
    let mut d = device();
    msg(&mut d, b"online", clock.after(0));
    msg(&mut d, b"offline", clock.after(10));
    msg(&mut d, b"offline", clock.after(20));
    let Outcome::Fire(t) = msg(&mut d, b"online", clock.after(75)) else { panic!("no event") };
    assert_eq!((t.kind, t.previous), (EventKind::Online, State::Offline));
    assert_eq!(t.offline_for, Some(Duration::from_secs(65)));
    assert_eq!(t.offline_since, Some(clock.after(10).wall));
    assert_eq!(msg(&mut d, b"online", clock.after(80)), Outcome::Quiet);
}

#[test]
fn cleared_retained_message_makes_the_device_unknown_and_keeps_the_alert_open() {
    let clock = Clock::new();
    let mut d = device();
    msg(&mut d, b"offline", clock.after(0));
    assert_eq!(msg(&mut d, b"", clock.after(5)), Outcome::Quiet);
    assert_eq!(d.state, State::Unknown);
    let Outcome::Fire(t) = msg(&mut d, b"online", clock.after(30)) else { panic!("no event") };
    assert_eq!(t.previous, State::Unknown);
    assert_eq!(t.offline_for, Some(Duration::from_secs(30)));
}

#[test]
fn offline_after_cleared_message_does_not_alert_twice() {
    let clock = Clock::new();
    let mut d = device();
    msg(&mut d, b"offline", clock.after(0));
    msg(&mut d, b"", clock.after(1));
    assert_eq!(msg(&mut d, b"offline", clock.after(2)), Outcome::Quiet);
}

#[test]
fn unrecognised_payload_changes_nothing_and_warns_at_most_once_a_minute() {
    let clock = Clock::new();
    let mut d = device();
    msg(&mut d, b"online", clock.after(0));
    assert_eq!(msg(&mut d, b"rebooting", clock.after(1)), Outcome::Unrecognised { warn: true, suppressed: 0 });
    assert_eq!(msg(&mut d, &[0xff, 0xfe, 0x00], clock.after(2)), Outcome::Unrecognised { warn: false, suppressed: 0 });
    assert_eq!(msg(&mut d, b"{}", clock.after(30)), Outcome::Unrecognised { warn: false, suppressed: 0 });
    assert_eq!(msg(&mut d, b"x", clock.after(61)), Outcome::Unrecognised { warn: true, suppressed: 2 });
    assert_eq!(d.state, State::Online);
    assert_eq!(d.since(), Some(clock.after(0).wall));
}

#[test]
fn oversized_payload_is_just_unrecognised() {
    let clock = Clock::new();
    let mut d = device();
    let huge = vec![b'x'; 4 << 20];
    assert!(matches!(msg(&mut d, &huge, clock.after(0)), Outcome::Unrecognised { .. }));
    assert_eq!(d.state, State::Unknown);
    assert!(d.last_payload.ends_with("(4194304 bytes)"), "{}", d.last_payload);
}

#[test]
fn offline_within_grace_waits_and_recovery_within_it_fires_nothing() {
    let clock = Clock::new();
    let mut d = device_with(rules(30));
    msg(&mut d, b"online", clock.after(0));
    assert_eq!(msg(&mut d, b"offline", clock.after(10)), Outcome::Wait(clock.after(40).mono));
    assert_eq!(msg(&mut d, b"offline", clock.after(20)), Outcome::Quiet);
    assert_eq!(d.on_tick(clock.after(25)), Outcome::Wait(clock.after(40).mono));
    assert_eq!(msg(&mut d, b"online", clock.after(30)), Outcome::Quiet);
    assert_eq!(d.on_tick(clock.after(40)), Outcome::Quiet);
    assert_eq!(d.state, State::Online);
}

#[test]
fn offline_outlasting_grace_fires_once_late_with_the_true_start() {
    let clock = Clock::new();
    let mut d = device_with(rules(30));
    msg(&mut d, b"online", clock.after(0));
    msg(&mut d, b"offline", clock.after(10));
    let Outcome::Fire(t) = d.on_tick(clock.after(40)) else { panic!("no event") };
    assert_eq!((t.kind, t.previous), (EventKind::Offline, State::Online));
    assert_eq!(t.offline_since, Some(clock.after(10).wall));
    assert_eq!(d.on_tick(clock.after(41)), Outcome::Quiet);
    let Outcome::Fire(t) = msg(&mut d, b"online", clock.after(100)) else { panic!("no event") };
    assert_eq!(t.offline_for, Some(Duration::from_secs(90)));
}

#[test]
fn cleared_message_during_grace_cancels_the_pending_offline() {
    let clock = Clock::new();
    let mut d = device_with(rules(30));
    msg(&mut d, b"offline", clock.after(0));
    msg(&mut d, b"", clock.after(5));
    assert_eq!(d.on_tick(clock.after(30)), Outcome::Quiet);
    assert_eq!(d.state, State::Unknown);
}

#[test]
fn a_hold_defers_an_offline_like_a_grace_period() {
    let clock = Clock::new();
    let mut d = device();
    msg(&mut d, b"online", clock.after(0));
    assert_eq!(d.on_message(b"offline", clock.after(1), Duration::from_secs(2)), Outcome::Wait(clock.after(3).mono));
    assert_eq!(fired(&d.on_tick(clock.after(3))), Some(EventKind::Offline));
}

#[test]
fn silence_past_the_heartbeat_timeout_is_offline_and_a_heartbeat_brings_it_back() {
    let clock = Clock::new();
    let mut d = device_with(Rules { heartbeat_timeout: Some(Duration::from_secs(60)), ..rules(0) });
    assert_eq!(msg(&mut d, b"online", clock.after(0)), Outcome::Wait(clock.after(60).mono));
    assert_eq!(d.on_heartbeat(clock.after(30)), Outcome::Wait(clock.after(90).mono));
    assert_eq!(d.on_tick(clock.after(60)), Outcome::Wait(clock.after(90).mono));
    let Outcome::Fire(t) = d.on_tick(clock.after(90)) else { panic!("no event") };
    assert_eq!((t.kind, t.previous), (EventKind::Offline, State::Online));
    assert_eq!(d.last_payload, SILENCE);
    assert_eq!(d.on_tick(clock.after(200)), Outcome::Quiet, "offline stays quiet");
    let Outcome::Fire(t) = d.on_heartbeat(clock.after(210)) else { panic!("no event") };
    assert_eq!(t.offline_for, Some(Duration::from_secs(120)));
}

#[test]
fn an_outage_whose_retained_will_is_cleared_and_then_stays_silent_fires_no_second_offline() {
    let clock = Clock::new();
    let mut d = device_with(Rules { heartbeat_timeout: Some(Duration::from_secs(60)), ..rules(0) });
    msg(&mut d, b"online", clock.after(0));
    assert_eq!(fired(&msg(&mut d, b"offline", clock.after(10))), Some(EventKind::Offline));
    assert_eq!(msg(&mut d, b"", clock.after(20)), Outcome::Wait(clock.after(80).mono), "cleared: unknown");
    assert_eq!(d.on_tick(clock.after(80)), Outcome::Quiet, "the same outage, not a new one");
    assert_eq!(d.state, State::Offline);
    let Outcome::Fire(t) = d.on_heartbeat(clock.after(100)) else { panic!("no online") };
    assert_eq!(t.offline_since, Some(clock.after(10).wall), "the true start of the outage is kept");
}

#[test]
fn a_restored_device_gets_a_heartbeat_clock_at_once() {
    let clock = Clock::new();
    let mut d = device_with(Rules { heartbeat_timeout: Some(Duration::from_secs(60)), ..rules(0) });
    msg(&mut d, b"online", clock.after(0));
    let mut after = device_with(Rules { heartbeat_timeout: Some(Duration::from_secs(60)), ..rules(0) });
    assert_eq!(after.restore(&d.saved(), clock.after(5)), Outcome::Wait(clock.after(65).mono));
    assert_eq!(fired(&after.on_tick(clock.after(65))), Some(EventKind::Offline));
}

#[test]
fn a_heartbeat_does_not_overrule_a_will() {
    let clock = Clock::new();
    let mut d = device_with(Rules { heartbeat_timeout: Some(Duration::from_secs(60)), ..rules(0) });
    msg(&mut d, b"offline", clock.after(0));
    assert_eq!(d.on_heartbeat(clock.after(10)), Outcome::Quiet);
    assert_eq!(d.state, State::Offline);
}

#[test]
fn a_device_silent_while_we_were_away_gets_a_fresh_timeout() {
    let clock = Clock::new();
    let mut d = device_with(Rules { heartbeat_timeout: Some(Duration::from_secs(60)), ..rules(0) });
    msg(&mut d, b"online", clock.after(0));
    assert_eq!(d.forgive_silence(clock.after(100)), Outcome::Wait(clock.after(160).mono));
    assert_eq!(d.next_timer(), Some(clock.after(160).mono));
}

#[test]
fn a_will_from_an_older_session_is_stale() {
    let clock = Clock::new();
    let json = Rules { state_field: Some("/state".into()), seq_field: Some("/bdSeq".into()), ..rules(0) };
    let mut d = device_with(json);
    msg(&mut d, br#"{"state":"online","bdSeq":4}"#, clock.after(0));
    assert_eq!(msg(&mut d, br#"{"state":"offline","bdSeq":3}"#, clock.after(1)), Outcome::Stale { seq: 3, current: 4 });
    assert_eq!(d.state, State::Online);
    assert_eq!(fired(&msg(&mut d, br#"{"state":"offline","bdSeq":4}"#, clock.after(2))), Some(EventKind::Offline));
}

/// Regression: a birth whose record a crash lost (saved within a moment,
/// not at once) left the restored sequence one session behind, and the
/// next real death looked stale: the device stayed online for ever.
#[test]
fn a_will_a_few_sessions_ahead_of_the_birth_we_know_is_a_real_death() {
    let clock = Clock::new();
    let json = Rules { state_field: Some("/state".into()), seq_field: Some("/bdSeq".into()), ..rules(0) };
    let mut d = device_with(json);
    msg(&mut d, br#"{"state":"online","bdSeq":11}"#, clock.after(0));
    assert_eq!(fired(&msg(&mut d, br#"{"state":"offline","bdSeq":12}"#, clock.after(1))), Some(EventKind::Offline));
    // Far ahead is no session we could have missed: an earlier life's.
    let mut d = device_with(Rules { state_field: Some("/state".into()), seq_field: Some("/bdSeq".into()), ..rules(0) });
    msg(&mut d, br#"{"state":"online","bdSeq":11}"#, clock.after(0));
    let far = 11 + crate::device::MISSED_SESSIONS + 1;
    let will = format!(r#"{{"state":"offline","bdSeq":{far}}}"#);
    assert_eq!(msg(&mut d, will.as_bytes(), clock.after(1)), Outcome::Stale { seq: far, current: 11 });
}

#[test]
fn saved_state_survives_a_restart_without_a_second_alert() {
    let clock = Clock::new();
    let mut before = device();
    msg(&mut before, b"online", clock.after(0));
    msg(&mut before, b"offline", clock.after(10));
    let saved = before.saved();

    let later = clock.after(100);
    let mut after = device();
    after.restore(&saved, later);
    assert_eq!(after.state, State::Offline);
    assert_eq!(msg(&mut after, b"offline", clock.after(101)), Outcome::Quiet, "no duplicate offline");
    let Outcome::Fire(t) = msg(&mut after, b"online", clock.after(130)) else { panic!("no event") };
    assert_eq!(t.offline_for, Some(Duration::from_secs(120)));
    assert_eq!(t.offline_since, Some(clock.after(10).wall));
}

#[test]
fn a_wall_clock_step_changes_no_timer() {
    let clock = Clock::new();
    let mut d = device_with(Rules { heartbeat_timeout: Some(Duration::from_secs(60)), ..rules(30) });
    msg(&mut d, b"online", clock.after(0));
    // The wall clock jumps a day ahead (an NTP step); the monotonic one does not.
    let stepped = |secs: u64| {
        let t = clock.after(secs);
        Now { mono: t.mono, wall: t.wall + Duration::from_secs(86_400) }
    };
    assert_eq!(d.on_tick(stepped(10)), Outcome::Wait(clock.after(60).mono), "no mass timeout");
    assert_eq!(msg(&mut d, b"offline", stepped(20)), Outcome::Wait(clock.after(50).mono));
    assert_eq!(d.on_tick(stepped(49)), Outcome::Wait(clock.after(50).mono));
}

/// Guards the footprint of a large fleet: a million devices cost about
/// this many bytes each (plus their box and table slot), and every field
/// added here is paid a million times.
#[test]
fn a_device_stays_compact() {
    assert!(size_of::<Device>() <= 160, "a Device is {} bytes", size_of::<Device>());
}
