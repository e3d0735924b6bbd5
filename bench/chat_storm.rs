//! An alert storm to a chat service: `n` known devices go offline at once
//! and every one must reach a Slack-style incoming webhook that takes one
//! message a second. The receiver answers a request that comes sooner
//! than a second after the one before it (50 ms allowed for the loopback
//! and the scheduler) with 429 and `Retry-After: 1`, as a rate-limited
//! service does, and reads every device name out of each digest.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::contestants::Daemon;
use crate::load;

pub struct ChatStorm {
    pub devices: usize,
    /// Requests the service took, and those it refused for coming early.
    pub requests: usize,
    pub refused: usize,
    /// Devices named in what the service took.
    pub named: usize,
    /// The most devices one message named.
    pub largest: usize,
    /// The shortest gap between two taken requests.
    pub min_gap: Duration,
    /// From the first will to the message that named the last device.
    pub elapsed: Duration,
    /// Offlines given up (`willwatch_dead_letters_total`).
    pub given_up: f64,
}

/// What the service saw: each taken request's arrival and the names in it,
/// and how many came early.
#[derive(Default)]
struct Seen {
    taken: Vec<(Instant, HashSet<String>)>,
    refused: usize,
}

const LIMIT: Duration = Duration::from_millis(950);

pub async fn chat_storm(bin: &Path, n: usize) -> Result<ChatStorm, String> {
    let broker = crate::broker::Broker::start().map_err(|e| e.to_string())?;
    load::publish_retained(broker.port, n, "online").await?;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let url = serve(Arc::clone(&seen)).await?;
    let rest = format!(
        "[action.chat]\ntype = \"slack\"\nurl = \"{url}\"\non = [\"offline\"]\n\n[[device]]\ntopic = \"bench/{{id}}/status\"\nactions = [\"chat\"]\n"
    );
    let daemon = Daemon::start(bin, broker.port, &rest)?;
    daemon.wait_metric("willwatch_devices{state=\"online\"}", n as f64).await?;
    let start = Instant::now();
    load::publish_retained(broker.port, n, "offline").await?;
    // Each message names at least a few dozen devices, one a second.
    let deadline = start + Duration::from_secs(30 + n as u64 / 10);
    loop {
        let named: usize = {
            let seen = seen.lock().unwrap();
            seen.taken.iter().flat_map(|(_, names)| names).collect::<HashSet<_>>().len()
        };
        if named >= n {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("only {named} of {n} devices named"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let given_up = daemon.metric(&reqwest::Client::new(), "willwatch_dead_letters_total").await.unwrap_or(0.0);
    let seen = seen.lock().unwrap();
    let named = seen.taken.iter().flat_map(|(_, names)| names).collect::<HashSet<_>>().len();
    let min_gap = seen.taken.windows(2).map(|w| w[1].0 - w[0].0).min().unwrap_or_default();
    Ok(ChatStorm {
        devices: n,
        requests: seen.taken.len(),
        refused: seen.refused,
        named,
        largest: seen.taken.iter().map(|(_, names)| names.len()).max().unwrap_or(0),
        min_gap,
        elapsed: seen.taken.last().map(|(at, _)| at.saturating_duration_since(start)).unwrap_or_default(),
        given_up,
    })
}

/// The rate-limited service; returns its URL.
async fn serve(seen: Arc<Mutex<Seen>>) -> Result<String, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let url = format!("http://{}/services/T0/B0/X", listener.local_addr().map_err(|e| e.to_string())?);
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let seen = Arc::clone(&seen);
        async move {
            let at = Instant::now();
            let mut seen = seen.lock().unwrap();
            if seen.taken.last().is_some_and(|(last, _)| at - *last < LIMIT) {
                seen.refused += 1;
                return (axum::http::StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "rate_limited");
            }
            let message: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let text = message["text"].as_str().unwrap_or_default();
            let names = text
                .split(|c: char| matches!(c, ',' | ':' | '*') || c.is_whitespace())
                .filter(|w| w.starts_with("dev-"))
                .map(String::from)
                .collect();
            seen.taken.push((at, names));
            (axum::http::StatusCode::OK, [("retry-after", "0")], "ok")
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}
