//! The read-only HTTP endpoint: `/healthz` for probes, `/status` for people
//! and scripts (and `willwatch status`), `/metrics` for Prometheus, the
//! history (`/api/history`, `/api/uptime`, `/api/bars`), and the live page
//! (`/`, `page.rs`) with its event stream (`/api/events`); with a users
//! file, basic authentication on all but `/healthz` (`auth.rs`).
//!
//! It holds only handles: the link state, a query channel into the monitor
//! (which answers from its own table, so nothing is shared under a lock),
//! the transitions' broadcast, and the metrics. Hostile or idle clients hold nothing for long: at most
//! `MAX_CONNECTIONS` at once, headers within `HEADER_TIMEOUT`, `/status` in
//! pages, and at shutdown the daemon gives open requests a short deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use std::convert::Infallible;

use axum::extract::{Query, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::device::State as DeviceState;
use crate::event::rfc3339;
use crate::metrics::{Metrics, exposition};
use crate::monitor::{PageQuery, StatusPage, StatusQuery};
use crate::mqtt::Link;
use crate::throttle::Throttle;

mod auth;
mod page;

/// What the endpoint serves from: handles only.
#[derive(Clone)]
pub struct Sources {
    pub broker_url: String,
    pub link: watch::Receiver<Link>,
    pub queries: mpsc::Sender<StatusQuery>,
    pub metrics: Arc<Metrics>,
    /// Where `history.db` is, for `/api/history`, `/api/uptime`, `/api/bars`.
    pub state_dir: std::path::PathBuf,
    /// Transitions as they happen, for `/api/events`.
    pub live: broadcast::Sender<Arc<crate::history::Entry>>,
    /// Who may read, when `[http] users_file` says.
    pub users: Option<Arc<crate::config::Users>>,
}

#[derive(Clone)]
struct Shared {
    sources: Sources,
    /// Ends the live streams at shutdown.
    cancel: CancellationToken,
}

/// Transitions a slow live client may fall behind by before it is told to
/// read everything again.
pub const LIVE_QUEUE: usize = 4096;

/// Connections served at once; more are refused (closed at once), counted
/// and logged, so idle or hostile clients cannot use up file descriptors.
pub const MAX_CONNECTIONS: usize = 64;
/// A request's headers must arrive within this, and an idle kept-alive
/// connection is closed after it: a client that sends half a request and
/// waits holds nothing for long.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How often, at most, refused connections and accept errors are logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Serves until `cancel` fires. A port that cannot be bound is logged and
/// the daemon goes on without the endpoint.
pub async fn serve(listen: SocketAddr, sources: Sources, cancel: CancellationToken) {
    let metrics = Arc::clone(&sources.metrics);
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listen = %listen, error = %e, "cannot listen for HTTP; /status, /healthz and /metrics are off");
            return;
        }
    };
    let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(listen = %bound, what = "http_listening", "HTTP status endpoint listening");
    let shared = Shared { sources, cancel: cancel.clone() };
    let app = Router::new()
        .route("/", get(page::index))
        .route("/assets/{file}", get(page::asset))
        .route("/status", get(status))
        .route("/metrics", get(prometheus))
        .route("/api/history", get(history))
        .route("/api/uptime", get(uptime))
        .route("/api/bars", get(bars))
        .route("/api/events", get(events))
        .layer(axum::middleware::from_fn_with_state(shared.clone(), auth::require))
        // Probes need no password.
        .route("/healthz", get(healthz))
        .with_state(shared);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    let mut refused = Throttle::new(LOG_EVERY);
    let mut failing = Throttle::new(LOG_EVERY);
    let mut pause = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        while connections.try_join_next().is_some() {}
        let tcp = match accepted {
            Ok((tcp, _)) => {
                pause.reset();
                tcp
            }
            Err(e) => {
                // Out of file descriptors, most likely: wait, then go on.
                metrics.http_refused.inc();
                if let Some(suppressed) = failing.allow(Instant::now()) {
                    tracing::error!(error = %e, suppressed, "cannot accept HTTP connections; retrying");
                }
                tokio::time::sleep(pause.next_delay()).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics.http_refused.inc();
            if let Some(suppressed) = refused.allow(Instant::now()) {
                tracing::warn!(
                    limit = MAX_CONNECTIONS,
                    suppressed,
                    what = "http_refusing",
                    "too many HTTP connections; refusing new ones"
                );
            }
            continue;
        };
        // Small answers go out at once, not after a delayed ACK.
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let cancel = cancel.clone();
        connections.spawn(async move {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = cancel.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(slot);
        });
    }
    // The daemon bounds this wait; dropping the set closes what is left.
    while connections.join_next().await.is_some() {}
}

