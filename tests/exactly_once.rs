//! Exactly once, through crashes: every transition is notified with one id,
//! none is missed, none is repeated under a new id. A fault test SIGKILLs
//! the daemon at random moments (seeded; the seed is printed) while devices
//! toggle, and checks what the receiver got; regression tests cover each
//! way this broke before: a notification sent before its state was on
//! disk, wills that arrived while the daemon was away and a replay cut
//! short by the broker, deliveries abandoned at shutdown, a state file
//! deleted while running, and actions that need the broker at shutdown.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use rand::Rng;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use support::once::{Fleet, check_exactly_once, distinct};
use support::wait::within;
use support::{Behaviour, Broker, BrokerOptions, Daemon, Receiver, SOON, config, eventually, publish_many};

fn hook(receiver: &Receiver) -> String {
    format!(
        "[action.hook]\ntype = \"webhook\"\nurl = \"{}\"\ntimeout = \"2s\"\nconcurrency = 8\n\n\
         [[device]]\ntopic = \"fleet/{{id}}/status\"\nactions = [\"hook\"]\n",
        receiver.url
    )
}

/// The fault tests' seed, as the context of their failures, and its
/// generator.
fn fault_seed() -> (String, rand::rngs::StdRng) {
    let (seed, rng) = support::fault_seed("fault test");
    (format!("seed {seed}"), rng)
}

/// `devices` devices (`d0`…) known online, and the daemon connected,
/// notifying `receiver`.
async fn online_fleet(broker: &Broker, receiver: &Receiver, devices: usize) -> (Fleet, BTreeMap<String, bool>, Daemon) {
    online_fleet_with(broker, receiver, devices, "", &[]).await
}

/// `online_fleet`, the devices also notifying the actions of `actions`
/// (their names in `also`).
async fn online_fleet_with(
    broker: &Broker,
    receiver: &Receiver,
    devices: usize,
    actions: &str,
    also: &[&str],
) -> (Fleet, BTreeMap<String, bool>, Daemon) {
    let fleet = Fleet::connect(broker.port).await;
    let mut last: BTreeMap<String, bool> = BTreeMap::new();
    for i in 0..devices {
        fleet.say(&format!("d{i}"), true).await;
        last.insert(format!("d{i}"), true);
    }
    let names: String = also.iter().map(|a| format!(", \"{a}\"")).collect();
    let text = config(broker, &format!("{actions}\n{}", hook(receiver)))
        .replace("actions = [\"hook\"]\n", &format!("actions = [\"hook\"{names}]\nstate_field = \"/s\"\n"));
    let daemon = Daemon::start_with_files(&text, &[("routing-key", "R0UTINGKEY")]);
    daemon.wait_connected().await;
    (fleet, last, daemon)
}

