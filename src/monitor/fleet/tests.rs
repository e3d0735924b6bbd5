//! The fleet's policies, one per test, with time passed in; and a property
//! test: random messages, restarts from what was saved, broker outages and
//! time jumps never notify two offlines without an online between, never
//! an online without an offline, and a settled device's last notification
//! matches its retained state.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

use super::*;

mod cluster;
mod sparkplug;

const DEVICES: &str = "[[device]]\ntopic = \"plant/{id}/status\"\n";

fn config(rest: &str) -> Arc<Config> {
    let text =
        format!("[broker]\nurl = \"mqtt://b\"\nclient_id = \"w\"\nsettle = \"2s\"\nconfirm_within = \"2s\"\n{rest}");
    Arc::new(Config::parse(Path::new("w.toml"), &text).unwrap_or_else(|e| panic!("{e}")))
}

struct Clock(Now);

impl Clock {
    fn new() -> Clock {
        Clock(Now::read())
    }
    fn at_ms(&self, ms: u64) -> Now {
        let d = Duration::from_millis(ms);
        Now { mono: self.0.mono + d, wall: self.0.wall + d }
    }
}

fn fleet(rest: &str, clock: &Clock) -> Fleet {
    Fleet::new(config(rest), HashMap::new(), Metrics::new(), clock.at_ms(0))
}

/// (device, event) of every event fired, in order.
fn fired(effects: &[Effect]) -> Vec<(String, &'static str)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Fire(event, _) => Some((event.device.clone(), event.kind.as_str())),
            _ => None,
        })
        .collect()
}

fn resyncs(effects: &[Effect]) -> Vec<Vec<String>> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Resync(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

/// The effects but the history's (`history_records_each_transition_with_its_cause` looks at those).
fn drain(fleet: &mut Fleet) -> Vec<Effect> {
    fleet.drain().filter(|e| !matches!(e, Effect::Transition(_))).collect()
}

/// What reaches the disk from `effects` and the fleet's dirty devices,
/// applied to `disk` in order.
fn save_into(disk: &mut HashMap<String, Saved>, effects: &[Effect], fleet: &mut Fleet) {
    for e in effects {
        match e {
            Effect::Fire(_, Some((id, s))) => {
                disk.insert(id.clone(), s.clone());
            }
            Effect::Forget(id) => {
                disk.remove(id);
            }
            _ => {}
        }
    }
    disk.extend(fleet.take_saves(usize::MAX));
}

/// Checks that each device's notifications alternate, offline first;
/// returns each device's last one.
fn alternating(sent: &[Effect]) -> Result<HashMap<String, &'static str>, TestCaseError> {
    let mut last: HashMap<String, &'static str> = HashMap::new();
    for (device, kind) in fired(sent) {
        let before = last.insert(device.clone(), kind);
        match kind {
            "offline" => prop_assert_ne!(before, Some("offline"), "two offlines for {}", device),
            "online" => prop_assert_eq!(before, Some("offline"), "an online for {} without an offline", device),
            _ => {}
        }
    }
    Ok(last)
}

