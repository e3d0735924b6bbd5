//! Flat memory under long load: devices flip between offline and online
//! for `duration` (every flip an event committed and logged) while the
//! daemon's RSS is read; what it holds at the end is compared with what it
//! held after the first minute (a tenth of the run when shorter).

use std::path::Path;
use std::time::{Duration, Instant};

use rumqttc::QoS;

use crate::contestants::{Daemon, PATTERN};
use crate::load;

pub struct Flat {
    pub name: &'static str,
    pub devices: usize,
    pub rate: u64,
    pub qos: QoS,
    pub duration: Duration,
    pub sent: u64,
    pub received: u64,
    pub rss_mark_kib: u64,
    pub mark: Duration,
    pub rss_end_kib: u64,
    pub peak_rss_kib: u64,
}

pub async fn flat(
    bin: &Path,
    name: &'static str,
    devices: usize,
    rate: u64,
    qos: QoS,
    duration: Duration,
) -> Result<Flat, String> {
    let broker = crate::broker::Broker::start().map_err(|e| e.to_string())?;
    let port = broker.port;
    let daemon = Daemon::start(bin, port, PATTERN)?;
    daemon.wait_metric("willwatch_broker_connected", 1.0).await?;
    let start = Instant::now();
    let flips = tokio::spawn(load::flip(port, devices, rate, duration, qos));
    let mark = Duration::from_secs(60).min(duration / 10);
    tokio::time::sleep_until((start + mark).into()).await;
    let rss_mark_kib = daemon.rss_kib();
    let sent = flips.await.map_err(|e| e.to_string())??;
    // What is in flight drains before the end is read.
    let client = reqwest::Client::new();
    let (mut received, mut quiet_since) = (0, Instant::now());
    while quiet_since.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = daemon.metric(&client, "willwatch_messages_total").await.unwrap_or(0.0) as u64;
        if now != received {
            (received, quiet_since) = (now, Instant::now());
        }
    }
    Ok(Flat {
        name,
        devices,
        rate,
        qos,
        duration,
        sent,
        received,
        rss_mark_kib,
        mark,
        rss_end_kib: daemon.rss_kib(),
        peak_rss_kib: daemon.peak_rss_kib(),
    })
}
