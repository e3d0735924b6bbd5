//! The retained burst through a preset and a multi-level pattern: `n`
//! Zigbee2MQTT devices (`zigbee2mqtt/room-7/dev-42/availability`,
//! `{"state":"online"}`) in a tree that also carries each device's
//! retained telemetry (`zigbee2mqtt/room-7/dev-42`, a state document), so
//! the `zigbee2mqtt/#` subscription `{*id}` needs replays twice as many
//! messages as there are devices. Against `mosquitto_sub` on the same
//! filter receiving all of them.

use std::path::Path;
use std::time::Duration;

use crate::contestants;
use crate::load;

const ZIGBEE: &str = "[[device]]\npreset = \"zigbee2mqtt\"\nactions = []\n";

pub struct Ecosystem {
    pub devices: usize,
    /// Steady flips through the preset: (rate, devices, sent, received by
    /// willwatch).
    pub steady: Option<(u64, usize, u64, u64)>,
    pub mosquitto_sub: Vec<Duration>,
    pub mosquitto_sub_cpu: Vec<Duration>,
    pub willwatch: Vec<Duration>,
    pub willwatch_cpu: Vec<Duration>,
    pub peak_rss_kib: u64,
}

pub async fn ecosystem(
    bin: &Path,
    n: usize,
    rounds: usize,
    steady_rate: u64,
    steady_for: Duration,
) -> Result<Ecosystem, String> {
    let broker = crate::broker::Broker::start().map_err(|e| e.to_string())?;
    load::publish_retained_all(broker.port, n, |i| {
        (format!("zigbee2mqtt/{}/availability", load::zigbee_name(i)), r#"{"state":"online"}"#.to_string())
    })
    .await?;
    load::publish_retained_all(broker.port, n, |i| {
        (format!("zigbee2mqtt/{}", load::zigbee_name(i)), r#"{"state":"ON","brightness":254,"linkquality":87}"#.into())
    })
    .await?;
    let mut run = Ecosystem {
        devices: n,
        steady: None,
        mosquitto_sub: Vec::new(),
        mosquitto_sub_cpu: Vec::new(),
        willwatch: Vec::new(),
        willwatch_cpu: Vec::new(),
        peak_rss_kib: 0,
    };
    for round in 0..rounds {
        eprintln!("zigbee2mqtt burst n={n} round {}", round + 1);
        let (elapsed, cpu) = contestants::mosquitto_sub_filter(broker.port, "zigbee2mqtt/#", 2 * n).await?;
        run.mosquitto_sub.push(elapsed);
        run.mosquitto_sub_cpu.push(cpu);
        let burst = contestants::willwatch_burst_with(bin, broker.port, n, ZIGBEE).await?;
        run.willwatch.push(burst.elapsed);
        run.willwatch_cpu.push(burst.cpu);
        run.peak_rss_kib = run.peak_rss_kib.max(burst.peak_rss_kib);
    }
    run.steady = Some(steady(bin, broker.port, n, steady_rate, steady_for).await?);
    Ok(run)
}

/// Open-loop availability flips of 1,000 of the `retained` devices, each
/// followed by a telemetry message in the same tree, through the preset:
/// what willwatch takes in of it all (counted once the replay is in).
async fn steady(
    bin: &Path,
    port: u16,
    retained: usize,
    rate: u64,
    duration: Duration,
) -> Result<(u64, usize, u64, u64), String> {
    let n = retained.min(1_000);
    let daemon = contestants::Daemon::start(bin, port, ZIGBEE)?;
    daemon.wait_metric("willwatch_messages_total", (2 * retained) as f64).await?;
    let client = reqwest::Client::new();
    let before = daemon.metric(&client, "willwatch_messages_total").await.unwrap_or(0.0) as u64;
    let sent = load::flip_with(port, rate, duration, rumqttc::QoS::AtMostOnce, move |k| {
        let name = load::zigbee_name((k / 2) % n);
        if k % 2 == 1 {
            (format!("zigbee2mqtt/{name}"), r#"{"state":"ON","linkquality":87}"#.to_string())
        } else {
            let state = if (k / 2 / n).is_multiple_of(2) { "offline" } else { "online" };
            (format!("zigbee2mqtt/{name}/availability"), format!(r#"{{"state":"{state}"}}"#))
        }
    })
    .await?;
    let mut received = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while received < before + sent && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        received = daemon.metric(&client, "willwatch_messages_total").await.unwrap_or(0.0) as u64;
    }
    Ok((rate, n, sent, received - before))
}
