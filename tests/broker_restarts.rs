//! The broker's own lifecycle pages nobody: restarts of a real mosquitto,
//! graceful (SIGTERM, as `systemctl restart` sends it: every client's will
//! is published as it goes) and hard (SIGKILL), with persistence on and
//! off, while 200 devices that reconnect by themselves are connected.
//! Devices that come back fire nothing; devices that die while the broker
//! is down are notified, exactly those, once each. A seeded fault test
//! restarts the broker at random moments while devices die and come back,
//! and checks the notifications against what really happened: none for an
//! outage that did not happen (no more offlines than deaths), offline and
//! online alternating, and each device's last one its true state.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use rand::Rng;
use support::proxy::Proxy;
use support::wait::within;
use support::{
    Broker, BrokerOptions, Daemon, LiveDevice, SENTINEL, SOON, config, eventually, publish, sync_with_sentinel,
};

/// The broker under test: the rule must not be mosquitto-shaped.
#[derive(Clone, Copy)]
enum Which {
    Mosquitto,
    Nats,
}

impl Which {
    fn start(self, persistence: bool) -> Option<Broker> {
        let options = BrokerOptions { persistence, ..Default::default() };
        match self {
            Which::Mosquitto => Broker::mosquitto(options),
            Which::Nats => Broker::nats(options),
        }
    }
}

const FLEET: &str = "[[device]]\ntopic = \"fleet/{id}/status\"\n";

fn daemon_config(broker: &Broker) -> String {
    config(broker, &format!("{FLEET}\n{SENTINEL}")).replace("confirm_within = \"2s\"", "confirm_within = \"5s\"")
}

fn connects(daemon: &Daemon) -> usize {
    daemon.logs(|l| l["what"] == "broker_connected").len()
}

/// The confirm check's log event (its counts of unconfirmed and not seen).
fn confirmed(line: &serde_json::Value) -> bool {
    line["unconfirmed"].is_u64() && line["not_seen"].is_u64()
}

/// The `connections`th connection is made and its confirmation over: what
/// the restart before it left is decided.
async fn wait_confirmed(daemon: &Daemon, connections: usize) {
    eventually("the last connection to be confirmed", Duration::from_secs(40), || {
        let lines = daemon.logs(|l| l["what"] == "broker_connected" || confirmed(l));
        let made = lines.iter().filter(|l| !confirmed(l)).count();
        (made >= connections && lines.last().is_some_and(confirmed)).then_some(())
    })
    .await;
}

fn notified(daemon: &Daemon, event: &str) -> Vec<String> {
    let mut devices: Vec<String> = daemon
        .logs(|l| l["action"] == "log" && l["event"] == event)
        .iter()
        .filter_map(|l| l["device"].as_str().map(String::from))
        .filter(|d| d != "sentinel")
        .collect();
    devices.sort();
    devices
}

/// Waits until the daemon has found the broker down (a second failed
/// attempt, half a second after the first): a restart takes that long
/// under a supervisor, and it is how a broker that gives no other sign is
/// known to have restarted.
async fn down_long_enough(daemon: &Daemon) {
    let before = daemon.logs(|l| l["attempt"].as_u64().is_some_and(|a| a >= 2)).len();
    eventually("a second failed attempt", Duration::from_secs(10), || {
        (daemon.logs(|l| l["attempt"].as_u64().is_some_and(|a| a >= 2)).len() > before).then_some(())
    })
    .await;
}

/// Starts `n` devices and waits until the daemon knows every one online.
async fn fleet_online(broker: &Broker, daemon: &Daemon, n: usize) -> Vec<LiveDevice> {
    let devices: Vec<LiveDevice> =
        (0..n).map(|i| LiveDevice::start(broker.port, &format!("d{i:03}"), &format!("fleet/d{i:03}/status"))).collect();
    eventually("every device online", Duration::from_secs(30), || {
        let online = daemon.logs(|l| l["what"] == "device_state" && l["state"] == "online").len();
        (online >= n).then_some(())
    })
    .await;
    devices
}

