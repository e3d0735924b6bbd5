//! What a new leader fires at a takeover, given what it decided itself
//! and the group's words on each device.

use super::*;
use crate::cluster::{Told, Words, next_id};

const CLUSTER: &str = "[cluster]\nname = \"p\"\ninstance = \"b\"\n[[device]]\ntopic = \"plant/{id}/status\"\n";

fn words(told: &[(&str, &str, u64, bool)]) -> Words {
    let mut w = Words::default();
    for (event, id, at, done) in told {
        w.learn(Told { event: event.to_string(), id: id.to_string(), at: *at, done: *done });
    }
    w
}

/// A standby that saw `messages` (device, payload) with no grace.
fn standby(clock: &Clock, extra: &str, messages: &[(&str, &str)]) -> Fleet {
    let mut fleet = fleet(&format!("{extra}{CLUSTER}"), clock);
    connect(&mut fleet, clock.at_ms(0));
    fleet.on_subscribed(clock.at_ms(0));
    for (i, (device, payload)) in messages.iter().enumerate() {
        live(&mut fleet, &format!("plant/{device}/status"), payload.as_bytes(), clock.at_ms(10 + i as u64));
    }
    fleet.on_tick(clock.at_ms(5_000));
    drain(&mut fleet);
    fleet
}

fn ids(owed: &[crate::monitor::fleet::cluster::Owed]) -> Vec<(String, &'static str, String)> {
    owed.iter().map(|(e, _)| (e.device.clone(), e.kind.as_str(), e.id.clone())).collect()
}

#[test]
fn an_outage_nobody_decided_fires_its_offline_and_one_notified_fires_nothing() {
    let clock = Clock::new();
    let mut f = standby(&clock, "", &[("a", "online"), ("a", "offline"), ("b", "online"), ("b", "offline")]);
    let b_since = f.devices.get("b").unwrap().offline_since().unwrap();
    let told = HashMap::from([("b".to_string(), words(&[("offline", "b-1", crate::cluster::millis(b_since), true)]))]);
    let owed = f.take_over(&told, &HashSet::new(), HashMap::new(), clock.at_ms(6_000));
    let a_since = f.devices.get("a").unwrap().offline_since().unwrap();
    assert_eq!(ids(&owed), vec![("a".into(), "offline", next_id("p", "a", EventKind::Offline, None, a_since))]);
}

#[test]
fn what_the_old_leader_decided_and_did_not_finish_fires_again_under_its_ids_in_order() {
    let clock = Clock::new();
    let mut f = standby(&clock, "", &[("a", "online"), ("a", "offline"), ("a", "online")]);
    let told =
        HashMap::from([("a".to_string(), words(&[("offline", "a-off", 10, false), ("online", "a-on", 20, false)]))]);
    let owed = f.take_over(&told, &HashSet::new(), HashMap::new(), clock.at_ms(6_000));
    assert_eq!(ids(&owed), vec![("a".into(), "offline", "a-off".into()), ("a".into(), "online", "a-on".into())]);
    assert!(
        f.take_over(&told, &HashSet::from(["a".to_string()]), HashMap::new(), clock.at_ms(6_000)).is_empty(),
        "ours in flight: not again"
    );
}

#[test]
fn a_notified_outage_that_is_over_fires_its_online_chained_to_the_offline() {
    let clock = Clock::new();
    let mut f = standby(&clock, "", &[("a", "online"), ("a", "offline"), ("a", "online")]);
    let told = HashMap::from([("a".to_string(), words(&[("offline", "a-off", 10, true)]))]);
    let owed = f.take_over(&told, &HashSet::new(), HashMap::new(), clock.at_ms(6_000));
    let now = clock.at_ms(6_000).wall;
    assert_eq!(ids(&owed), vec![("a".into(), "online", next_id("p", "a", EventKind::Online, Some("a-off"), now))]);
}

#[test]
fn an_offline_the_old_leader_notified_while_it_waits_out_its_grace_here_is_taken_as_notified() {
    let clock = Clock::new();
    let mut f = fleet(&format!("[defaults]\ngrace = \"10s\"\n{CLUSTER}"), &clock);
    connect(&mut f, clock.at_ms(0));
    f.on_subscribed(clock.at_ms(0));
    live(&mut f, "plant/a/status", b"online", clock.at_ms(10));
    live(&mut f, "plant/a/status", b"offline", clock.at_ms(20));
    drain(&mut f);
    let since = f.devices.get("a").unwrap().offline_since().unwrap();
    let told =
        HashMap::from([("a".to_string(), words(&[("offline", "a-off", crate::cluster::millis(since) + 3, true)]))]);
    assert!(f.take_over(&told, &HashSet::new(), HashMap::new(), clock.at_ms(100)).is_empty());
    f.on_tick(clock.at_ms(20_000));
    assert!(fired(&drain(&mut f)).is_empty(), "its grace no longer fires a second offline");
    assert!(f.devices.get("a").unwrap().notified());
}

