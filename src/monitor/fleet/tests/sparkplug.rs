//! Sparkplug B session rules in the fleet, one per test, and a property
//! test: random births, deaths, data, restarts and time jumps never notify
//! two offlines of a node or device without an online between.

use prost::Message as _;

use super::*;
use crate::device::{OVERTAKING_WINDOW, REBIRTH_EVERY};
use crate::monitor::fleet::sparkplug::REBIRTH_ANSWER;
use crate::sparkplug::payload::{Metric, Payload};

const PLANT: &str = "[[sparkplug]]\ngroup = \"plant\"\n";

fn payload(bd_seq: Option<u64>, seq: Option<u64>) -> Vec<u8> {
    let metrics = bd_seq
        .map(|b| Metric { name: Some("bdSeq".into()), datatype: Some(8), long_value: Some(b), ..Metric::default() })
        .into_iter()
        .collect();
    Payload { timestamp: Some(1), metrics, seq }.encode_to_vec()
}

fn nbirth(f: &mut Fleet, node: &str, bd_seq: u64, ms: u64, clock: &Clock) {
    live(f, &format!("spBv1.0/plant/NBIRTH/{node}"), &payload(Some(bd_seq), Some(0)), clock.at_ms(ms));
}

fn ndeath(f: &mut Fleet, node: &str, bd_seq: u64, ms: u64, clock: &Clock) {
    live(f, &format!("spBv1.0/plant/NDEATH/{node}"), &payload(Some(bd_seq), None), clock.at_ms(ms));
}

fn device(f: &mut Fleet, verb: &str, node_device: &str, seq: u64, ms: u64, clock: &Clock) {
    live(f, &format!("spBv1.0/plant/{verb}/{node_device}"), &payload(None, Some(seq)), clock.at_ms(ms));
}

