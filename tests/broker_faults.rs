//! Faults on the broker side: restarts, an unreachable broker, a wrong
//! password. The daemon reports each clearly, retries with backoff, and
//! detects devices again once it is back.

mod support;

use std::time::Duration;

use support::{Broker, BrokerOptions, Daemon, SOON, config, eventually, publish, wait_retained};

const PUMP: &str = "[[device]]\nid = \"pump-7\"\ntopic = \"plant/pump-7/status\"\n";

fn connections(daemon: &Daemon) -> usize {
    daemon.logs(|l| l["what"] == "broker_connected").len()
}

#[tokio::test]
async fn broker_restart_reconnects_resubscribes_and_detects_again() {
    let Some(mut broker) = Broker::mosquitto(BrokerOptions::default()) else {
        return;
    };
    let daemon = Daemon::start(&config(&broker, PUMP));
    daemon.wait_connected().await;

    broker.restart();
    eventually("a second connection", Duration::from_secs(30), || (connections(&daemon) >= 2).then_some(())).await;
    assert_eq!(daemon.logs(|l| l["what"] == "broker_lost").len(), 1, "{}", daemon.dump());
    // The retained birth is back although the broker kept nothing.
    wait_retained(broker.port, "willwatch/test/status", "online").await;
    // Subscriptions were restored: detection works.
    publish(broker.port, "plant/pump-7/status", "offline", false).await;
    daemon.wait_event("pump-7", "offline", 1).await;
    // The first connection is no reconnect; the one after the restart is.
    assert_eq!(daemon.metric("willwatch_broker_reconnects_total ").await, 1.0);
}

#[tokio::test]
async fn unreachable_broker_is_retried_with_growing_delays_until_it_appears() {
    let Some(mut broker) = Broker::mosquitto(BrokerOptions::default()) else {
        return;
    };
    broker.stop();
    let daemon = Daemon::start(&config(&broker, PUMP));
    let attempts = |daemon: &Daemon| daemon.logs(|l| l["what"] == "broker_unreachable_attempt");
    let failures = eventually("three failed attempts", Duration::from_secs(20), || {
        let seen = attempts(&daemon);
        (seen.len() >= 3).then_some(seen)
    })
    .await;
    let delays: Vec<f64> = failures
        .iter()
        .map(|l| humantime::parse_duration(l["retry_in"].as_str().unwrap()).unwrap().as_secs_f64())
        .collect();
    assert!(delays[2] > delays[0], "delays do not grow: {delays:?}");
    assert_eq!(failures[0]["level"], "WARN");

    broker.restart();
    daemon.wait_connected().await;
    publish(broker.port, "plant/pump-7/status", "offline", false).await;
    daemon.wait_event("pump-7", "offline", 1).await;
}

#[tokio::test]
async fn wrong_password_is_a_clear_error_retried_until_fixed_by_reload() {
    let options = BrokerOptions { user: Some(("watcher".into(), "right-one".into())), ..Default::default() };
    let Some(broker) = Broker::mosquitto(options) else {
        return;
    };
    let password_file = broker.dir().join("mqtt-password");
    std::fs::write(&password_file, "wrong-one\n").unwrap();
    let text = config(&broker, PUMP).replace(
        "keep_alive = \"5s\"\n",
        &format!("keep_alive = \"5s\"\nusername = \"watcher\"\npassword_file = \"{}\"\n", password_file.display()),
    );
    let daemon = Daemon::start(&text);
    let refusals = |daemon: &Daemon| daemon.logs(|l| l["what"] == "broker_refused");
    let seen = eventually("two refused attempts", Duration::from_secs(20), || {
        let seen = refusals(&daemon);
        (seen.len() >= 2).then_some(seen)
    })
    .await;
    assert_eq!(seen[0]["level"], "ERROR");
    let reason = seen[0]["reason"].as_str().unwrap();
    assert!(reason == "not authorized" || reason == "bad user name or password", "{reason}");
    assert!(!daemon.dump().contains("wrong-one"), "the password leaked into the log");

    std::fs::write(&password_file, "right-one\n").unwrap();
    daemon.signal("HUP");
    daemon.wait_log("a reconnect after the reload", SOON, |l| l["what"] == "broker_settings_changed").await;
    daemon.wait_connected().await;
    publish_with_password(&broker, "plant/pump-7/status", "offline").await;
    daemon.wait_event("pump-7", "offline", 1).await;
}

async fn publish_with_password(broker: &Broker, topic: &str, payload: &str) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut options = MqttOptions::new("publisher", "127.0.0.1", broker.port);
    options.set_credentials("watcher", "right-one");
    let (client, mut eventloop) = AsyncClient::new(options, 8);
    client.publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec()).await.unwrap();
    tokio::time::timeout(SOON, async {
        while !matches!(eventloop.poll().await.expect("publisher connection"), Event::Incoming(Packet::PubAck(_))) {}
    })
    .await
    .expect("publish acknowledged");
}
