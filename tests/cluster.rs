//! Active/standby: two and three real instances on one real broker, one
//! webhook receiver. The leader is SIGKILLed, stopped cleanly or frozen
//! (SIGSTOP) at random moments (seeded; the seed is printed) while devices
//! fail and return; every transition must reach the receiver under one id
//! (duplicates of an id are allowed: receivers drop them), none may be
//! missed, failover must take the time the broker's will takes, and an
//! instance that comes back must stand by without firing anything.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::Rng;
use support::once::{Fleet, check_exactly_once, distinct};
use support::receiver::Received;
use support::wait::within;
use support::{Behaviour, Broker, Daemon, Receiver, eventually};

/// Keep-alive of the instances: a frozen leader's will comes after 1.5× it.
const KEEP_ALIVE_S: u64 = 2;

/// An instance's config: the cluster `plant`, devices `fleet/{id}/status`
/// notified to the receiver's webhook.
fn config(broker: &Broker, receiver: &Receiver, instance: &str) -> String {
    format!(
        "state_dir = \"state\"\n\n[broker]\nurl = \"{}\"\nkeep_alive = \"{KEEP_ALIVE_S}s\"\nsettle = \"0s\"\n\
         broker_alert_after = \"1s\"\nactions = [\"hook\"]\n\n\
         [cluster]\nname = \"plant\"\ninstance = \"{instance}\"\n\n[http]\nlisten = \"127.0.0.1:{}\"\n\n\
         [action.hook]\ntype = \"webhook\"\nurl = \"{}\"\ntimeout = \"2s\"\nconcurrency = 8\n\n\
         [[device]]\ntopic = \"fleet/{{id}}/status\"\nactions = [\"hook\"]\nstate_field = \"/s\"\n",
        broker.url(),
        support::broker::http_port(),
        receiver.url
    )
}

/// How many times `daemon` logged that it leads.
fn leads(daemon: &Daemon) -> usize {
    daemon.logs(|l| l["what"] == "cluster_leading").len()
}

/// Waits until `daemon` is in sync with its cluster, and says who leads.
async fn in_sync(daemon: &Daemon) -> String {
    let line = daemon
        .wait_log("the instance to be in sync with its cluster", Duration::from_secs(10), |l| {
            l["what"] == "cluster_synced"
        })
        .await;
    line["leader"].as_str().unwrap_or_default().to_string()
}

/// The instance that leads once `daemons` are up: its index.
async fn leader(daemons: &[Option<Daemon>]) -> usize {
    eventually("one instance to lead", Duration::from_secs(10), || {
        let leading: Vec<usize> = daemons
            .iter()
            .enumerate()
            .filter(|(_, d)| {
                d.as_ref().is_some_and(|d| {
                    let led = leads(d);
                    led > 0 && d.logs(|l| l["what"] == "cluster_standing_down").len() < led
                })
            })
            .map(|(i, _)| i)
            .collect();
        (leading.len() == 1).then(|| leading[0])
    })
    .await
}

/// What the group's fault tests share: the broker, the receiver, the
/// devices and what is true of them.
struct Group {
    /// Runs while the group lives.
    _broker: Broker,
    receiver: Receiver,
    fleet: Fleet,
    names: Vec<&'static str>,
    daemons: Vec<Option<Daemon>>,
    /// Each device's true state.
    last: BTreeMap<String, bool>,
    devices: usize,
    said: Vec<(Instant, String, bool)>,
}

