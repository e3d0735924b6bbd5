//! What offlines cost in re-reads: `n` devices known online, then `k` of
//! them go offline at once. Counts the messages willwatch receives beyond
//! the `k` wills until its intake has been quiet for 3 s: the re-reads of
//! retained states it asked for. Below the storm threshold (500 offlines
//! in 10 s) that should be nothing; above it, one re-read of the devices
//! not known offline.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::contestants::{Daemon, PATTERN};
use crate::load;

pub struct Reread {
    pub devices: usize,
    pub offlines: usize,
    pub extra_messages: u64,
    /// From the first will until the intake was last busy.
    pub settled: Duration,
}

pub async fn reread(bin: &Path, n: usize, offlines: usize) -> Result<Reread, String> {
    let broker = crate::broker::Broker::start().map_err(|e| e.to_string())?;
    load::publish_retained(broker.port, n, "online").await?;
    let daemon = Daemon::start(bin, broker.port, PATTERN)?;
    daemon.wait_metric("willwatch_devices{state=\"online\"}", n as f64).await?;
    let client = reqwest::Client::new();
    let messages = async || daemon.metric(&client, "willwatch_messages_total").await.unwrap_or(0.0) as u64;
    let before = messages().await;
    let start = Instant::now();
    load::publish_retained(broker.port, offlines, "offline").await?;
    daemon.wait_metric("willwatch_devices{state=\"offline\"}", offlines as f64).await?;
    let (mut last, mut busy_at) = (messages().await, Instant::now());
    let deadline = start + Duration::from_secs(300);
    while busy_at.elapsed() < Duration::from_secs(3) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = messages().await;
        if now != last {
            (last, busy_at) = (now, Instant::now());
        }
    }
    Ok(Reread {
        devices: n,
        offlines,
        extra_messages: last.saturating_sub(before).saturating_sub(offlines as u64),
        settled: busy_at.saturating_duration_since(start),
    })
}
