//! The config file exactly as written: serde types that mirror the TOML,
//! with spans kept on every value that validation may need to point at.
//!
//! Nothing here is checked beyond TOML syntax, types and unknown keys
//! (`deny_unknown_fields`); `validate.rs` turns these into a `Config`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// A human duration ("500ms", "30s", "5m") with its place in the file.
pub type RawDuration = Spanned<humantime_serde::Serde<Duration>>;

/// A list of strings, each with its place in the file.
pub type SpannedList = Spanned<Vec<Spanned<String>>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub broker: Spanned<RawBroker>,
    pub presence: Option<Spanned<RawPresence>>,
    pub defaults: Option<Spanned<RawDefaults>>,
    #[serde(default)]
    pub device: Vec<Spanned<RawDevice>>,
    #[serde(default)]
    pub sparkplug: Vec<Spanned<RawSparkplug>>,
    #[serde(default)]
    pub action: BTreeMap<String, Spanned<RawAction>>,
    pub state_dir: Option<Spanned<String>>,
    pub max_devices: Option<Spanned<i64>>,
    pub state_sync: Option<Spanned<String>>,
    pub http: Option<RawHttp>,
    pub history: Option<RawHistory>,
    pub cluster: Option<Spanned<RawCluster>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub name: Option<Spanned<String>>,
    pub instance: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHistory {
    pub keep: Option<RawDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub listen: Option<Spanned<String>>,
    pub users_file: Option<Spanned<String>>,
    pub external_url: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBroker {
    pub url: Spanned<String>,
    pub client_id: Option<Spanned<String>>,
    pub keep_alive: Option<RawDuration>,
    pub username: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
    pub ca_file: Option<Spanned<String>>,
    pub cert_file: Option<Spanned<String>>,
    pub key_file: Option<Spanned<String>>,
    pub settle: Option<RawDuration>,
    pub resync: Option<RawDuration>,
    pub confirm_within: Option<RawDuration>,
    pub persistent_session: Option<Spanned<bool>>,
    pub broker_alert_after: Option<RawDuration>,
    pub actions: Option<SpannedList>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPresence {
    pub sparkplug_host_id: Option<Spanned<String>>,
    pub topic: Option<Spanned<String>>,
    pub online: Option<Spanned<String>>,
    pub offline: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    pub preset: Option<Spanned<String>>,
    pub online: Option<SpannedList>,
    pub offline: Option<SpannedList>,
    pub actions: Option<SpannedList>,
    pub grace: Option<RawDuration>,
    pub heartbeat_timeout: Option<RawDuration>,
    pub state_field: Option<Spanned<String>>,
    pub seq_field: Option<Spanned<String>>,
    pub severity: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevice {
    pub preset: Option<Spanned<String>>,
    pub id: Option<Spanned<String>>,
    pub topic: Option<Spanned<String>>,
    pub heartbeat_topic: Option<Spanned<String>>,
    pub heartbeat_timeout: Option<RawDuration>,
    pub state_field: Option<Spanned<String>>,
    pub seq_field: Option<Spanned<String>>,
    pub online: Option<SpannedList>,
    pub offline: Option<SpannedList>,
    pub actions: Option<SpannedList>,
    pub grace: Option<RawDuration>,
    pub max_devices: Option<Spanned<i64>>,
    pub severity: Option<Spanned<String>>,
    pub exclude: Option<SpannedList>,
    pub parent: Option<Spanned<String>>,
}

/// `[[sparkplug]]`: edge nodes (and their devices) of a Sparkplug B group.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSparkplug {
    pub group: Option<Spanned<String>>,
    pub edge_nodes: Option<SpannedList>,
    pub devices: Option<Spanned<bool>>,
    pub actions: Option<SpannedList>,
    pub grace: Option<RawDuration>,
    pub severity: Option<Spanned<String>>,
    pub parent: Option<Spanned<String>>,
    pub max_devices: Option<Spanned<i64>>,
}

/// `[action.NAME]`. One struct for every kind, rather than an enum tagged by
/// `type`: serde's tagged enums buffer their input and lose the spans, and
/// validation wants to say "`url` is not a setting of a `log` action" with
/// a line number anyway.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAction {
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    pub on: Option<SpannedList>,
    // webhook
    pub url: Option<Spanned<String>>,
    pub timeout: Option<RawDuration>,
    pub max_age: Option<RawDuration>,
    pub max_attempts: Option<Spanned<i64>>,
    pub secret_file: Option<Spanned<String>>,
    pub headers: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    pub format: Option<Spanned<String>>,
    pub concurrency: Option<Spanned<i64>>,
    pub batch: Option<RawDuration>,
    pub severity: Option<Spanned<String>>,
    // reconnect and publish
    pub topic: Option<Spanned<String>>,
    pub payload: Option<Spanned<String>>,
    pub first_after: Option<RawDuration>,
    pub backoff: Option<Spanned<f64>>,
    pub max_interval: Option<RawDuration>,
    pub escalate: Option<SpannedList>,
    pub retain: Option<Spanned<bool>>,
    pub qos: Option<Spanned<i64>>,
    // exec
    pub command: Option<SpannedList>,
}
