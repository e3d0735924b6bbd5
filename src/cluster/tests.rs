//! The election against a small model of a broker: retained messages,
//! wills, and each subscriber's messages in the order the broker took them.

use std::collections::{BTreeMap, HashMap, VecDeque};

use proptest::prelude::*;

use super::*;

const NAMES: [&str; 3] = ["a", "b", "c"];

struct Node {
    cluster: Cluster,
    up: bool,
    inbox: VecDeque<(String, Vec<u8>)>,
    /// Epochs this run of the node led at, in order.
    led: Vec<u64>,
    takeovers: usize,
}

#[derive(Default)]
struct Broker {
    retained: BTreeMap<String, Vec<u8>>,
}

struct Group {
    broker: Broker,
    nodes: Vec<Node>,
}

fn settings(instance: &str) -> Settings {
    Settings { name: "plant".into(), instance: instance.into(), host: "h".into() }
}

impl Group {
    fn new(n: usize) -> Group {
        let nodes = NAMES[..n]
            .iter()
            .map(|name| Node {
                cluster: Cluster::new(settings(name), "offline", HashMap::new(), wire::Run::default()),
                up: false,
                inbox: VecDeque::new(),
                led: Vec::new(),
                takeovers: 0,
            })
            .collect();
        Group { broker: Broker::default(), nodes }
    }

    fn publish(&mut self, topic: String, payload: Vec<u8>, retain: bool) {
        if retain {
            self.broker.retained.insert(topic.clone(), payload.clone());
        }
        for node in self.nodes.iter_mut().filter(|n| n.up) {
            node.inbox.push_back((topic.clone(), payload.clone()));
        }
    }

    fn member(i: usize) -> String {
        wire::member_topic("plant", NAMES[i])
    }

    /// Connects node `i` as the session does: birth, subscribe, retained
    /// messages, then the SUBACK.
    fn start(&mut self, i: usize) {
        if self.nodes[i].up {
            return;
        }
        self.publish(Group::member(i), b"online".to_vec(), true);
        let node = &mut self.nodes[i];
        node.up = true;
        node.cluster.on_connected();
        node.inbox = self.broker.retained.iter().map(|(t, p)| (t.clone(), p.clone())).collect();
        node.cluster.on_subscribed();
        self.carry_out(i);
    }

    /// SIGKILL: the broker publishes the will; the process starts anew.
    fn crash(&mut self, i: usize) {
        if !self.nodes[i].up {
            return;
        }
        self.nodes[i].up = false;
        self.nodes[i].inbox.clear();
        self.nodes[i].cluster = Cluster::new(settings(NAMES[i]), "offline", HashMap::new(), wire::Run::default());
        self.nodes[i].led.clear();
        self.publish(Group::member(i), b"offline".to_vec(), true);
    }

    /// A clean stop: release, then our offline.
    fn stop(&mut self, i: usize) {
        if !self.nodes[i].up {
            return;
        }
        self.nodes[i].cluster.stop();
        self.carry_out(i);
        self.crash(i);
    }

    fn deliver(&mut self, i: usize) {
        let Some((topic, payload)) = self.nodes[i].inbox.pop_front() else { return };
        self.nodes[i].cluster.on_message(&topic, &payload);
        self.carry_out(i);
    }

    fn carry_out(&mut self, i: usize) {
        let outputs: Vec<Output> = self.nodes[i].cluster.drain().collect();
        for output in outputs {
            match output {
                Output::Publish { topic, payload, retain } => self.publish(topic, payload, retain),
                Output::TakeOver => {
                    let node = &mut self.nodes[i];
                    node.takeovers += 1;
                    node.led.push(node.cluster.epoch());
                }
                Output::Told(..) | Output::Confirmed(_) | Output::Unconfirmed => {}
            }
        }
    }

    fn settle(&mut self) {
        while let Some(i) = (0..self.nodes.len()).find(|&i| !self.nodes[i].inbox.is_empty()) {
            self.deliver(i);
        }
    }

    fn leaders(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].up && self.nodes[i].cluster.role() == Role::Leader).collect()
    }
}

#[test]
fn the_first_instance_by_name_leads_and_a_standby_takes_over_at_its_will() {
    let mut g = Group::new(3);
    for i in [2, 1, 0] {
        g.start(i);
    }
    g.settle();
    let leaders = g.leaders();
    assert_eq!(leaders.len(), 1, "one leader");
    let first = leaders[0];
    let before = g.nodes[first].led.last().copied().unwrap();
    g.crash(first);
    g.settle();
    let next = g.leaders();
    assert_eq!(next.len(), 1);
    assert_ne!(next[0], first);
    assert_eq!(g.nodes[next[0]].led.last(), Some(&(before + 1)), "the successor leads under the next epoch");
    // The old leader comes back: a standby.
    let takeovers = g.nodes[first].takeovers;
    g.start(first);
    g.settle();
    assert_eq!(g.leaders(), next);
    assert_eq!(g.nodes[first].takeovers, takeovers, "a restarted leader takes nothing over");
}

