//! Grace periods: an offline must last `grace` before offline actions fire;
//! a device back within it fires nothing at all.

mod support;

use std::time::{Duration, Instant};

use support::{Broker, Daemon, SOON, config, publish};

const DEVICES: &str = r#"
[defaults]
grace = "1s"

[[device]]
id = "pump-7"
topic = "plant/pump-7/status"

[[device]]
id = "sentinel"
topic = "plant/sentinel/status"
grace = "0s"
"#;

#[tokio::test]
async fn a_flap_within_the_grace_period_fires_nothing() {
    let broker = Broker::start();
    let daemon = Daemon::start(&config(&broker, DEVICES));
    daemon.wait_connected().await;
    publish(broker.port, "plant/pump-7/status", "online", false).await;
    publish(broker.port, "plant/pump-7/status", "offline", false).await;
    let waiting = daemon.wait_log("the grace period to start", SOON, |l| l["what"] == "device_grace").await;
    assert_eq!(waiting["device"], "pump-7");
    publish(broker.port, "plant/pump-7/status", "online", false).await;

    // Past the grace period, then a sentinel event: everything before it is handled.
    support::observe(Duration::from_millis(1500)).await;
    publish(broker.port, "plant/sentinel/status", "offline", false).await;
    daemon.wait_event("sentinel", "offline", 1).await;
    assert!(daemon.events("pump-7", "offline").is_empty(), "{}", daemon.dump());
    assert!(daemon.events("pump-7", "online").is_empty());
}

#[tokio::test]
async fn an_offline_outlasting_the_grace_period_fires_once_late() {
    let broker = Broker::start();
    let daemon = Daemon::start(&config(&broker, DEVICES));
    daemon.wait_connected().await;
    publish(broker.port, "plant/pump-7/status", "online", false).await;
    let went_offline = Instant::now();
    publish(broker.port, "plant/pump-7/status", "offline", false).await;
    let event = daemon.wait_event("pump-7", "offline", 1).await;
    let late = went_offline.elapsed();
    assert!(late >= Duration::from_millis(950), "fired after {late:?}, inside the grace period");
    assert_eq!(event["previous"], "online");

    publish(broker.port, "plant/pump-7/status", "offline", false).await;
    publish(broker.port, "plant/pump-7/status", "online", false).await;
    let online = daemon.wait_event("pump-7", "online", 1).await;
    assert!(online["offline_for_s"].as_f64().unwrap() >= 0.95, "{online}");
    assert_eq!(daemon.events("pump-7", "offline").len(), 1);
}
