//! The reconnect action: commands on a backoff ladder while a device is
//! offline, stopped by its return or by a reload, and escalation when the
//! ladder runs out.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use support::{Behaviour, Broker, Daemon, Receiver, SOON, config, eventually, publish};

/// Records (arrival, topic, payload) of everything on `filter`.
async fn listen(port: u16, filter: &str) -> Arc<Mutex<Vec<(Instant, String, String)>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (client, mut eventloop) = AsyncClient::new(MqttOptions::new(format!("listener-{port}"), "127.0.0.1", port), 16);
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    let sink = Arc::clone(&seen);
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _client = client;
        let mut subscribed = Some(subscribed_tx);
        while let Ok(event) = eventloop.poll().await {
            match event {
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(tx) = subscribed.take() {
                        let _ = tx.send(());
                    }
                }
                Event::Incoming(Packet::Publish(p)) => sink.lock().unwrap().push((
                    Instant::now(),
                    p.topic.clone(),
                    String::from_utf8_lossy(&p.payload).into_owned(),
                )),
                _ => {}
            }
        }
    });
    subscribed_rx.await.unwrap();
    seen
}

const LADDER: &str = r#"
[action.kick]
type = "reconnect"
topic = "plant/{id}/cmd"
payload = "reconnect {id}"
first_after = "300ms"
backoff = 2.0
max_interval = "1s"
max_attempts = 3
escalate = ["log", "ops"]
"#;

fn setup(receiver: &Receiver) -> String {
    format!(
        "{LADDER}\n[action.ops]\ntype = \"webhook\"\nurl = \"{}\"\n\n\
         [[device]]\ntopic = \"plant/{{id}}/status\"\nactions = [\"log\", \"kick\"]\n",
        receiver.url
    )
}

/// A broker, a webhook receiver for escalations, a listener on the command
/// topics, and a connected daemon running the ladder.
async fn ladder_bed() -> (Broker, Receiver, Arc<Mutex<Vec<(Instant, String, String)>>>, Daemon) {
    ladder_bed_with(|setup| setup).await
}

/// `ladder_bed`, its config changed by `change`.
async fn ladder_bed_with(
    change: impl FnOnce(String) -> String,
) -> (Broker, Receiver, Arc<Mutex<Vec<(Instant, String, String)>>>, Daemon) {
    let broker = Broker::start();
    let receiver = Receiver::start(Behaviour::Accept).await;
    let commands = listen(broker.port, "plant/+/cmd").await;
    let daemon = Daemon::start(&config(&broker, &change(setup(&receiver))));
    daemon.wait_connected().await;
    (broker, receiver, commands, daemon)
}

#[tokio::test]
async fn ladder_sends_commands_with_backoff_then_escalates() {
    let (broker, receiver, commands, daemon) = ladder_bed().await;

    publish(broker.port, "plant/pump-7/status", "offline", false).await;
    let offline_at = Instant::now();
    let escalated = receiver.wait_for(1, SOON).await.remove(0).json();
    assert_eq!(escalated["event"], "reconnect_failed");
    assert_eq!(escalated["device"], "pump-7");
    assert_eq!(escalated["attempts"], 3);
    daemon.wait_event("pump-7", "reconnect_failed", 1).await;

    let seen = commands.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.iter().all(|(_, t, p)| t == "plant/pump-7/cmd" && p == "reconnect pump-7"), "{seen:?}");
    // Commands at about 0.3 s, 0.6 s and 1.2 s; given up 1 s (the cap) later.
    let at: Vec<f64> = seen.iter().map(|(t, _, _)| (*t - offline_at).as_secs_f64()).collect();
    let gaps = [at[0], at[1] - at[0], at[2] - at[1]];
    for (gap, expected) in gaps.iter().zip([0.3, 0.3, 0.6]) {
        assert!(*gap >= expected - 0.05 && *gap < expected + 0.5, "gaps {gaps:?}");
    }
}

#[tokio::test]
async fn ladder_stops_when_the_device_comes_back() {
    // The second command 3 s after the first: the online arrives between
    // them even on a loaded machine.
    let (broker, receiver, commands, daemon) = ladder_bed_with(|setup| {
        setup.replace("backoff = 2.0", "backoff = 10.0").replace("max_interval = \"1s\"", "max_interval = \"3s\"")
    })
    .await;

    publish(broker.port, "plant/pump-7/status", "offline", false).await;
    eventually("the first command", SOON, || (!commands.lock().unwrap().is_empty()).then_some(())).await;
    publish(broker.port, "plant/pump-7/status", "online", false).await;
    let stopped = daemon.wait_log("the ladder to stop", SOON, |l| l["what"] == "reconnect_stopped").await;
    assert_eq!(stopped["attempts"], 1);
    // Past the time the second command was due: nothing more was sent.
    support::observe(Duration::from_millis(3500)).await;
    assert_eq!(commands.lock().unwrap().len(), 1);
    assert!(receiver.received().is_empty());
    assert!(daemon.events("pump-7", "reconnect_failed").is_empty());
}

#[tokio::test]
async fn ladder_is_cancelled_by_a_reload_that_removes_the_device() {
    let (broker, receiver, commands, daemon) = ladder_bed().await;
    publish(broker.port, "plant/pump-7/status", "offline", false).await;
    daemon.wait_event("pump-7", "offline", 1).await;

    let without_kick = setup(&receiver).replace("actions = [\"log\", \"kick\"]", "actions = [\"log\"]");
    daemon.write_config(&config(&broker, &without_kick));
    daemon.signal("HUP");
    daemon.wait_log("the cancellation", SOON, |l| l["what"] == "reconnect_cancelled").await;
    let sent_before = commands.lock().unwrap().len();
    support::observe(Duration::from_millis(2500)).await;
    assert_eq!(commands.lock().unwrap().len(), sent_before, "commands after the cancellation");
    assert!(receiver.received().is_empty(), "an escalation after the cancellation");
}
