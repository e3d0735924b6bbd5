//! A simulated Sparkplug B edge node: a real MQTT client whose will is its
//! NDEATH, which publishes its NBIRTH and its devices' DBIRTHs and answers
//! every rebirth request (NCMD) with them again.
//!
//! Its payloads are the ones pysparkplug made (`tests/data/sparkplug`,
//! bdSeq 3); a second device's DBIRTH, which needs the next seq, is
//! encoded with willwatch's own types.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prost::Message;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use tokio::task::JoinHandle;
use willwatch::sparkplug::payload::{Payload, REBIRTH};

/// A payload pysparkplug made.
pub fn reference(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/sparkplug/{name}", env!("CARGO_MANIFEST_DIR"))).expect("reference payload")
}

pub struct EdgeNode {
    pub client: AsyncClient,
    /// Rebirth requests received.
    pub rebirths: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl EdgeNode {
    /// Connects as `group`/`node` with devices `devices`, and is born, in
    /// session (`bdSeq`) 3, with pysparkplug's payloads.
    pub async fn connect(port: u16, group: &str, node: &str, devices: &[&str]) -> EdgeNode {
        EdgeNode::connect_session(port, group, node, devices, 3).await
    }

    /// As `connect`, in session `bd_seq` (a node counts its connections).
    pub async fn connect_session(port: u16, group: &str, node: &str, devices: &[&str], bd_seq: u64) -> EdgeNode {
        let mut options = MqttOptions::new(format!("edge-{group}-{node}"), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_last_will(LastWill::new(
            format!("spBv1.0/{group}/NDEATH/{node}"),
            session(reference("ndeath.bin"), bd_seq),
            QoS::AtLeastOnce,
            false,
        ));
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let command = format!("spBv1.0/{group}/NCMD/{node}");
        client.subscribe(&command, QoS::AtLeastOnce).await.expect("queue subscribe");
        let again = births(group, node, devices, bd_seq);
        let rebirths = Arc::new(AtomicUsize::new(0));
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let (publisher, counter) = (client.clone(), Arc::clone(&rebirths));
        let task = tokio::spawn(async move {
            let mut subscribed = Some(subscribed_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = subscribed.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == command => {
                        let request = Payload::decode(p.payload).expect("a rebirth request is a Sparkplug payload");
                        assert!(
                            request
                                .metrics
                                .iter()
                                .any(|m| m.name.as_deref() == Some(REBIRTH) && m.boolean_value == Some(true)),
                            "not a rebirth request: {request:?}"
                        );
                        counter.fetch_add(1, Ordering::SeqCst);
                        for (topic, payload) in &again {
                            publisher
                                .publish(topic, QoS::AtMostOnce, false, payload.clone())
                                .await
                                .expect("queue rebirth");
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
            .await
            .expect("subscribed in time")
            .expect("task alive");
        for (topic, payload) in births(group, node, devices, bd_seq) {
            client.publish(topic, QoS::AtMostOnce, false, payload).await.expect("queue birth");
        }
        EdgeNode { client, rebirths, task }
    }

    /// Drops the connection without DISCONNECT: the broker sends the NDEATH.
    pub fn kill(self) {
        self.task.abort();
    }
}

/// A reference birth or death of session 3, as of session `bd_seq`.
fn session(reference: Vec<u8>, bd_seq: u64) -> Vec<u8> {
    let mut payload = Payload::decode(reference.as_slice()).expect("reference payload");
    for metric in payload.metrics.iter_mut().filter(|m| m.name.as_deref() == Some("bdSeq")) {
        metric.long_value = Some(bd_seq);
    }
    if bd_seq == 3 { reference } else { payload.encode_to_vec() }
}

/// The NBIRTH and the DBIRTHs, in order, with their seq.
fn births(group: &str, node: &str, devices: &[&str], bd_seq: u64) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![(format!("spBv1.0/{group}/NBIRTH/{node}"), session(reference("nbirth.bin"), bd_seq))];
    for (i, device) in devices.iter().enumerate() {
        let payload = if i == 0 {
            reference("dbirth.bin")
        } else {
            Payload { timestamp: Some(1), metrics: Vec::new(), seq: Some(i as u64 + 1) }.encode_to_vec()
        };
        out.push((format!("spBv1.0/{group}/DBIRTH/{node}/{device}"), payload));
    }
    out
}
