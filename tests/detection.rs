//! Detecting devices going offline and coming back, from wills and status
//! payloads, against a real broker and the real daemon.

mod support;

use std::time::Duration;

use support::daemon::message;
use support::{Broker, Daemon, SENTINEL, SOON, SimDevice, config, publish, publish_many, sync_with_sentinel};

const OWN_DEVICES: &str = r#"
[[device]]
id = "pump-7"
topic = "plant/pump-7/status"


[[device]]
topic = "sensors/{id}/status"
offline = ["offline", "lost"]
"#;

fn devices() -> String {
    format!("{OWN_DEVICES}\n{SENTINEL}")
}

/// A broker and a connected daemon watching `devices()`.
async fn watching() -> (Broker, Daemon) {
    let broker = Broker::start();
    let daemon = Daemon::start(&config(&broker, &devices()));
    daemon.wait_connected().await;
    (broker, daemon)
}

/// pump-7 connected with its will, and seen online by the daemon.
async fn pump_online(broker: &Broker, daemon: &Daemon) -> SimDevice {
    let device = SimDevice::connect(broker.port, "pump-7", "plant/pump-7/status", "online", "offline").await;
    wait_state(daemon, "pump-7", "online").await;
    device
}

/// Waits until the daemon has seen `device` in `state`.
async fn wait_state(daemon: &Daemon, device: &str, state: &str) {
    let what = format!("{device} to be {state}");
    daemon.wait_log(&what, SOON, |l| l["what"] == "device_state" && l["device"] == device && l["state"] == state).await;
}

#[tokio::test]
async fn device_will_fires_exactly_one_offline() {
    let (broker, daemon) = watching().await;
    let device = pump_online(&broker, &daemon).await;

    device.kill();
    let event = daemon.wait_event("pump-7", "offline", 1).await;
    assert_eq!(event["topic"], "plant/pump-7/status");
    assert_eq!(event["previous"], "online");
    assert_eq!(event["level"], "WARN");
    assert!(message(&event).contains("offline"));

    sync_with_sentinel(&broker, &daemon, &[("plant/pump-7/status", "offline")]).await;
    assert_eq!(daemon.events("pump-7", "offline").len(), 1, "{}", daemon.dump());
    assert_eq!(daemon.events("pump-7", "online").len(), 0);
}

#[tokio::test]
async fn recovery_fires_one_online_with_its_offline_duration() {
    let (broker, daemon) = watching().await;
    let device = pump_online(&broker, &daemon).await;
    device.kill();
    daemon.wait_event("pump-7", "offline", 1).await;
    let went_offline = tokio::time::Instant::now();

    let offline_at_least = Duration::from_millis(1200);
    tokio::time::sleep_until(went_offline + offline_at_least).await;
    let _back = SimDevice::connect(broker.port, "pump-7", "plant/pump-7/status", "online", "offline").await;
    let event = daemon.wait_event("pump-7", "online", 1).await;
    let offline_for = event["offline_for_s"].as_f64().expect("offline_for_s");
    assert!(offline_for >= offline_at_least.as_secs_f64() - 0.1, "offline_for_s = {offline_for}");
    assert!(offline_for < 10.0, "offline_for_s = {offline_for}");
    assert!(message(&event).starts_with("device online after 1s"), "{event}");

    sync_with_sentinel(&broker, &daemon, &[("plant/pump-7/status", "online")]).await;
    assert_eq!(daemon.events("pump-7", "online").len(), 1, "{}", daemon.dump());
}

#[tokio::test]
async fn duplicate_messages_fire_nothing_more() {
    let (broker, daemon) = watching().await;
    let t = "plant/pump-7/status";
    sync_with_sentinel(
        &broker,
        &daemon,
        &[(t, "online"), (t, "online"), (t, "offline"), (t, "offline"), (t, "offline")],
    )
    .await;
    assert_eq!(daemon.events("pump-7", "offline").len(), 1, "{}", daemon.dump());
    sync_with_sentinel(&broker, &daemon, &[(t, "online"), (t, "online"), (t, "online")]).await;
    assert_eq!(daemon.events("pump-7", "online").len(), 1, "{}", daemon.dump());
    assert_eq!(daemon.events("pump-7", "offline").len(), 1);
}