#[test]
fn an_outage_the_group_notified_before_this_instance_saw_the_fleet_is_taken_as_that_one() {
    // A restarted standby learns the device offline from the retained
    // state, at its start: it is the outage the group notified earlier, not
    // a recovery and a second outage (as it fired before).
    let clock = Clock::new();
    let mut f = standby(&clock, "", &[("a", "offline")]);
    let earlier = clock.at_ms(0).wall - Duration::from_secs(30);
    let told = HashMap::from([("a".to_string(), words(&[("offline", "a-1", crate::cluster::millis(earlier), true)]))]);
    let owed = f.take_over(&told, &HashSet::new(), HashMap::new(), clock.at_ms(6_000));
    assert_eq!(ids(&owed), vec![], "nothing happened that the group did not notify");
    let device = f.devices.get("a").unwrap();
    assert!(device.notified());
    let since = device.offline_since().map(crate::cluster::millis);
    assert_eq!(since, Some(crate::cluster::millis(earlier)), "the outage dates from the group's moment");
}

#[test]
fn an_outage_this_instance_saw_begin_after_the_group_notified_one_is_a_new_one() {
    // Seen live, long after the group's outage began (the device came back
    // and failed again while nobody led): a recovery and a new outage.
    let clock = Clock::new();
    let mut f = fleet(CLUSTER, &clock);
    connect(&mut f, clock.at_ms(0));
    f.on_subscribed(clock.at_ms(0));
    live(&mut f, "plant/a/status", b"online", clock.at_ms(10));
    live(&mut f, "plant/a/status", b"offline", clock.at_ms(3_000));
    f.on_tick(clock.at_ms(8_000));
    drain(&mut f);
    let told_at = crate::cluster::millis(clock.at_ms(100).wall);
    let told = HashMap::from([("a".to_string(), words(&[("offline", "a-1", told_at, true)]))]);
    let owed = f.take_over(&told, &HashSet::new(), HashMap::new(), clock.at_ms(9_000));
    let kinds: Vec<(&str, &str)> = owed.iter().map(|(e, _)| (e.kind.as_str(), e.payload.as_str())).collect();
    assert_eq!(kinds, vec![("online", crate::monitor::fleet::cluster::CHANGED_SINCE), ("offline", "offline")]);
}

#[test]
fn a_flap_the_group_never_said_fires_as_both_transitions_in_order_with_their_messages() {
    let clock = Clock::new();
    let mut f = standby(&clock, "", &[("a", "online"), ("a", "offline"), ("a", "online")]);
    let told = HashMap::from([("a".to_string(), words(&[("online", "a-on", 5, true)]))]);
    let decided = |kind, payload: &str, at_ms| {
        let mut e = crate::event::test_event(kind, "a");
        e.payload = payload.to_string();
        e.at = clock.at_ms(at_ms).wall;
        e.offline_since = (kind == EventKind::Offline).then_some(e.at);
        e
    };
    let left = HashMap::from([(
        "a".to_string(),
        vec![decided(EventKind::Offline, "offline", 11), decided(EventKind::Online, "online", 12)],
    )]);
    let owed = f.take_over(&told, &HashSet::new(), left, clock.at_ms(6_000));
    let off = next_id("p", "a", EventKind::Offline, Some("a-on"), clock.at_ms(11).wall);
    let on = next_id("p", "a", EventKind::Online, Some(&off), clock.at_ms(12).wall);
    assert_eq!(ids(&owed), vec![("a".into(), "offline", off), ("a".into(), "online", on)]);
    let payloads: Vec<&str> = owed.iter().map(|(e, _)| e.payload.as_str()).collect();
    assert_eq!(payloads, ["offline", "online"], "each with the message it was decided on");
}

#[test]
fn an_outage_this_instance_holds_from_before_the_groups_recovery_is_a_new_one_when_it_takes_over() {
    let clock = Clock::new();
    let mut f = standby(&clock, "", &[("a", "online"), ("a", "offline")]);
    // This instance saw a go offline at 11 ms and notified it; it was away
    // while the group saw a back at 3,000 ms; a is offline again now.
    let back = crate::cluster::millis(clock.at_ms(3_000).wall);
    let told = HashMap::from([("a".to_string(), words(&[("online", "a-on", back, true)]))]);
    let owed = f.take_over(&told, &HashSet::new(), HashMap::new(), clock.at_ms(6_000));
    let now = clock.at_ms(6_000).wall;
    assert_eq!(ids(&owed), vec![("a".into(), "offline", next_id("p", "a", EventKind::Offline, Some("a-on"), now))]);
    assert_eq!(owed[0].0.offline_since, Some(now), "the new outage dates from no earlier than the group's recovery");
    assert_eq!(f.devices.get("a").unwrap().offline_since(), Some(now), "and the device's record says so");
}