/// Restarts the broker with `signal` while 200 devices are connected;
/// `dying` of them lose power while it is down: those, and only those,
/// are notified, once each.
async fn restart_with(which: Which, signal: &str, persistence: bool, dying: usize) {
    let Some(mut broker) = which.start(persistence) else { return };
    let daemon = Daemon::start(&daemon_config(&broker));
    daemon.wait_connected().await;
    let mut devices = fleet_online(&broker, &daemon, 200).await;
    wait_confirmed(&daemon, 1).await;

    broker.stop_with(signal);
    down_long_enough(&daemon).await;
    let dead: BTreeSet<String> = (0..dying).map(|i| format!("d{:03}", i * 10)).collect();
    for i in (0..dying).rev() {
        devices.remove(i * 10).kill();
    }
    broker.start_again();
    eventually("the daemon to reconnect", Duration::from_secs(30), || (connects(&daemon) >= 2).then_some(())).await;
    wait_confirmed(&daemon, 2).await;
    within(Duration::from_secs(10), async || if notified(&daemon, "offline").len() < dying { Err(()) } else { Ok(()) })
        .await
        .unwrap_or_else(|()| {
            panic!(
                "{}: the dead were not notified: {:?}\n{}\n{}",
                broker.name(),
                notified(&daemon, "offline"),
                broker.log_tail(40),
                daemon.dump()
            )
        });
    // Everything decided before the sentinel is logged before it.
    sync_with_sentinel(&broker, &daemon, &[]).await;
    let offline = notified(&daemon, "offline");
    assert_eq!(
        offline,
        dead.iter().cloned().collect::<Vec<_>>(),
        "{}, {signal}, persistence {persistence}: exactly the dead, once each\n{}\n{}",
        broker.name(),
        broker.log_tail(40),
        daemon.dump()
    );
    assert!(notified(&daemon, "online").is_empty(), "no recovery of what never went: {}", daemon.dump());
    // The session: kept by a broker that persists, lost by one that does not.
    let lost = daemon.metric("willwatch_broker_sessions_lost_total ").await;
    assert_eq!(lost, if persistence { 0.0 } else { 1.0 }, "{}: sessions lost", broker.name());
    assert!(devices.iter().all(|d| d.connects() >= 2), "the others came back by themselves");
}

#[tokio::test]
async fn a_graceful_broker_restart_without_persistence_pages_nobody() {
    restart_with(Which::Mosquitto, "TERM", false, 0).await;
}

#[tokio::test]
async fn nats_a_graceful_broker_restart_without_persistence_pages_nobody() {
    restart_with(Which::Nats, "TERM", false, 0).await;
}

#[tokio::test]
async fn a_graceful_broker_restart_with_persistence_pages_nobody() {
    restart_with(Which::Mosquitto, "TERM", true, 0).await;
}

#[tokio::test]
async fn nats_a_graceful_broker_restart_with_persistence_pages_nobody() {
    restart_with(Which::Nats, "TERM", true, 0).await;
}

#[tokio::test]
async fn a_hard_broker_restart_without_persistence_pages_nobody() {
    restart_with(Which::Mosquitto, "KILL", false, 0).await;
}

#[tokio::test]
async fn nats_a_hard_broker_restart_without_persistence_pages_nobody() {
    restart_with(Which::Nats, "KILL", false, 0).await;
}

#[tokio::test]
async fn a_hard_broker_restart_with_persistence_pages_nobody() {
    restart_with(Which::Mosquitto, "KILL", true, 0).await;
}

#[tokio::test]
async fn nats_a_hard_broker_restart_with_persistence_pages_nobody() {
    restart_with(Which::Nats, "KILL", true, 0).await;
}

#[tokio::test]
async fn devices_dying_during_a_graceful_restart_without_persistence_are_notified_once_each() {
    restart_with(Which::Mosquitto, "TERM", false, 20).await;
}