#[tokio::test]
async fn pattern_device_takes_its_id_from_the_topic() {
    let (broker, daemon) = watching().await;
    let device = SimDevice::connect(broker.port, "t-9", "sensors/t-9/status", "online", "lost").await;
    wait_state(&daemon, "t-9", "online").await;
    device.kill();
    let event = daemon.wait_event("t-9", "offline", 1).await;
    assert_eq!(event["topic"], "sensors/t-9/status");
    assert_eq!(event["payload"], "lost");

    sync_with_sentinel(&broker, &daemon, &[("sensors/t-9/extra/status", "offline"), ("sensors/t-9/state", "offline")])
        .await;
    assert_eq!(daemon.logs(|l| l["action"] == "log" && l["event"] == "offline" && l["device"] != "sentinel").len(), 1);
}

#[tokio::test]
async fn retained_state_at_startup_sets_the_initial_state() {
    let broker = Broker::start();
    publish(broker.port, "plant/pump-7/status", "offline", true).await;
    publish(broker.port, "sensors/a/status", "online", true).await;
    let daemon = Daemon::start(&config(&broker, &devices()));
    daemon.wait_connected().await;

    let event = daemon.wait_event("pump-7", "offline", 1).await;
    assert_eq!(event["previous"], "unknown");
    wait_state(&daemon, "a", "online").await;
    sync_with_sentinel(&broker, &daemon, &[]).await;
    assert_eq!(daemon.events("a", "offline").len() + daemon.events("a", "online").len(), 0);

    publish(broker.port, "plant/pump-7/status", "online", true).await;
    daemon.wait_event("pump-7", "online", 1).await;
}

#[tokio::test]
async fn cleared_retained_message_makes_the_device_unknown() {
    let (broker, daemon) = watching().await;
    publish(broker.port, "plant/pump-7/status", "offline", true).await;
    daemon.wait_event("pump-7", "offline", 1).await;
    publish(broker.port, "plant/pump-7/status", "", true).await;
    wait_state(&daemon, "pump-7", "unknown").await;

    // The open alert is still resolved when the device comes back.
    publish(broker.port, "plant/pump-7/status", "online", true).await;
    let event = daemon.wait_event("pump-7", "online", 1).await;
    assert_eq!(event["previous"], "unknown");
}

#[tokio::test]
async fn unrecognised_binary_and_oversized_payloads_change_nothing() {
    let (broker, daemon) = watching().await;
    publish(broker.port, "plant/pump-7/status", "online", false).await;
    wait_state(&daemon, "pump-7", "online").await;

    let t = "plant/pump-7/status";
    let huge = vec![b'x'; 2 << 20];
    let messages: Vec<(&str, Vec<u8>)> =
        vec![(t, b"rebooting".to_vec()), (t, vec![0xff, 0xfe, 0x00, 0x80]), (t, huge), (t, b"{\"state\":".to_vec())];
    publish_many(broker.port, &messages, false).await;
    let warning = daemon
        .wait_log("an unrecognised-payload warning", SOON, |l| {
            l["level"] == "WARN" && l["device"] == "pump-7" && l["what"] == "payload_unrecognised"
        })
        .await;
    assert_eq!(warning["payload"], "rebooting");
    sync_with_sentinel(&broker, &daemon, &[]).await;
    // Rate-limited: one warning for the four payloads.
    assert_eq!(daemon.logs(|l| l["device"] == "pump-7" && l["what"] == "payload_unrecognised").len(), 1);
    assert!(daemon.logs(|l| l["what"] == "broker_lost").is_empty(), "{}", daemon.dump());

    // The state is still online: going offline now reports `previous = online`.
    publish(broker.port, t, "offline", false).await;
    let event = daemon.wait_event("pump-7", "offline", 1).await;
    assert_eq!(event["previous"], "online");
}
