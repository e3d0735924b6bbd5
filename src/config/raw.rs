//! The config file exactly as written: serde types that mirror the TOML,
//! with spans kept on every value that validation may need to point at.
//!
//! Nothing here is checked beyond TOML syntax, types and unknown keys
//! (`deny_unknown_fields`); `validate.rs` turns these into a `Config`.
//! The `[action.NAME]` tables are kept as parsed TOML: which settings an
//! action takes depends on its `type`, and each kind reads its own
//! (`config/actions/`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_aux::serde_introspection::serde_introspect;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::Problem;

/// A human duration ("500ms", "30s", "5m") with its place in the file.
pub type RawDuration = Spanned<humantime_serde::Serde<Duration>>;

/// A list of strings, each with its place in the file.
pub type SpannedList = Spanned<Vec<Spanned<String>>>;

/// The file as written: everything but the actions, and the `[action.NAME]`
/// tables by name, spans kept.
pub struct RawFile<'i> {
    pub config: RawConfig,
    pub actions: BTreeMap<String, Spanned<DeValue<'i>>>,
}

impl<'i> RawFile<'i> {
    pub fn parse(text: &'i str) -> Result<RawFile<'i>, Problem> {
        let mut doc = DeTable::parse(text).map_err(problem)?;
        let actions = match doc.get_mut().remove("action") {
            None => BTreeMap::new(),
            Some(table) => {
                let span = table.span();
                match table.into_inner() {
                    DeValue::Table(table) => {
                        table.into_iter().map(|(name, action)| (name.into_inner().into_owned(), action)).collect()
                    }
                    _ => {
                        return Err(Problem::new(span, "`action` is not a table")
                            .hint("define each action as a table: [action.NAME]"));
                    }
                }
            }
        };
        let config = RawConfig::deserialize(toml::de::Deserializer::from(doc)).map_err(problem)?;
        Ok(RawFile { config, actions })
    }
}

/// Each table of the file and the keys its serde type declares: `""` is
/// the top level (`action` aside: each kind of action declares its own,
/// `actions::kinds`).
pub fn tables() -> [(&'static str, &'static [&'static str]); 9] {
    [
        ("", serde_introspect::<RawConfig>()),
        ("broker", serde_introspect::<RawBroker>()),
        ("presence", serde_introspect::<RawPresence>()),
        ("cluster", serde_introspect::<RawCluster>()),
        ("http", serde_introspect::<RawHttp>()),
        ("history", serde_introspect::<RawHistory>()),
        ("defaults", serde_introspect::<RawDefaults>()),
        ("device", serde_introspect::<RawDevice>()),
        ("sparkplug", serde_introspect::<RawSparkplug>()),
    ]
}

/// What TOML or serde refused, where.
pub fn problem(e: toml::de::Error) -> Problem {
    let p = Problem::new(e.span().unwrap_or(0..0), e.message().trim_end().to_string());
    if e.message().contains("expected a duration") {
        return p.hint("write durations like \"500ms\", \"30s\", \"5m\" or \"1h 30m\"");
    }
    p
}

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
    /// Always absent here: `RawFile::parse` takes the actions out first
    /// (each kind reads its own). Declared so that a mistyped top-level
    /// key's message lists it among the keys the file takes.
    #[serde(rename = "action")]
    pub _action: Option<serde::de::IgnoredAny>,
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
    pub max_size: Option<Spanned<String>>,
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
