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

use axum::extract::{Extension, Query, RawQuery, State};
use axum::http::{Method, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::device::State as DeviceState;
use crate::event::rfc3339;
use crate::metrics::{Metrics, exposition};
use crate::monitor::{Cursor, PageQuery, Sort, StatusPage, StatusQuery};
use crate::mqtt::Link;
use crate::throttle::Throttle;

mod auth;
mod page;
mod pool;
mod stall;
mod turns;

use turns::Turns;

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
    pub live: broadcast::Sender<Arc<crate::transition::Transition>>,
    /// Who may read, when `[http] users_file` says.
    pub users: Option<Arc<crate::config::Users>>,
}

#[derive(Clone)]
struct Shared {
    sources: Sources,
    /// Ends the live streams at shutdown.
    cancel: CancellationToken,
    /// History reads (`HISTORY_QUERIES`).
    history: Arc<Turns>,
    /// Large answers built and not yet sent (`ANSWERS`).
    answers: Arc<Turns>,
    /// Live streams open (`pool.rs`).
    streams: Arc<pool::Streams>,
    /// Password checks (`auth::VERIFYING`).
    logins: Arc<Turns>,
    /// What ranked history pages read ahead for their walks' next pages.
    ahead: Arc<std::sync::Mutex<crate::history::pages::Ahead>>,
}

/// Transitions a slow live client may fall behind by before it is told to
/// read everything again.
pub const LIVE_QUEUE: usize = 4096;

/// A request's headers must arrive within this, and an idle kept-alive
/// connection is closed after it: a client that sends half a request and
/// waits holds nothing for long.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How often, at most, refused connections and accept errors are logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// How long requests still open at shutdown get before they are closed.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(1);

/// How much less the endpoint's thread gets of a busy CPU than detection
/// (its nice value, on Linux per thread).
const NICE: i32 = 10;

/// Threads that build answers and read the history for the endpoint:
/// whatever clients ask, that work takes at most this many threads beside
/// its own, each at `NICE` (they are started from its thread), so it
/// cannot crowd detection's threads out of the cores (more waits in line).
/// A thread per answer in progress (16, and the history reads besides)
/// outweighed detection on two cores.
const BLOCKING_THREADS: usize = 2;

/// The endpoint, served on a thread of its own (a runtime of one thread,
/// at a lower priority): however hard it is read, it takes at most one
/// core, and on a busy machine the monitor and the actions go first.
pub struct Server {
    done: oneshot::Receiver<()>,
}

impl Server {
    /// Starts serving `listen` until `cancel` fires.
    pub fn start(listen: SocketAddr, sources: Sources, cancel: CancellationToken) -> std::io::Result<Server> {
        let (finished, done) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("http")
            .max_blocking_threads(BLOCKING_THREADS)
            .build()?;
        std::thread::Builder::new().name("http".into()).spawn(move || {
            lower_priority();
            runtime.block_on(serve(listen, sources, cancel));
            // Dropping the runtime closes what is still open.
            drop(runtime);
            let _ = finished.send(());
        })?;
        Ok(Server { done })
    }

    /// Waits until it has stopped (at most `SHUTDOWN_DEADLINE` after
    /// `cancel`, and a little).
    pub async fn stopped(self) {
        let _ = self.done.await;
    }
}

/// This thread (and the threads it starts) yields to the rest of the
/// process on a busy CPU.
fn lower_priority() {
    // On Linux a thread's id as the process names that thread alone.
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICE) {
        tracing::debug!(error = %e, "the HTTP thread keeps its priority");
    }
}

