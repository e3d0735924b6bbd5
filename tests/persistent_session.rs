//! Nothing lost while willwatch is down: with `persistent_session` (the
//! default) the broker keeps willwatch's session and queues the QoS 1
//! messages published while it is away; a non-retained will (Home
//! Assistant's) published then is alerted once after willwatch starts,
//! flagged as seen late. A device that went down and came back meanwhile
//! fires nothing: what a broker queued cannot tell an outage from its own
//! restart (the wills it publishes as it stops, the births after), so the
//! last word of each device counts.

mod support;

use std::time::Duration;

use support::{Broker, BrokerOptions, Daemon, config, publish};

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
            l["message"] == "device state" && l["state"] == "online"
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
    tokio::time::sleep(Duration::from_secs(3)).await;
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