#[tokio::test]
async fn random_sigkills_while_devices_toggle_notify_every_transition_once_by_id() {
    // The suite's run is short; `WILLWATCH_FAULT_KILLS` and
    // `WILLWATCH_FAULT_DEVICES` make the longer one BENCHMARKS.md reports.
    let setting = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (kills_wanted, devices) = (setting("WILLWATCH_FAULT_KILLS", 6), setting("WILLWATCH_FAULT_DEVICES", 20));
    let (context, mut rng) = fault_seed();
    let broker = Broker::start();
    let receiver = Receiver::start(Behaviour::Accept).await;
    // An on-call service beside the webhook: it must see one incident per
    // outage, opened once and resolved by the same key.
    let pagerduty = Receiver::start(Behaviour::Accept).await;
    let oncall = format!(
        "[action.oncall]\ntype = \"pagerduty\"\nrouting_key_file = \"routing-key\"\napi_url = \"{}\"\ntimeout = \"2s\"\n",
        pagerduty.url
    );
    let (fleet, mut last, mut daemon) = online_fleet_with(&broker, &receiver, devices, &oncall, &["oncall"]).await;

    // Devices toggle every 5-40 ms; the daemon dies at random moments and
    // comes back after a random time away.
    let mut next_kill = tokio::time::Instant::now() + Duration::from_millis(rng.random_range(300..1500));
    let mut kills = 0;
    while kills < kills_wanted {
        let device = format!("d{}", rng.random_range(0..devices));
        let online = !last[&device];
        fleet.say(&device, online).await;
        last.insert(device, online);
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
        if tokio::time::Instant::now() >= next_kill {
            daemon.kill();
            kills += 1;
            // Devices go on changing while it is away.
            let away = tokio::time::Instant::now() + Duration::from_millis(rng.random_range(100..800));
            while tokio::time::Instant::now() < away {
                let device = format!("d{}", rng.random_range(0..devices));
                let online = !last[&device];
                fleet.say(&device, online).await;
                last.insert(device, online);
                tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
            }
            daemon.restart();
            next_kill = tokio::time::Instant::now() + Duration::from_millis(rng.random_range(300..1500));
        }
    }
    daemon.wait_connected().await;

    // Settled: every device's last notification matches its true state.
    let settled = within(Duration::from_secs(30), async || {
        let received = receiver.received();
        let events = distinct(&received);
        let mut notified: HashMap<String, String> = HashMap::new();
        for e in &events {
            if let (Some(d), Some(k)) = (e["device"].as_str(), e["event"].as_str()) {
                notified.insert(d.to_string(), k.to_string());
            }
        }
        let wrong = last.iter().find(|(d, online)| {
            notified.get(d.as_str()).map_or("online", String::as_str) != if **online { "online" } else { "offline" }
        });
        match wrong {
            None => Ok(received),
            Some((device, online)) => Err((device.clone(), *online, notified.get(device.as_str()).cloned())),
        }
    })
    .await
    .unwrap_or_else(|(device, online, notified)| {
        panic!(
            "{context}: {device} is {} but was last notified {notified:?}\n{}",
            if online { "online" } else { "offline" },
            daemon
                .logs(|l| l["device"] == device.as_str() || l["sign"].is_string() || l["what"] == "broker_connected")
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    let transitions = check_exactly_once(&settled, &last, &context);
    let duplicates = settled.len() - distinct(&settled).len();
    let outages = distinct(&settled).iter().filter(|e| e["event"] == "offline").count();
    let incidents =
        within(Duration::from_secs(30), async || support::once::check_incidents(&pagerduty.received(), &last))
            .await
            .unwrap_or_else(|wrong| panic!("{context}: {wrong}"));
    assert_eq!(incidents, outages, "{context}: {incidents} incidents for {outages} outages");
    eprintln!(
        "{context}: {kills_wanted} SIGKILLs, {transitions} transitions notified, {} requests ({duplicates} repeats of an id), 0 missed; \
         {incidents} incidents for {outages} outages in {} on-call requests",
        settled.len(),
        pagerduty.received().len()
    );
    assert!(transitions >= kills_wanted, "{context}: too few transitions to mean anything: {transitions}");
}

/// Guards the acknowledgement after commit: a message acknowledged on
/// arrival and lost to a SIGKILL before its decision was committed is
/// never sent again, so a device that went offline just before the crash
/// and came back while the daemon was away had its outage lost. Each cycle
/// SIGKILLs the daemon a random 0-4 ms after a device's offline (seeded,
/// printed); where mosquitto's log shows the offline was sent to the
/// daemon before the kill, the outage and the recovery must both be
/// notified, once (an offline still queued for us at the kill is the
/// documented case of a flap entirely while away: nothing to require).
#[tokio::test]
async fn a_flap_whose_offline_reached_the_daemon_just_before_a_sigkill_is_notified_once() {
    let (context, mut rng) = fault_seed();
    let Some(broker) = Broker::mosquitto(BrokerOptions::default()) else { return };
    let receiver = Receiver::start(Behaviour::Accept).await;
    const CYCLES: usize = 16;
    let (fleet, last, mut daemon) = online_fleet(&broker, &receiver, CYCLES).await;
    let client_id = format!("willwatch-test-{}", broker.port);
    let log = || std::fs::read_to_string(broker.dir().join("mosquitto.log")).unwrap_or_default();
    let mut caught = Vec::new();
    for i in 0..CYCLES {
        let device = format!("d{i}");
        let topic = format!("'fleet/{device}/status'");
        let from = log().len();
        fleet.say(&device, false).await;
        tokio::time::sleep(Duration::from_micros(rng.random_range(0..4000))).await;
        daemon.kill();
        // What mosquitto did from the offline to the connection's end.
        let cycle = eventually("mosquitto to see the daemon's connection close", SOON, || {
            let text = log();
            let cycle = text.get(from..).unwrap_or_default().to_string();
            cycle.contains(&format!("Client {client_id} closed")).then_some(cycle)
        })
        .await;
        let reached =
            cycle.lines().any(|l| l.contains(&topic) && l.contains(&format!("Sending PUBLISH to {client_id} ")));
        fleet.say(&device, true).await;
        support::wait_retained(
            broker.port,
            &format!("fleet/{device}/status"),
            &format!("{{\"s\":\"online\",\"n\":{}}}", CYCLES + 2 * i + 1),
        )
        .await;
        daemon.restart();
        daemon.wait_connected().await;
        if reached {
            caught.push(device.clone());
            let notified = within(Duration::from_secs(15), async || {
                let events = distinct(&receiver.received());
                let kinds: Vec<String> = events
                    .iter()
                    .filter(|e| e["device"] == device.as_str())
                    .filter_map(|e| e["event"].as_str().map(String::from))
                    .collect();
                if kinds == ["offline", "online"] { Ok(()) } else { Err(kinds) }
            })
            .await;
            if let Err(kinds) = notified {
                panic!(
                    "{context}: {device}'s outage and recovery were not both notified: {kinds:?}\nmosquitto:\n{}\nwillwatch:\n{}",
                    log()
                        .get(from..)
                        .unwrap_or_default()
                        .lines()
                        .filter(|l| l.contains(&client_id))
                        .take(40)
                        .collect::<Vec<_>>()
                        .join("\n"),
                    daemon
                        .logs(|l| l["device"] == device.as_str() || l["dropped"].is_u64())
                        .iter()
                        .map(|l| l.to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
        }
    }
    let received = receiver.received();
    check_exactly_once(&received, &last, &context);
    eprintln!(
        "{context}: {} of {CYCLES} offlines reached the daemon before its SIGKILL; each notified with its recovery",
        caught.len()
    );
    assert!(
        caught.len() >= CYCLES / 4,
        "{context}: too few offlines reached the daemon before the kill to mean anything: {caught:?}"
    );
}

#[tokio::test]
async fn wills_that_arrive_while_the_daemon_is_away_are_found_when_the_replay_is_cut_short() {
    // A stock mosquitto queues 1,000 messages for a client and drops the
    // rest: the replay of 2,000 retained states after a start is cut short.
    let Some(broker) = Broker::mosquitto(BrokerOptions::default()) else { return };
    let receiver = Receiver::start(Behaviour::Accept).await;
    let topics: Vec<String> = (0..2000).map(|i| format!("fleet/d{i:04}/status")).collect();
    let all = |payload: &str, range: std::ops::Range<usize>| -> Vec<(&str, Vec<u8>)> {
        topics[range].iter().map(|t| (t.as_str(), payload.as_bytes().to_vec())).collect()
    };
    let text = config(&broker, &hook(&receiver)).replace("settle = \"0s\"", "settle = \"1s\"");
    let mut daemon = Daemon::start(&text);
    daemon.wait_connected().await;
    // The fleet comes online in waves, as fleets do, and the daemon knows
    // every device before the outage.
    for wave in 0..10 {
        publish_many(broker.port, &all("online", wave * 200..(wave + 1) * 200), true).await;
        eventually("the wave to be known", SOON, || {
            let known = daemon.logs(|l| l["what"] == "device_state" && l["state"] == "online").len();
            (known >= (wave + 1) * 200).then_some(())
        })
        .await;
    }
    publish_many(broker.port, &all("offline", 0..1200), true).await;
    receiver.wait_for(1200, Duration::from_secs(60)).await;

    daemon.signal("TERM");
    daemon.exit_status(SOON).await;
    publish_many(broker.port, &all("offline", 1200..2000), true).await;
    daemon.restart();
    let found = eventually("the 800 offlines from while it was away", Duration::from_secs(30), || {
        let offline: HashSet<String> = distinct(&receiver.received())
            .iter()
            .filter(|e| e["event"] == "offline")
            .map(|e| e["device"].as_str().unwrap().to_string())
            .collect();
        (offline.len() >= 2000).then_some(offline.len())
    })
    .await;
    assert_eq!(found, 2000);
    let last: BTreeMap<String, bool> = (0..2000).map(|i| (format!("d{i:04}"), false)).collect();
    check_exactly_once(&receiver.received(), &last, "cut replay");
}

#[tokio::test]
async fn deliveries_abandoned_at_shutdown_resume_at_the_next_start_with_their_ids() {
    let broker = Broker::start();
    let hanging = Receiver::start(Behaviour::Hang).await;
    let text = |receiver: &Receiver| {
        config(&broker, &hook(receiver)).replace("timeout = \"2s\"", "timeout = \"60s\"\nmax_attempts = 1")
    };
    let mut daemon = Daemon::start(&text(&hanging));
    daemon.wait_connected().await;
    let offline: Vec<(String, Vec<u8>)> =
        (0..20).map(|i| (format!("fleet/d{i}/status"), b"offline".to_vec())).collect();
    let messages: Vec<(&str, Vec<u8>)> = offline.iter().map(|(t, p)| (t.as_str(), p.clone())).collect();
    publish_many(broker.port, &messages, true).await;
    let first = hanging.wait_for(8, SOON).await;
    daemon.signal("TERM");
    daemon.exit_status(Duration::from_secs(20)).await;
    let owed = daemon.logs(|l| l["what"] == "owed_kept");
    assert_eq!(owed.len(), 1, "{}", daemon.dump());
    assert_eq!(owed[0]["owed"], 20);

    let receiver = Receiver::start(Behaviour::Accept).await;
    daemon.write_config(&text(&receiver));
    daemon.restart();
    let resent = receiver.wait_for(20, SOON).await;
    let ids: HashSet<&str> = resent.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 20);
    for r in &first {
        assert!(ids.contains(r.header("webhook-id")), "resent under a new id: {}", r.header("webhook-id"));
    }
    let last: BTreeMap<String, bool> = (0..20).map(|i| (format!("d{i}"), false)).collect();
    check_exactly_once(&resent, &last, "resumed");
}

/// Guards the stop's drain: it waited for retries that cannot succeed
/// (every `systemctl restart` with a receiver down took the whole 10 s).
/// A retry due while stopping is left owed and goes out at the next start,
/// with its id.
#[tokio::test]
async fn a_stop_waits_for_no_retry_and_what_it_owed_resumes_at_the_next_start_with_its_id() {
    let broker = Broker::start();
    let failing = Receiver::start(Behaviour::FailFirst { n: 1_000, status: 503 }).await;
    let mut daemon = Daemon::start(&config(&broker, &hook(&failing)));
    daemon.wait_connected().await;
    support::publish(broker.port, "fleet/d1/status", "offline", true).await;
    let first = failing.wait_for(1, SOON).await;
    daemon.wait_log("a retry scheduled", SOON, |l| l["retry_in"].is_string()).await;
    let asked = std::time::Instant::now();
    daemon.signal("TERM");
    daemon.exit_status(Duration::from_secs(20)).await;
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(3), "the stop took {took:?}\n{}", daemon.dump());
    let owed = daemon.logs(|l| l["owed"].is_u64());
    assert_eq!(owed.last().map(|l| l["owed"].clone()), Some(serde_json::json!(1)), "{}", daemon.dump());

    let receiver = Receiver::start(Behaviour::Accept).await;
    daemon.write_config(&config(&broker, &hook(&receiver)));
    daemon.restart();
    let resent = receiver.wait_for(1, SOON).await;
    assert_eq!(resent[0].header("webhook-id"), first[0].header("webhook-id"), "resent under a new id");
    eprintln!("stopped in {took:?} with a retry scheduled");
}

#[tokio::test]
async fn a_state_file_deleted_while_running_is_written_back() {
    let broker = Broker::start();
    let receiver = Receiver::start(Behaviour::Accept).await;
    let mut daemon = Daemon::start(&config(&broker, &hook(&receiver)));
    daemon.wait_connected().await;
    publish_many(broker.port, &[("fleet/a/status", b"offline".to_vec())], true).await;
    receiver.wait_for(1, SOON).await;
    for suffix in ["", "-wal", "-shm"] {
        std::fs::remove_file(daemon.dir().join(format!("state/state.db{suffix}"))).ok();
    }
    daemon.wait_log("the file written back", SOON, |l| l["what"] == "state_rewritten").await;
    assert!(daemon.dir().join("state/state.db").exists());
    daemon.kill_and_restart();
    daemon.wait_connected().await;
    publish_many(broker.port, &[("fleet/a/status", b"online".to_vec())], true).await;
    let all = receiver.wait_for(2, SOON).await;
    let last = BTreeMap::from([("a".to_string(), true)]);
    check_exactly_once(&all, &last, "deleted file");
}

#[tokio::test]
async fn shutdown_lets_actions_that_publish_finish_before_the_goodbye() {
    // The test's watcher must see every alert of the burst, even when it
    // lags on a loaded machine.
    let broker = Broker::start_with(BrokerOptions { unlimited_queues: true, ..BrokerOptions::default() });
    let text = config(
        &broker,
        "[action.relay]\ntype = \"publish\"\ntopic = \"alerts/{id}\"\n\n\
         [[device]]\ntopic = \"fleet/{id}/status\"\nactions = [\"log\", \"relay\"]\n",
    );
    let mut daemon = Daemon::start(&text);
    daemon.wait_connected().await;
    let (client, mut eventloop) = AsyncClient::new(MqttOptions::new("alerts-watcher", "127.0.0.1", broker.port), 64);
    client.subscribe("alerts/#", QoS::AtLeastOnce).await.unwrap();
    client.subscribe("willwatch/test/status", QoS::AtLeastOnce).await.unwrap();
    let seen = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Ok(Ok(event)) = tokio::time::timeout(Duration::from_secs(15), eventloop.poll()).await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                let payload = String::from_utf8_lossy(&p.payload).into_owned();
                let done = p.topic == "willwatch/test/status" && payload == "offline";
                seen.push(p.topic);
                if done {
                    break;
                }
            }
        }
        seen
    });
    // Enough offlines that publishing them is still under way at the stop.
    let offline: Vec<(String, Vec<u8>)> =
        (0..3000).map(|i| (format!("fleet/d{i}/status"), b"offline".to_vec())).collect();
    let messages: Vec<(&str, Vec<u8>)> = offline.iter().map(|(t, p)| (t.as_str(), p.clone())).collect();
    publish_many(broker.port, &messages, false).await;
    daemon.wait_log("the decisions", SOON, |l| l["action"] == "log" && l["event"] == "offline").await;
    daemon.signal("TERM");
    daemon.exit_status(Duration::from_secs(20)).await;
    let seen = seen.await.unwrap();
    let alerts = seen.iter().filter(|t| t.starts_with("alerts/")).count();
    let decided = daemon.logs(|l| l["action"] == "log" && l["event"] == "offline").len();
    assert!(decided > 0);
    let warnings = daemon.logs(|l| l["level"] == "WARN" || l["level"] == "ERROR");
    assert_eq!(alerts, decided, "every offline decided before the stop was published; warnings: {warnings:?}");
    assert_eq!(seen.last().map(String::as_str), Some("willwatch/test/status"), "the goodbye comes last");
    assert!(daemon.logs(|l| l["what"] == "publish_failed").is_empty(), "{}", daemon.dump());
}