#[test]
fn an_offline_held_here_that_the_group_notified_counts_as_notified_and_its_return_is_a_recovery() {
    let clock = Clock::new();
    let mut f = standby(&clock, "[defaults]\ngrace = \"30s\"\n", &[("a", "online")]);
    live(&mut f, "plant/a/status", b"offline", clock.at_ms(6_000));
    assert!(fired(&drain(&mut f)).is_empty(), "held for its grace here");
    let at = crate::cluster::millis(clock.at_ms(5_900).wall);
    f.group_said("a", &Told { event: "offline".into(), id: "a-off".into(), at, done: true }, clock.at_ms(6_100));
    assert!(f.devices.get("a").unwrap().notified());
    live(&mut f, "plant/a/status", b"online", clock.at_ms(7_000));
    assert_eq!(fired(&drain(&mut f)), [("a".to_string(), "online")], "its return is the outage's recovery");
    // An outage that began long after the group's word is not that one.
    live(&mut f, "plant/a/status", b"offline", clock.at_ms(60_000));
    f.group_said("a", &Told { event: "offline".into(), id: "a-off".into(), at, done: true }, clock.at_ms(60_100));
    assert!(!f.devices.get("a").unwrap().notified());
}

#[test]
fn what_a_thawed_leader_left_to_itself_fires_even_with_its_own_transition_still_under_way() {
    let clock = Clock::new();
    let mut f = standby(&clock, "", &[("a", "online"), ("a", "offline"), ("a", "online")]);
    let told = HashMap::from([("a".to_string(), words(&[("online", "a-on", 5, false)]))]);
    let mut later = crate::event::test_event(EventKind::Offline, "a");
    later.at = clock.at_ms(20).wall;
    later.offline_since = Some(later.at);
    let left = HashMap::from([("a".to_string(), vec![later])]);
    let owed = f.take_over(&told, &HashSet::from(["a".to_string()]), left, clock.at_ms(6_000));
    let off = next_id("p", "a", EventKind::Offline, Some("a-on"), clock.at_ms(20).wall);
    assert_eq!(ids(&owed), vec![("a".into(), "offline", off)], "ours under way is not fired again; what came after is");
}

/// Guards a thawed standby's flaps: it reconnects and reads an outage the
/// group notified from the broker's store (late: more than
/// `SAME_TRANSITION` after the group's word), then the device comes back
/// within the confirm window. The stored offline is the group's outage,
/// so the return is a recovery (left to the leader, fired at a takeover),
/// not a flap of a broker restart that notifies nothing.
#[test]
fn an_outage_read_late_from_the_store_that_the_group_notified_is_that_one_and_its_return_a_recovery() {
    let clock = Clock::new();
    let mut f = standby(&clock, "", &[("a", "online")]);
    f.on_disconnected(clock.at_ms(6_000));
    let at = crate::cluster::millis(clock.at_ms(6_500).wall);
    f.on_connected(clock.at_ms(8_000), true, false);
    f.on_probed(0, clock.at_ms(8_000));
    f.on_subscribed(clock.at_ms(8_000));
    f.on_message("plant/a/status", b"offline", clock.at_ms(8_100));
    assert!(fired(&drain(&mut f)).is_empty(), "a stored offline waits for the confirm check");
    f.group_said("a", &Told { event: "offline".into(), id: "a-off".into(), at, done: true }, clock.at_ms(8_110));
    assert!(f.devices.get("a").unwrap().notified(), "the stored offline is the group's outage");
    live(&mut f, "plant/a/status", b"online", clock.at_ms(9_000));
    assert_eq!(fired(&drain(&mut f)), [("a".to_string(), "online")], "its return is the outage's recovery");
    // A stored offline older than the group's word is not that outage's
    // beginning: never taken for it.
    f.on_disconnected(clock.at_ms(20_000));
    f.on_connected(clock.at_ms(21_000), true, false);
    f.on_probed(0, clock.at_ms(21_000));
    f.on_subscribed(clock.at_ms(21_000));
    f.on_message("plant/a/status", b"offline", clock.at_ms(21_100));
    let later = crate::cluster::millis(clock.at_ms(23_000).wall);
    f.group_said(
        "a",
        &Told { event: "offline".into(), id: "a-off-2".into(), at: later, done: true },
        clock.at_ms(21_110),
    );
    assert!(!f.devices.get("a").unwrap().notified());
}
