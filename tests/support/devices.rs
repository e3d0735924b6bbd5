//! Simulated devices and one-shot MQTT helpers, all real MQTT clients.
//!
//! A `SimDevice` connects with a Last Will on its status topic; `kill()`
//! drops its TCP connection without DISCONNECT, as a device losing power
//! does, so the broker publishes the will.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct SimDevice {
    pub client: AsyncClient,
    task: JoinHandle<()>,
}

impl SimDevice {
    /// Connects with a retained will of `will` on `topic` and publishes
    /// `birth` there, retained; returns once the broker has acknowledged
    /// the birth.
    pub async fn connect(port: u16, client_id: &str, topic: &str, birth: &str, will: &str) -> SimDevice {
        SimDevice::connect_with(port, client_id, topic, birth, will, Duration::from_secs(30)).await
    }

    /// As `connect`, with a keep-alive of one's choosing.
    pub async fn connect_with(
        port: u16,
        client_id: &str,
        topic: &str,
        birth: &str,
        will: &str,
        keep_alive: Duration,
    ) -> SimDevice {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_keep_alive(keep_alive);
        options.set_last_will(LastWill::new(topic, will.as_bytes().to_vec(), QoS::AtLeastOnce, true));
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        client.publish(topic, QoS::AtLeastOnce, true, birth.as_bytes().to_vec()).await.expect("queue birth");
        let (acked_tx, acked_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut acked = Some(acked_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        if let Some(tx) = acked.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), acked_rx)
            .await
            .expect("birth acknowledged in time")
            .expect("device task alive");
        SimDevice { client, task }
    }

    /// Drops the connection without DISCONNECT: the broker sends the will.
    pub fn kill(self) {
        self.task.abort();
    }

    /// Disconnects cleanly: the broker discards the will.
    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

/// A device as firmware is: a retained will, and after every connect
/// (the broker restarted, the network came back) its retained birth again.
/// Dropping it (or `kill`) cuts its connection as a power loss does.
pub struct LiveDevice {
    task: JoinHandle<()>,
    /// Connections acknowledged so far.
    pub connects: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl LiveDevice {
    /// Starts connecting (retrying every 200 ms while the broker is away);
    /// returns at once.
    pub fn start(port: u16, client_id: &str, topic: &str) -> LiveDevice {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_last_will(LastWill::new(topic, b"offline".to_vec(), QoS::AtLeastOnce, true));
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let connects = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = std::sync::Arc::clone(&connects);
        let topic = topic.to_string();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.try_publish(&topic, QoS::AtLeastOnce, true, b"online".to_vec());
                        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        LiveDevice { task, connects }
    }

    pub fn connects(&self) -> usize {
        self.connects.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Cuts the connection without DISCONNECT: the broker sends the will.
    pub fn kill(self) {}
}

impl Drop for LiveDevice {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publishes one message with a fresh client and waits for its PUBACK.
pub async fn publish(port: u16, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
    publish_many(port, &[(topic, payload.into())], retain).await;
}

/// Publishes messages in order from one client (so the broker delivers
/// them in that order) and waits until all are acknowledged.
pub async fn publish_many(port: u16, messages: &[(&str, Vec<u8>)], retain: bool) {
    let id = format!("pub-{}", rand_suffix());
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_max_packet_size(32 << 20, 32 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, messages.len() + 8);
    for (topic, payload) in messages {
        client.publish(*topic, QoS::AtLeastOnce, retain, payload.clone()).await.expect("queue publish");
    }
    let mut acks = 0;
    tokio::time::timeout(Duration::from_secs(10), async {
        while acks < messages.len() {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.expect("publisher connection") {
                acks += 1;
            }
        }
    })
    .await
    .expect("publishes acknowledged in time");
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
}

/// The retained payload on `topic`, or `None` if there is none (as far as
/// a fresh subscriber can tell within half a second).
pub async fn retained(port: u16, topic: &str) -> Option<String> {
    let mut options = MqttOptions::new(format!("peek-{}", rand_suffix()), "127.0.0.1", port);
    options.set_clean_session(true);
    let (client, mut eventloop) = AsyncClient::new(options, 8);
    client.subscribe(topic, QoS::AtLeastOnce).await.expect("queue subscribe");
    let found = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) if p.retain => {
                    return Some(String::from_utf8_lossy(&p.payload).into_owned());
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten();
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
    found
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    u64::from(std::process::id()) << 20 | NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Waits until the retained payload on `topic` is `expected`.
pub async fn wait_retained(port: u16, topic: &str, expected: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if retained(port, topic).await.as_deref() == Some(expected) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "retained {topic} never became {expected}");
    }
}

/// A message a `Subscriber` received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Sent because of the subscription (a retained state), not live.
    pub retain: bool,
}

/// A test's own MQTT client that records every message on a filter. It
/// does not subscribe again after a broker restart.
pub struct Subscriber {
    seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Subscriber {
    /// Subscribes to `filter` (QoS 1, clean session); returns once the
    /// broker has acknowledged the subscription.
    pub async fn start(port: u16, filter: &str) -> Subscriber {
        let mut options = MqttOptions::new(format!("sub-{}", rand_suffix()), "127.0.0.1", port);
        options.set_clean_session(true);
        let (client, mut eventloop) = AsyncClient::new(options, 8);
        client.subscribe(filter, QoS::AtLeastOnce).await.expect("queue subscribe");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&seen);
        let (subscribed_tx, subscribed_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let _client = client;
            let mut subscribed = Some(subscribed_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = subscribed.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => sink.lock().unwrap().push(Seen {
                        topic: p.topic,
                        payload: p.payload.to_vec(),
                        retain: p.retain,
                    }),
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
            .await
            .expect("subscribed in time")
            .expect("subscriber task alive");
        Subscriber { seen, task }
    }

    /// Every message received so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}