#[tokio::test]
async fn nats_devices_dying_during_a_graceful_restart_without_persistence_are_notified_once_each() {
    restart_with(Which::Nats, "TERM", false, 20).await;
}

#[tokio::test]
async fn devices_dying_during_a_graceful_restart_with_persistence_are_notified_once_each() {
    restart_with(Which::Mosquitto, "TERM", true, 20).await;
}

#[tokio::test]
async fn nats_devices_dying_during_a_graceful_restart_with_persistence_are_notified_once_each() {
    restart_with(Which::Nats, "TERM", true, 20).await;
}

#[tokio::test]
async fn devices_dying_during_a_hard_restart_without_persistence_are_notified_once_each() {
    restart_with(Which::Mosquitto, "KILL", false, 20).await;
}

#[tokio::test]
async fn nats_devices_dying_during_a_hard_restart_without_persistence_are_notified_once_each() {
    restart_with(Which::Nats, "KILL", false, 20).await;
}

#[tokio::test]
async fn devices_dying_during_a_hard_restart_with_persistence_are_notified_once_each() {
    restart_with(Which::Mosquitto, "KILL", true, 20).await;
}

#[tokio::test]
async fn nats_devices_dying_during_a_hard_restart_with_persistence_are_notified_once_each() {
    restart_with(Which::Nats, "KILL", true, 20).await;
}