/// Guards the order `/status` pages walk (kept as devices change, not
/// computed per page): walked three at a time, the pages give every device
/// once, by the state it is shown in and then by id, each page's counts
/// the fleet's.
fn order_is_current(f: &Fleet, now: Instant) -> Result<(), TestCaseError> {
    let mut expected: Vec<(u8, String)> =
        f.devices.iter().map(|d| (rank(f.shown_state(d)), d.id.to_string())).collect();
    expected.sort();
    let mut walked = Vec::new();
    let mut query = PageQuery { limit: 3, ..PageQuery::default() };
    loop {
        let page = f.page(&query, now);
        let c = page.counts;
        let shown = |r: u8| expected.iter().filter(|(rank, _)| *rank == r).count();
        prop_assert_eq!((c.offline, c.unknown, c.online), (shown(0), shown(1), shown(2)));
        walked.extend(page.devices.iter().map(|d| (rank(State::parse(d.state).unwrap()), d.id.clone())));
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    prop_assert_eq!(walked, expected);
    Ok(())
}

/// Connects as the session does, the connect's probe back at once.
fn connect(f: &mut Fleet, now: Now) {
    f.on_connected(now, true, false);
    f.on_probed(0, now);
}

/// A live message, each probe it asks for back at once.
fn live(f: &mut Fleet, topic: &str, payload: &[u8], now: Now) {
    f.on_live_message(topic, payload, now);
    answer_probes(f, now);
}

/// Answers the probes asked for so far, at `now`.
fn answer_probes(f: &mut Fleet, now: Now) {
    loop {
        let probes: Vec<u64> =
            f.effects.iter().filter_map(|e| if let Effect::Probe(n) = e { Some(*n) } else { None }).collect();
        if probes.is_empty() {
            return;
        }
        f.effects.retain(|e| !matches!(e, Effect::Probe(_)));
        for n in probes {
            f.on_probed(n, now);
        }
    }
}

/// A fleet connected long ago: settled, its connection confirmed.
fn connected(rest: &str, clock: &Clock) -> Fleet {
    let mut f = fleet(rest, clock);
    connect(&mut f, clock.at_ms(0));
    f.on_tick(clock.at_ms(2_000));
    f.link.confirming = false;
    drain(&mut f);
    f
}

#[test]
fn an_offline_in_the_settle_window_is_held_and_a_replay_ending_online_fires_nothing() {
    let clock = Clock::new();
    let mut f = fleet(DEVICES, &clock);
    connect(&mut f, clock.at_ms(0));
    f.on_message("plant/a/status", b"online", clock.at_ms(10));
    f.on_message("plant/a/status", b"offline", clock.at_ms(20));
    assert_eq!(f.next_wake(), Some(clock.at_ms(2_000).mono));
    f.on_message("plant/a/status", b"online", clock.at_ms(500));
    f.on_tick(clock.at_ms(2_000));
    assert!(fired(&drain(&mut f)).is_empty());
}

#[test]
fn an_offline_that_outlasts_the_settle_window_fires_once_when_it_ends() {
    let clock = Clock::new();
    let mut f = fleet(DEVICES, &clock);
    connect(&mut f, clock.at_ms(0));
    f.on_message("plant/a/status", b"offline", clock.at_ms(20));
    f.on_tick(clock.at_ms(1_999));
    assert!(fired(&drain(&mut f)).is_empty());
    f.on_tick(clock.at_ms(2_000));
    assert_eq!(fired(&drain(&mut f)), [("a".to_string(), "offline")]);
}

/// Guards the loud side of a start that lost its state: an outage
/// decided again from what the broker kept may repeat one sent before the
/// loss under a new id, so each is counted (and said); what fires once the
/// start's picture is confirmed happened since, and is not.
#[test]
fn after_a_lost_state_what_the_start_decides_from_the_broker_is_counted_as_unlinked() {
    let clock = Clock::new();
    let metrics = Metrics::new();
    let mut f = Fleet::new(config(DEVICES), HashMap::new(), Arc::clone(&metrics), clock.at_ms(0));
    f.state_was_lost();
    connect(&mut f, clock.at_ms(0));
    f.on_message("plant/a/status", b"offline", clock.at_ms(10));
    f.on_message("plant/b/status", b"online", clock.at_ms(11));
    f.on_subscribed(clock.at_ms(100));
    live(&mut f, "plant/b/status", b"offline", clock.at_ms(500));
    f.on_tick(clock.at_ms(10_000));
    f.on_tick(clock.at_ms(20_000));
    let mut sent = fired(&drain(&mut f));
    sent.sort();
    assert_eq!(sent, [("a".to_string(), "offline"), ("b".to_string(), "offline")]);
    assert_eq!(metrics.events_unlinked.get(), 1, "b said its outage live: it began after the start");
    assert!(!f.link.confirming, "the start's picture is confirmed");
    live(&mut f, "plant/a/status", b"online", clock.at_ms(25_000));
    live(&mut f, "plant/a/status", b"offline", clock.at_ms(26_000));
    f.on_tick(clock.at_ms(40_000));
    assert_eq!(fired(&drain(&mut f)), [("a".to_string(), "online"), ("a".to_string(), "offline")]);
    assert_eq!(metrics.events_unlinked.get(), 1, "after the start's picture, nothing is counted");
}

#[test]
fn a_fired_event_carries_its_devices_record_for_the_same_commit() {
    let clock = Clock::new();
    let mut f = connected(DEVICES, &clock);
    f.on_message("plant/a/status", b"offline", clock.at_ms(3_000));
    let effects = drain(&mut f);
    let [Effect::Fire(event, Some((id, record)))] = effects.as_slice() else { panic!("{effects:?}") };
    assert_eq!((id.as_str(), record.alerted, record.state), ("a", true, State::Offline));
    assert_eq!(&*event.actions, ["log".to_string()]);
}

#[test]
fn only_the_known_devices_a_replay_missed_are_reread() {
    let clock = Clock::new();
    let saved: HashMap<String, Saved> = ["a", "b", "c"]
        .iter()
        .map(|id| {
            let s = Saved {
                topic: format!("plant/{id}/status"),
                state: State::Online,
                since: None,
                offline_since: None,
                alerted: false,
                seq: None,
            };
            (id.to_string(), s)
        })
        .collect();
    let mut f = Fleet::new(config(DEVICES), saved, Metrics::new(), clock.at_ms(0));
    connect(&mut f, clock.at_ms(0));
    f.on_message("plant/a/status", b"online", clock.at_ms(10));
    f.on_subscribed(clock.at_ms(100));
    f.on_message("plant/c/status", b"offline", clock.at_ms(200));
    assert_eq!(f.next_wake(), Some(clock.at_ms(2_000).mono), "settle, then the replay check");
    f.on_tick(clock.at_ms(2_100));
    let effects = drain(&mut f);
    assert_eq!(resyncs(&effects), [vec!["plant/b/status".to_string()]]);
    assert_eq!(fired(&effects), [("c".to_string(), "offline")]);
    f.on_tick(clock.at_ms(60_000));
    assert!(resyncs(&drain(&mut f)).is_empty(), "once per connect");
}

#[test]
fn a_few_offlines_reread_nothing_and_a_storm_rereads_only_devices_not_known_offline() {
    let clock = Clock::new();
    let mut f = connected(DEVICES, &clock);
    for i in 0..60 {
        f.on_message(&format!("plant/d{i}/status"), b"offline", clock.at_ms(3_000 + i));
    }
    f.on_tick(clock.at_ms(10_000));
    assert!(resyncs(&drain(&mut f)).is_empty(), "60 offlines cannot overflow a broker queue");
    f.on_message("plant/up/status", b"online", clock.at_ms(10_000));
    for i in 0..BURST_SIZE as u64 {
        f.on_message(&format!("plant/s{i}/status"), b"offline", clock.at_ms(20_000 + i));
    }
    drain(&mut f);
    f.on_tick(clock.at_ms(20_000 + BURST_SIZE as u64 + RESYNC_AFTER_BURST.as_millis() as u64));
    assert_eq!(resyncs(&drain(&mut f)), [vec!["plant/up/status".to_string()]]);
}

#[test]
fn broker_down_fires_once_past_the_alert_delay_and_broker_up_on_return() {
    let clock = Clock::new();
    let rest = format!("broker_alert_after = \"5s\"\nactions = [\"log\"]\n{DEVICES}");
    let mut f = fleet(&rest, &clock);
    connect(&mut f, clock.at_ms(0));
    f.on_disconnected(clock.at_ms(10_000));
    assert_eq!(f.next_wake(), Some(clock.at_ms(15_000).mono));
    f.on_tick(clock.at_ms(14_999));
    assert!(fired(&drain(&mut f)).is_empty());
    f.on_tick(clock.at_ms(15_000));
    f.on_tick(clock.at_ms(18_000));
    assert_eq!(fired(&drain(&mut f)), [("w".to_string(), "broker_down")]);
    connect(&mut f, clock.at_ms(19_000));
    f.on_tick(clock.at_ms(23_999));
    assert!(fired(&drain(&mut f)).is_empty(), "up only once the connection lasts");
    f.on_tick(clock.at_ms(24_000));
    let effects = drain(&mut f);
    let [Effect::Fire(up, None)] = effects.as_slice() else { panic!("{effects:?}") };
    assert_eq!((up.kind, up.offline_for), (EventKind::BrokerUp, Some(Duration::from_secs(9))));
}

#[test]
fn connections_that_die_young_do_not_end_the_outage() {
    let clock = Clock::new();
    let rest = format!("broker_alert_after = \"5s\"\nactions = [\"log\"]\n{DEVICES}");
    let mut f = fleet(&rest, &clock);
    // Accepted and dropped again every second (another client with our id).
    for s in 0..8u64 {
        connect(&mut f, clock.at_ms(s * 1_000));
        f.on_tick(clock.at_ms(s * 1_000 + 100));
        f.on_disconnected(clock.at_ms(s * 1_000 + 500));
        f.on_tick(clock.at_ms(s * 1_000 + 600));
    }
    assert_eq!(fired(&drain(&mut f)), [("w".to_string(), "broker_down")], "down after 5 s, never up");
}

#[test]
fn two_short_outages_with_a_young_connection_between_them_are_no_broker_down() {
    let clock = Clock::new();
    let rest = format!("broker_alert_after = \"2s\"\nactions = [\"log\"]\n{DEVICES}");
    let mut f = fleet(&rest, &clock);
    connect(&mut f, clock.at_ms(0));
    f.on_tick(clock.at_ms(10_000));
    // Down 1.84 s, up 3 s (young), down 0.81 s, then up for good.
    f.on_disconnected(clock.at_ms(10_000));
    f.on_tick(clock.at_ms(11_000));
    connect(&mut f, clock.at_ms(11_840));
    f.on_disconnected(clock.at_ms(14_840));
    f.on_tick(clock.at_ms(15_000));
    connect(&mut f, clock.at_ms(15_650));
    f.on_tick(clock.at_ms(30_000));
    assert!(fired(&drain(&mut f)).is_empty(), "each outage was shorter than broker_alert_after");
    // One that lasts: down, then up with its own length.
    f.on_disconnected(clock.at_ms(40_000));
    f.on_tick(clock.at_ms(42_000));
    connect(&mut f, clock.at_ms(43_000));
    f.on_tick(clock.at_ms(48_000));
    let effects = drain(&mut f);
    let kinds: Vec<(EventKind, Option<Duration>)> = effects
        .iter()
        .filter_map(|e| if let Effect::Fire(ev, _) = e { Some((ev.kind, ev.offline_for)) } else { None })
        .collect();
    assert_eq!(kinds, [(EventKind::BrokerDown, None), (EventKind::BrokerUp, Some(Duration::from_secs(3)))]);
}

#[test]
fn no_device_is_declared_offline_while_the_broker_is_unreachable() {
    let clock = Clock::new();
    let rest = "[[device]]\ntopic = \"plant/{id}/status\"\nheartbeat_timeout = \"5s\"\n";
    let mut f = connected(rest, &clock);
    f.on_message("plant/a/status", b"online", clock.at_ms(2_000));
    f.on_disconnected(clock.at_ms(3_000));
    f.on_tick(clock.at_ms(60_000));
    assert!(fired(&drain(&mut f)).is_empty());
    connect(&mut f, clock.at_ms(60_000));
    f.on_tick(clock.at_ms(64_000));
    assert!(fired(&drain(&mut f)).is_empty(), "a fresh heartbeat clock after the outage");
    f.on_tick(clock.at_ms(65_000));
    assert_eq!(fired(&drain(&mut f)), [("a".to_string(), "offline")]);
}

#[test]
fn a_device_restored_from_disk_gets_a_heartbeat_clock_without_publishing_again() {
    let clock = Clock::new();
    let rest = "[[device]]\ntopic = \"plant/{id}/status\"\nheartbeat_timeout = \"5s\"\n";
    let saved = HashMap::from([(
        "a".to_string(),
        Saved {
            topic: "plant/a/status".into(),
            state: State::Online,
            since: None,
            offline_since: None,
            alerted: false,
            seq: None,
        },
    )]);
    let mut f = Fleet::new(config(rest), saved, Metrics::new(), clock.at_ms(0));
    connect(&mut f, clock.at_ms(0));
    f.on_tick(clock.at_ms(5_000));
    assert_eq!(fired(&drain(&mut f)), [("a".to_string(), "offline")]);
}

#[test]
fn grace_holds_an_offline_and_its_record_is_saved_meanwhile() {
    let clock = Clock::new();
    let mut f = connected("[defaults]\ngrace = \"10s\"\n[[device]]\ntopic = \"plant/{id}/status\"\n", &clock);
    f.on_message("plant/a/status", b"offline", clock.at_ms(3_000));
    let effects = drain(&mut f);
    assert!(fired(&effects).is_empty());
    let saves = f.take_saves(10);
    assert_eq!((saves.len(), saves[0].1.state), (1, State::Offline), "saved, though no event fired");
    assert!(!f.has_saves());
    f.on_tick(clock.at_ms(13_000));
    assert_eq!(fired(&drain(&mut f)), [("a".to_string(), "offline")]);
}

#[test]
fn actions_not_run_on_a_kind_are_not_owed_it() {
    let clock = Clock::new();
    let rest = "[action.page]\ntype = \"log\"\non = [\"offline\"]\n\
                [[device]]\ntopic = \"plant/{id}/status\"\nactions = [\"log\", \"page\"]\n";
    let mut f = connected(rest, &clock);
    f.on_message("plant/a/status", b"offline", clock.at_ms(3_000));
    f.on_message("plant/a/status", b"online", clock.at_ms(4_000));
    let actions: Vec<Vec<String>> = drain(&mut f)
        .into_iter()
        .filter_map(|e| match e {
            Effect::Fire(event, _) => Some(event.actions.to_vec()),
            _ => None,
        })
        .collect();
    assert_eq!(actions, [vec!["log".to_string(), "page".to_string()], vec!["log".to_string()]]);
}

#[test]
fn a_reload_forgets_removed_devices_on_disk_and_keeps_the_others() {
    let clock = Clock::new();
    let two = "[[device]]\nid = \"a\"\ntopic = \"x/a\"\n[[device]]\nid = \"b\"\ntopic = \"x/b\"\n";
    let mut f = connected(two, &clock);
    f.on_message("x/a", b"offline", clock.at_ms(3_000));
    drain(&mut f);
    f.reload(config("[[device]]\nid = \"a\"\ntopic = \"x/a\"\n"));
    let effects = drain(&mut f);
    assert!(effects.iter().any(|e| matches!(e, Effect::Forget(id) if id == "b")));
    assert!(matches!(effects.last(), Some(Effect::Reload(_))));
    f.on_message("x/a", b"online", clock.at_ms(4_000));
    assert_eq!(fired(&drain(&mut f)), [("a".to_string(), "online")], "the open alert survived the reload");
}

#[test]
fn saved_devices_no_longer_configured_are_forgotten_on_disk() {
    let clock = Clock::new();
    let saved = HashMap::from([(
        "gone".to_string(),
        Saved {
            topic: "old/gone".into(),
            state: State::Online,
            since: None,
            offline_since: None,
            alerted: false,
            seq: None,
        },
    )]);
    let mut f = Fleet::new(config(DEVICES), saved, Metrics::new(), clock.at_ms(0));
    assert!(matches!(drain(&mut f).as_slice(), [Effect::Forget(id)] if id == "gone"));
}

/// One step of the property test.
#[derive(Debug, Clone)]
enum Step {
    /// Device `n` says online (true) or offline (false), and the broker
    /// keeps that as its retained state.
    Say(u8, bool),
    /// Time passes.
    Wait(u32),
    /// The broker link drops and comes back; the broker replays what it
    /// retains, possibly cut short after `n` messages.
    Reconnect(u8),
    /// The daemon dies and starts again from what it saved; the replay
    /// may be cut short after `n` messages.
    Restart(u8),
    /// The shell hands the dirty records to the writer.
    Save,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0u8..4, any::<bool>()).prop_map(|(n, up)| Step::Say(n, up)),
        3 => (0u32..20_000).prop_map(Step::Wait),
        1 => (0u8..5).prop_map(Step::Reconnect),
        1 => (0u8..5).prop_map(Step::Restart),
        2 => Just(Step::Save),
    ]
}

