//! The validated configuration: types that cannot hold a wrong value, and
//! `load` to get one from a file.
//!
//! Config is immutable and swapped whole on reload; runtime state (device
//! states, alerts already sent) lives elsewhere so a reload never touches it.
//! Layout: `raw.rs` mirrors the TOML, `validate.rs` checks it and builds these
//! types, `error.rs` says what is wrong and where.

mod error;
mod raw;
mod validate;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use error::{ConfigError, Problem};

use crate::topic::WatchedTopic;

/// The default config path of `run`, `check` and `status`.
pub const DEFAULT_PATH: &str = "/etc/willwatch/willwatch.toml";

/// The action every device may name without defining it.
pub const BUILTIN_LOG: &str = "log";

#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    pub broker: Broker,
    pub presence: Presence,
    pub devices: Vec<DeviceSpec>,
    pub actions: BTreeMap<String, ActionSpec>,
    /// Exact topic → index in `devices`, so a message finds its device in
    /// O(1) however many devices are watched.
    exact: HashMap<String, usize>,
}

#[derive(Debug, Clone)]
pub struct Broker {
    /// The URL as written, for logs and `check` (it never holds credentials).
    pub url: String,
    pub host: String,
    pub port: u16,
    /// Present for `mqtts://`: built (and its files read) at load time so a
    /// bad certificate is a config error, not a runtime surprise.
    pub tls: Option<Tls>,
    pub client_id: String,
    pub keep_alive: Duration,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

#[derive(Clone)]
pub struct Tls {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_config: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .finish()
    }
}

/// A secret value: shown as `***` by `Debug` so it never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The daemon's own birth and will.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub topic: String,
    pub online: String,
    pub offline: String,
}

/// One `[[device]]`: an exact topic with its id, or a pattern.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub watch: Watch,
    pub rules: Arc<Rules>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watch {
    Device { id: String, topic: String },
    Pattern(crate::topic::TopicPattern),
}

impl Watch {
    pub fn filter(&self) -> String {
        match self {
            Watch::Device { topic, .. } => WatchedTopic::Exact(topic.clone()).filter(),
            Watch::Pattern(p) => p.filter(),
        }
    }
}

/// How a device's payloads are read and what runs on its transitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub online: Vec<String>,
    pub offline: Vec<String>,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionSpec {
    pub kind: ActionKind,
    /// Which events fire it.
    pub on: Vec<crate::event::EventKind>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionKind {
    Log,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Validates `text` as if read from `path` (which errors will name).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        validate::validate(path, text).map_err(|problems| ConfigError::Invalid {
            path: path.to_path_buf(),
            text: text.to_string(),
            problems,
        })
    }

    /// Every subscription filter, each once, in config order.
    pub fn filters(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        self.devices
            .iter()
            .map(|d| d.watch.filter())
            .filter(|f| seen.insert(f.clone()))
            .collect()
    }

    /// The spec that owns `topic` and the device id it gives it. Exact
    /// topics win over patterns; among patterns the first in the file wins.
    pub fn resolve<'t>(&self, topic: &'t str) -> Option<(Cow<'t, str>, &DeviceSpec)> {
        if let Some(&i) = self.exact.get(topic) {
            let spec = &self.devices[i];
            if let Watch::Device { id, .. } = &spec.watch {
                return Some((Cow::Owned(id.clone()), spec));
            }
        }
        self.devices.iter().find_map(|d| match &d.watch {
            Watch::Pattern(p) => p.device_id(topic).map(|id| (Cow::Borrowed(id), d)),
            Watch::Device { .. } => None,
        })
    }
}