impl Group {
    async fn start(names: &[&'static str], devices: usize) -> Group {
        let broker = Broker::start();
        let receiver = Receiver::start(Behaviour::Accept).await;
        let fleet = Fleet::connect(broker.port).await;
        let mut last = BTreeMap::new();
        for i in 0..devices {
            fleet.say(&format!("d{i}"), true).await;
            last.insert(format!("d{i}"), true);
        }
        let mut daemons = Vec::new();
        for name in names {
            let daemon = Daemon::start(&config(&broker, &receiver, name));
            in_sync(&daemon).await;
            daemons.push(Some(daemon));
        }
        Group { _broker: broker, receiver, fleet, names: names.to_vec(), daemons, last, devices, said: Vec::new() }
    }

    /// Flips a random device.
    async fn flip(&mut self, rng: &mut impl Rng) {
        let device = format!("d{}", rng.random_range(0..self.devices));
        let online = !self.last[&device];
        self.fleet.say(&device, online).await;
        self.last.insert(device, online);
    }

    /// Devices flip every 5–40 ms for `time`.
    async fn flip_for(&mut self, time: Duration, rng: &mut impl Rng) {
        let end = tokio::time::Instant::now() + time;
        while tokio::time::Instant::now() < end {
            self.flip(rng).await;
            tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
        }
    }

    /// Waits until the receiver's last notification of every device says
    /// what is true of it, then checks exactly once; returns what arrived.
    async fn settled(&self, context: &str) -> (usize, usize) {
        let settled = within(Duration::from_secs(30), async || {
            let received = self.receiver.received();
            let mut notified: BTreeMap<String, String> = BTreeMap::new();
            for e in distinct(&received) {
                notified.insert(e["device"].as_str().unwrap().to_string(), e["event"].as_str().unwrap().to_string());
            }
            let wrong: Vec<String> = self
                .last
                .iter()
                .filter(|(d, online)| {
                    notified.get(*d).map_or("online", String::as_str) != if **online { "online" } else { "offline" }
                })
                .map(|(d, online)| {
                    format!(
                        "{d} is {} but was last notified {:?}",
                        if *online { "online" } else { "offline" },
                        notified.get(d)
                    )
                })
                .collect();
            if wrong.is_empty() { Ok(received) } else { Err((wrong, received)) }
        })
        .await
        .unwrap_or_else(|(wrong, received)| {
            let seen: Vec<String> = received
                .iter()
                .map(Received::json)
                .map(|e| {
                    format!(
                        "{} {} {} epoch {} since {}",
                        e["device"], e["event"], e["id"], e["epoch"], e["offline_since"]
                    )
                })
                .collect();
            panic!("{context}: {wrong:?}\nreceived:\n{}\n{}", seen.join("\n"), self.dump());
        });
        let devices: Vec<Received> =
            settled.into_iter().filter(|r| r.json()["event"] == "offline" || r.json()["event"] == "online").collect();
        let settled = devices;
        let transitions = check_exactly_once(&settled, &self.last, context);
        for r in &settled {
            assert!(r.json()["epoch"].as_u64().is_some_and(|e| e > 0), "{context}: every event carries the epoch");
        }
        (transitions, settled.len() - distinct(&settled).len())
    }

    fn dump(&self) -> String {
        self.daemons.iter().flatten().map(Daemon::dump).collect::<Vec<_>>().join("\n---\n")
    }
}

/// SIGKILLs the leader `kills` times at random moments while devices flip,
/// restarting it each time; returns the failover times.
async fn sigkill_the_leader(names: &[&'static str], kills: usize) -> Vec<Duration> {
    let (seed, mut rng) = support::fault_seed("cluster fault test");
    let context = format!("seed {seed}, {} instances", names.len());
    let mut g = Group::start(names, 100).await;
    let mut failovers = Vec::new();
    for _ in 0..kills {
        let current = leader(&g.daemons).await;
        let before: Vec<usize> = g.daemons.iter().map(|d| d.as_ref().map_or(0, leads)).collect();
        let busy = Duration::from_millis(rng.random_range(200..1200));
        g.flip_for(busy, &mut rng).await;
        let killed = Instant::now();
        g.daemons[current].as_mut().unwrap().kill();
        // Devices go on failing while nobody leads.
        let mut new_leader = None;
        while new_leader.is_none() {
            g.flip(&mut rng).await;
            tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
            new_leader = (0..g.names.len())
                .find(|&i| i != current && g.daemons[i].as_ref().is_some_and(|d| leads(d) > before[i]));
            assert!(killed.elapsed() < Duration::from_secs(10), "{context}: nobody took over\n{}", g.dump());
        }
        failovers.push(killed.elapsed());
        // Devices go on failing while it is down: what it learns of them
        // at its restart is the broker's state, not their history.
        let away = Duration::from_millis(rng.random_range(300..2000));
        g.flip_for(away, &mut rng).await;
        // The old leader comes back as a standby, and fires nothing.
        let daemon = g.daemons[current].as_mut().unwrap();
        daemon.restart();
        let said = in_sync(daemon).await;
        assert_eq!(said, g.names[new_leader.unwrap()], "{context}: the restarted instance sees the new leader");
        assert_eq!(leads(daemon), 0, "{context}: the restarted old leader stands by\n{}", daemon.dump());
    }
    let (transitions, repeats) = g.settled(&context).await;
    for (i, daemon) in g.daemons.iter().enumerate() {
        let daemon = daemon.as_ref().unwrap();
        let fired = daemon.logs(|l| l["action"] == "log" && l["event"].is_string()).len();
        if leads(daemon) == 0 {
            assert_eq!(fired, 0, "{context}: {} never led and must have fired nothing", g.names[i]);
        }
    }
    eprintln!(
        "{context}: {kills} leader SIGKILLs, {transitions} transitions notified once by id ({repeats} repeats of an id), failovers {failovers:?}"
    );
    failovers
}

/// Guards a frozen leader's flaps: SIGSTOPs the leader `freezes` times
/// at random moments, each for a random time (shorter and longer than the
/// broker takes to give up on it), while devices flip; then SIGCONT.
/// Every flip is a transition (no grace): each notified at most once under
/// one id, in order, the last one right, and (but for a rare pair read
/// from a backlog) none lost to a takeover that fires only the difference
/// they add up to.
async fn sigstop_the_leader(names: &[&'static str], freezes: usize) {
    let (seed, mut rng) = support::fault_seed("cluster freeze test");
    let context = format!("seed {seed}, {} instances, SIGSTOP", names.len());
    let mut g = Group::start(names, 50).await;
    let mut flips: BTreeMap<String, (usize, Instant)> = BTreeMap::new();
    let start = Instant::now();
    let mut frozen = Vec::new();
    for _ in 0..freezes {
        let current = leading_now(&g.daemons).await;
        let busy = Duration::from_millis(rng.random_range(200..1200));
        count_flips(&mut g, busy, &mut rng, &mut flips).await;
        // Past a second the thawed instance checks its claim again.
        let frozen_for = Duration::from_millis(rng.random_range(1200..6000));
        let synced = g.daemons[current].as_ref().unwrap().logs(|l| l["what"] == "cluster_synced").len();
        g.daemons[current].as_ref().unwrap().signal("STOP");
        let stopped = start.elapsed();
        count_flips(&mut g, frozen_for, &mut rng, &mut flips).await;
        g.daemons[current].as_ref().unwrap().signal("CONT");
        frozen.push(format!("{} {stopped:?}..{:?}", g.names[current], start.elapsed()));
        count_flips(&mut g, Duration::from_millis(300), &mut rng, &mut flips).await;
        let thawed = g.daemons[current].as_ref().unwrap();
        eventually("the thawed instance to be in sync again", Duration::from_secs(15), || {
            (thawed.logs(|l| l["what"] == "cluster_synced").len() > synced).then_some(())
        })
        .await;
        eprintln!("{context}: froze {} for {frozen_for:?}", g.names[current]);
    }
    let (transitions, repeats) = g.settled(&context).await;
    let received = g.receiver.received();
    let mut notified: BTreeMap<String, usize> = BTreeMap::new();
    for e in distinct(&received) {
        *notified.entry(e["device"].as_str().unwrap().to_string()).or_default() += 1;
    }
    let flipped: usize = flips.values().map(|(n, _)| n).sum();
    let mut lost = 0;
    let mut added = Vec::new();
    let mut missing = Vec::new();
    for (d, (n, _)) in &flips {
        let got = notified.get(d).copied().unwrap_or_default();
        lost += n.saturating_sub(got);
        if got > *n {
            added.push(format!("{d}: {n} flips, {got} notified"));
        }
        if got < *n {
            let said: Vec<String> = g
                .said
                .iter()
                .filter(|(_, x, _)| x == d)
                .map(|(t, _, on)| format!("{:?} {}", t.duration_since(start), if *on { "on" } else { "off" }))
                .collect();
            let got: Vec<String> = received
                .iter()
                .map(Received::json)
                .filter(|e| e["device"] == d.as_str())
                .map(|e| format!("{} {} epoch {}", e["event"], e["id"], e["epoch"]))
                .collect();
            missing.push(format!("{d}: said {said:?}\n    notified {got:?}"));
        }
    }
    eprintln!(
        "{context}: {freezes} freezes, {flipped} flips, {transitions} notified once by id ({repeats} repeats of an id), {lost} lost"
    );
    assert!(added.is_empty(), "{context}: notified what did not happen: {added:?}\n{}", g.dump());
    // A flap read from a thawed instance's backlog may still be lost (a
    // known limit, in pairs): a few, never the net difference the freeze
    // used to leave (about one flip in six).
    assert!(
        lost * 50 <= flipped,
        "{context}: {lost} of {flipped} flips lost (frozen {frozen:?})\n{}\n{}",
        missing.join("\n"),
        g.dump()
    );
}

/// The instance that says it leads (its metric), once exactly one does.
async fn leading_now(daemons: &[Option<Daemon>]) -> usize {
    support::wait::until("a single leader", Duration::from_secs(15), async || {
        let mut leading = Vec::new();
        for (i, d) in daemons.iter().enumerate() {
            if let Some(d) = d
                && d.metric("willwatch_cluster_leader ").await == 1.0
            {
                leading.push(i);
            }
        }
        if let [one] = leading[..] { Ok(one) } else { Err(format!("leading: {leading:?}")) }
    })
    .await
}

/// Flips devices every 5–40 ms for `time`, counting each device's flips.
/// A device flips again only after `BETWEEN_FLIPS`: a flap shorter than
/// the broker's round trip that confirms an offline is no outage.
async fn count_flips(
    g: &mut Group,
    time: Duration,
    rng: &mut impl Rng,
    flips: &mut BTreeMap<String, (usize, Instant)>,
) {
    const BETWEEN_FLIPS: Duration = Duration::from_millis(200);
    let end = tokio::time::Instant::now() + time;
    while tokio::time::Instant::now() < end {
        let device = format!("d{}", rng.random_range(0..g.devices));
        let (count, at) = flips.entry(device.clone()).or_insert((0, Instant::now() - BETWEEN_FLIPS));
        if at.elapsed() >= BETWEEN_FLIPS {
            *count += 1;
            *at = Instant::now();
            let online = !g.last[&device];
            g.fleet.say(&device, online).await;
            g.said.push((Instant::now(), device.clone(), online));
            g.last.insert(device, online);
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
    }
}

#[tokio::test]
async fn two_instances_sigstop_the_leader_while_devices_flip_every_flip_notified_once() {
    sigstop_the_leader(&["a", "b"], 3).await;
}

#[tokio::test]
async fn three_instances_sigstop_the_leader_while_devices_flip_every_flip_notified_once() {
    sigstop_the_leader(&["a", "b", "c"], 3).await;
}

#[tokio::test]
async fn two_instances_sigkill_the_leader_while_devices_fail_each_transition_notified_once_by_id() {
    let failovers = sigkill_the_leader(&["a", "b"], 3).await;
    // A crashed leader's will is published at once: the standby takes
    // over within a second, not a keep-alive.
    assert!(failovers.iter().all(|t| *t < Duration::from_secs(1)), "failovers {failovers:?}");
}

#[tokio::test]
async fn three_instances_sigkill_the_leader_again_and_again_each_transition_notified_once_by_id() {
    let failovers = sigkill_the_leader(&["a", "b", "c"], 4).await;
    assert!(failovers.iter().all(|t| *t < Duration::from_secs(1)), "failovers {failovers:?}");
}

#[tokio::test]
async fn a_clean_stop_hands_over_at_once_and_a_device_failing_meanwhile_is_notified_once() {
    let mut g = Group::start(&["a", "b"], 4).await;
    assert_eq!(leader(&g.daemons).await, 0, "the first instance by name leads");
    let stopping = Instant::now();
    g.daemons[0].as_ref().unwrap().signal("TERM");
    // Fails right as the leader goes.
    g.fleet.say("d1", false).await;
    g.last.insert("d1".into(), false);
    let b = g.daemons[1].as_ref().unwrap();
    eventually("b to lead", Duration::from_secs(5), || (leads(b) > 0).then_some(())).await;
    let handover = stopping.elapsed();
    let status = g.daemons[0].as_mut().unwrap().exit_status(Duration::from_secs(10)).await;
    assert!(status.success(), "a stopped cleanly");
    let released = g.daemons[0].as_ref().unwrap().logs(|l| l["what"] == "cluster_released");
    assert_eq!(released.len(), 1, "a released its claim");
    assert!(handover < Duration::from_secs(1), "handover took {handover:?}");
    let (transitions, _) = g.settled("clean stop").await;
    assert_eq!(transitions, 1, "d1's offline, once");
    // Decided by a before it let go (epoch 1), or by b after (epoch 2): once.
    let received = g.receiver.received();
    let epochs: Vec<u64> = distinct(&received).iter().filter_map(|e| e["epoch"].as_u64()).collect();
    assert!(epochs == [1] || epochs == [2], "epochs {epochs:?}");
    eprintln!("clean stop: handover in {handover:?}");
}

#[tokio::test]
async fn a_frozen_leader_is_replaced_after_its_keep_alive_and_stands_down_when_it_thaws() {
    let mut g = Group::start(&["a", "b"], 4).await;
    assert_eq!(leader(&g.daemons).await, 0);
    let frozen = Instant::now();
    g.daemons[0].as_ref().unwrap().signal("STOP");
    g.fleet.say("d2", false).await;
    g.last.insert("d2".into(), false);
    let b = g.daemons[1].as_ref().unwrap();
    eventually("b to lead", Duration::from_secs(10), || (leads(b) > 0).then_some(())).await;
    let failover = frozen.elapsed();
    // The broker waits 1.5 keep-alives before it gives up on a client.
    assert!(
        failover >= Duration::from_secs(KEEP_ALIVE_S) && failover < Duration::from_secs(3 * KEEP_ALIVE_S),
        "failover took {failover:?}"
    );
    g.daemons[0].as_ref().unwrap().signal("CONT");
    let a = g.daemons[0].as_ref().unwrap();
    let after_thaw = a.logs(|l| l["what"] == "cluster_synced").len();
    support::eventually("a in sync again", Duration::from_secs(15), || {
        (a.logs(|l| l["what"] == "cluster_synced").len() > after_thaw).then_some(())
    })
    .await;
    let (transitions, _) = g.settled("frozen leader").await;
    assert_eq!(transitions, 1, "d2's offline, once");
    let received = g.receiver.received();
    assert!(received.iter().all(|r| r.json()["epoch"] == 2), "only b fired");
    eprintln!("frozen leader: failover in {failover:?}");
}

/// Guards twin detection: a second run under a name a live run holds
/// (the host name both default to, a cloned machine) is refused with exit
/// 78 and the clash named, and the holder goes on leading undisturbed.
#[tokio::test]
async fn a_second_run_under_a_held_instance_name_is_refused_and_the_holder_leads_on() {
    let mut g = Group::start(&["a", "b"], 2).await;
    assert_eq!(leader(&g.daemons).await, 0);
    let mut twin = Daemon::start(&config(&g._broker, &g.receiver, "a"));
    let status = twin.exit_status(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(78), "the twin is refused:\n{}", twin.dump());
    let refused = twin.logs(|l| l["clash"] == true && l["level"] == "ERROR");
    assert_eq!(refused.len(), 1, "the twin says why:\n{}", twin.dump());
    assert_eq!(refused[0]["instance"], "a");
    let a = g.daemons[0].as_ref().unwrap();
    assert!(!a.logs(|l| l["clash"] == true).is_empty(), "the holder logs the clash");
    // The group goes on as it was: a leads the first epoch, and a device
    // failing now is notified once, by a.
    g.fleet.say("d1", false).await;
    g.last.insert("d1".into(), false);
    let (transitions, _) = g.settled("twin refused").await;
    assert_eq!(transitions, 1, "d1's offline, once");
    assert!(g.receiver.received().iter().all(|r| r.json()["epoch"] == 1), "only a fired, in its first epoch");
    assert_eq!(leads(g.daemons[0].as_ref().unwrap()), 1, "a never stood down");
    assert!(g.daemons[1].as_ref().unwrap().logs(|l| l["what"] == "cluster_leading").is_empty(), "b never led");
    // A run restarted at once after a SIGKILL is no twin, and its own
    // question, delivered back by its session, is no clash.
    let b = g.daemons[1].as_mut().unwrap();
    b.kill_and_restart();
    in_sync(b).await;
    assert!(b.logs(|l| l["clash"] == true).is_empty(), "b's restart is no clash:\n{}", b.dump());
    assert!(b.exit_status_now().is_none(), "b runs");
}

#[tokio::test]
async fn status_and_metrics_show_role_epoch_and_peers_and_only_the_leader_says_the_broker_is_down() {
    let mut g = Group::start(&["a", "b"], 2).await;
    assert_eq!(leader(&g.daemons).await, 0);
    let (a, b) = (g.daemons[0].as_ref().unwrap(), g.daemons[1].as_ref().unwrap());
    let status = |url: String| async move {
        let text = reqwest::get(format!("{url}/status")).await.unwrap().text().await.unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        doc["cluster"].clone()
    };
    let (sa, sb) = (status(a.http_url().await).await, status(b.http_url().await).await);
    assert_eq!((sa["role"].as_str(), sb["role"].as_str()), (Some("leader"), Some("standby")), "{sa} {sb}");
    assert_eq!((sa["epoch"].as_u64(), sb["leader"].as_str()), (Some(1), Some("a")), "{sa} {sb}");
    assert_eq!(sb["peers"], serde_json::json!({"a": true, "b": true}), "{sb}");
    assert_eq!((a.metric("willwatch_cluster_leader ").await, b.metric("willwatch_cluster_leader ").await), (1.0, 0.0));
    assert_eq!(b.metric("willwatch_cluster_epoch ").await, 1.0);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_willwatch"))
        .args(["status", "--url", &format!("{}/status", b.http_url().await)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cluster plant as b: standby at epoch 1, leader a; instances a, b"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Both lose the broker: the one that led says so, once; and that it is back.
    g._broker.stop();
    for d in [a, b] {
        d.wait_log("the broker alert", Duration::from_secs(10), |l| l["what"] == "broker_unreachable").await;
    }
    g._broker.restart();
    for d in [a, b] {
        d.wait_log("the broker back", Duration::from_secs(15), |l| l["what"] == "broker_reachable").await;
    }
    let broker_events = |kind: &str| {
        g.receiver.received().into_iter().map(|r| r.json()).filter(|e| e["event"] == kind).collect::<Vec<_>>()
    };
    eventually("broker_up to arrive", Duration::from_secs(10), || {
        (!broker_events("broker_up").is_empty()).then_some(())
    })
    .await;
    let (down, up) = (broker_events("broker_down"), broker_events("broker_up"));
    assert_eq!((down.len(), up.len()), (1, 1), "one of each: {down:?} {up:?}");
    assert_eq!(down[0]["device"], "willwatch-plant-a", "from the leader");
    // The retained claim died with the broker: the leader said it again.
    in_sync(b).await;
    eventually("a to lead again", Duration::from_secs(10), || (leads(a) >= 2).then_some(())).await;
}
