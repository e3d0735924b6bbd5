//! Prometheus metrics: counters the tasks bump as they work, read by
//! `GET /metrics`. Cheap to share (an `Arc` of atomics); no task waits on it.
//!
//! Every label set known from the config exists from the start at 0 (each
//! event kind, each action × outcome), so `increase()` sees the first
//! failure. The exposition is Prometheus text 0.0.4 unless the scraper
//! asks for OpenMetrics (`exposition.rs`); the process metrics are read at
//! each scrape (`process.rs`).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::event::EventKind;

pub mod exposition;
mod process;

/// How an action run ends, as `willwatch_action_runs_total` counts it
/// (`not_started`: an exec program that could not be started, given up).
pub const OUTCOMES: [&str; 4] = ["ok", "failed", "timeout", "not_started"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    pub event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub action: String,
    pub outcome: &'static str,
}

/// A device pattern as written (`fleet/{id}/status`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PatternLabel {
    pub pattern: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    pub action: String,
}

/// Every metric willwatch exports.
pub struct Metrics {
    registry: Registry,
    pub devices: Family<StateLabel, Gauge>,
    pub transitions: Family<EventLabel, Counter>,
    pub messages: Counter,
    pub unrecognized: Counter,
    pub action_runs: Family<RunLabels, Counter>,
    pub action_dropped: Family<ActionLabel, Counter>,
    pub action_panics: Family<ActionLabel, Counter>,
    pub broker_connected: Gauge,
    pub broker_reconnects: Counter,
    pub sessions_lost: Counter,
    pub probes_overdue: Counter,
    pub acks_early: Counter,
    pub devices_unconfirmed: Gauge,
    pub state_write_errors: Counter,
    pub state_failing: Gauge,
    pub state_reserve_bytes: Gauge,
    pub state_acks_dropped: Counter,
    pub oversized: Counter,
    pub http_refused: Counter,
    pub http_evicted: Counter,
    pub http_stalled: Counter,
    pub http_connections: Gauge,
    pub http_streams_refused: Counter,
    pub devices_refused: Family<PatternLabel, Counter>,
    pub devices_refused_too_long: Counter,
    pub reload_successful: Gauge,
    pub reload_success_timestamp: Gauge<f64, AtomicU64>,
    pub action_queue_depth: Family<ActionLabel, Gauge>,
    pub last_message: Gauge<f64, AtomicU64>,
    pub dead_letters: Family<ActionLabel, Counter>,
    pub dead_letters_discarded: Counter,
    pub history_dropped: Counter,
    pub history_pruned_for_size: Counter,
    pub events_unlinked: Counter,
    pub sparkplug_rebirths: Counter,
    pub sparkplug_out_of_sequence: Counter,
    pub cluster_leader: Gauge,
    pub cluster_epoch: Gauge,
    pub cluster_peers: Gauge,
    pub cluster_takeovers: Counter,
    pub cluster_left_to_leader: Counter,
    pub cluster_left_dropped: Counter,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();
        let devices = Family::<StateLabel, Gauge>::default();
        let transitions = Family::<EventLabel, Counter>::default();
        let messages = Counter::<u64, AtomicU64>::default();
        let unrecognized = Counter::<u64, AtomicU64>::default();
        let action_runs = Family::<RunLabels, Counter>::default();
        let action_dropped = Family::<ActionLabel, Counter>::default();
        let action_panics = Family::<ActionLabel, Counter>::default();
        let broker_connected = Gauge::default();
        let broker_reconnects = Counter::<u64, AtomicU64>::default();
        let sessions_lost = Counter::<u64, AtomicU64>::default();
        let probes_overdue = Counter::<u64, AtomicU64>::default();
        let acks_early = Counter::<u64, AtomicU64>::default();
        let devices_unconfirmed = Gauge::default();
        let state_write_errors = Counter::<u64, AtomicU64>::default();
        let state_failing = Gauge::default();
        let state_reserve_bytes = Gauge::default();
        let state_acks_dropped = Counter::<u64, AtomicU64>::default();
        let oversized = Counter::<u64, AtomicU64>::default();
        let http_refused = Counter::<u64, AtomicU64>::default();
        let http_evicted = Counter::<u64, AtomicU64>::default();
        let http_stalled = Counter::<u64, AtomicU64>::default();
        let http_connections = Gauge::default();
        let http_streams_refused = Counter::<u64, AtomicU64>::default();
        let devices_refused = Family::<PatternLabel, Counter>::default();
        let devices_refused_too_long = Counter::<u64, AtomicU64>::default();
        let reload_successful = Gauge::default();
        let action_queue_depth = Family::<ActionLabel, Gauge>::default();
        let last_message = Gauge::<f64, AtomicU64>::default();
        let dead_letters = Family::<ActionLabel, Counter>::default();
        let dead_letters_discarded = Counter::<u64, AtomicU64>::default();
        let history_dropped = Counter::<u64, AtomicU64>::default();
        let history_pruned_for_size = Counter::<u64, AtomicU64>::default();
        let events_unlinked = Counter::<u64, AtomicU64>::default();
        let sparkplug_rebirths = Counter::<u64, AtomicU64>::default();
        let sparkplug_out_of_sequence = Counter::<u64, AtomicU64>::default();
        let reload_success_timestamp = Gauge::<f64, AtomicU64>::default();
        registry.register("willwatch_devices", "Watched devices by state", devices.clone());
        registry.register("willwatch_transitions", "Events fired, by kind", transitions.clone());
        registry.register("willwatch_messages", "Messages received on watched topics", messages.clone());
        registry.register(
            "willwatch_unrecognized_payloads",
            "Status payloads that meant neither online nor offline (or were malformed Sparkplug payloads)",
            unrecognized.clone(),
        );
        registry.register("willwatch_action_runs", "Action runs by outcome", action_runs.clone());
        registry.register(
            "willwatch_action_queue_dropped",
            "Events dropped because an action's queue was full",
            action_dropped.clone(),
        );
        registry.register(
            "willwatch_action_panics",
            "Action workers that panicked and were started again",
            action_panics.clone(),
        );
        registry.register("willwatch_broker_connected", "1 while connected to the broker", broker_connected.clone());
        registry.register(
            "willwatch_broker_reconnects",
            "Connections to the broker made after the first",
            broker_reconnects.clone(),
        );
        registry.register(
            "willwatch_broker_sessions_lost",
            "Connects where the broker no longer had the persistent session it kept for us",
            sessions_lost.clone(),
        );
        registry.register(
            "willwatch_broker_probes_overdue",
            "Probes (round trips through the broker that confirm a live offline) that did not come back in time",
            probes_overdue.clone(),
        );
        registry.register(
            "willwatch_broker_acks_early",
            "QoS 1 messages acknowledged before what they decided was committed (more held than the broker's inflight window allows)",
            acks_early.clone(),
        );
        registry.register(
            "willwatch_devices_unconfirmed",
            "Devices not heard from since the last connect, once its replay is in",
            devices_unconfirmed.clone(),
        );
        registry.register(
            "willwatch_action_queue_depth",
            "Events waiting in each action's queue",
            action_queue_depth.clone(),
        );
        registry.register(
            "willwatch_last_message_timestamp_seconds",
            "When the last message on a watched topic arrived (Unix time; 0 before the first)",
            last_message.clone(),
        );
        registry.register(
            "willwatch_dead_letters",
            "Records written to the dead-letter file, by action",
            dead_letters.clone(),
        );
        registry.register(
            "willwatch_dead_letters_discarded",
            "Dead-letter records discarded when the file was rotated past its size cap",
            dead_letters_discarded.clone(),
        );
        registry.register(
            "willwatch_history_dropped",
            "Transitions not written to the history (its queue was full, or the database failed)",
            history_dropped.clone(),
        );
        registry.register(
            "willwatch_history_pruned_for_size",
            "Transitions removed from the history, oldest first, to keep it within [history] max_size",
            history_pruned_for_size.clone(),
        );
        registry.register(
            "willwatch_events_unlinked",
            "Transitions notified after a start that lost its state whose id could not follow from the device's \
             earlier ones: such an alert may repeat one notified before the loss, under a new id",
            events_unlinked.clone(),
        );
        registry.register(
            "willwatch_sparkplug_rebirth_requests",
            "Rebirth requests (NCMD Node Control/Rebirth) sent to Sparkplug edge nodes",
            sparkplug_rebirths.clone(),
        );
        registry.register(
            "willwatch_sparkplug_out_of_sequence",
            "Sparkplug messages whose seq did not follow their edge node's previous one",
            sparkplug_out_of_sequence.clone(),
        );
        registry.register_collector(Box::new(process::Process::new()));
        registry.register(
            "willwatch_state_write_errors",
            "State commits that failed (each is retried until the disk takes it)",
            state_write_errors.clone(),
        );
        registry.register(
            "willwatch_state_failing",
            "1 while the state database does not take commits (a full or broken disk): alerts go out, decided but not saved",
            state_failing.clone(),
        );
        registry.register(
            "willwatch_state_reserve_bytes",
            "Room reserved on the disk for the state's commits; 0 after a full disk used it, until there is room again",
            state_reserve_bytes.clone(),
        );
        registry.register(
            "willwatch_state_acknowledgements_dropped",
            "Acknowledgements not recorded because the disk failed for long (those notifications are sent again, same id, at the next start)",
            state_acks_dropped.clone(),
        );
        registry.register(
            "willwatch_oversized_messages",
            "Messages dropped because their payload was over the limit",
            oversized.clone(),
        );
        registry.register(
            "willwatch_http_refused_connections",
            "HTTP connections refused (over the limit) or not accepted (out of file descriptors)",
            http_refused.clone(),
        );
        registry.register("willwatch_http_connections", "HTTP connections open now", http_connections.clone());
        registry.register(
            "willwatch_http_connections_closed_for_room",
            "HTTP connections serving nothing (idle, slow headers, a slow reader) closed to make room for a new one",
            http_evicted.clone(),
        );
        registry.register(
            "willwatch_http_connections_closed_stalled",
            "HTTP connections closed because their client read nothing of the answer for http::WRITE_STALL",
            http_stalled.clone(),
        );
        registry.register(
            "willwatch_http_streams_refused",
            "Live streams (/api/events) refused: the budget in all or per client was used up",
            http_streams_refused.clone(),
        );
        registry.register(
            "willwatch_devices_refused",
            "Messages from new pattern devices refused because their pattern had no room left (max_devices)",
            devices_refused.clone(),
        );
        registry.register(
            "willwatch_devices_refused_too_long",
            "Messages refused because their topic, or the id of the new device it names, is past its limit (1024 and 256 bytes)",
            devices_refused_too_long.clone(),
        );
        registry.register(
            "willwatch_config_last_reload_successful",
            "1 when the last config load (at start or on reload) succeeded, 0 when it failed and the previous config is in use",
            reload_successful.clone(),
        );
        registry.register(
            "willwatch_config_last_reload_success_timestamp_seconds",
            "When the config was last loaded successfully (Unix time)",
            reload_success_timestamp.clone(),
        );
        registry.register(
            "willwatch_build",
            "willwatch's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let cluster_leader = Gauge::default();
        cluster_leader.set(1);
        registry.register(
            "willwatch_cluster_leader",
            "1 while this instance runs the actions: its cluster's leader, or always without [cluster]",
            cluster_leader.clone(),
        );
        let cluster_epoch = Gauge::default();
        registry.register(
            "willwatch_cluster_epoch",
            "The epoch of the cluster's current leader (0 without [cluster])",
            cluster_epoch.clone(),
        );
        let cluster_peers = Gauge::default();
        registry.register(
            "willwatch_cluster_peers_up",
            "Instances of the cluster up, this one included",
            cluster_peers.clone(),
        );
        let cluster_takeovers = Counter::<u64, AtomicU64>::default();
        registry.register(
            "willwatch_cluster_takeovers",
            "Times this instance became its cluster's leader",
            cluster_takeovers.clone(),
        );
        let cluster_left_to_leader = Counter::<u64, AtomicU64>::default();
        registry.register(
            "willwatch_cluster_standby_decisions",
            "Transitions this instance decided as a standby and left to the leader",
            cluster_left_to_leader.clone(),
        );
        let cluster_left_dropped = Counter::<u64, AtomicU64>::default();
        registry.register(
            "willwatch_cluster_standby_decisions_dropped",
            "Transitions a standby decided and no longer keeps for a takeover: the leader said none of a device's \
             last 16 (logged with the device)",
            cluster_left_dropped.clone(),
        );
        for state in ["online", "offline", "unknown"] {
            devices.get_or_create(&StateLabel { state }).set(0);
        }
        for kind in EventKind::ALL {
            let _ = transitions.get_or_create(&EventLabel { event: kind.as_str() });
        }
        Arc::new(Metrics {
            registry,
            devices,
            transitions,
            messages,
            unrecognized,
            action_runs,
            action_dropped,
            action_panics,
            broker_connected,
            broker_reconnects,
            sessions_lost,
            probes_overdue,
            acks_early,
            devices_unconfirmed,
            state_write_errors,
            state_failing,
            state_reserve_bytes,
            state_acks_dropped,
            oversized,
            http_refused,
            http_evicted,
            http_stalled,
            http_connections,
            http_streams_refused,
            devices_refused,
            devices_refused_too_long,
            reload_successful,
            reload_success_timestamp,
            action_queue_depth,
            last_message,
            dead_letters,
            dead_letters_discarded,
            history_dropped,
            history_pruned_for_size,
            events_unlinked,
            sparkplug_rebirths,
            sparkplug_out_of_sequence,
            cluster_leader,
            cluster_epoch,
            cluster_peers,
            cluster_takeovers,
            cluster_left_to_leader,
            cluster_left_dropped,
        })
    }

