//! Wires the tasks together and runs them until a signal says stop.
//!
//! ```text
//! signals ─▶ daemon ──reload──▶ monitor ──decisions──▶ state writer ──committed──▶ dispatcher ─▶ actions
//!              │                   ▲                        ▲                                     │
//!              └─filters─▶ mqtt session (owns the broker)   └──────────── acknowledgements ───────┘
//! ```
//! Signals become an `Intent` here, at the edge. Shutdown runs in order,
//! so that actions that need the broker still have it and nothing owed is
//! lost: the monitor stops taking messages; the state writer commits what
//! it decided; the dispatcher drains the action queues with the broker
//! link still up, within a deadline (what is not done by then stays owed
//! in the state database and resumes at the next start); the session says
//! goodbye (retained offline, clean disconnect); the HTTP endpoint closes
//! last, with a short deadline of its own.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{Broker, Config, ConfigError, Watch};
use crate::metrics::Metrics;
use crate::monitor::{self, Counts, Monitor, Outputs};
use crate::mqtt::{Link, Publisher, Session, Wiring};
use crate::{actions, http, store, systemd};

/// Messages waiting for the monitor before the session waits for it.
const MONITOR_QUEUE: usize = 1024;
/// Events waiting for the dispatcher.
const DISPATCH_QUEUE: usize = 8192;
/// Decisions and records waiting for the state writer.
const STORE_QUEUE: usize = 8192;
/// How long shutdown waits for queued actions to finish.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("the broker session failed: {0}")]
    Session(String),
    #[error("cannot start the history writer: {0}")]
    History(std::io::Error),
    #[error(transparent)]
    Twin(#[from] crate::mqtt::twin::Twin),
    #[error(transparent)]
    StateInUse(#[from] store::InUse),
}

/// What a signal asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    Shutdown,
    Reload,
}

fn intent(signal: i32) -> Intent {
    if signal == SIGHUP { Intent::Reload } else { Intent::Shutdown }
}

