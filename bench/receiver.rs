//! A local webhook receiver for the benchmark: hands each event JSON it is
//! posted, with its arrival time, to a callback, and answers 200.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;

/// Serves on a free loopback port; returns the URL to post to.
pub async fn serve(on_event: impl Fn(Value, Instant) + Clone + Send + Sync + 'static) -> Result<String, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let url = format!("http://{}/hook", listener.local_addr().map_err(|e| e.to_string())?);
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let on_event = on_event.clone();
        async move {
            let at = Instant::now();
            on_event(serde_json::from_slice(&body).unwrap_or_default(), at);
            "ok"
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

/// A receiver for a probe device whose offlines carry their number
/// (`{"s":"offline","n":N}` as the event's payload): the URL, and when
/// each number first arrived.
pub async fn probe_offlines() -> Result<(String, Arc<Mutex<HashMap<u64, Instant>>>), String> {
    let arrived: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let sink = Arc::clone(&arrived);
    let url = serve(move |event, at| {
        let payload: Value = serde_json::from_str(event["payload"].as_str().unwrap_or_default()).unwrap_or_default();
        if event["event"] == "offline"
            && let Some(n) = payload["n"].as_u64()
        {
            sink.lock().unwrap().entry(n).or_insert(at);
        }
    })
    .await?;
    Ok((url, arrived))
}
