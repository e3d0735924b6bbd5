//! Nothing lost while willwatch is down: with `persistent_session` (the
//! default) the broker keeps willwatch's session and queues the QoS 1
//! messages published while it is away; a non-retained will (Home
//! Assistant's) published then is alerted once after willwatch starts,
//! flagged as seen late. A device that went down and came back meanwhile
//! fires nothing: what a broker queued cannot tell an outage from its own
//! restart (the wills it publishes as it stops, the births after), so the
//! last word of each device counts. A queue that filled up while willwatch
//! was away hides nothing: the wills it dropped are read from the
//! retained store and notified once each.

mod support;

use std::time::Duration;

use std::collections::BTreeMap;

use support::{
    Broker, BrokerOptions, Daemon, SENTINEL, SOON, SimDevice, config, eventually, publish, publish_many,
    sync_with_sentinel, wait_retained,
};

const HA: &str = "[[device]]\npreset = \"homeassistant\"\n";

fn with_settle(text: String) -> String {
    text.replace("settle = \"0s\"", "settle = \"2s\"")
}

/// A daemon that saw Home Assistant online, then was stopped cleanly.
async fn seen_online_then_stopped(broker: &Broker) -> Daemon {
    let mut daemon = Daemon::start(&with_settle(config(broker, HA)));
    daemon.wait_connected().await;
    publish(broker.port, "homeassistant/status", "online", false).await;
    daemon
        .wait_log("Home Assistant online", Duration::from_secs(10), |l| {
            l["what"] == "device_state" && l["state"] == "online"
        })
        .await;
    daemon.signal("TERM");
    assert!(daemon.exit_status(Duration::from_secs(15)).await.success());
    daemon
}

#[tokio::test]
async fn a_non_retained_will_published_while_stopped_is_alerted_once_after_the_start() {
    let Some(broker) = Broker::mosquitto(BrokerOptions::default()) else { return };
    let mut daemon = seen_online_then_stopped(&broker).await;

    publish(broker.port, "homeassistant/status", "offline", false).await;
    daemon.restart();
    let event = daemon.wait_event("homeassistant", "offline", 1).await;
    assert_eq!(event["event_id"].as_str().map(str::len), Some(36));
    assert_eq!(event["seen_late"], true, "{event}");
    // Not again: give the settle window (2 s) and the re-read after it the
    // chance to fire a second one.
    support::wait::observe(Duration::from_secs(3)).await;
    assert_eq!(daemon.events("homeassistant", "offline").len(), 1, "{}", daemon.dump());
}

#[tokio::test]
async fn a_device_down_and_back_while_willwatch_was_away_fires_nothing() {
    let Some(broker) = Broker::mosquitto(BrokerOptions::default()) else { return };
    let mut daemon = seen_online_then_stopped(&broker).await;

    publish(broker.port, "homeassistant/status", "offline", false).await;
    publish(broker.port, "homeassistant/status", "online", false).await;
    daemon.restart();
    daemon.wait_log("the queue applied", Duration::from_secs(10), |l| l["queued"].is_u64()).await;
    daemon
        .wait_log("the connection confirmed", Duration::from_secs(10), |l| {
            l["unconfirmed"].is_u64() && l["not_seen"].is_u64()
        })
        .await;
    assert_eq!(daemon.device("homeassistant").await["state"], "online");
    assert!(daemon.events("homeassistant", "offline").is_empty(), "{}", daemon.dump());
    assert!(daemon.events("homeassistant", "online").is_empty(), "{}", daemon.dump());
}

/// The devices notified `event`, with how many times each.
fn notified(daemon: &Daemon, event: &str) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for line in daemon.logs(|l| l["action"] == "log" && l["event"] == event && l["device"] != "sentinel") {
        *seen.entry(line["device"].as_str().unwrap_or_default().to_string()).or_default() += 1;
    }
    seen
}