#[test]
fn a_clean_stop_hands_over_before_the_will() {
    let mut g = Group::new(2);
    g.start(0);
    g.settle();
    g.start(1);
    g.settle();
    assert_eq!(g.leaders(), vec![0]);
    g.nodes[0].cluster.stop();
    g.carry_out(0);
    // The release alone is enough: node 0 is still connected.
    g.settle();
    assert_eq!(g.leaders(), vec![1]);
    assert_eq!(g.nodes[1].cluster.epoch(), 2);
}

#[test]
fn a_claim_left_by_an_earlier_run_is_taken_over_anew() {
    let mut g = Group::new(1);
    g.start(0);
    g.settle();
    assert_eq!(g.nodes[0].cluster.epoch(), 1);
    g.crash(0);
    g.start(0);
    g.settle();
    assert_eq!(g.leaders(), vec![0]);
    assert_eq!(g.nodes[0].cluster.epoch(), 2, "a new run leads under a new epoch");
    assert_eq!(g.nodes[0].led, vec![2]);
}

#[test]
fn two_claims_at_once_resolve_to_the_higher_and_the_loser_stands_down() {
    let mut g = Group::new(2);
    g.start(0);
    g.start(1);
    g.settle();
    let mut a = Cluster::new(settings("a"), "offline", HashMap::new(), wire::Run::default());
    a.on_connected();
    a.on_subscribed();
    let hello = a.drain().next().unwrap();
    let Output::Publish { topic, payload, .. } = hello else { panic!() };
    a.on_message(&wire::member_topic("plant", "a"), b"online");
    a.on_message(&topic, &payload);
    let claim = |who: &str, epoch| serde_json::to_vec(&Claim { instance: who.into(), epoch, released: false }).unwrap();
    a.on_message("willwatch/cluster/plant/leader", &claim("a", 1));
    assert_eq!(a.role(), Role::Leader);
    a.on_message("willwatch/cluster/plant/members/z", b"online");
    a.on_message("willwatch/cluster/plant/leader", &claim("z", 1));
    assert_eq!(a.role(), Role::Standby, "(1, z) beats (1, a)");
    a.on_message("willwatch/cluster/plant/leader", &claim("a", 1));
    assert_eq!(a.role(), Role::Standby, "an older claim changes nothing");
}

#[test]
fn the_last_word_on_each_device_is_kept_and_a_snapshot_replaces_all() {
    let mut c = Cluster::new(settings("b"), "offline", HashMap::new(), wire::Run::default());
    let notice = |what| serde_json::to_vec(&Notice { by: "a".into(), epoch: 1, seq: 1, what }).unwrap();
    let told = |event: &str, id: &str, at, done| Told { event: event.into(), id: id.into(), at, done };
    let say = |c: &mut Cluster, device: &str, t: Told| {
        let what = What::Transitions { transitions: vec![(device.to_string(), t)] };
        c.on_message("willwatch/cluster/plant/notified", &notice(what));
    };
    say(&mut c, "x", told("offline", "x1", 10, false));
    assert!(!c.told()["x"].last().unwrap().done, "decided, not yet done");
    say(&mut c, "x", told("offline", "x1", 10, true));
    assert!(c.told()["x"].last().unwrap().done);
    say(&mut c, "x", told("offline", "x1", 10, false));
    assert!(c.told()["x"].last().unwrap().done, "an older word changes nothing");
    say(&mut c, "x", told("online", "x2", 20, false));
    assert_eq!(c.told()["x"].last().unwrap().id, "x2", "an online not done is kept");
    say(&mut c, "x", told("online", "x2", 20, true));
    assert!(c.told()["x"].last().unwrap().done, "the last word stays: the next id follows from it");
    say(&mut c, "y", told("offline", "y1", 5, true));
    let part = |part, last, devices: &[&str]| What::Snapshot {
        part,
        last,
        told: devices
            .iter()
            .map(|d| {
                let mut words = Words::default();
                words.learn(told("offline", d, 1, true));
                (d.to_string(), words)
            })
            .collect(),
    };
    c.on_message("willwatch/cluster/plant/notified", &notice(part(0, false, &["p"])));
    assert_eq!(c.told().len(), 2, "a snapshot applies whole, at its last part");
    c.on_message("willwatch/cluster/plant/notified", &notice(part(1, true, &["q"])));
    let mut devices: Vec<_> = c.told().keys().cloned().collect();
    devices.sort();
    assert_eq!(devices, vec!["p", "q"]);
    let saved: Vec<Output> = c.drain().collect();
    assert!(saved.contains(&Output::Told("y".into(), Words::default())), "what the snapshot dropped is saved as gone");
}