fn rebirths(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Rebirth(topic) => Some(topic.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn births_and_deaths_of_a_node_and_its_device_fire_as_sparkplug_events() {
    let clock = Clock::new();
    let mut f = connected(PLANT, &clock);
    nbirth(&mut f, "press", 0, 3_000, &clock);
    device(&mut f, "DBIRTH", "press/motor", 1, 3_001, &clock);
    device(&mut f, "DDEATH", "press/motor", 2, 3_002, &clock);
    device(&mut f, "DBIRTH", "press/motor", 3, 3_003, &clock);
    let effects = drain(&mut f);
    assert_eq!(fired(&effects), [("plant/press/motor".into(), "offline"), ("plant/press/motor".into(), "online")]);
    let Effect::Fire(event, _) = &effects[0] else { panic!("{effects:?}") };
    assert!(event.sparkplug);
    assert_eq!(event.to_json()["kind"], "sparkplug");
    assert_eq!(event.topic, "spBv1.0/plant/DDEATH/press/motor");
    ndeath(&mut f, "press", 0, 4_000, &clock);
    assert_eq!(fired(&drain(&mut f)), [("plant/press".into(), "offline")]);
    assert_eq!(f.counts().offline, 2, "the node and its device");
}

#[test]
fn a_death_of_an_earlier_session_is_stale() {
    let clock = Clock::new();
    let mut f = connected(PLANT, &clock);
    nbirth(&mut f, "press", 4, 3_000, &clock);
    ndeath(&mut f, "press", 3, 3_100, &clock);
    assert!(fired(&drain(&mut f)).is_empty());
    assert_eq!(f.counts().online, 1);
    ndeath(&mut f, "press", 4, 3_200, &clock);
    assert_eq!(fired(&drain(&mut f)), [("plant/press".into(), "offline")]);
}

#[test]
fn a_death_that_matches_no_birth_is_checked_by_a_rebirth_request_and_a_node_that_does_not_answer_is_offline() {
    // Eclipse Tahu's Python code sends a birth one ahead of its will.
    let clock = Clock::new();
    let mut f = connected(PLANT, &clock);
    nbirth(&mut f, "press", 1, 3_000, &clock);
    ndeath(&mut f, "press", 0, 3_100, &clock);
    let effects = drain(&mut f);
    assert!(fired(&effects).is_empty());
    assert_eq!(rebirths(&effects), ["spBv1.0/plant/NCMD/press"]);
    f.on_tick(clock.at_ms(3_100 + REBIRTH_ANSWER.as_millis() as u64));
    assert_eq!(fired(&drain(&mut f)), [("plant/press".into(), "offline")], "no answer: dead");
    // A live node answers, and nothing fires.
    nbirth(&mut f, "mill", 1, 30_000, &clock);
    ndeath(&mut f, "mill", 0, 30_100, &clock);
    nbirth(&mut f, "mill", 1, 30_200, &clock);
    f.on_tick(clock.at_ms(30_100 + REBIRTH_ANSWER.as_millis() as u64));
    assert!(fired(&drain(&mut f)).is_empty());
}

#[test]
fn a_birth_overtaken_by_its_own_death_does_not_bring_the_node_back() {
    let clock = Clock::new();
    let mut f = connected(PLANT, &clock);
    nbirth(&mut f, "press", 4, 3_000, &clock);
    ndeath(&mut f, "press", 5, 3_100, &clock);
    // Never saw birth 5, but its death came: so did the node's end; and
    // the births of that session or the one before, delivered late, are
    // stale.
    ndeath(&mut f, "press", 4, 3_150, &clock);
    nbirth(&mut f, "press", 5, 3_200, &clock);
    nbirth(&mut f, "press", 4, 3_300, &clock);
    assert_eq!(fired(&drain(&mut f)), [("plant/press".into(), "offline")]);
    assert_eq!(f.counts().offline, 1);
    // A restart that reuses the number, later, is a new life.
    nbirth(&mut f, "press", 5, 3_100 + OVERTAKING_WINDOW.as_millis() as u64, &clock);
    assert_eq!(fired(&drain(&mut f)), [("plant/press".into(), "online")]);
}

#[test]
fn session_numbers_wrap_at_256() {
    let clock = Clock::new();
    let mut f = connected(PLANT, &clock);
    nbirth(&mut f, "press", 254, 3_000, &clock);
    // Session 255's birth was missed; its death is no stale will.
    ndeath(&mut f, "press", 255, 3_100, &clock);
    assert_eq!(fired(&drain(&mut f)), [("plant/press".into(), "offline")]);
    nbirth(&mut f, "press", 0, 3_200, &clock);
    ndeath(&mut f, "press", 255, 3_300, &clock);
    assert_eq!(fired(&drain(&mut f)), [("plant/press".into(), "online")], "255 is before 0");
    ndeath(&mut f, "press", 0, 3_400, &clock);
    assert_eq!(fired(&drain(&mut f)), [("plant/press".into(), "offline")]);
}

#[test]
fn a_node_death_takes_its_devices_offline_with_one_alert_and_a_device_that_does_not_come_back_fires_its_own() {
    let clock = Clock::new();
    let mut f = connected(PLANT, &clock);
    nbirth(&mut f, "press", 0, 3_000, &clock);
    device(&mut f, "DBIRTH", "press/motor", 1, 3_001, &clock);
    device(&mut f, "DBIRTH", "press/pump", 2, 3_002, &clock);
    drain(&mut f);
    ndeath(&mut f, "press", 0, 4_000, &clock);
    let effects = drain(&mut f);
    assert_eq!(fired(&effects), [("plant/press".into(), "offline")]);
    let Effect::Fire(event, _) = &effects.iter().find(|e| matches!(e, Effect::Fire(..))).unwrap() else { panic!() };
    assert_eq!(event.children_offline, Some(2));
    assert_eq!(f.counts().offline, 3);
    let motor = f
        .page(&PageQuery { device: Some("plant/press/motor".into()), ..PageQuery::default() }, clock.at_ms(4_000).mono);
    assert_eq!(motor.devices[0].last_seen, Some(clock.at_ms(3_001).wall), "its last message, not its node's death");
    f.on_tick(clock.at_ms(600_000));
    assert!(fired(&drain(&mut f)).is_empty(), "held while the node is down");
    nbirth(&mut f, "press", 1, 600_000, &clock);
    device(&mut f, "DBIRTH", "press/motor", 1, 600_001, &clock);
    assert_eq!(fired(&drain(&mut f)), [("plant/press".into(), "online")]);
    f.on_tick(clock.at_ms(602_001));
    assert_eq!(fired(&drain(&mut f)), [("plant/press/pump".into(), "offline")], "no DBIRTH after the rebirth");
}

#[test]
fn a_device_birth_while_its_node_is_offline_asks_for_a_rebirth_instead() {
    let clock = Clock::new();
    let mut f = connected(PLANT, &clock);
    nbirth(&mut f, "press", 0, 3_000, &clock);
    ndeath(&mut f, "press", 0, 3_100, &clock);
    drain(&mut f);
    device(&mut f, "DBIRTH", "press/motor", 1, 3_200, &clock);
    let effects = drain(&mut f);
    assert!(fired(&effects).is_empty());
    assert_eq!(rebirths(&effects), ["spBv1.0/plant/NCMD/press"]);
    assert_ne!(
        f.page(
            &PageQuery { device: Some("plant/press/motor".into()), ..PageQuery::default() },
            clock.at_ms(3_200).mono
        )
        .devices[0]
            .state,
        "online"
    );
}

#[test]
fn data_from_an_unknown_node_or_a_gap_in_its_sequence_asks_for_a_rebirth_at_a_bounded_rate() {
    let clock = Clock::new();
    let mut f = connected(PLANT, &clock);
    device(&mut f, "NDATA", "press", 17, 3_000, &clock);
    assert_eq!(rebirths(&drain(&mut f)), ["spBv1.0/plant/NCMD/press"]);
    device(&mut f, "NDATA", "press", 18, 3_100, &clock);
    assert!(rebirths(&drain(&mut f)).is_empty(), "asked already");
    let later = 3_000 + REBIRTH_EVERY.as_millis() as u64;
    nbirth(&mut f, "press", 0, later, &clock);
    device(&mut f, "NDATA", "press", 1, later + 1, &clock);
    assert!(rebirths(&drain(&mut f)).is_empty(), "in sequence");
    device(&mut f, "NDATA", "press", 5, later + 2, &clock);
    assert_eq!(rebirths(&drain(&mut f)), ["spBv1.0/plant/NCMD/press"], "a gap");
    assert!(fired(&drain(&mut f)).is_empty());
}

#[test]
fn after_a_restart_nodes_are_asked_for_a_rebirth_and_one_that_never_answers_is_offline() {
    let clock = Clock::new();
    let mut f = connected(PLANT, &clock);
    nbirth(&mut f, "alive", 0, 3_000, &clock);
    nbirth(&mut f, "gone", 0, 3_000, &clock);
    let mut disk = HashMap::new();
    let effects: Vec<Effect> = f.drain().collect();
    save_into(&mut disk, &effects, &mut f);
    let mut f = Fleet::new(config(PLANT), disk, Metrics::new(), clock.at_ms(10_000));
    connect(&mut f, clock.at_ms(10_000));
    f.on_subscribed(clock.at_ms(10_000));
    f.on_tick(clock.at_ms(12_000));
    let mut asked = rebirths(&drain(&mut f));
    asked.sort();
    assert_eq!(asked, ["spBv1.0/plant/NCMD/alive", "spBv1.0/plant/NCMD/gone"]);
    nbirth(&mut f, "alive", 1, 12_500, &clock);
    f.on_tick(clock.at_ms(12_000 + REBIRTH_ANSWER.as_millis() as u64));
    assert_eq!(fired(&drain(&mut f)), [("plant/gone".into(), "offline")]);
}

#[test]
fn malformed_payloads_are_counted_and_change_nothing() {
    let clock = Clock::new();
    let mut f = connected(PLANT, &clock);
    nbirth(&mut f, "press", 0, 3_000, &clock);
    for bad in [&b"offline"[..], &[0xff, 0xff, 0xff], &payload(Some(0), Some(300))] {
        live(&mut f, "spBv1.0/plant/NDEATH/press", bad, clock.at_ms(3_100));
    }
    assert!(fired(&drain(&mut f)).is_empty());
    assert_eq!(f.counts().online, 1);
    assert_eq!(f.metrics.unrecognized.get(), 3);
}

#[test]
fn only_the_configured_group_and_nodes_are_watched() {
    let clock = Clock::new();
    let mut f = connected("[[sparkplug]]\ngroup = \"plant\"\nedge_nodes = [\"press\"]\ndevices = false\n", &clock);
    nbirth(&mut f, "press", 0, 3_000, &clock);
    nbirth(&mut f, "other", 0, 3_000, &clock);
    device(&mut f, "DBIRTH", "press/motor", 1, 3_001, &clock);
    live(&mut f, "spBv1.0/elsewhere/NBIRTH/press", &payload(Some(0), Some(0)), clock.at_ms(3_002));
    assert_eq!(f.counts().online, 1);
}

#[derive(Debug, Clone)]
enum Heard {
    Birth(u8, u64),
    Death(u8, u64),
    DeviceBirth(u8),
    DeviceDeath(u8),
    Data(u8),
    Wait(u32),
    Restart,
}

fn message() -> impl Strategy<Value = Heard> {
    prop_oneof![
        (0..3u8, 0..4u64).prop_map(|(n, b)| Heard::Birth(n, b)),
        (0..3u8, 0..4u64).prop_map(|(n, b)| Heard::Death(n, b)),
        (0..3u8).prop_map(Heard::DeviceBirth),
        (0..3u8).prop_map(Heard::DeviceDeath),
        (0..3u8).prop_map(Heard::Data),
        (0..20_000u32).prop_map(Heard::Wait),
        Just(Heard::Restart),
    ]
}

proptest! {
    #[test]
    fn sparkplug_notifications_alternate(events in prop::collection::vec(message(), 1..80)) {
        let clock = Clock::new();
        let mut t = 3_000u64;
        let mut disk: HashMap<String, Saved> = HashMap::new();
        let mut f = connected(PLANT, &clock);
        let mut sent: Vec<Effect> = Vec::new();
        let mut seq = [0u64; 3];
        for e in events {
            t += 1;
            match e {
                Heard::Birth(n, b) => {
                    seq[n as usize] = 0;
                    nbirth(&mut f, &format!("n{n}"), b, t, &clock);
                }
                Heard::Death(n, b) => ndeath(&mut f, &format!("n{n}"), b, t, &clock),
                Heard::DeviceBirth(n) | Heard::DeviceDeath(n) | Heard::Data(n) => {
                    seq[n as usize] = (seq[n as usize] + 1) % 256;
                    let (verb, topic) = match e {
                        Heard::DeviceBirth(_) => ("DBIRTH", format!("n{n}/d")),
                        Heard::DeviceDeath(_) => ("DDEATH", format!("n{n}/d")),
                        _ => ("NDATA", format!("n{n}")),
                    };
                    device(&mut f, verb, &topic, seq[n as usize], t, &clock);
                }
                Heard::Wait(ms) => {
                    t += u64::from(ms);
                    f.on_tick(clock.at_ms(t));
                }
                Heard::Restart => {
                    let effects: Vec<Effect> = f.drain().collect();
                    save_into(&mut disk, &effects, &mut f);
                    sent.extend(effects);
                    f = Fleet::new(config(PLANT), disk.clone(), Metrics::new(), clock.at_ms(t));
                    connect(&mut f, clock.at_ms(t));
                    f.on_subscribed(clock.at_ms(t));
                }
            }
            let effects: Vec<Effect> = f.drain().collect();
            save_into(&mut disk, &effects, &mut f);
            sent.extend(effects);
        }
        alternating(&sent)?;
    }
}

#[test]
fn a_death_the_last_run_got_and_did_not_take_in_fires_at_once_flagged_late() {
    let clock = Clock::new();
    let mut f = connected(PLANT, &clock);
    nbirth(&mut f, "press", 0, 3_000, &clock);
    drain(&mut f);
    f.on_unfinished_message("spBv1.0/plant/NDEATH/press", &payload(Some(0), None), clock.at_ms(3_100));
    let effects = drain(&mut f);
    assert_eq!(fired(&effects), [("plant/press".into(), "offline")]);
    let late = effects.iter().any(|e| matches!(e, Effect::Fire(event, _) if event.seen_late));
    assert!(late, "flagged seen_late: {effects:?}");
}