/// Replays `retained` (cut after `cut` messages), acknowledges the
/// subscriptions, and answers the re-read the fleet asks for in full.
fn replay(f: &mut Fleet, retained: &BTreeMap<u8, bool>, cut: u8, clock: &Clock, t: &mut u64, sent: &mut Vec<Effect>) {
    connect(f, clock.at_ms(*t));
    for (n, up) in retained.iter().take(cut as usize) {
        *t += 1;
        f.on_message(&format!("plant/d{n}/status"), if *up { b"online" } else { b"offline" }, clock.at_ms(*t));
    }
    f.on_subscribed(clock.at_ms(*t));
    *t += 3_000;
    f.on_tick(clock.at_ms(*t));
    let effects: Vec<Effect> = f.drain().collect();
    for topics in resyncs(&effects) {
        for topic in topics {
            let n: u8 = topic.trim_start_matches("plant/d").trim_end_matches("/status").parse().unwrap();
            if let Some(up) = retained.get(&n) {
                *t += 1;
                f.on_message(&topic, if *up { b"online" } else { b"offline" }, clock.at_ms(*t));
            }
        }
    }
    sent.extend(effects);
    sent.extend(f.drain());
}

proptest! {
    #[test]
    fn notifications_alternate_and_end_where_the_devices_are(steps in prop::collection::vec(step(), 1..60)) {
        let clock = Clock::new();
        let mut t = 0u64;
        let mut retained: BTreeMap<u8, bool> = BTreeMap::new();
        let mut disk: HashMap<String, Saved> = HashMap::new();
        let clean = || Fleet::new(config(DEVICES), HashMap::new(), Metrics::new(), Clock::new().at_ms(0));
        let mut sent: Vec<Effect> = Vec::new();
        let mut f = Fleet::new(config(DEVICES), HashMap::new(), Metrics::new(), clock.at_ms(0));
        replay(&mut f, &retained, u8::MAX, &clock, &mut t, &mut sent);
        for step in steps {
            match step {
                Step::Say(n, up) => {
                    retained.insert(n, up);
                    t += 1;
                    f.on_message(&format!("plant/d{n}/status"), if up { b"online" } else { b"offline" }, clock.at_ms(t));
                }
                Step::Wait(ms) => {
                    t += u64::from(ms);
                    f.on_tick(clock.at_ms(t));
                }
                Step::Reconnect(cut) => {
                    t += 1;
                    f.on_disconnected(clock.at_ms(t));
                    replay(&mut f, &retained, cut, &clock, &mut t, &mut sent);
                }
                Step::Restart(cut) => {
                    // Every decided event was committed with its record
                    // (the writer commits before anything is sent); dirty
                    // records not yet saved are lost with the process.
                    let effects: Vec<Effect> = f.drain().collect();
                    save_into(&mut disk, &effects, &mut clean());
                    sent.extend(effects);
                    f = Fleet::new(config(DEVICES), disk.clone(), Metrics::new(), clock.at_ms(t));
                    replay(&mut f, &retained, cut, &clock, &mut t, &mut sent);
                }
                Step::Save => {
                    let effects: Vec<Effect> = f.drain().collect();
                    save_into(&mut disk, &effects, &mut f);
                    sent.extend(effects);
                }
            }
            let effects: Vec<Effect> = f.drain().collect();
            save_into(&mut disk, &effects, &mut clean());
            sent.extend(effects);
        }
        t += 10_000;
        f.on_tick(clock.at_ms(t));
        sent.extend(f.drain());
        let last = alternating(&sent)?;
        order_is_current(&f, clock.at_ms(t).mono)?;
        for (n, up) in &retained {
            let notified = last.get(&format!("d{n}")).copied().unwrap_or("online");
            prop_assert_eq!(notified, if *up { "online" } else { "offline" }, "device d{} ends notified wrong", n);
        }
    }
}