/// Serves until `cancel` fires, then gives open requests
/// `SHUTDOWN_DEADLINE`. A port that cannot be bound is logged and the
/// daemon goes on without the endpoint.
async fn serve(listen: SocketAddr, sources: Sources, cancel: CancellationToken) {
    let metrics = Arc::clone(&sources.metrics);
    let listener = match bind(listen) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listen = %listen, error = %e, "cannot listen for HTTP; /status, /healthz and /metrics are off");
            return;
        }
    };
    let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(listen = %bound, what = "http_listening", "HTTP status endpoint listening");
    let shared = Shared {
        sources,
        cancel: cancel.clone(),
        history: Arc::new(Turns::new(HISTORY_QUERIES, IN_LINE, HISTORY_WAIT, "history queries")),
        answers: Arc::new(Turns::new(ANSWERS, IN_LINE, HISTORY_WAIT, "large answers")),
        streams: Arc::default(),
        logins: Arc::new(Turns::new(auth::VERIFYING, IN_LINE, auth::VERIFY_WAIT, "logins")),
        ahead: Arc::default(),
    };
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
    let pool = Arc::new(pool::Pool::default());
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
        let (tcp, peer) = match accepted {
            Ok((tcp, peer)) => {
                pause.reset();
                (tcp, peer.ip())
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
        let conn = match pool.admit(peer) {
            pool::Admitted::Open { conn, closed } => {
                if closed.is_some() {
                    metrics.http_evicted.inc();
                }
                conn
            }
            pool::Admitted::Refused => {
                metrics.http_refused.inc();
                if let Some(suppressed) = refused.allow(Instant::now()) {
                    tracing::warn!(
                        limit = pool::MAX_CONNECTIONS,
                        suppressed,
                        what = "http_refusing",
                        "every HTTP connection is serving a request; refusing new ones"
                    );
                }
                continue;
            }
        };
        metrics.http_connections.inc();
        // Small answers go out at once, not after a delayed ACK.
        let _ = tcp.set_nodelay(true);
        // The kernel lets a blocked writer go on only once half its send
        // buffer is free: kept small, a client that reads slowly but
        // steadily shows progress well within `WRITE_STALL`.
        let _ = socket2::SockRef::from(&tcp).set_send_buffer_size(SEND_BUFFER);
        let service = {
            let (app, conn) = (app.clone(), Arc::clone(&conn));
            tower::service_fn(move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                let busy = pool::Busy::new(&conn);
                request.extensions_mut().insert(Arc::clone(&conn));
                let app = app.clone();
                async move {
                    let response = tower::ServiceExt::oneshot(app, request).await;
                    drop(busy);
                    response
                }
            })
        };
        let (cancel, pool, metrics) = (cancel.clone(), Arc::clone(&pool), Arc::clone(&metrics));
        let tcp = stall::Stalling::new(tcp, stall::WRITE_STALL, metrics.http_stalled.clone());
        connections.spawn(async move {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(CONNECTION_BUFFER)
                .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service));
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                // Closed for a newer one: dropped as it is.
                () = conn.close.cancelled() => {}
                () = cancel.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            pool.release(&conn);
            metrics.http_connections.dec();
        });
    }
    let drained =
        tokio::time::timeout(SHUTDOWN_DEADLINE, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::info!(deadline = ?SHUTDOWN_DEADLINE, "HTTP requests still open at shutdown were closed");
    }
}

/// A connection's send buffer in the kernel (which doubles it), and what
/// it buffers itself at most: an answer its client does not read stays in
/// `turns::holding`, counted, not in buffers along the way.
const SEND_BUFFER: usize = 64 * 1024;
const CONNECTION_BUFFER: usize = 64 * 1024;

/// Connections the kernel completes and holds for `accept`: a burst of
/// new clients (hundreds reconnecting at once) waits there instead of
/// having its SYNs dropped (each drop costs a client a second).
const BACKLOG: u32 = 1024;

fn bind(listen: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if listen.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(listen)?;
    socket.listen(BACKLOG)
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
    /// `state` (offline first, the default) or `id`.
    sort: Option<String>,
}