#[test]
fn the_broker_alert_is_fired_by_whoever_led_when_it_was_lost() {
    let mut g = Group::new(2);
    g.start(0);
    g.start(1);
    g.settle();
    let leader = g.leaders()[0];
    let standby = 1 - leader;
    for i in [0, 1] {
        g.nodes[i].cluster.on_disconnected();
    }
    assert!(g.nodes[leader].cluster.fires(EventKind::BrokerDown));
    assert!(!g.nodes[leader].cluster.fires(EventKind::Offline), "no device event while away");
    assert!(!g.nodes[standby].cluster.fires(EventKind::BrokerDown));
}

#[test]
fn ids_follow_the_transition_and_the_one_before() {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_250);
    let later = t + std::time::Duration::from_millis(7);
    let id = |cluster, kind, previous, at| next_id(cluster, "d", kind, previous, at);
    assert_eq!(
        id("p", EventKind::Offline, Some("x"), t),
        id("p", EventKind::Offline, Some("x"), later),
        "one chain, one id"
    );
    assert_ne!(id("p", EventKind::Offline, Some("x"), t), id("p", EventKind::Offline, Some("y"), t), "another outage");
    assert_ne!(id("p", EventKind::Offline, None, t), id("p", EventKind::Offline, None, later), "no chain: the moment");
    assert_ne!(id("p", EventKind::Offline, Some("x"), t), id("p", EventKind::Online, Some("x"), t));
    assert_ne!(id("p", EventKind::Offline, Some("x"), t), id("q", EventKind::Offline, Some("x"), t));
}

#[derive(Debug, Clone)]
enum Step {
    Deliver(usize),
    Start(usize),
    Crash(usize),
    Stop(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..3usize).prop_map(Step::Deliver),
        2 => (0..3usize).prop_map(Step::Start),
        1 => (0..3usize).prop_map(Step::Crash),
        1 => (0..3usize).prop_map(Step::Stop),
    ]
}

proptest! {
    /// Whatever the order of starts, crashes, clean stops and deliveries:
    /// once the broker has delivered everything, exactly one running
    /// instance leads, under the highest claim, and no run of an instance
    /// leads twice under one epoch or under a lower one.
    #[test]
    fn once_quiet_exactly_one_running_instance_leads(steps in proptest::collection::vec(step(), 1..80)) {
        let mut g = Group::new(3);
        for s in steps {
            match s {
                Step::Deliver(i) => g.deliver(i),
                Step::Start(i) => g.start(i),
                Step::Crash(i) => g.crash(i),
                Step::Stop(i) => g.stop(i),
            }
        }
        g.settle();
        let running = g.nodes.iter().filter(|n| n.up).count();
        let leaders = g.leaders();
        prop_assert_eq!(leaders.len(), running.min(1), "leaders {:?} of {} running", leaders, running);
        if let Some(&l) = leaders.first() {
            let retained: Claim = serde_json::from_slice(&g.broker.retained["willwatch/cluster/plant/leader"]).unwrap();
            prop_assert_eq!(retained.instance.as_str(), NAMES[l]);
            prop_assert!(!retained.released);
        }
        for node in &g.nodes {
            prop_assert!(node.led.windows(2).all(|w| w[0] < w[1]), "epochs led: {:?}", node.led);
        }
    }
}

/// The leader `a` says it notified device `x`'s transition `event`.
fn say(c: &mut Cluster, event: &str, id: &str, at: u64) {
    let told = Told { event: event.into(), id: id.into(), at, done: true };
    let what = What::Transitions { transitions: vec![("x".to_string(), told)] };
    let notice = Notice { by: "a".into(), epoch: 1, seq: 1, what };
    c.on_message("willwatch/cluster/plant/notified", &serde_json::to_vec(&notice).unwrap());
}

/// Device `x`'s transition `kind`, established at `at_ms`.
fn decided(kind: EventKind, at_ms: u64) -> Event {
    let mut e = crate::event::test_event(kind, "x");
    e.at = UNIX_EPOCH + std::time::Duration::from_millis(at_ms);
    e.offline_since = (kind == EventKind::Offline).then_some(e.at);
    e
}