#[tokio::test]
async fn devices_whose_wills_a_broker_lost_while_willwatch_was_down_are_notified_as_not_seen() {
    let Some(mut broker) = Broker::mosquitto(BrokerOptions::default()) else { return };
    let mut daemon = Daemon::start(&daemon_config(&broker));
    daemon.wait_connected().await;
    let mut devices = fleet_online(&broker, &daemon, 100).await;
    wait_confirmed(&daemon, 1).await;
    daemon.kill();
    // While willwatch is away: 10 devices die (their wills retained), then
    // the broker restarts without persistence and forgets them.
    let dead: Vec<String> = (0..10).map(|i| format!("d{:03}", i * 10)).collect();
    for i in (0..10).rev() {
        devices.remove(i * 10).kill();
    }
    broker.stop_with("KILL");
    broker.start_again();
    daemon.restart();
    wait_confirmed(&daemon, 1).await;
    eventually("the forgotten dead notified", Duration::from_secs(10), || {
        (notified(&daemon, "offline").len() >= dead.len()).then_some(())
    })
    .await;
    sync_with_sentinel(&broker, &daemon, &[]).await;
    assert_eq!(notified(&daemon, "offline"), dead, "{}", daemon.dump());
    let payloads: Vec<String> = daemon
        .logs(|l| l["action"] == "log" && l["event"] == "offline" && l["device"] != "sentinel")
        .iter()
        .map(|l| l["payload"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(payloads.iter().all(|p| p == "(not seen since the broker restarted)"), "{payloads:?}");
}

#[tokio::test]
async fn a_reconnect_of_willwatch_alone_pages_nobody() {
    // mosquitto's retained uptime is up to 10 s old: it once made this
    // reconnect look like a broker restart, and every device "not seen".
    let Some(broker) = Broker::mosquitto(BrokerOptions::default()) else { return };
    let proxy = Proxy::start(broker.port).await;
    let text = daemon_config(&broker).replace(&broker.url(), &format!("mqtt://127.0.0.1:{}", proxy.port));
    let daemon = Daemon::start(&text);
    daemon.wait_connected().await;
    let _devices = fleet_online(&broker, &daemon, 50).await;
    wait_confirmed(&daemon, 1).await;
    proxy.cut();
    wait_confirmed(&daemon, 2).await;
    sync_with_sentinel(&broker, &daemon, &[]).await;
    assert!(notified(&daemon, "offline").is_empty(), "{}", daemon.dump());
    assert!(daemon.logs(|l| l["sign"].is_string()).is_empty(), "no restart: {}", daemon.dump());
}

/// Guards restart detection against the session's queue: mosquitto
/// queues its `$SYS` uptime for a persistent session that is away and
/// sends it unretained at the reconnect, old by then. A willwatch frozen
/// past its keep-alive and a `sys_interval` took that reading for the
/// broker's present uptime and declared a broker restart.
#[tokio::test]
async fn a_reconnect_after_the_session_queued_the_brokers_uptime_is_no_restart() {
    let Some(broker) = Broker::mosquitto(BrokerOptions::default()) else { return };
    let text = daemon_config(&broker).replace("keep_alive = \"5s\"", "keep_alive = \"2s\"");
    let daemon = Daemon::start(&text);
    daemon.wait_connected().await;
    let _devices = fleet_online(&broker, &daemon, 5).await;
    wait_confirmed(&daemon, 1).await;
    // The broker drops it after 3 s; it publishes its uptime every 10-11 s.
    daemon.signal("STOP");
    tokio::time::sleep(Duration::from_secs(16)).await;
    daemon.signal("CONT");
    wait_confirmed(&daemon, 2).await;
    sync_with_sentinel(&broker, &daemon, &[]).await;
    assert!(daemon.logs(|l| l["sign"].is_string()).is_empty(), "no restart: {}", daemon.dump());
    assert!(notified(&daemon, "offline").is_empty(), "{}", daemon.dump());
}

/// Guards the uptime check against a broker whose answers fell behind
/// ours (a link gone quiet, a flood we could not read fast enough): our
/// keep-alive went unanswered, and at the reconnect the uptime readings it
/// had sent or queued meanwhile came, as old as the silence. One was taken
/// for the broker's present uptime and a restart declared (under a flood:
/// 1,509 devices notified offline that were not).
#[tokio::test]
async fn a_reconnect_after_the_brokers_answers_fell_behind_is_no_restart() {
    let Some(broker) = Broker::mosquitto(BrokerOptions::default()) else { return };
    let proxy = Proxy::start(broker.port).await;
    let text = daemon_config(&broker)
        .replace(&broker.url(), &format!("mqtt://127.0.0.1:{}", proxy.port))
        .replace("keep_alive = \"5s\"", "keep_alive = \"2s\"");
    let daemon = Daemon::start(&text);
    daemon.wait_connected().await;
    let _devices = fleet_online(&broker, &daemon, 5).await;
    wait_confirmed(&daemon, 1).await;
    proxy.go_silent();
    eventually("the keep-alive to go unanswered", SOON, || {
        daemon.logs(|l| l["what"] == "broker_lost").first().map(drop)
    })
    .await;
    // Long enough for the broker's uptime (every 10-11 s) to be sent into
    // the silence, or queued.
    tokio::time::sleep(Duration::from_secs(12)).await;
    proxy.speak_again();
    wait_confirmed(&daemon, 2).await;
    sync_with_sentinel(&broker, &daemon, &[]).await;
    assert!(daemon.logs(|l| l["sign"].is_string()).is_empty(), "no restart: {}", daemon.dump());
    assert!(notified(&daemon, "offline").is_empty(), "{}", daemon.dump());
}

#[tokio::test]
async fn a_broker_that_refuses_the_probe_topic_still_has_every_will_notified() {
    let acl =
        "topic readwrite fleet/#\ntopic readwrite plant/#\ntopic readwrite willwatch/test/status\ntopic read $SYS/#\n";
    let options = BrokerOptions { acl: Some(acl.into()), ..Default::default() };
    let Some(broker) = Broker::mosquitto(options) else { return };
    let daemon = Daemon::start(&daemon_config(&broker));
    daemon.wait_connected().await;
    let mut devices = fleet_online(&broker, &daemon, 5).await;
    wait_confirmed(&daemon, 1).await;
    devices.remove(2).kill();
    let event = daemon.wait_event("d002", "offline", 1).await;
    assert_eq!(event["payload"], "offline");
    let overdue = daemon.metric("willwatch_broker_probes_overdue_total ").await;
    assert!(overdue >= 2.0, "the connect's probe and the will's: {overdue}\n{}", daemon.dump());
}

const HOME_ASSISTANT: &str = "[[device]]\npreset = \"homeassistant\"\n";

/// Home Assistant's status is not retained, so a broker restart leaves
/// nothing to read back: until it speaks again it is unconfirmed (on
/// `/status` and in `/metrics`), never notified for it, and confirmed as
/// soon as it speaks.
async fn home_assistant_silent_after_a_graceful_restart(persistence: bool) {
    let Some(mut broker) = Broker::mosquitto(BrokerOptions { persistence, ..Default::default() }) else { return };
    let daemon = Daemon::start(&config(&broker, HOME_ASSISTANT));
    daemon.wait_connected().await;
    publish(broker.port, "homeassistant/status", "online", false).await;
    daemon.wait_state("homeassistant", "online").await;
    wait_confirmed(&daemon, 1).await;
    assert_eq!(daemon.device("homeassistant").await["confirmed"], true, "{}", daemon.dump());

    broker.stop_with("TERM");
    broker.start_again();
    wait_confirmed(&daemon, 2).await;
    let check = daemon.logs(confirmed).pop().expect("the second connection's confirm check");
    assert_eq!((check["unconfirmed"].as_u64(), check["not_seen"].as_u64()), (Some(1), Some(0)), "{check}");
    let device = daemon.device("homeassistant").await;
    assert_eq!(device["state"], "online", "{device}");
    assert_eq!(device["confirmed"], false, "{device}");
    assert_eq!(device["notified"], false, "{device}");
    assert_eq!(daemon.metric("willwatch_devices_unconfirmed ").await, 1.0);

    publish(broker.port, "homeassistant/status", "online", false).await;
    daemon.wait_device("homeassistant", "confirmed", |d| d["confirmed"] == true).await;
    assert_eq!(daemon.metric("willwatch_devices_unconfirmed ").await, 0.0, "{}", daemon.dump());
    let events = daemon.logs(|l| l["action"] == "log" && l["device"] == "homeassistant");
    assert!(events.is_empty(), "never notified: {events:?}");
}

#[tokio::test]
async fn home_assistant_silent_after_a_graceful_restart_without_persistence_is_unconfirmed_and_never_notified() {
    home_assistant_silent_after_a_graceful_restart(false).await;
}

#[tokio::test]
async fn home_assistant_silent_after_a_graceful_restart_with_persistence_is_unconfirmed_and_never_notified() {
    home_assistant_silent_after_a_graceful_restart(true).await;
}

/// A device's true life, as the fault test drives it.
struct Truth {
    devices: BTreeMap<String, Option<LiveDevice>>,
    deaths: HashMap<String, usize>,
}

impl Truth {
    fn toggle(&mut self, id: &str, port: u16) {
        let slot = self.devices.get_mut(id).expect("a known device");
        match slot.take() {
            Some(device) => {
                device.kill();
                *self.deaths.entry(id.to_string()).or_default() += 1;
            }
            None => *slot = Some(LiveDevice::start(port, id, &format!("fleet/{id}/status"))),
        }
    }
}

#[tokio::test]
async fn random_broker_restarts_while_devices_die_and_return_notify_no_outage_that_did_not_happen() {
    let setting = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let restarts = setting("WILLWATCH_FAULT_RESTARTS", 4);
    let (seed, mut rng) = support::fault_seed("broker fault test");
    let persistence = rng.random_bool(0.5);
    let context = format!("seed {seed}, persistence {persistence}");
    let Some(mut broker) = Broker::mosquitto(BrokerOptions { persistence, ..Default::default() }) else { return };
    let daemon = Daemon::start(&daemon_config(&broker));
    daemon.wait_connected().await;
    let ids: Vec<String> = (0..20).map(|i| format!("d{i:03}")).collect();
    let devices = fleet_online(&broker, &daemon, ids.len()).await;
    let mut truth =
        Truth { devices: ids.iter().cloned().zip(devices.into_iter().map(Some)).collect(), deaths: HashMap::new() };
    wait_confirmed(&daemon, 1).await;

    let mut before_last = 0;
    for _ in 0..restarts {
        // Devices die and come back at random while the broker is up...
        let until = tokio::time::Instant::now() + Duration::from_millis(rng.random_range(500..3000));
        while tokio::time::Instant::now() < until {
            let id = &ids[rng.random_range(0..ids.len())];
            truth.toggle(id, broker.port);
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
        }
        // ...and while it is down.
        let signal = if rng.random_bool(0.5) { "TERM" } else { "KILL" };
        eprintln!("{context}: broker {signal}");
        before_last = connects(&daemon);
        broker.stop_with(signal);
        for _ in 0..rng.random_range(0..3) {
            let id = &ids[rng.random_range(0..ids.len())];
            truth.toggle(id, broker.port);
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..800))).await;
        broker.start_again();
    }
    eventually("the last reconnect", Duration::from_secs(30), || (connects(&daemon) > before_last).then_some(())).await;
    let connections = connects(&daemon);
    wait_confirmed(&daemon, connections).await;
    let last: BTreeMap<String, bool> = truth.devices.iter().map(|(id, d)| (id.clone(), d.is_some())).collect();
    let history = |device: &str| {
        daemon
            .logs(|l| l["device"] == device || l["what"] == "broker_connected" || l["sign"].is_string())
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    within(Duration::from_secs(30), async || {
        let mut now: HashMap<String, String> = HashMap::new();
        for l in daemon.logs(|l| l["action"] == "log" && (l["event"] == "offline" || l["event"] == "online")) {
            let (Some(device), Some(event)) = (l["device"].as_str(), l["event"].as_str()) else { continue };
            now.insert(device.to_string(), event.to_string());
        }
        let wrong = last
            .iter()
            .find(|(id, up)| now.get(*id).map_or("online", String::as_str) != if **up { "online" } else { "offline" });
        match wrong {
            None => Ok(()),
            Some((id, up)) => Err((id.clone(), *up, now.get(id).cloned())),
        }
    })
    .await
    .unwrap_or_else(|(id, up, now)| {
        panic!(
            "{context}: {id} is {} but was last notified {now:?}\n{}",
            if up { "online" } else { "offline" },
            history(&id)
        )
    });
    sync_with_sentinel(&broker, &daemon, &[]).await;
    let mut kinds: HashMap<String, Vec<String>> = HashMap::new();
    for l in daemon.logs(|l| l["action"] == "log" && (l["event"] == "offline" || l["event"] == "online")) {
        let device = l["device"].as_str().unwrap_or_default().to_string();
        kinds.entry(device).or_default().push(l["event"].as_str().unwrap_or_default().to_string());
    }
    for (device, seen) in &kinds {
        if device == "sentinel" {
            continue;
        }
        for (i, kind) in seen.iter().enumerate() {
            assert_eq!(kind, if i % 2 == 0 { "offline" } else { "online" }, "{context}: {device} notified {seen:?}");
        }
        let offlines = seen.iter().filter(|k| *k == "offline").count();
        let deaths = truth.deaths.get(device).copied().unwrap_or(0);
        assert!(
            offlines <= deaths,
            "{context}: {device} notified {offlines} outages for {deaths} deaths: {seen:?}\n{}",
            history(device)
        );
    }
    eprintln!(
        "{context}: {restarts} broker restarts over {connections} connections, {} deaths, {} outages notified, none false",
        truth.deaths.values().sum::<usize>(),
        kinds
            .iter()
            .filter(|(d, _)| *d != "sentinel")
            .map(|(_, k)| k.iter().filter(|k| *k == "offline").count())
            .sum::<usize>()
    );
}