async fn status(State(shared): State<Shared>, method: Method, Query(filter): Query<Filter>) -> Response {
    let page = match page_query(&filter) {
        Ok(page) => page,
        Err(problem) => return (StatusCode::BAD_REQUEST, format!("{problem}\n")).into_response(),
    };
    if method == Method::HEAD {
        return head();
    }
    let turn = match shared.answers.take().await {
        Ok(turn) => turn,
        Err(busy) => return busy,
    };
    let Some(page) = gather(&shared.sources.queries, page).await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    };
    let link = *shared.sources.link.borrow();
    let broker_url = shared.sources.broker_url.clone();
    answer(turn, move || render(&broker_url, &link, &page)).await
}

/// Devices the monitor puts in one answer: a page is gathered from
/// several, so no read holds the monitor (and detection) for more than
/// about a millisecond, whatever the page's `limit`. A page filtered by
/// id takes at most `FILTERED_ANSWERS` answers that came back short (each
/// read at most a bounded part of the fleet) and then ends where the
/// reading stopped.
pub const MONITOR_CHUNK: usize = 500;
const FILTERED_ANSWERS: usize = 10;

/// The page `query` asks for, from the monitor's answers; `None` once the
/// monitor is gone.
async fn gather(queries: &mpsc::Sender<StatusQuery>, query: PageQuery) -> Option<StatusPage> {
    let want = query.limit;
    let mut ask = PageQuery { limit: want.min(MONITOR_CHUNK), ..query };
    let mut devices = Vec::with_capacity(want.min(MAX_PAGE));
    let mut short = 0;
    loop {
        let (reply, answer) = oneshot::channel();
        queries.send(StatusQuery { page: ask.clone(), reply }).await.ok()?;
        let mut page = answer.await.ok()?;
        short += usize::from(page.devices.len() < ask.limit);
        devices.append(&mut page.devices);
        if devices.len() >= want || page.next.is_none() || short >= FILTERED_ANSWERS {
            page.devices = devices;
            return Some(page);
        }
        ask.after = page.next.take();
        ask.limit = (want - devices.len()).min(MONITOR_CHUNK);
    }
}

/// The page asked for, or what is wrong with the query.
fn page_query(filter: &Filter) -> Result<PageQuery, String> {
    let state = match filter.state.as_deref() {
        None => None,
        Some(s) => Some(DeviceState::parse(s).ok_or_else(|| format!("state `{s}`: use online, offline or unknown"))?),
    };
    let sort = match filter.sort.as_deref() {
        None | Some("state") => Sort::State,
        Some("id") => Sort::Id,
        Some(other) => return Err(format!("sort `{other}`: use state or id")),
    };
    let after = match filter.after.as_deref() {
        None => None,
        Some(cursor) => match Cursor::parse(cursor) {
            Some(after) if after.sort() == sort => Some(after),
            Some(_) => return Err(format!("after `{cursor}`: a cursor of another sort; pass the same `sort`")),
            None => return Err(format!("after `{cursor}`: pass the `next` of the previous page")),
        },
    };
    Ok(PageQuery {
        device: filter.device.clone(),
        contains: filter.q.as_deref().map(str::trim).filter(|q| !q.is_empty()).map(str::to_lowercase),
        state,
        sort,
        after,
        limit: filter.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE),
    })
}

#[derive(Deserialize)]
struct HistoryQuery {
    device: Option<String>,
    since: Option<String>,
    /// `uptime` (worst first, the default), `outages` (flappiest first)
    /// or `id`.
    sort: Option<String>,
    /// At most this many devices (or transitions) a page.
    limit: Option<usize>,
    /// The `next` of the previous page.
    after: Option<String>,
}

/// History reads at once; more wait up to `HISTORY_WAIT`, then are told
/// to come back: a flood of large queries cannot take the machine.
pub const HISTORY_QUERIES: usize = 2;
const HISTORY_WAIT: Duration = Duration::from_secs(10);
/// Large answers (a `/status` or history page) in memory at once, each
/// until its client has read it (`turns::holding`); one a client never
/// reads goes with its connection after `stall::WRITE_STALL`.
pub const ANSWERS: usize = 16;
/// Requests that wait in line for a turn (`turns.rs`), each kind: past
/// them, busy at once, so waiting never fills the connection pool.
pub const IN_LINE: usize = 8;