#[test]
fn what_a_standby_left_to_the_leader_is_kept_until_the_group_says_it_or_one_after_it() {
    let mut c = Cluster::new(settings("b"), "offline", HashMap::new(), wire::Run::default());
    let kinds = |c: &mut Cluster| -> Vec<EventKind> {
        let left = c.take_left();
        left.get("x").map_or(Vec::new(), |l| l.iter().map(|e| e.kind).collect())
    };
    // Decided here, then said by the leader: nothing left.
    c.left_to_leader(&decided(EventKind::Offline, 10_000));
    say(&mut c, "offline", "x1", 10_050);
    assert_eq!(kinds(&mut c), []);
    // Said by the leader before this standby decided it: not kept.
    say(&mut c, "online", "x2", 20_000);
    c.left_to_leader(&decided(EventKind::Online, 20_030));
    assert_eq!(kinds(&mut c), []);
    // A flap the leader never said (it was frozen): both kept, in order,
    // until a word covers the first; then the second alone.
    c.left_to_leader(&decided(EventKind::Offline, 30_000));
    c.left_to_leader(&decided(EventKind::Online, 30_500));
    assert_eq!(kinds(&mut c), [EventKind::Offline, EventKind::Online]);
    c.left_to_leader(&decided(EventKind::Offline, 30_000));
    c.left_to_leader(&decided(EventKind::Online, 30_500));
    say(&mut c, "offline", "x3", 30_010);
    assert_eq!(kinds(&mut c), [EventKind::Online]);
    // With nothing left unsaid, a transition of the kind of the group's
    // last word is that one (read late); the broker's events are never
    // kept.
    say(&mut c, "online", "x4", 50_000);
    c.left_to_leader(&decided(EventKind::Online, 58_000));
    c.left_to_leader(&decided(EventKind::BrokerDown, 58_100));
    assert_eq!(kinds(&mut c), []);
    // Behind the group: an offline older than its last word (an online)
    // is one it said before.
    c.left_to_leader(&decided(EventKind::Offline, 45_000));
    assert_eq!(kinds(&mut c), []);
}

#[test]
fn a_flap_faster_than_the_same_transition_window_is_kept_whole() {
    let mut c = Cluster::new(settings("b"), "offline", HashMap::new(), wire::Run::default());
    say(&mut c, "offline", "x1", 10_000);
    // Back and down again within the window of the leader's last word,
    // while the leader says nothing: a new outage, not the said one.
    c.left_to_leader(&decided(EventKind::Online, 10_300));
    c.left_to_leader(&decided(EventKind::Offline, 10_600));
    let left = c.take_left();
    let kinds: Vec<EventKind> = left["x"].iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::Online, EventKind::Offline]);
}

#[test]
fn a_late_done_for_a_transition_already_said_leaves_what_was_decided_since() {
    let mut c = Cluster::new(settings("b"), "offline", HashMap::new(), wire::Run::default());
    let undone = Told { event: "offline".into(), id: "x1".into(), at: 10_000, done: false };
    let notice = |told: Told| {
        let what = What::Transitions { transitions: vec![("x".to_string(), told)] };
        serde_json::to_vec(&Notice { by: "a".into(), epoch: 1, seq: 1, what }).unwrap()
    };
    c.on_message("willwatch/cluster/plant/notified", &notice(undone.clone()));
    // The leader froze before its actions were done; meanwhile a flap.
    c.left_to_leader(&decided(EventKind::Online, 12_000));
    c.left_to_leader(&decided(EventKind::Offline, 13_000));
    // It thaws and says the first offline is done: the flap stays.
    c.on_message("willwatch/cluster/plant/notified", &notice(Told { done: true, ..undone }));
    let left = c.take_left();
    let kinds: Vec<EventKind> = left["x"].iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::Online, EventKind::Offline]);
}

/// Guards the count of what a standby stops keeping: past `LEFT_MAX`
/// unsaid transitions of one device, each new one drops the oldest, and
/// says so (the shell counts it).
#[test]
fn a_standby_keeps_at_most_left_max_unsaid_transitions_of_a_device_and_says_what_it_drops() {
    let mut c = Cluster::new(settings("b"), "offline", HashMap::new(), wire::Run::default());
    let kinds = [EventKind::Offline, EventKind::Online];
    let dropped: Vec<bool> =
        (0..LEFT_MAX + 2).map(|i| c.left_to_leader(&decided(kinds[i % 2], 10_000 + 1_000 * i as u64))).collect();
    assert_eq!(dropped.iter().filter(|d| **d).count(), 2, "{dropped:?}");
    assert!(dropped[..LEFT_MAX].iter().all(|d| !d), "nothing dropped below the limit");
    let left = c.take_left();
    assert_eq!(left["x"].len(), LEFT_MAX);
    assert_eq!(left["x"][0].at, UNIX_EPOCH + std::time::Duration::from_millis(12_000), "the two oldest went");
}
