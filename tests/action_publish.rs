//! The publish action: the event JSON to a templated topic through the
//! daemon's own MQTT session.

mod support;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use support::{Broker, Daemon, SOON, config, publish};

#[tokio::test]
async fn events_are_published_as_json_to_the_templated_topic() {
    let broker = Broker::start();
    let text = "[action.alerts]\ntype = \"publish\"\ntopic = \"alerts/willwatch/{id}\"\nqos = 1\n\n\
                [[device]]\nid = \"pump-7\"\ntopic = \"plant/pump-7/status\"\nactions = [\"alerts\"]\n";
    let daemon = Daemon::start(&config(&broker, text));
    daemon.wait_connected().await;

    let (client, mut eventloop) = AsyncClient::new(MqttOptions::new("alert-reader", "127.0.0.1", broker.port), 16);
    client.subscribe("alerts/willwatch/#", QoS::AtLeastOnce).await.unwrap();
    let received = tokio::time::timeout(SOON, async {
        let mut subscribed = false;
        loop {
            match eventloop.poll().await.unwrap() {
                Event::Incoming(Packet::SubAck(_)) if !subscribed => {
                    subscribed = true;
                    publish(broker.port, "plant/pump-7/status", "offline", false).await;
                }
                Event::Incoming(Packet::Publish(p)) => return p,
                _ => {}
            }
        }
    })
    .await
    .expect("the event in time");
    assert_eq!(received.topic, "alerts/willwatch/pump-7");
    assert!(!received.retain);
    let body: serde_json::Value = serde_json::from_slice(&received.payload).unwrap();
    assert_eq!(body["event"], "offline");
    assert_eq!(body["device"], "pump-7");
    assert!(body["id"].as_str().is_some_and(|id| id.len() == 36), "{body}");
}