async fn healthz(State(shared): State<Shared>) -> Response {
    let link = *shared.sources.link.borrow();
    if link.connected {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        let text = format!("not connected to the broker {} since {}\n", shared.sources.broker_url, rfc3339(link.since));
        (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
    }
}

/// Devices per `/status` page unless `limit` says otherwise, and the most
/// one page may hold: a fleet of any size costs one page of memory.
pub const PAGE: usize = 1000;
pub const MAX_PAGE: usize = 10_000;

#[derive(Deserialize)]
struct Filter {
    device: Option<String>,
    state: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
    /// Devices whose id contains this, ignoring case.
    q: Option<String>,
}

async fn status(State(shared): State<Shared>, Query(filter): Query<Filter>) -> Response {
    let page = match page_query(&filter) {
        Ok(page) => page,
        Err(problem) => return (StatusCode::BAD_REQUEST, format!("{problem}\n")).into_response(),
    };
    let (reply, answer) = oneshot::channel();
    if shared.sources.queries.send(StatusQuery { page, reply }).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let Ok(page) = answer.await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    };
    let link = *shared.sources.link.borrow();
    Json(render(&shared.sources.broker_url, &link, &page)).into_response()
}

/// The page asked for, or what is wrong with the query.
fn page_query(filter: &Filter) -> Result<PageQuery, String> {
    let state = match filter.state.as_deref() {
        None => None,
        Some(s) => Some(DeviceState::parse(s).ok_or_else(|| format!("state `{s}`: use online, offline or unknown"))?),
    };
    let after = match filter.after.as_deref() {
        None => None,
        Some(cursor) => {
            let parsed = cursor.split_once(':').and_then(|(r, id)| Some((r.parse::<u8>().ok()?, id.to_string())));
            Some(parsed.ok_or_else(|| format!("after `{cursor}`: pass the `next` of the previous page"))?)
        }
    };
    Ok(PageQuery {
        device: filter.device.clone(),
        contains: filter.q.as_deref().map(str::trim).filter(|q| !q.is_empty()).map(str::to_lowercase),
        state,
        after,
        limit: filter.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE),
    })
}

#[derive(Deserialize)]
struct HistoryQuery {
    device: Option<String>,
    since: Option<String>,
    /// `/api/uptime`: `outages` puts the flappiest first (default: worst
    /// uptime first).
    sort: Option<String>,
    /// `/api/uptime`: at most this many devices.
    limit: Option<usize>,
}

/// `/api/history?device=ID&since=7d`: what `willwatch history --json` says.
async fn history(State(shared): State<Shared>, Query(q): Query<HistoryQuery>) -> Response {
    history_report(shared, q, true).await
}

/// `/api/uptime?since=24h[&sort=outages][&limit=N]`: per device uptime and
/// outages, worst (or flappiest) first.
async fn uptime(State(shared): State<Shared>, Query(q): Query<HistoryQuery>) -> Response {
    history_report(shared, HistoryQuery { device: None, ..q }, false).await
}

async fn history_report(shared: Shared, q: HistoryQuery, transitions: bool) -> Response {
    use crate::history::command;
    let since = match q.since.as_deref().map(command::window).transpose() {
        Ok(since) => since.unwrap_or(Duration::from_secs(7 * 86_400)),
        Err(e) => return (StatusCode::BAD_REQUEST, format!("since: {e}\n")).into_response(),
    };
    let by_outages = match q.sort.as_deref() {
        None | Some("uptime") => false,
        Some("outages") => true,
        Some(other) => {
            return (StatusCode::BAD_REQUEST, format!("sort `{other}`: use uptime or outages\n")).into_response();
        }
    };
    let dir = shared.sources.state_dir.clone();
    let report =
        tokio::task::spawn_blocking(move || command::report(&dir, q.device.as_deref(), since, SystemTime::now())).await;
    match report {
        Ok(Ok((mut devices, rows))) => {
            let rows = if transitions { rows } else { Vec::new() };
            if by_outages {
                devices.retain(|d| d.stats.outages > 0);
                devices.sort_by(|a, b| b.stats.outages.cmp(&a.stats.outages).then_with(|| a.device.cmp(&b.device)));
            }
            devices.truncate(q.limit.unwrap_or(usize::MAX));
            Json(command::to_json(&devices, &rows, since)).into_response()
        }
        Ok(Err(e)) => {
            (StatusCode::NOT_FOUND, format!("no history ([history] keep turns it on): {e}\n")).into_response()
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "the history read failed\n").into_response(),
    }
}

/// The most devices one `/api/bars` request may ask about.
pub const MAX_BARS: usize = 200;

/// `/api/bars?id=A&id=B`: each device's availability over the last 24
/// hours (hourly) and 7 days (six-hourly), for the page's bars.
async fn bars(State(shared): State<Shared>, RawQuery(query): RawQuery) -> Response {
    let ids: Vec<String> = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "id")
        .map(|(_, v)| v.into_owned())
        .take(MAX_BARS)
        .collect();
    let dir = shared.sources.state_dir.clone();
    match tokio::task::spawn_blocking(move || crate::history::bars::bars(&dir, &ids, SystemTime::now())).await {
        Ok(Ok(bars)) => Json(bars).into_response(),
        Ok(Err(e)) => {
            (StatusCode::NOT_FOUND, format!("no history ([history] keep turns it on): {e}\n")).into_response()
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "the history read failed\n").into_response(),
    }
}

