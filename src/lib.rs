//! willwatch watches MQTT devices' presence (Last Will / status topics) and
//! runs actions when a device goes offline or comes back.
//!
//! Layout:
//! - `config`: the TOML schema, validated into types that can't be wrong
//!   (the files it names read, the broker's TLS settings built, at load).
//! - `topic`: exact topics and `{id}` patterns; filters and matching.
//! - `device`: one device's state and the pure rules of its transitions.
//! - `payload`: what a status payload says (plain or JSON, with sequence).
//! - `sparkplug`: Sparkplug B topics, protobuf payloads and the host STATE.
//! - `event`: a transition as the actions see it, and its JSON.
//! - `transition`: one transition as the fleet hands it to the history and
//!   the live page.
//! - `history`: every transition in `history.db`, and uptime figures from it.
//! - `template`: `{id}`-style placeholders in action settings.
//! - `monitor`: the fleet core (every device, every policy; pure) and the
//!   task around it that owns the devices and decides events.
//! - `cluster`: active/standby over MQTT: who leads, what the group notified.
//! - `store`: the state database (SQLite, WAL) and its writer, which
//!   commits each decision before any action sees it (the outbox), and
//!   its last good copy.
//! - `mqtt`: the broker session (birth, will, subscriptions, reconnects,
//!   probes, signs of a broker restart, acknowledgements after commit).
//! - `connection`: what the session and the fleet core agree on about a
//!   broker connection: how long one must last to count, the probe topic.
//! - `backoff`: reconnect delays with jitter.
//! - `throttle`: rate-limited logging of floods.
//! - `actions`: the dispatcher, one file per kind of action, and the
//!   replay of dead letters.
//! - `daemon`: wires the tasks together; signals, reload and shutdown.
//! - `dead_letter`: what actions gave up on, kept and listed.
//! - `http`: `/healthz`, `/status`, `/metrics`, the history API, the live
//!   page and its event stream, basic authentication.
//! - `metrics`: the Prometheus counters and gauges, their exposition, the
//!   process metrics.
//! - `systemd`: sd_notify glue.
//! - `logging`: terminal, journal and JSON output.
//! - `redact`: URL secrets (user info, query values) hidden wherever a URL
//!   is shown.
//! - `summary`: what `willwatch check` prints.
//! - `status`: the `willwatch status` client of `/status`.
//! - `cli`: the command line (parsed by the binary, the man page made from it).
//!
//! The modules import each other without a cycle, and the pure cores
//! import nothing that does I/O: ARCHITECTURE.md ("The dependency rule"),
//! enforced by `tests/modules.rs`.

pub mod actions;
pub mod backoff;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod daemon;
pub mod dead_letter;
pub mod device;
pub mod event;
pub mod history;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod monitor;
pub mod mqtt;
pub mod payload;
pub mod redact;
pub mod sparkplug;
pub mod status;
pub mod store;
pub mod summary;
pub mod systemd;
pub mod template;
pub mod throttle;
pub mod topic;
pub mod transition;