/// `/api/history?device=ID&since=7d`: what `willwatch history --json` says,
/// a page at a time (the device's transitions; without a device, every
/// device's figures).
async fn history(State(shared): State<Shared>, method: Method, Query(q): Query<HistoryQuery>) -> Response {
    history_report(shared, method, q, true).await
}

/// `/api/uptime?since=24h[&sort=outages][&limit=N][&after=C]`: per device
/// uptime and outages, worst (or flappiest) first, a page at a time.
async fn uptime(State(shared): State<Shared>, method: Method, Query(q): Query<HistoryQuery>) -> Response {
    history_report(shared, method, HistoryQuery { device: None, ..q }, false).await
}

/// A large JSON answer, built and written out off the endpoint's thread (a
/// page of 10,000 devices takes a while: `/healthz` must not wait for it),
/// sent holding `turn` until its client has it.
async fn answer(turn: turns::Turn, build: impl FnOnce() -> Value + Send + 'static) -> Response {
    match tokio::task::spawn_blocking(move || serde_json::to_vec(&build())).await {
        Ok(Ok(json)) => turns::holding(json, turn),
        Ok(Err(e)) => answer_failed(&e),
        Err(e) => answer_failed(&e),
    }
}

fn answer_failed(error: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %error, what = "http_answer_failed", "an HTTP answer could not be built");
    (StatusCode::INTERNAL_SERVER_ERROR, "the answer could not be written\n").into_response()
}

/// What a GET of a large answer says before its body: a HEAD costs no
/// read of the fleet or the history.
fn head() -> Response {
    [(header::CONTENT_TYPE, "application/json")].into_response()
}

fn bad_request(text: String) -> Response {
    (StatusCode::BAD_REQUEST, format!("{text}\n")).into_response()
}

async fn history_report(shared: Shared, method: Method, q: HistoryQuery, transitions: bool) -> Response {
    use crate::history::{command, pages};
    let since = match q.since.as_deref().map(command::window).transpose() {
        Ok(since) => since.unwrap_or(Duration::from_secs(7 * 86_400)),
        Err(e) => return bad_request(format!("since: {e}")),
    };
    let order = match q.sort.as_deref().map(|s| pages::Order::parse(s).ok_or(s)).transpose() {
        Ok(order) => order.unwrap_or(pages::Order::Uptime),
        Err(other) => return bad_request(format!("sort `{other}`: use uptime, outages or id")),
    };
    let limit = q.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE);
    let dir = shared.sources.state_dir.clone();
    let now = SystemTime::now();
    let window =
        (crate::history::ms(now.checked_sub(since).unwrap_or(SystemTime::UNIX_EPOCH)), crate::history::ms(now));
    let transitions = transitions && q.device.is_some();
    if method == Method::HEAD {
        // What a GET would say of the history and the cursor, no page read;
        // in the history reads' line, as GET.
        let slot = match shared.history.take().await {
            Ok(turn) => turn,
            Err(busy) => return busy,
        };
        let checked = tokio::task::spawn_blocking(move || {
            let history = crate::history::History::open_read(&dir)?;
            match q.after.as_deref() {
                Some(after) => pages::check(&history, order, window.1, transitions, after),
                None => Ok(Ok(())),
            }
        })
        .await;
        drop(slot);
        return match checked {
            Ok(Ok(Ok(()))) => head(),
            Ok(Ok(Err(bad))) => bad_request(bad.to_string()),
            Ok(Err(e)) => no_history(&e),
            Err(e) => answer_failed(&e),
        };
    }
    let turn = match shared.answers.take().await {
        Ok(turn) => turn,
        Err(busy) => return busy,
    };
    let slot = match shared.history.take().await {
        Ok(turn) => turn,
        Err(busy) => return busy,
    };
    let ahead = Arc::clone(&shared.ahead);
    let read = tokio::task::spawn_blocking(move || {
        let history = crate::history::History::open_read(&dir)?;
        let device = q.device.as_deref();
        let page = match (device, transitions) {
            // A device's figures, and its transitions a page at a time.
            (Some(id), true) => {
                let figures = pages::figures(&history, Some(id), window, pages::Order::Id, None, 1, None)?;
                pages::transitions(&history, id, window.0, q.after.as_deref(), limit)?
                    .and_then(|rows| figures.map(|f| (f.items, rows.items, rows.next)))
            }
            _ => pages::figures(&history, device, window, order, q.after.as_deref(), limit, Some(&ahead))?
                .map(|f| (f.items, Vec::new(), f.next)),
        };
        Ok::<_, crate::history::HistoryError>(page)
    })
    .await;
    drop(slot);
    match read {
        Ok(Ok(Ok((devices, rows, next)))) => {
            answer(turn, move || command::to_json(&devices, &rows, since, next.as_deref())).await
        }
        Ok(Ok(Err(bad))) => bad_request(bad.to_string()),
        Ok(Err(e)) => no_history(&e),
        Err(e) => answer_failed(&e),
    }
}