/// Loads the config at `path` and runs until SIGTERM or SIGINT.
pub async fn run(path: &Path) -> Result<(), DaemonError> {
    let mut config = Arc::new(Config::load_runnable(path)?);
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(DaemonError::Signals)?;
    if let Some(cluster) = &config.cluster {
        crate::mqtt::twin::check(&config.broker, cluster, &config.presence.offline).await?;
    }

    let (filters_tx, _) = watch::channel(config.filters());
    let (link_tx, mut link_rx) = watch::channel(Link {
        connected: false,
        since: std::time::SystemTime::now(),
        connects: 0,
        session_present: false,
        sessions_lost: 0,
    });
    let (counts_tx, counts_rx) = watch::channel(Counts::default());
    let (inbound_tx, inbound_rx) = mpsc::channel(MONITOR_QUEUE);
    let (reload_tx, reload_rx) = mpsc::channel(4);
    let (store_tx, store_rx) = mpsc::channel(STORE_QUEUE);
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let (dispatch_tx, dispatch_rx) = mpsc::channel(DISPATCH_QUEUE);
    let (client_tx, client_rx) = watch::channel(None);
    let metrics = Metrics::new();
    metrics.config_loaded(true);
    let stop_actions = CancellationToken::new();
    let context = actions::Context::new(
        store_tx.downgrade(),
        ack_tx.clone(),
        Publisher::new(client_rx, link_rx.clone()),
        config.state_dir.clone(),
        Arc::clone(&metrics),
        stop_actions.clone(),
    );
    let mut dispatcher = tokio::spawn(actions::dispatch(Arc::clone(&config), context, dispatch_rx));
    let _state_lock = store::lock(&config.state_dir)?;
    let (db, mut loaded) = store::open(&config.state_dir, config.state_sync)?;
    let owed =
        if config.cluster.is_some() { leave_to_the_cluster(&mut loaded.pending, &ack_tx) } else { HashSet::new() };
    let (completed_tx, completed_rx) = mpsc::unbounded_channel();
    let (committed_tx, committed_rx) = watch::channel(0);
    let writer = store::Writer {
        dir: config.state_dir.clone(),
        sync: config.state_sync,
        db,
        ops: store_rx,
        acks: ack_rx,
        dispatch: dispatch_tx,
        completed: config.cluster.is_some().then_some(completed_tx),
        committed: committed_tx,
        metrics: Arc::clone(&metrics),
    };
    let finish_writing = CancellationToken::new();
    let writer = tokio::spawn(writer.run(loaded.pending, finish_writing.clone()));
    let (asks_tx, asks_rx) = mpsc::channel(16);
    let history = crate::history::writer::spawn(
        config.state_dir.clone(),
        config.history_keep,
        config.history_max_size,
        Arc::clone(&metrics),
    )
    .map_err(DaemonError::History)?;
    let (live, _) = tokio::sync::broadcast::channel(http::LIVE_QUEUE);
    let outputs = Outputs {
        store: store_tx,
        counts: counts_tx,
        asks: asks_tx,
        history: history.as_ref().map(|h| h.queue.clone()),
        live: live.clone(),
        metrics: Arc::clone(&metrics),
    };
    let (queries_tx, queries_rx) = mpsc::channel(16);
    let inputs =
        monitor::Inputs { inbound: inbound_rx, reloads: reload_rx, queries: queries_rx, completed: completed_rx };
    let stop_intake = CancellationToken::new();
    let monitor = tokio::spawn(
        Monitor::new(Arc::clone(&config), loaded.devices, loaded.told, &owed, loaded.taken, loaded.lost, outputs)
            .run(inputs, stop_intake.clone()),
    );
    let http_cancel = CancellationToken::new();
    let http = config.http_listen.map(|listen| {
        let sources = http::Sources {
            broker_url: config.broker.url.clone(),
            link: link_rx.clone(),
            queries: queries_tx.clone(),
            metrics: Arc::clone(&metrics),
            state_dir: config.state_dir.clone(),
            live: live.clone(),
            users: config.http_users.clone(),
        };
        http::Server::start(listen, sources, http_cancel.clone())
            .inspect_err(|e| tracing::error!(error = %e, "cannot start the HTTP endpoint's thread; it is off"))
            .ok()
    });
    let start_session = |config: &Config, (asks, marks_after): (mpsc::Receiver<crate::mqtt::Ask>, u64)| {
        let cancel = CancellationToken::new();
        let wiring = Wiring {
            filters: filters_tx.subscribe(),
            inbound: inbound_tx.clone(),
            link: link_tx.clone(),
            client: client_tx.clone(),
            asks,
            committed: committed_rx.clone(),
            marks_after,
            metrics: Arc::clone(&metrics),
        };
        let session = Session::new(config.broker.clone(), config.presence.clone(), wiring);
        (cancel.clone(), tokio::spawn(session.run(cancel)))
    };
    let (mut cancel, mut session) = start_session(&config, (asks_rx, 0));

    log_started(&config);
    systemd::ready();
    let mut watchdog = systemd::watchdog_interval().map(tokio::time::interval);
    let mut connects = 0;
    let mut status_every = tokio::time::interval(Duration::from_secs(1));
    let mut status = String::new();
    loop {
        tokio::select! {
            signal = signals.next() => match signal.map(intent) {
                Some(Intent::Reload) => {
                    systemd::reloading();
                    let loaded = reload(path).filter(|new| same_cluster(&config, new));
                    metrics.config_loaded(loaded.is_some());
                    if let Some(new) = loaded {
                        let reconnect = connection_changed(&config, &new);
                        config = new;
                        filters_tx.send_replace(config.filters());
                        let _ = reload_tx.send(Arc::clone(&config)).await;
                        if reconnect {
                            tracing::info!(broker = %config.broker.url, what = "broker_settings_changed", "broker or presence settings changed; reconnecting");
                            cancel.cancel();
                            match session.await {
                                Ok(ended) => (cancel, session) = start_session(&config, ended),
                                Err(e) => return Err(DaemonError::Session(e.to_string())),
                            }
                        }
                    }
                    systemd::ready();
                }
                Some(Intent::Shutdown) | None => break,
            },
            Ok(()) = link_rx.changed() => {
                let link = *link_rx.borrow();
                metrics.broker_connected.set(i64::from(link.connected));
                // Every connection but the first is a reconnect.
                if link.connects > connects {
                    metrics.broker_reconnects.inc_by(link.connects.saturating_sub(connects.max(1)));
                    connects = link.connects;
                }
            }
            // At most once a second: a storm changes the counts thousands of times.
            _ = status_every.tick() => {
                let line = status_line(&config.broker, &link_rx.borrow(), &counts_rx.borrow());
                if line != status {
                    systemd::status(&line);
                    status = line;
                }
            }
            _ = async { watchdog.as_mut().expect("guarded").tick().await }, if watchdog.is_some() => systemd::watchdog(),
        }
    }

    tracing::info!(what = "shutting_down", "shutting down");
    systemd::stopping();
    stop_intake.cancel();
    // Retries are not waited for: what they would send stays owed.
    stop_actions.cancel();
    joined("the monitor", monitor.await);
    // The monitor's queue into the history is gone with it: the writer
    // writes what is left and ends.
    if let Some(history) = history {
        drop(history.queue);
        if tokio::task::spawn_blocking(move || history.thread.join()).await.is_err() {
            tracing::error!("the history writer failed");
        }
    }
    match tokio::time::timeout(DRAIN_DEADLINE, &mut dispatcher).await {
        Ok(result) => joined("the action dispatcher", result),
        Err(_) => {
            dispatcher.abort();
            tracing::warn!(deadline = ?DRAIN_DEADLINE, "actions still running at the drain deadline were stopped");
        }
    }
    finish_writing.cancel();
    joined("the state writer", writer.await);
    cancel.cancel();
    joined("the broker session", session.await);
    http_cancel.cancel();
    if let Some(http) = http.flatten() {
        http.stopped().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// A config whose `[cluster]` differs cannot be taken by a reload: the
/// instance's name is its client id, its presence and its claims.
fn same_cluster(old: &Config, new: &Config) -> bool {
    let same = old.cluster == new.cluster;
    if !same {
        tracing::error!(file = %new.source.display(),
            "[cluster] changed: that takes a restart; the reload is refused and the previous config stays in use");
    }
    same
}

/// In a cluster, device notifications owed from before the start are not
/// sent from here: a takeover fires what the group did not notify, with the
/// same ids. They are acknowledged; returns their devices.
fn leave_to_the_cluster(
    pending: &mut Vec<crate::event::Event>,
    acks: &mpsc::UnboundedSender<crate::store::Ack>,
) -> HashSet<String> {
    use crate::event::EventKind;
    let mut devices = HashSet::new();
    pending.retain(|event| {
        if !matches!(event.kind, EventKind::Offline | EventKind::Online) {
            return true;
        }
        for action in event.actions.iter() {
            let _ = acks.send((event.id.clone(), action.clone()));
        }
        devices.insert(event.device.clone());
        false
    });
    if !devices.is_empty() {
        tracing::info!(
            devices = devices.len(),
            "device notifications owed from before the restart are left to the cluster: whoever leads fires what the group did not notify"
        );
    }
    devices
}

/// Logs a task that ended by panicking (its work is lost; the log says so).
fn joined<T>(task: &str, result: Result<T, tokio::task::JoinError>) {
    if let Err(e) = result {
        tracing::error!(error = %e, "{task} failed");
    }
}

/// The new config, or `None` (logged) when the file is broken.
fn reload(path: &Path) -> Option<Arc<Config>> {
    match Config::load_runnable(path) {
        Ok(new) => {
            log_warnings(&new);
            Some(Arc::new(new))
        }
        Err(e) => {
            tracing::error!(what = "reload_failed", "reload failed, still running on the previous config:\n{e}");
            None
        }
    }
}

/// Whether a reload must reconnect: the session's settings changed. TLS
/// files are compared by path, so a certificate replaced in place is picked
/// up at the next restart rather than by a reload.
fn connection_changed(old: &Config, new: &Config) -> bool {
    let key = |b: &Broker| {
        let tls = b.tls.as_ref().map(|t| (t.ca_file.clone(), t.client_cert.clone()));
        let session = (b.client_id.clone(), b.persistent_session);
        (b.url.clone(), session, b.keep_alive, b.username.clone(), b.password.clone(), tls)
    };
    key(&old.broker) != key(&new.broker) || old.presence != new.presence
}

fn log_warnings(config: &Config) {
    for warning in &config.warnings {
        tracing::warn!(what = "config_warning", "{warning}");
    }
}

fn log_started(config: &Config) {
    log_warnings(config);
    let patterns = config.devices.iter().filter(|d| matches!(d.watch, Watch::Pattern(_))).count();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config.source.display(),
        broker = %config.broker.url,
        devices = config.devices.len() - patterns,
        patterns,
        presence = %config.presence.topic,
        "willwatch started"
    );
}

/// The one-line STATUS= text systemctl shows.
fn status_line(broker: &Broker, link: &Link, counts: &Counts) -> String {
    let link = if link.connected {
        format!("connected to {}", broker.url)
    } else {
        format!("not connected to {}", broker.url)
    };
    format!("{link}; devices: {} online, {} offline, {} unknown", counts.online, counts.offline, counts.unknown)
}