#[test]
fn status_pages_go_offline_first_then_by_id_and_cover_every_device_once() {
    let clock = Clock::new();
    let mut f = connected(DEVICES, &clock);
    for (i, payload) in ["online", "offline", "junk", "online", "offline"].iter().cycle().take(23).enumerate() {
        f.on_message(&format!("plant/d{i:02}/status"), payload.as_bytes(), clock.at_ms(3_000));
    }
    let mut seen = Vec::new();
    let mut query = PageQuery { limit: 5, ..PageQuery::default() };
    loop {
        let page = f.page(&query, clock.at_ms(3_000).mono);
        assert!(page.devices.len() <= 5);
        assert_eq!(page.counts.online + page.counts.offline + page.counts.unknown, 23);
        seen.extend(page.devices.iter().map(|d| (rank(State::parse(d.state).unwrap()), d.id.clone())));
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "in order");
    assert_eq!(seen.len(), 23, "each once");
    assert_eq!(seen[0].0, 0, "offline first");
    let offline =
        f.page(&PageQuery { state: Some(State::Offline), limit: 100, ..PageQuery::default() }, clock.at_ms(3_000).mono);
    assert!(offline.devices.iter().all(|d| d.state == "offline") && offline.next.is_none());
}

#[test]
fn new_pattern_devices_past_max_devices_are_refused_and_known_ones_go_on() {
    let clock = Clock::new();
    let rest = "max_devices = 5\n[broker]\nurl = \"mqtt://b\"\nclient_id = \"w\"\nconfirm_within = \"2s\"\n\
                [[device]]\nid = \"pump\"\ntopic = \"x/pump\"\n\
                [[device]]\ntopic = \"a/{id}/status\"\nmax_devices = 2\n\
                [[device]]\ntopic = \"b/{id}/status\"\n";
    let config = Arc::new(Config::parse(Path::new("w.toml"), rest).unwrap_or_else(|e| panic!("{e}")));
    let metrics = Metrics::new();
    let mut f = Fleet::new(config, HashMap::new(), Arc::clone(&metrics), clock.at_ms(0));
    connect(&mut f, clock.at_ms(0));
    for i in 0..4 {
        f.on_message(&format!("a/d{i}/status"), b"online", clock.at_ms(10));
    }
    assert_eq!(f.counts().online, 2, "the pattern's own limit");
    for i in 0..4 {
        f.on_message(&format!("b/e{i}/status"), b"online", clock.at_ms(10));
    }
    assert_eq!(f.counts().online, 5, "the total: b past its share into the room a leaves");
    assert_eq!(f.counts().unknown, 1, "the exact device, which takes none of it");
    assert_eq!((refused(&metrics, "a/{id}/status"), refused(&metrics, "b/{id}/status")), (2, 1));
    f.on_message("a/d0/status", b"offline", clock.at_ms(3_000));
    f.on_tick(clock.at_ms(3_000));
    assert_eq!(fired(&drain(&mut f)), [("d0".to_string(), "offline")], "a known device is still watched");
}

/// New devices of `pattern` refused so far.
fn refused(metrics: &Metrics, pattern: &str) -> u64 {
    metrics.devices_refused.get_or_create(&crate::metrics::PatternLabel { pattern: pattern.into() }).get()
}

/// A config with `max_devices = 100` and `rest`.
fn at_most_100(rest: &str) -> Arc<Config> {
    let text = format!(
        "max_devices = 100\n[broker]\nurl = \"mqtt://b\"\nclient_id = \"w\"\nsettle = \"2s\"\nconfirm_within = \"2s\"\n{rest}"
    );
    Arc::new(Config::parse(Path::new("w.toml"), &text).unwrap_or_else(|e| panic!("{e}")))
}

/// Retained `online`s from `n` ids under `prefix` (`prefix-0`…), invented
/// by whoever may publish there.
fn flood(f: &mut Fleet, prefix: &str, n: usize, now: Now) {
    for i in 0..n {
        f.on_message(&format!("{prefix}/{prefix}-{i}/status"), b"online", now);
    }
}

#[test]
fn a_flood_on_one_pattern_leaves_room_for_an_exact_device_and_another_patterns_new_device() {
    let clock = Clock::new();
    let rest = "[[device]]\ntopic = \"fleet/{id}/status\"\n[[device]]\ntopic = \"site/{id}/status\"\n\
                [[device]]\nid = \"pump\"\ntopic = \"x/pump\"\n";
    let metrics = Metrics::new();
    let mut f = Fleet::new(at_most_100(rest), HashMap::new(), Arc::clone(&metrics), clock.at_ms(0));
    connect(&mut f, clock.at_ms(0));
    flood(&mut f, "fleet", 500, clock.at_ms(10));
    f.on_message("x/pump", b"offline", clock.at_ms(3_000));
    f.on_tick(clock.at_ms(3_000));
    assert_eq!(fired(&drain(&mut f)), [("pump".to_string(), "offline")], "the exact device");
    f.on_message("site/boiler/status", b"offline", clock.at_ms(3_000));
    f.on_tick(clock.at_ms(3_000));
    assert_eq!(fired(&drain(&mut f)), [("boiler".to_string(), "offline")], "the other pattern's new device");
    assert_eq!(f.counts().online, 50, "the flooded pattern got its half of the room");
    assert_eq!((refused(&metrics, "fleet/{id}/status"), refused(&metrics, "site/{id}/status")), (450, 0));
}

#[test]
fn a_pattern_may_borrow_the_room_another_patterns_lower_max_devices_leaves_and_no_more() {
    let clock = Clock::new();
    let rest =
        "[[device]]\ntopic = \"fleet/{id}/status\"\n[[device]]\ntopic = \"site/{id}/status\"\nmax_devices = 10\n";
    let metrics = Metrics::new();
    let mut f = Fleet::new(at_most_100(rest), HashMap::new(), Arc::clone(&metrics), clock.at_ms(0));
    connect(&mut f, clock.at_ms(0));
    flood(&mut f, "fleet", 500, clock.at_ms(10));
    assert_eq!(f.counts().online, 90, "all but the 10 the other pattern may take");
    flood(&mut f, "site", 20, clock.at_ms(20));
    assert_eq!(f.counts().online, 100);
    assert_eq!((refused(&metrics, "fleet/{id}/status"), refused(&metrics, "site/{id}/status")), (410, 10));
}

#[test]
fn after_a_flood_a_reload_adds_an_exact_device_and_a_pattern_that_both_find_room() {
    let clock = Clock::new();
    let fleet_only = "[[device]]\ntopic = \"fleet/{id}/status\"\n";
    let mut f = Fleet::new(at_most_100(fleet_only), HashMap::new(), Metrics::new(), clock.at_ms(0));
    connect(&mut f, clock.at_ms(0));
    flood(&mut f, "fleet", 500, clock.at_ms(10));
    assert_eq!(f.counts().online, 100, "alone, the pattern may take all the room");
    f.reload(at_most_100(&format!(
        "{fleet_only}[[device]]\ntopic = \"site/{{id}}/status\"\n[[device]]\nid = \"pump\"\ntopic = \"x/pump\"\n"
    )));
    drain(&mut f);
    f.on_message("x/pump", b"offline", clock.at_ms(3_000));
    f.on_tick(clock.at_ms(3_000));
    assert_eq!(fired(&drain(&mut f)), [("pump".to_string(), "offline")], "the exact device");
    f.on_message("site/boiler/status", b"offline", clock.at_ms(3_000));
    f.on_tick(clock.at_ms(3_000));
    assert_eq!(fired(&drain(&mut f)), [("boiler".to_string(), "offline")], "the new pattern's new device");
    assert_eq!(f.counts().online, 100, "the flooded pattern keeps what it has, and gets no more");
    flood(&mut f, "fleet", 600, clock.at_ms(3_100));
    assert_eq!(f.counts().online, 100);
}

