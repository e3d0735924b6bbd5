//! The read-only HTTP endpoint: `/healthz` for probes, `/status` for people
//! and scripts (and `willwatch status`), `/metrics` for Prometheus.
//!
//! It holds only handles: the link state, a query channel into the monitor
//! (which answers from its own table, so nothing is shared under a lock),
//! and the metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::event::rfc3339;
use crate::metrics::Metrics;
use crate::monitor::{DeviceView, StatusQuery};
use crate::mqtt::Link;

#[derive(Clone)]
struct Shared {
    broker_url: String,
    link: watch::Receiver<Link>,
    queries: mpsc::Sender<StatusQuery>,
    metrics: Arc<Metrics>,
}

/// Serves until `cancel` fires. A port that cannot be bound is logged and
/// the daemon goes on without the endpoint.
pub async fn serve(
    listen: SocketAddr,
    broker_url: String,
    link: watch::Receiver<Link>,
    queries: mpsc::Sender<StatusQuery>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listen = %listen, error = %e, "cannot listen for HTTP; /status, /healthz and /metrics are off");
            return;
        }
    };
    let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(listen = %bound, "HTTP status endpoint listening");
    // Small answers go out at once, not after a delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY refused");
        }
    });
    let shared = Shared { broker_url, link, queries, metrics };
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .route("/metrics", get(prometheus))
        .with_state(shared);
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned()).await {
        tracing::error!(error = %e, "the HTTP endpoint failed");
    }
}

async fn healthz(State(shared): State<Shared>) -> Response {
    let link = *shared.link.borrow();
    if link.connected {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        let text = format!("not connected to the broker {} since {}\n", shared.broker_url, rfc3339(link.since));
        (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
    }
}

#[derive(Deserialize)]
struct Filter {
    state: Option<String>,
}

async fn status(State(shared): State<Shared>, Query(filter): Query<Filter>) -> Response {
    let (reply, answer) = oneshot::channel();
    if shared.queries.send(StatusQuery { reply }).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let Ok(devices) = answer.await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    };
    let link = *shared.link.borrow();
    Json(render(&shared.broker_url, &link, devices, filter.state.as_deref())).into_response()
}

async fn prometheus(State(shared): State<Shared>) -> Response {
    let body = shared.metrics.render();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

/// The `/status` document: offline devices first, then unknown, then
/// online, each group by id; `state` keeps only one state.
pub fn render(broker_url: &str, link: &Link, mut devices: Vec<DeviceView>, state: Option<&str>) -> Value {
    let rank = |s: &str| match s {
        "offline" => 0,
        "unknown" => 1,
        _ => 2,
    };
    let mut counts = json!({"online": 0, "offline": 0, "unknown": 0});
    for d in &devices {
        counts[d.state] = json!(counts[d.state].as_u64().unwrap_or(0) + 1);
    }
    devices.retain(|d| state.is_none_or(|s| s == d.state));
    devices.sort_by(|a, b| (rank(a.state), &a.id).cmp(&(rank(b.state), &b.id)));
    let time = |t: Option<SystemTime>| t.map(rfc3339);
    json!({
        "broker": { "url": broker_url, "connected": link.connected, "since": rfc3339(link.since) },
        "devices": devices.iter().map(|d| json!({
            "id": d.id,
            "topic": d.topic,
            "state": d.state,
            "since": time(d.since),
            "last_seen": time(d.last_seen),
            "last_payload": d.last_payload,
        })).collect::<Vec<_>>(),
        "counts": counts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, state: &'static str) -> DeviceView {
        DeviceView {
            id: id.into(),
            topic: format!("t/{id}"),
            state,
            since: None,
            last_seen: None,
            last_payload: String::new(),
        }
    }

    #[test]
    fn offline_devices_come_first_and_the_filter_keeps_counts_whole() {
        let link = Link { connected: true, since: SystemTime::UNIX_EPOCH, reconnects: 1 };
        let devices = vec![view("b", "online"), view("c", "offline"), view("a", "unknown"), view("a2", "offline")];
        let all = render("mqtt://b", &link, devices.clone(), None);
        let ids: Vec<&str> = all["devices"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["a2", "c", "a", "b"]);
        assert_eq!(all["counts"], json!({"online": 1, "offline": 2, "unknown": 1}));
        let offline = render("mqtt://b", &link, devices, Some("offline"));
        assert_eq!(offline["devices"].as_array().unwrap().len(), 2);
        assert_eq!(offline["counts"]["online"], 1);
        assert_eq!(all["broker"]["connected"], true);
    }
}