/// `/api/events`: every transition as it happens, as Server-Sent Events
/// (`transition`, JSON); `resync` when this client fell behind and should
/// read `/status` again. The stream ends at shutdown, and browsers
/// reconnect by themselves (`retry` 1 s).
async fn events(State(shared): State<Shared>) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let receiver = shared.sources.live.subscribe();
    let cancel = shared.cancel.clone();
    let hello = SseEvent::default().event("hello").retry(Duration::from_secs(1)).data("{}");
    let stream = futures_util::stream::unfold((receiver, cancel, Some(hello)), |(mut rx, cancel, first)| async move {
        if let Some(first) = first {
            return Some((Ok(first), (rx, cancel, None)));
        }
        let event = tokio::select! {
            () = cancel.cancelled() => return None,
            received = rx.recv() => match received {
                Ok(entry) => SseEvent::default().event("transition").data(live_json(&entry).to_string()),
                Err(broadcast::error::RecvError::Lagged(_)) => SseEvent::default().event("resync").data("{}"),
                Err(broadcast::error::RecvError::Closed) => return None,
            },
        };
        Some((Ok(event), (rx, cancel, None)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// A transition as the live page reads it.
fn live_json(entry: &crate::history::Entry) -> Value {
    json!({
        "device": entry.device.as_str(),
        "from": entry.from,
        "to": entry.to,
        "at": rfc3339(entry.at),
        "cause": entry.cause,
        "payload": entry.payload.as_str(),
    })
}

/// Prometheus text 0.0.4, or OpenMetrics when the scraper asks for it.
async fn prometheus(State(shared): State<Shared>, headers: axum::http::HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let openmetrics = exposition::wants_openmetrics(accept);
    let body = shared.sources.metrics.render(openmetrics);
    let kind = if openmetrics { exposition::OPENMETRICS_TYPE } else { exposition::PROMETHEUS_TYPE };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// The `/status` document for one page: offline devices first, then
/// unknown, then online, each group by id; the counts of the whole fleet;
/// `next` when there are more.
pub fn render(broker_url: &str, link: &Link, page: &StatusPage) -> Value {
    let time = |t: Option<SystemTime>| t.map(rfc3339);
    let c = page.counts;
    json!({
        "broker": {
            "url": broker_url,
            "connected": link.connected,
            "since": rfc3339(link.since),
            "session_present": link.session_present,
            "sessions_lost": link.sessions_lost,
        },
        "next": page.next.as_ref().map(|(rank, id)| format!("{rank}:{id}")),
        "devices": page.devices.iter().map(|d| json!({
            "id": d.id,
            "topic": d.topic,
            "state": d.state,
            "since": time(d.since),
            "last_seen": time(d.last_seen),
            "last_payload": d.last_payload,
            "notified": d.notified,
            "grace_left": d.grace_left.map(|left| left.as_secs_f64()),
            "cause": d.cause,
            "confirmed": d.confirmed,
        })).collect::<Vec<_>>(),
        "counts": { "online": c.online, "offline": c.offline, "unknown": c.unknown, "notified": c.notified },
        "cluster": page.cluster,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::DeviceView;

    fn view(id: &str, state: &'static str) -> DeviceView {
        DeviceView {
            id: id.into(),
            topic: format!("t/{id}"),
            state,
            since: None,
            last_seen: None,
            last_payload: String::new(),
            notified: false,
            grace_left: None,
            cause: None,
            confirmed: true,
        }
    }

    #[test]
    fn a_page_shows_the_whole_fleets_counts_and_where_the_next_begins() {
        let link = Link {
            connected: true,
            since: SystemTime::UNIX_EPOCH,
            connects: 1,
            session_present: true,
            sessions_lost: 0,
        };
        let page = StatusPage {
            devices: vec![view("c", "offline"), view("a", "unknown")],
            counts: crate::monitor::Counts { online: 5, offline: 1, unknown: 1, notified: 1 },
            next: Some((1, "a".into())),
            cluster: None,
        };
        let doc = render("mqtt://b", &link, &page);
        let ids: Vec<&str> = doc["devices"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["c", "a"]);
        assert_eq!(doc["counts"], json!({"online": 5, "offline": 1, "unknown": 1, "notified": 1}));
        assert_eq!(doc["next"], "1:a");
        assert_eq!(doc["broker"]["connected"], true);
    }

    #[test]
    fn bad_page_queries_say_what_is_wrong() {
        let filter = |state: Option<&str>, after: Option<&str>, limit| Filter {
            device: None,
            q: None,
            state: state.map(String::from),
            after: after.map(String::from),
            limit,
        };
        assert!(page_query(&filter(Some("sideways"), None, None)).unwrap_err().contains("sideways"));
        assert!(page_query(&filter(None, Some("nonsense"), None)).unwrap_err().contains("next"));
        assert_eq!(page_query(&filter(None, None, Some(1_000_000))).unwrap().limit, MAX_PAGE);
        assert_eq!(page_query(&filter(None, Some("0:a:b"), None)).unwrap().after, Some((0, "a:b".into())));
    }
}