#[test]
fn new_devices_whose_topic_or_id_is_too_long_are_refused_and_counted() {
    let clock = Clock::new();
    let rest = "[broker]\nurl = \"mqtt://b\"\nclient_id = \"w\"\nconfirm_within = \"2s\"\n\
                [[device]]\ntopic = \"a/+/{id}\"\n\
                [[device]]\ntopic = \"b/{id}\"\nid = \"long-prefix-{id}\"\n";
    let config = Arc::new(Config::parse(Path::new("w.toml"), rest).unwrap_or_else(|e| panic!("{e}")));
    let metrics = Metrics::new();
    let mut f = Fleet::new(config, HashMap::new(), Arc::clone(&metrics), clock.at_ms(0));
    connect(&mut f, clock.at_ms(0));
    let at_limit = "x".repeat(crate::topic::MAX_DEVICE_TOPIC - "a//d1".len());
    f.on_message(&format!("a/{at_limit}/d1"), b"online", clock.at_ms(10));
    f.on_message(&format!("a/{at_limit}x/d2"), b"online", clock.at_ms(10));
    let id_at_limit = "y".repeat(crate::topic::MAX_DEVICE_ID - "long-prefix-".len());
    f.on_message(&format!("b/{id_at_limit}"), b"online", clock.at_ms(10));
    f.on_message(&format!("b/{id_at_limit}z"), b"online", clock.at_ms(10));
    assert_eq!(f.counts().online, 2, "each at its limit is watched");
    assert_eq!(metrics.devices_refused_too_long.get(), 2);
    assert_eq!((refused(&metrics, "a/+/{id}"), refused(&metrics, "b/{id}")), (0, 0), "not a max_devices refusal");
}

#[test]
fn status_says_which_offlines_were_notified_and_how_long_a_grace_has_left() {
    let clock = Clock::new();
    let mut f = connected("[defaults]\ngrace = \"10s\"\n[[device]]\ntopic = \"plant/{id}/status\"\n", &clock);
    f.on_message("plant/a/status", b"offline", clock.at_ms(3_000));
    f.on_message("plant/b/status", b"offline", clock.at_ms(3_000));
    f.on_tick(clock.at_ms(13_000));
    f.on_message("plant/c/status", b"offline", clock.at_ms(13_000));
    let all = PageQuery { limit: 10, ..PageQuery::default() };
    let page = f.page(&all, clock.at_ms(14_000).mono);
    assert_eq!((page.counts.offline, page.counts.notified), (3, 2));
    let c = page.devices.iter().find(|d| d.id == "c").expect("listed");
    assert_eq!((c.notified, c.grace_left), (false, Some(Duration::from_secs(9))));
    let a = page.devices.iter().find(|d| d.id == "a").expect("listed");
    assert_eq!((a.notified, a.grace_left), (true, None));

    f.on_message("plant/a/status", b"", clock.at_ms(15_000));
    assert_eq!(f.page(&all, clock.at_ms(15_000).mono).counts.notified, 2, "a cleared state leaves the offline owed");
    f.on_message("plant/a/status", b"online", clock.at_ms(16_000));
    assert_eq!(f.page(&all, clock.at_ms(16_000).mono).counts.notified, 1, "an online resolves it");
}

#[test]
fn status_of_one_device_is_that_device_alone() {
    let clock = Clock::new();
    let mut f = connected(DEVICES, &clock);
    for id in ["a", "b"] {
        f.on_message(&format!("plant/{id}/status"), b"offline", clock.at_ms(3_000));
    }
    let one = PageQuery { device: Some("b".into()), ..PageQuery::default() };
    let page = f.page(&one, clock.at_ms(3_000).mono);
    assert_eq!(page.devices.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["b"]);
    assert_eq!(page.counts.offline, 2, "the counts stay the fleet's");
    let none = PageQuery { device: Some("zz".into()), ..PageQuery::default() };
    assert!(f.page(&none, clock.at_ms(3_000).mono).devices.is_empty());
}

/// Guards the monitor against filtered `/status` pages: `?q=` scanned the
/// whole fleet each page (sixteen clients looping `?q=zzz` delayed a real
/// offline from 21 ms to 0.8 s at 1.2M devices). A page reads at most
/// `SCAN` devices and says where the next one goes on.
#[test]
fn a_filtered_page_reads_a_bounded_part_of_the_fleet_and_goes_on_from_there() {
    let clock = Clock::new();
    let mut f = connected(DEVICES, &clock);
    for i in 0..SCAN + 10 {
        f.on_message(&format!("plant/d{i:06}/status"), b"online", clock.at_ms(3_000));
    }
    f.on_message("plant/zz-last/status", b"online", clock.at_ms(3_000));
    let mut query = PageQuery { contains: Some("zz".into()), limit: 10, ..PageQuery::default() };
    let first = f.page(&query, clock.at_ms(3_000).mono);
    assert!(first.devices.is_empty(), "nothing matched in the part read");
    query.after = Some(first.next.expect("the reading stopped: a next page"));
    let second = f.page(&query, clock.at_ms(3_000).mono);
    let ids: Vec<&str> = second.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!((ids, second.next), (vec!["zz-last"], None));
}

#[test]
fn an_id_filter_ignores_case_in_ascii_and_beyond() {
    assert!(contains_ignoring_case("Kitchen/Floor_Light", "floor_l"));
    assert!(!contains_ignoring_case("kitchen", "zz"));
    assert!(contains_ignoring_case("ANY", ""));
    assert!(contains_ignoring_case("Größe-Ölpumpe", "ölp"));
}

const BRIDGE: &str = "[[device]]\nid = \"bridge\"\ntopic = \"z2m/bridge/state\"\n\
                      [[device]]\ntopic = \"z2m/{id}/availability\"\nparent = \"bridge\"\n";

