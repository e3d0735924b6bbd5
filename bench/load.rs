//! The load generator: retained statuses for N devices, open-loop flips at
//! a fixed rate, and real devices with wills to kill.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};

pub fn topic(i: usize) -> String {
    format!("bench/dev-{i}/status")
}

fn options(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_inflight(1000).set_max_packet_size(1 << 20, 1 << 20).set_keep_alive(Duration::from_secs(30));
    o
}

/// Publishes `payload` retained for devices 0..n and waits for every PUBACK.
pub async fn publish_retained(port: u16, n: usize, payload: &str) -> Result<(), String> {
    let payload = payload.to_string();
    publish_retained_all(port, n, move |i| (topic(i), payload.clone())).await
}

/// A Zigbee2MQTT-named device: two levels, as `room/name` names are.
pub fn zigbee_name(i: usize) -> String {
    format!("room-{}/dev-{i}", i % 100)
}

/// Publishes `message(i)` (topic, payload) retained for i in 0..n and
/// waits for every PUBACK.
pub async fn publish_retained_all(
    port: u16,
    n: usize,
    message: impl Fn(usize) -> (String, String) + Send + 'static,
) -> Result<(), String> {
    let (client, mut eventloop) = AsyncClient::new(options("bench-loader", port), 1000);
    tokio::spawn(async move {
        for i in 0..n {
            let (topic, payload) = message(i);
            let _ = client.publish(topic, QoS::AtLeastOnce, true, payload).await;
        }
    });
    let mut acked = 0;
    while acked < n {
        if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.map_err(|e| e.to_string())? {
            acked += 1;
        }
    }
    Ok(())
}

/// Flips devices 0..n between offline and online at `rate` messages a
/// second for `duration`, on schedule whatever the receivers do (open
/// loop; with QoS 0 the publisher is never held back, with QoS 1 at most
/// by the broker's acknowledgements). Returns how many were sent.
pub async fn flip(port: u16, n: usize, rate: u64, duration: Duration, qos: QoS) -> Result<u64, String> {
    flip_with(port, rate, duration, qos, move |k| {
        let payload = if (k / n).is_multiple_of(2) { "offline" } else { "online" };
        (topic(k % n), payload.to_string())
    })
    .await
}

/// Publishes `message(k)` for k in 0.. at `rate` a second for `duration`,
/// open loop (not retained). Returns how many were sent.
pub async fn flip_with(
    port: u16,
    rate: u64,
    duration: Duration,
    qos: QoS,
    message: impl Fn(usize) -> (String, String),
) -> Result<u64, String> {
    let (client, mut eventloop) = AsyncClient::new(options("bench-flipper", port), 10_000);
    let poller = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let start = Instant::now();
    let total = rate * duration.as_secs();
    for k in 0..total {
        let due = start + Duration::from_secs_f64(k as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let (topic, payload) = message(k as usize);
        client.publish(topic, qos, false, payload).await.map_err(|e| e.to_string())?;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    poller.abort();
    Ok(total)
}

/// A device connected with a retained will; dropping it is a power cut.
pub struct Device {
    task: tokio::task::JoinHandle<()>,
}

impl Device {
    pub async fn connect(port: u16, i: usize) -> Result<Device, String> {
        let mut o = options(&format!("bench-dev-{i}"), port);
        o.set_last_will(LastWill::new(topic(i), "offline", QoS::AtLeastOnce, true));
        let (client, mut eventloop) = AsyncClient::new(o, 8);
        client.publish(topic(i), QoS::AtLeastOnce, true, "online").await.map_err(|e| e.to_string())?;
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.map_err(|e| e.to_string())? {
                break;
            }
        }
        let task = tokio::spawn(async move {
            let _client = client;
            while eventloop.poll().await.is_ok() {}
        });
        Ok(Device { task })
    }

    pub fn kill(self) {
        self.task.abort();
    }
}