fn no_history(e: &crate::history::HistoryError) -> Response {
    (StatusCode::NOT_FOUND, format!("no history ([history] keep turns it on): {e}\n")).into_response()
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
        Ok(Err(e)) => no_history(&e),
        Err(e) => answer_failed(&e),
    }
}

/// `/api/events`: every transition as it happens, as Server-Sent Events
/// (`transition`, JSON); `resync` when this client fell behind and should
/// read `/status` again. The stream ends at shutdown, and browsers
/// reconnect by themselves (`retry` 1 s). Past the streams' budget
/// (`pool.rs`) a client is told to come back later.
async fn events(State(shared): State<Shared>, Extension(conn): Extension<Arc<pool::Conn>>) -> Response {
    let place = match shared.streams.open(conn.peer) {
        Ok(place) => place,
        Err(full) => {
            shared.sources.metrics.http_streams_refused.inc();
            let text = match full {
                pool::Full::All => format!("busy: {} live streams are open; retry later\n", pool::MAX_STREAMS),
                pool::Full::Client => {
                    format!("busy: this client has {} live streams open; retry later\n", pool::MAX_STREAMS_PER_CLIENT)
                }
            };
            let headers = [(header::CONNECTION, "close"), (header::RETRY_AFTER, "10")];
            return (StatusCode::SERVICE_UNAVAILABLE, headers, text).into_response();
        }
    };
    // Held for the stream's life: it is serving, and it has its place.
    let held = (pool::Busy::new(&conn), place);
    let receiver = shared.sources.live.subscribe();
    let cancel = shared.cancel.clone();
    let hello = SseEvent::default().event("hello").retry(Duration::from_secs(1)).data("{}");
    let start = (receiver, cancel, Some(hello), held);
    let stream = futures_util::stream::unfold(start, |(mut rx, cancel, first, held)| async move {
        if let Some(first) = first {
            return Some((Ok::<_, Infallible>(first), (rx, cancel, None, held)));
        }
        let event = tokio::select! {
            () = cancel.cancelled() => return None,
            received = rx.recv() => match received {
                Ok(entry) => SseEvent::default().event("transition").data(live_json(&entry).to_string()),
                Err(broadcast::error::RecvError::Lagged(_)) => SseEvent::default().event("resync").data("{}"),
                Err(broadcast::error::RecvError::Closed) => return None,
            },
        };
        Some((Ok(event), (rx, cancel, None, held)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// A transition as the live page reads it.
fn live_json(entry: &crate::transition::Transition) -> Value {
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
        "next": page.next.as_ref().map(ToString::to_string),
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
            next: Some(Cursor::State(1, "a".into())),
            cluster: None,
        };
        let doc = render("mqtt://b", &link, &page);
        let ids: Vec<&str> = doc["devices"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["c", "a"]);
        assert_eq!(doc["counts"], json!({"online": 5, "offline": 1, "unknown": 1, "notified": 1}));
        assert_eq!(doc["next"], "1:a");
        assert_eq!(doc["broker"]["connected"], true);
    }

    /// Guards detection against large reads: a page of 10,000 was built
    /// in one turn of the monitor (a probe's will waited behind it). A page
    /// is gathered from answers of at most `MONITOR_CHUNK`, and a filtered
    /// one stops after `FILTERED_ANSWERS` short answers.
    #[tokio::test]
    async fn a_large_page_is_gathered_from_small_answers_of_the_monitor() {
        let (queries, mut asked) = mpsc::channel::<StatusQuery>(1);
        let monitor = tokio::spawn(async move {
            let mut limits = Vec::new();
            let mut served = 0usize;
            while let Some(q) = asked.recv().await {
                limits.push(q.page.limit);
                // A filter: every answer finds a single match and goes on.
                let n = if q.page.contains.is_some() { 1 } else { q.page.limit.min(2_300 - served) };
                served += n;
                let devices = (0..n).map(|i| view(&format!("d{served}-{i}"), "online")).collect();
                let page = StatusPage {
                    devices,
                    counts: crate::monitor::Counts::default(),
                    next: Some(Cursor::State(2, format!("d{served}")))
                        .filter(|_| served < 2_300 || q.page.contains.is_some()),
                    cluster: None,
                };
                let _ = q.reply.send(page);
            }
            limits
        });
        let page = gather(&queries, PageQuery { limit: 1_200, ..PageQuery::default() }).await.unwrap();
        assert_eq!((page.devices.len(), page.next.is_some()), (1_200, true));
        let rest = PageQuery { limit: 5_000, after: page.next, ..PageQuery::default() };
        let page = gather(&queries, rest).await.unwrap();
        assert_eq!((page.devices.len(), page.next), (1_100, None), "the fleet ran out");
        let filtered = PageQuery { limit: 100, contains: Some("x".into()), ..PageQuery::default() };
        let page = gather(&queries, filtered).await.unwrap();
        assert_eq!((page.devices.len(), page.next.is_some()), (FILTERED_ANSWERS, true), "ends where it stopped");
        drop(queries);
        let limits = monitor.await.unwrap();
        assert!(limits.iter().all(|l| *l <= MONITOR_CHUNK), "{limits:?}");
    }

    #[test]
    fn bad_page_queries_say_what_is_wrong() {
        let filter = |state: Option<&str>, after: Option<&str>, limit| Filter {
            device: None,
            q: None,
            state: state.map(String::from),
            after: after.map(String::from),
            limit,
            sort: None,
        };
        assert!(page_query(&filter(Some("sideways"), None, None)).unwrap_err().contains("sideways"));
        assert!(page_query(&filter(None, Some("nonsense"), None)).unwrap_err().contains("next"));
        assert_eq!(page_query(&filter(None, None, Some(1_000_000))).unwrap().limit, MAX_PAGE);
        assert_eq!(page_query(&filter(None, Some("0:a:b"), None)).unwrap().after, Some(Cursor::State(0, "a:b".into())));
        assert!(page_query(&filter(None, Some("3:a"), None)).unwrap_err().contains("next"), "no such rank");
        let by_id = |after: &str| Filter { sort: Some("id".into()), ..filter(None, Some(after), None) };
        assert_eq!(page_query(&by_id("id:a:b")).unwrap().after, Some(Cursor::Id("a:b".into())));
        assert!(page_query(&by_id("0:a")).unwrap_err().contains("another sort"));
        assert!(page_query(&filter(None, Some("id:a"), None)).unwrap_err().contains("another sort"));
        let sideways = Filter { sort: Some("size".into()), ..filter(None, None, None) };
        assert!(page_query(&sideways).unwrap_err().contains("size"));
    }
}