fn fired_kinds(effects: &[Effect]) -> Vec<(String, EventKind, Option<usize>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Fire(event, _) => Some((event.device.clone(), event.kind, event.children_offline)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_parent_offline_inhibits_its_childrens_offlines_and_says_how_many_it_took_down() {
    let clock = Clock::new();
    let mut f = connected(BRIDGE, &clock);
    for (topic, payload) in
        [("z2m/bridge/state", "online"), ("z2m/a/availability", "online"), ("z2m/b/availability", "online")]
    {
        f.on_message(topic, payload.as_bytes(), clock.at_ms(3_000));
    }
    f.on_message("z2m/bridge/state", b"offline", clock.at_ms(4_000));
    f.on_message("z2m/a/availability", b"offline", clock.at_ms(4_100));
    f.on_tick(clock.at_ms(60_000));
    let effects: Vec<Effect> = f.drain().collect();
    assert_eq!(fired_kinds(&effects), [("bridge".into(), EventKind::Offline, Some(2))], "one alert, for the bridge");
    let page = f.page(&PageQuery { limit: 10, ..PageQuery::default() }, clock.at_ms(60_000).mono);
    assert_eq!(page.counts.offline, 3, "the children are shown offline");
    let b = page.devices.iter().find(|d| d.id == "b").expect("listed");
    assert_eq!((b.state, b.cause.as_deref()), ("offline", Some("parent bridge offline")));
    order_is_current(&f, clock.at_ms(60_000).mono).unwrap();

    // The bridge is back: the children's states are read again; `a` says
    // it is online, `b` stays silent: nothing fires for either.
    f.on_message("z2m/bridge/state", b"online", clock.at_ms(61_000));
    let effects: Vec<Effect> = f.drain().collect();
    assert_eq!(fired_kinds(&effects), [("bridge".into(), EventKind::Online, None)]);
    let reread: Vec<&String> = effects
        .iter()
        .filter_map(|e| if let Effect::Resync(topics) = e { Some(topics) } else { None })
        .flatten()
        .collect();
    assert_eq!(reread.len(), 2, "both children re-read: {reread:?}");
    f.on_message("z2m/a/availability", b"online", clock.at_ms(61_100));
    f.on_tick(clock.at_ms(70_000));
    assert!(fired_kinds(&f.drain().collect::<Vec<_>>()).is_empty());
    order_is_current(&f, clock.at_ms(70_000).mono).unwrap();
}

#[test]
fn a_child_still_offline_once_its_parent_is_back_alerts_as_its_own_outage() {
    let clock = Clock::new();
    let mut f = connected(BRIDGE, &clock);
    f.on_message("z2m/bridge/state", b"online", clock.at_ms(3_000));
    f.on_message("z2m/a/availability", b"online", clock.at_ms(3_000));
    f.on_message("z2m/bridge/state", b"offline", clock.at_ms(4_000));
    f.on_message("z2m/a/availability", b"offline", clock.at_ms(4_100));
    f.on_message("z2m/bridge/state", b"online", clock.at_ms(10_000));
    drain(&mut f);
    f.on_tick(clock.at_ms(20_000));
    let effects: Vec<Effect> = f.drain().collect();
    assert_eq!(fired_kinds(&effects), [("a".into(), EventKind::Offline, None)]);
}

#[test]
fn a_child_that_fails_while_its_parent_is_online_alerts_as_usual() {
    let clock = Clock::new();
    let mut f = connected(BRIDGE, &clock);
    f.on_message("z2m/bridge/state", b"online", clock.at_ms(3_000));
    f.on_message("z2m/a/availability", b"online", clock.at_ms(3_000));
    f.on_message("z2m/a/availability", b"offline", clock.at_ms(4_000));
    let effects: Vec<Effect> = f.drain().collect();
    assert_eq!(fired_kinds(&effects), [("a".into(), EventKind::Offline, None)]);
}

#[test]
fn what_the_broker_queued_counts_only_where_the_replay_is_silent_and_its_offline_waits_for_confirmation() {
    let clock = Clock::new();
    let mut f = fleet(DEVICES, &clock);
    for d in ["a", "b", "c"] {
        f.on_connected(clock.at_ms(0), true, false);
        f.on_message(&format!("plant/{d}/status"), b"online", clock.at_ms(1));
    }
    f.on_disconnected(clock.at_ms(5));
    drain(&mut f);
    f.on_connected(clock.at_ms(10_000), true, false);
    // The session's queue first: an old offline of `a` (its retained state
    // says online: a replay from a store that went back in time), and
    // `b`'s will (not retained: nothing in the replay for it).
    f.on_live_message("plant/a/status", b"offline", clock.at_ms(10_001));
    f.on_live_message("plant/b/status", b"offline", clock.at_ms(10_002));
    f.on_probed(0, clock.at_ms(10_003));
    f.on_message("plant/a/status", b"online", clock.at_ms(10_004));
    f.on_message("plant/c/status", b"online", clock.at_ms(10_005));
    f.on_subscribed(clock.at_ms(10_006));
    f.on_tick(clock.at_ms(11_000));
    assert!(fired(&drain(&mut f)).is_empty(), "nothing before the replay check");
    // The replay check (1 s after the subscriptions, settle at least):
    // confirm_within (2 s) is over, and `b` is still offline.
    f.on_tick(clock.at_ms(12_006));
    let effects = drain(&mut f);
    let late: Vec<(String, bool)> = effects
        .iter()
        .filter_map(|e| if let Effect::Fire(ev, _) = e { Some((ev.device.clone(), ev.seen_late)) } else { None })
        .collect();
    assert_eq!(late, [("b".to_string(), true)], "only b, seen late; a's retained state overrides its queued offline");
}

#[test]
fn a_device_the_queue_spoke_for_is_re_read_when_the_replay_did_not_bring_its_retained_state() {
    let clock = Clock::new();
    let mut f = fleet(DEVICES, &clock);
    f.on_connected(clock.at_ms(0), true, false);
    for d in ["a", "b"] {
        f.on_message(&format!("plant/{d}/status"), b"online", clock.at_ms(1));
    }
    f.on_disconnected(clock.at_ms(5));
    drain(&mut f);
    // A full queue for our session: it holds `a`'s online from while we
    // were away and dropped its will after; `n`, new since, is known from
    // the queue alone; the replay, cut short, brings only `b`.
    f.on_connected(clock.at_ms(10_000), true, false);
    f.on_live_message("plant/a/status", b"online", clock.at_ms(10_001));
    f.on_live_message("plant/n/status", b"online", clock.at_ms(10_001));
    f.on_probed(0, clock.at_ms(10_002));
    f.on_message("plant/b/status", b"online", clock.at_ms(10_003));
    f.on_subscribed(clock.at_ms(10_004));
    f.on_tick(clock.at_ms(12_004));
    let mut reread = resyncs(&drain(&mut f)).concat();
    reread.sort();
    assert_eq!(reread, ["plant/a/status", "plant/n/status"]);
    // The re-read brings its retained will.
    f.on_message("plant/a/status", b"offline", clock.at_ms(12_100));
    f.on_tick(clock.at_ms(12_100));
    assert_eq!(fired(&drain(&mut f)), [("a".to_string(), "offline")]);
}

#[test]
fn a_live_offline_fires_when_its_probe_is_back_and_waits_after_the_connect_when_the_link_went_first() {
    let clock = Clock::new();
    let mut f = connected(DEVICES, &clock);
    for d in ["a", "b"] {
        live(&mut f, &format!("plant/{d}/status"), b"online", clock.at_ms(3_000));
    }
    f.on_live_message("plant/a/status", b"offline", clock.at_ms(4_000));
    let effects = drain(&mut f);
    assert!(matches!(effects.as_slice(), [Effect::Probe(1)]), "{effects:?}");
    f.on_probed(1, clock.at_ms(4_001));
    assert_eq!(fired(&drain(&mut f)), [("a".to_string(), "offline")]);
    // A broker shutting down: the will comes, the probe does not, the link goes.
    f.on_live_message("plant/b/status", b"offline", clock.at_ms(5_000));
    assert!(matches!(drain(&mut f).as_slice(), [Effect::Probe(2)]));
    f.on_disconnected(clock.at_ms(5_001));
    f.on_tick(clock.at_ms(9_000));
    connect(&mut f, clock.at_ms(10_000));
    f.on_tick(clock.at_ms(11_000));
    assert!(fired(&drain(&mut f)).is_empty(), "held for confirm_within after the connect");
    // b reconnects: a flap of the broker's making, nothing to tell.
    live(&mut f, "plant/b/status", b"online", clock.at_ms(11_500));
    f.on_tick(clock.at_ms(20_000));
    assert!(fired(&drain(&mut f)).is_empty());
}

/// Guards flaps shorter than the probe's round trip (and the backlog a
/// frozen instance reads at once when it thaws): the device's own word
/// after its will proves the broker served, so both transitions fire.
#[test]
fn a_device_back_before_its_offlines_probe_returns_fires_both_unless_its_grace_runs() {
    let clock = Clock::new();
    let mut f = connected(&format!("[defaults]\ngrace = \"0s\"\n{DEVICES}"), &clock);
    live(&mut f, "plant/a/status", b"online", clock.at_ms(3_000));
    f.on_live_message("plant/a/status", b"offline", clock.at_ms(4_000));
    f.on_live_message("plant/a/status", b"online", clock.at_ms(4_001));
    assert_eq!(fired(&drain(&mut f)), [("a".to_string(), "offline"), ("a".to_string(), "online")]);
    assert!(!f.deciding(), "nothing waits for the probe any more");
    // With a grace still running, back within it is a flap.
    let mut f = connected(&format!("[defaults]\ngrace = \"5s\"\n{DEVICES}"), &clock);
    live(&mut f, "plant/a/status", b"online", clock.at_ms(3_000));
    f.on_live_message("plant/a/status", b"offline", clock.at_ms(4_000));
    f.on_live_message("plant/a/status", b"online", clock.at_ms(4_001));
    answer_probes(&mut f, clock.at_ms(4_002));
    f.on_tick(clock.at_ms(20_000));
    assert!(fired(&drain(&mut f)).is_empty());
}

#[test]
fn a_connect_probe_that_never_comes_back_lets_live_messages_through_after_its_wait() {
    let clock = Clock::new();
    let metrics = Metrics::new();
    let mut f = Fleet::new(config(DEVICES), HashMap::new(), Arc::clone(&metrics), clock.at_ms(0));
    f.on_connected(clock.at_ms(0), true, false);
    f.on_message("plant/a/status", b"online", clock.at_ms(1));
    f.on_subscribed(clock.at_ms(2));
    let wait = confirm::PROBE_WAIT.as_millis() as u64;
    f.on_tick(clock.at_ms(wait));
    assert_eq!(metrics.probes_overdue.get(), 1, "the connect's probe");
    // Live from now on: a will waits for its own probe, which is refused
    // too, and fires when that one is overdue.
    f.on_live_message("plant/a/status", b"offline", clock.at_ms(wait + 100));
    let effects = drain(&mut f);
    assert!(effects.iter().any(|e| matches!(e, Effect::Probe(1))), "{effects:?}");
    f.on_tick(clock.at_ms(2 * wait + 100));
    assert_eq!(fired(&drain(&mut f)), [("a".to_string(), "offline")]);
}

#[test]
fn an_offline_saved_before_it_was_notified_fires_after_the_next_connect_unless_the_device_is_back() {
    let clock = Clock::new();
    let mut f = connected(DEVICES, &clock);
    for d in ["a", "b"] {
        live(&mut f, &format!("plant/{d}/status"), b"online", clock.at_ms(3_000));
        // Seen offline; killed before the probe was back.
        f.on_live_message(&format!("plant/{d}/status"), b"offline", clock.at_ms(4_000));
    }
    let mut disk = HashMap::new();
    save_into(&mut disk, &drain(&mut f), &mut f);
    assert!(disk.values().all(|s| s.state == State::Offline && !s.alerted));
    let mut f = Fleet::new(config(DEVICES), disk, Metrics::new(), clock.at_ms(10_000));
    connect(&mut f, clock.at_ms(10_000));
    // `b` says it is back; `a` says nothing (its will is not retained).
    live(&mut f, "plant/b/status", b"online", clock.at_ms(10_500));
    f.on_tick(clock.at_ms(11_000));
    assert!(fired(&drain(&mut f)).is_empty(), "held until confirm_within");
    f.on_tick(clock.at_ms(12_000));
    assert_eq!(fired(&drain(&mut f)), [("a".to_string(), "offline")]);
}

#[test]
fn a_retained_status_that_vanishes_is_unconfirmed_then_not_seen() {
    let clock = Clock::new();
    let mut f = connected(DEVICES, &clock);
    f.on_message("plant/a/status", b"online", clock.at_ms(3_000));
    // An MQTT 5 will whose expiry passed, or a topic cleared by hand.
    f.on_message("plant/a/status", b"", clock.at_ms(4_000));
    let view =
        |f: &Fleet, ms| f.page(&PageQuery { device: Some("a".into()), ..PageQuery::default() }, clock.at_ms(ms).mono);
    let shown = view(&f, 4_000).devices[0].clone();
    assert_eq!((shown.state, shown.confirmed), ("unknown", false));
    f.on_tick(clock.at_ms(5_000));
    assert!(fired(&drain(&mut f)).is_empty());
    f.on_tick(clock.at_ms(6_000));
    let effects = drain(&mut f);
    let [Effect::Fire(event, _)] = effects.as_slice() else { panic!("{effects:?}") };
    assert_eq!((event.device.as_str(), event.payload.as_str()), ("a", crate::device::NOT_SEEN));
    live(&mut f, "plant/a/status", b"online", clock.at_ms(7_000));
    assert_eq!(fired(&drain(&mut f)), [("a".to_string(), "online")]);
}

#[test]
fn an_overdue_probe_with_the_link_up_fires_what_waited() {
    let clock = Clock::new();
    let metrics = Metrics::new();
    let mut f = Fleet::new(config(DEVICES), HashMap::new(), Arc::clone(&metrics), clock.at_ms(0));
    connect(&mut f, clock.at_ms(0));
    live(&mut f, "plant/a/status", b"online", clock.at_ms(3_000));
    f.on_live_message("plant/a/status", b"offline", clock.at_ms(4_000));
    drain(&mut f);
    assert_eq!(f.next_wake(), Some(clock.at_ms(4_000).mono + confirm::PROBE_WAIT));
    f.on_tick(clock.at_ms(4_000 + confirm::PROBE_WAIT.as_millis() as u64));
    assert_eq!(fired(&drain(&mut f)), [("a".to_string(), "offline")]);
    assert_eq!(metrics.probes_overdue.get(), 1);
}

#[test]
fn a_device_whose_retained_status_is_gone_after_a_connect_is_not_seen_and_notified_once() {
    let clock = Clock::new();
    let metrics = Metrics::new();
    let rest = format!("{DEVICES}[[device]]\npreset = \"homeassistant\"\n");
    let mut f = Fleet::new(config(&rest), HashMap::new(), Arc::clone(&metrics), clock.at_ms(0));
    connect(&mut f, clock.at_ms(0));
    for d in ["a", "b"] {
        f.on_message(&format!("plant/{d}/status"), b"online", clock.at_ms(1));
    }
    live(&mut f, "homeassistant/status", b"online", clock.at_ms(2));
    f.on_disconnected(clock.at_ms(5_000));
    drain(&mut f);
    // The broker lost its store: only `a` says it is there.
    connect(&mut f, clock.at_ms(10_000));
    f.on_subscribed(clock.at_ms(10_100));
    live(&mut f, "plant/a/status", b"online", clock.at_ms(10_200));
    f.on_tick(clock.at_ms(12_100));
    let page = f.page(&PageQuery { limit: 10, ..PageQuery::default() }, clock.at_ms(12_100).mono);
    let unconfirmed: Vec<&str> = page.devices.iter().filter(|d| !d.confirmed).map(|d| d.id.as_str()).collect();
    assert_eq!(unconfirmed, ["b", "homeassistant"]);
    assert!(fired(&drain(&mut f)).is_empty(), "not before confirm_within");
    let at = f.next_wake().expect("a confirm check");
    f.on_tick(Now { mono: at, wall: clock.at_ms(0).wall + (at - clock.at_ms(0).mono) });
    let effects = drain(&mut f);
    let [Effect::Fire(event, _)] = effects.as_slice() else { panic!("{effects:?}") };
    assert_eq!(
        (event.device.as_str(), event.kind, event.payload.as_str()),
        ("b", EventKind::Offline, crate::device::NOT_SEEN)
    );
    assert_eq!(
        metrics.devices_unconfirmed.get(),
        2,
        "Home Assistant's status is not retained: unconfirmed, not notified"
    );
    live(&mut f, "plant/b/status", b"online", clock.at_ms(20_000));
    assert_eq!(fired(&drain(&mut f)), [("b".to_string(), "online")]);
}

#[test]
fn a_device_unconfirmed_at_the_confirm_check_leaves_the_count_when_it_speaks() {
    let clock = Clock::new();
    let metrics = Metrics::new();
    let rest = format!("{DEVICES}[[device]]\npreset = \"homeassistant\"\n");
    let mut f = Fleet::new(config(&rest), HashMap::new(), Arc::clone(&metrics), clock.at_ms(0));
    connect(&mut f, clock.at_ms(0));
    f.on_message("plant/a/status", b"online", clock.at_ms(1));
    live(&mut f, "homeassistant/status", b"online", clock.at_ms(2));
    f.on_disconnected(clock.at_ms(5_000));
    // Home Assistant's status is not retained: the replay cannot bring it.
    connect(&mut f, clock.at_ms(6_000));
    f.on_subscribed(clock.at_ms(6_100));
    f.on_message("plant/a/status", b"online", clock.at_ms(6_200));
    f.on_tick(clock.at_ms(8_100));
    let at = f.next_wake().expect("a confirm check");
    f.on_tick(Now { mono: at, wall: clock.at_ms(0).wall + (at - clock.at_ms(0).mono) });
    assert_eq!(metrics.devices_unconfirmed.get(), 1);

    live(&mut f, "homeassistant/status", b"online", clock.at_ms(20_000));
    assert_eq!(metrics.devices_unconfirmed.get(), 0, "it spoke: confirmed");
    // A device first seen now was never counted.
    live(&mut f, "plant/new/status", b"online", clock.at_ms(21_000));
    assert_eq!(metrics.devices_unconfirmed.get(), 0);
    assert!(fired(&drain(&mut f)).is_empty());
}

#[test]
fn history_records_each_transition_with_its_cause() {
    let clock = Clock::new();
    let mut f = connected(
        "[history]\nkeep = \"1d\"\n[[device]]\nid = \"a\"\ntopic = \"plant/a/status\"\nheartbeat_timeout = \"10s\"\n",
        &clock,
    );
    f.on_message("plant/a/status", b"online", clock.at_ms(3_000));
    f.on_message("plant/a/status", b"online", clock.at_ms(3_500));
    f.on_tick(clock.at_ms(14_000));
    f.on_message("plant/a/status", b"online", clock.at_ms(20_000));
    f.on_message("plant/a/status", b"offline", clock.at_ms(21_000));
    f.on_message("plant/a/status", b"", clock.at_ms(22_000));
    let entries: Vec<(&str, &str, &str, Option<Duration>)> = f
        .drain()
        .filter_map(|e| match e {
            Effect::Transition(h) => Some((h.from, h.to, h.cause, h.offline_for)),
            _ => None,
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("unknown", "online", "birth", None),
            ("online", "offline", "silence", None),
            ("offline", "online", "birth", Some(Duration::from_secs(6))),
            ("online", "offline", "will", None),
            ("offline", "unknown", "cleared", None),
        ],
        "a repeat is no transition"
    );
}

/// One step of the broker-lifecycle property test.
#[derive(Debug, Clone)]
enum Life {
    /// Device `n` dies (its will) or comes back (its birth), live.
    Flip(u8),
    /// Time passes.
    Wait(u32),
    /// The broker restarts: gracefully (publishing every connected
    /// device's will first) or not; keeping its store or not; devices in
    /// the mask die while it is down.
    Restart { graceful: bool, kept: bool, dying: u8 },
}

fn life() -> impl Strategy<Value = Life> {
    prop_oneof![
        6 => (0u8..5).prop_map(Life::Flip),
        3 => (0u32..8_000).prop_map(Life::Wait),
        2 => (any::<bool>(), any::<bool>(), any::<u8>()).prop_map(|(graceful, kept, dying)| Life::Restart { graceful, kept, dying }),
    ]
}

proptest! {
    /// Against a model of the devices and the broker's store: whatever
    /// the broker's restarts, a device is never notified more outages than
    /// it had, notifications alternate, and each ends where its device is.
    #[test]
    fn broker_restarts_notify_no_outage_that_did_not_happen(steps in prop::collection::vec(life(), 1..40)) {
        const N: u8 = 5;
        let clock = Clock::new();
        let at = |t: u64| clock.at_ms(t);
        let topic = |n: u8| format!("plant/d{n}/status");
        let mut f = Fleet::new(config(DEVICES), HashMap::new(), Metrics::new(), at(0));
        let mut alive = [true; N as usize];
        let mut store: BTreeMap<u8, bool> = (0..N).map(|n| (n, true)).collect();
        let mut deaths = [0usize; N as usize];
        let mut sent: Vec<Effect> = Vec::new();
        connect(&mut f, at(0));
        for n in 0..N {
            f.on_message(&topic(n), b"online", at(1));
        }
        f.on_subscribed(at(2));
        let mut t = 20_000u64;
        f.on_tick(at(t));
        for step in steps {
            match step {
                Life::Flip(n) => {
                    let i = n as usize;
                    alive[i] = !alive[i];
                    deaths[i] += usize::from(!alive[i]);
                    store.insert(n, alive[i]);
                    t += 1;
                    live(&mut f, &topic(n), if alive[i] { b"online" } else { b"offline" }, at(t));
                }
                Life::Wait(ms) => {
                    t += u64::from(ms);
                    f.on_tick(at(t));
                }
                Life::Restart { graceful, kept, dying } => {
                    if graceful {
                        // The wills of every connected device, then the
                        // broker stops reading: no probe comes back.
                        for n in (0..N).filter(|n| alive[*n as usize]) {
                            t += 1;
                            store.insert(n, false);
                            f.on_live_message(&topic(n), b"offline", at(t));
                        }
                    }
                    t += 1;
                    f.on_disconnected(at(t));
                    for n in 0..N {
                        if dying & (1 << n) != 0 && alive[n as usize] {
                            alive[n as usize] = false;
                            deaths[n as usize] += 1;
                        }
                    }
                    if !kept {
                        store.clear();
                    }
                    t += 1_000;
                    f.on_tick(at(t));
                    connect(&mut f, at(t));
                    // The session saw the broker go (it refused a connect).
                    f.broker_restarted(kept, "test", at(t));
                    for (n, up) in store.clone() {
                        t += 1;
                        f.on_message(&topic(n), if up { b"online" } else { b"offline" }, at(t));
                    }
                    f.on_subscribed(at(t));
                    // The living reconnect and say so.
                    for n in (0..N).filter(|n| alive[*n as usize]) {
                        t += 1;
                        store.insert(n, true);
                        live(&mut f, &topic(n), b"online", at(t));
                    }
                }
            }
            sent.extend(f.drain().filter(|e| !matches!(e, Effect::Probe(_))));
        }
        for _ in 0..3 {
            t += 10_000;
            f.on_tick(at(t));
            answer_probes(&mut f, at(t));
        }
        sent.extend(f.drain());
        let last = alternating(&sent)?;
        for n in 0..N {
            let id = format!("d{n}");
            let offlines = fired(&sent).iter().filter(|(d, k)| *d == id && *k == "offline").count();
            prop_assert!(offlines <= deaths[n as usize], "{} notified {} outages for {} deaths", id, offlines, deaths[n as usize]);
            let notified = last.get(&id).copied().unwrap_or("online");
            prop_assert_eq!(notified, if alive[n as usize] { "online" } else { "offline" }, "{} ends notified wrong: {:?}", id, f.page(&PageQuery { device: Some(id.clone()), ..PageQuery::default() }, at(t).mono).devices);
        }
    }
}

/// Guards a thawed instance against a false broker restart: the wills it
/// read from its backlog lost their probes with the frozen connection, and
/// that was taken for a broker publishing wills as it went down (a cluster
/// CI run: the restart's holds then fired an outage the group had said).
#[test]
fn wills_whose_probes_died_while_we_fell_behind_are_no_sign_of_a_restart() {
    for behind in [false, true] {
        let clock = Clock::new();
        let mut f = connected(DEVICES, &clock);
        live(&mut f, "plant/a/status", b"online", clock.at_ms(3_000));
        f.on_live_message("plant/a/status", b"offline", clock.at_ms(4_000));
        f.on_disconnected(clock.at_ms(4_001));
        if behind {
            f.fell_behind();
        }
        f.on_connected(clock.at_ms(6_000), true, false);
        assert_eq!(f.link.restarted, !behind, "behind: {behind}");
    }
}