    /// Counts one run of `action` that ended as `outcome` (`ok`, `failed`,
    /// `dropped`...).
    pub fn action_run(&self, action: &str, outcome: &'static str) {
        self.action_runs.get_or_create(&RunLabels { action: action.to_string(), outcome }).inc();
    }

    /// Records a config load, at start and on every reload: whether it
    /// succeeded and, if so, when (as Prometheus and Alertmanager do).
    pub fn config_loaded(&self, ok: bool) {
        self.reload_successful.set(i64::from(ok));
        if ok {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            self.reload_success_timestamp.set(now.as_secs_f64());
        }
    }

    /// Makes the series of these actions exist (at 0 until they move).
    pub fn actions_known<'a>(&self, actions: impl IntoIterator<Item = &'a str>) {
        let known: Vec<&str> = actions.into_iter().collect();
        for &action in &known {
            for outcome in OUTCOMES {
                let _ = self.action_runs.get_or_create(&RunLabels { action: action.to_string(), outcome });
            }
            let label = ActionLabel { action: action.to_string() };
            let _ = self.action_dropped.get_or_create(&label);
            let _ = self.action_panics.get_or_create(&label);
            let _ = self.action_queue_depth.get_or_create(&label);
            let _ = self.dead_letters.get_or_create(&label);
        }
    }

    /// Makes the refusal series of these patterns exist (at 0 until they move).
    pub fn patterns_known<'a>(&self, patterns: impl IntoIterator<Item = &'a str>) {
        for pattern in patterns {
            let _ = self.devices_refused.get_or_create(&PatternLabel { pattern: pattern.to_string() });
        }
    }

    /// The text exposition: OpenMetrics, or Prometheus text 0.0.4.
    pub fn render(&self, openmetrics: bool) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        if openmetrics { out } else { exposition::to_prometheus(&out) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_metric_is_exported() {
        let m = Metrics::new();
        m.transitions.get_or_create(&EventLabel { event: "offline" }).inc();
        m.action_run("ops", "ok");
        m.action_dropped.get_or_create(&ActionLabel { action: "ops".into() }).inc();
        let text = m.render(true);
        for expected in [
            "willwatch_devices{state=\"offline\"} 0",
            "willwatch_transitions_total{event=\"offline\"} 1",
            "willwatch_messages_total 0",
            "willwatch_unrecognized_payloads_total 0",
            "willwatch_action_runs_total{action=\"ops\",outcome=\"ok\"} 1",
            "willwatch_action_queue_dropped_total{action=\"ops\"} 1",
            "willwatch_broker_connected 0",
            "willwatch_broker_reconnects_total 0",
            "willwatch_build_info{version=\"",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }
}
