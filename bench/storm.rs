//! An alert storm: `n` known devices go offline at once (their retained
//! wills published back to back, as a broker does when a site loses
//! power), and every offline must reach a webhook receiver. Timed from the
//! first will to the last distinct webhook; with the state written before
//! each notification goes out, this is what the write-ahead costs.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::contestants::Daemon;
use crate::load;

pub struct Storm {
    pub devices: usize,
    pub elapsed: Duration,
    pub peak_rss_kib: u64,
}

pub async fn storm(bin: &Path, n: usize) -> Result<Storm, String> {
    storm_with(bin, n, "").await
}

/// As `storm`, with `extra` (a table) in the config.
pub async fn storm_with(bin: &Path, n: usize, extra: &str) -> Result<Storm, String> {
    let broker = crate::broker::Broker::start().map_err(|e| e.to_string())?;
    load::publish_retained(broker.port, n, "online").await?;
    let seen: Arc<Mutex<(HashSet<String>, Option<Instant>)>> = Arc::default();
    let sink = Arc::clone(&seen);
    let url = crate::receiver::serve(move |event, at| {
        if event["event"] == "offline" {
            let mut seen = sink.lock().unwrap();
            if seen.0.insert(event["device"].as_str().unwrap_or_default().to_string()) {
                seen.1 = Some(at);
            }
        }
    })
    .await?;
    let rest = format!(
        "[action.hook]\ntype = \"webhook\"\nurl = \"{url}\"\n\n[[device]]\ntopic = \"bench/{{id}}/status\"\nactions = [\"hook\"]\n{extra}"
    );
    let daemon = Daemon::start(bin, broker.port, &rest)?;
    daemon.wait_metric("willwatch_devices{state=\"online\"}", n as f64).await?;
    let start = Instant::now();
    load::publish_retained(broker.port, n, "offline").await?;
    let deadline = start + Duration::from_secs(120);
    let last = loop {
        {
            let seen = seen.lock().unwrap();
            if seen.0.len() >= n {
                break seen.1.expect("set with the first");
            }
        }
        if Instant::now() > deadline {
            return Err(format!("only {} of {n} offlines arrived", seen.lock().unwrap().0.len()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    Ok(Storm { devices: n, elapsed: last.saturating_duration_since(start), peak_rss_kib: daemon.peak_rss_kib() })
}
