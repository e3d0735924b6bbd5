//! An alert storm: 500 devices go offline at once. Every one is detected
//! and logged, and each batching webhook sends one request for all of them.

mod support;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use support::{Behaviour, Broker, Daemon, Receiver, SOON, config, eventually};

const DEVICES: usize = 500;

/// Publishes `payload` for every device from one client, pipelined.
async fn publish_all(port: u16, payload: &str) {
    let (client, mut eventloop) = AsyncClient::new(MqttOptions::new("storm", "127.0.0.1", port), DEVICES + 8);
    for i in 0..DEVICES {
        client.publish(format!("site/dev-{i}/status"), QoS::AtLeastOnce, true, payload).await.unwrap();
    }
    let mut acked = 0;
    tokio::time::timeout(SOON, async {
        while acked < DEVICES {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
                acked += 1;
            }
        }
    })
    .await
    .expect("all publishes acknowledged");
}

#[tokio::test]
async fn a_storm_of_500_offlines_is_one_batched_request_per_action() {
    let broker = Broker::start();
    let plain = Receiver::start(Behaviour::Accept).await;
    let am = Receiver::start(Behaviour::Accept).await;
    let text = format!(
        "[action.ops]\ntype = \"webhook\"\nurl = \"{}\"\nbatch = \"3s\"\n\n\
         [action.am]\ntype = \"webhook\"\nurl = \"{}\"\nbatch = \"3s\"\nformat = \"alertmanager\"\n\n\
         [[device]]\ntopic = \"site/{{id}}/status\"\nactions = [\"log\", \"ops\", \"am\"]\n",
        plain.url, am.url
    );
    publish_all(broker.port, "online").await;
    let daemon = Daemon::start(&config(&broker, &text));
    daemon.wait_connected().await;
    eventually("every device known online", SOON, || {
        let online = daemon.logs(|l| l["what"] == "device_state" && l["state"] == "online").len();
        (online == DEVICES).then_some(())
    })
    .await;

    publish_all(broker.port, "offline").await;
    let batch = plain.wait_for(1, SOON).await.remove(0).json();
    let group = am.wait_for(1, SOON).await.remove(0).json();
    assert_eq!(batch.as_array().unwrap().len(), DEVICES);
    assert_eq!(group["alerts"].as_array().unwrap().len(), DEVICES);
    assert_eq!(group["status"], "firing");
    eventually("500 offline log lines", SOON, || {
        (daemon.logs(|l| l["action"] == "log" && l["event"] == "offline").len() == DEVICES).then_some(())
    })
    .await;

    // One more device afterwards makes a batch of its own: nothing from
    // the storm spilled into a second request.
    support::publish(broker.port, "site/late/status", "offline", false).await;
    let requests = plain.wait_for(2, SOON).await;
    assert_eq!(requests[1].json().as_array().unwrap().len(), 1);
    assert_eq!(requests[1].json()[0]["device"], "late");
    assert_eq!(am.wait_for(2, SOON).await.len(), 2);
}