#[tokio::test]
async fn wills_dropped_from_a_full_session_queue_are_notified_once_each_at_the_start() {
    // A stock mosquitto queues 1,000 QoS 1 messages for a session that is
    // away and drops the rest.
    let Some(broker) = Broker::mosquitto(BrokerOptions::default()) else { return };
    let port = broker.port;
    let ids: Vec<String> = (0..2000).map(|i| format!("d{i:04}")).collect();
    let topic = |id: &str| format!("fleet/{id}/status");
    let dying: Vec<String> = ids.iter().step_by(20).cloned().collect();
    let confirm_within = Duration::from_secs(5);
    let text = config(&broker, &format!("[[device]]\ntopic = \"fleet/{{id}}/status\"\n{SENTINEL}"))
        .replace("confirm_within = \"2s\"", "confirm_within = \"5s\"");
    let mut daemon = Daemon::start(&text);
    daemon.wait_connected().await;
    // The fleet comes online in waves, and willwatch knows every device:
    // one in 20 a real client with its retained will, the others their
    // retained births.
    let mut real = Vec::new();
    for (wave, chunk) in ids.chunks(200).enumerate() {
        for id in chunk.iter().step_by(20) {
            real.push(SimDevice::connect(port, id, &topic(id), "online", "offline").await);
        }
        let births: Vec<(String, Vec<u8>)> =
            chunk.iter().filter(|id| !dying.contains(id)).map(|id| (topic(id), b"online".to_vec())).collect();
        let births: Vec<(&str, Vec<u8>)> = births.iter().map(|(t, p)| (t.as_str(), p.clone())).collect();
        publish_many(port, &births, true).await;
        eventually("the wave known online", SOON, || {
            let known = daemon.logs(|l| l["what"] == "device_state" && l["state"] == "online").len();
            (known >= (wave + 1) * 200).then_some(())
        })
        .await;
    }
    daemon.signal("TERM");
    assert!(daemon.exit_status(SOON).await.success());

    // While willwatch is away every device says online again (the 100
    // first): its session's queue takes the first 1,000 and is full.
    let again =
        |ids: &[String]| -> Vec<(String, Vec<u8>)> { ids.iter().map(|id| (topic(id), b"online".to_vec())).collect() };
    let others: Vec<String> = ids.iter().filter(|id| !dying.contains(id)).cloned().collect();
    for batch in [again(&dying), again(&others)] {
        let batch: Vec<(&str, Vec<u8>)> = batch.iter().map(|(t, p)| (t.as_str(), p.clone())).collect();
        publish_many(port, &batch, true).await;
    }
    // Then the 100 die: their wills are retained, but the queue has no
    // room for them, and it holds their earlier online.
    for device in real {
        device.kill();
    }
    for id in &dying {
        wait_retained(port, &topic(id), "offline").await;
    }
    // mosquitto says so, once, when it starts dropping a client's messages.
    let dropping = format!("Outgoing messages are being dropped for client willwatch-test-{port}.");
    assert!(broker.log_tail(usize::MAX).contains(&dropping), "the queue never filled");

    let started = tokio::time::Instant::now();
    daemon.restart();
    eventually("the 100 dead notified", confirm_within + Duration::from_secs(20), || {
        (notified(&daemon, "offline").len() >= dying.len()).then_some(())
    })
    .await;
    let took = started.elapsed();
    sync_with_sentinel(&broker, &daemon, &[]).await;
    let offline = notified(&daemon, "offline");
    let expected: BTreeMap<String, usize> = dying.iter().map(|id| (id.clone(), 1)).collect();
    assert_eq!(offline, expected, "exactly the dead, once each\n{}", daemon.dump());
    assert!(notified(&daemon, "online").is_empty(), "{}", daemon.dump());
    assert!(took <= confirm_within + Duration::from_secs(5), "notified {took:?} after the start");
    eprintln!("the 100 dead notified {took:?} after the start");
}
