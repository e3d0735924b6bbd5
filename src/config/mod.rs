//! The validated configuration: types that cannot hold a wrong value, and
//! `load` to get one from a file.
//!
//! Config is immutable and swapped whole on reload; runtime state (device
//! states, alerts already sent) lives elsewhere so a reload never touches it.
//! Layout: `raw.rs` mirrors the TOML, `validate.rs` checks it and builds these
//! types, `error.rs` says what is wrong and where; `file.rs` reads the files
//! a config names, `tls.rs` builds the broker's TLS settings from them.

mod actions;
mod error;
mod file;
mod outside;
mod preset;
mod raw;
mod tls;
mod users;
mod validate;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use error::{ConfigError, Problem};
pub use users::{Users, UsersError};

/// Every key the config file takes, by table, as the serde types that read
/// it declare them: `""` is the top level, `action.TYPE` an action of that
/// type. The JSON schema and docs/configuration.md are tested against this.
pub fn keys() -> Vec<(String, Vec<&'static str>)> {
    let mut out: Vec<(String, Vec<&'static str>)> =
        raw::tables().into_iter().map(|(table, keys)| (table.to_string(), keys.to_vec())).collect();
    out.extend(actions::kinds().into_iter().map(|(kind, keys)| (format!("action.{kind}"), keys)));
    out
}

use crate::template::Template;

/// The default config path of `run`, `check` and `status`.
pub const DEFAULT_PATH: &str = "/etc/willwatch/willwatch.toml";

/// A JSON Schema of the config file, for editors (`willwatch check --json-schema`).
pub const JSON_SCHEMA: &str = include_str!("../../config/willwatch.schema.json");

/// Where the HTTP endpoint listens unless the config says otherwise.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9818";

/// How long transitions stay in `history.db` unless `[history] keep` says.
pub const DEFAULT_HISTORY_KEEP: Duration = Duration::from_secs(90 * 86_400);
/// What `history.db` may hold unless `[history] max_size` says.
pub const DEFAULT_HISTORY_MAX_SIZE: u64 = 1 << 30;
/// The least `[history] max_size`: room for some ten thousand transitions.
pub const MIN_HISTORY_MAX_SIZE: u64 = 1 << 20;
/// The most `[history] max_size`: 64 TiB, past any disk it is kept on.
pub const MAX_HISTORY_MAX_SIZE: u64 = 1 << 46;
/// The longest `[history] keep`, and so the furthest back a history window
/// reaches.
pub const MAX_HISTORY_KEEP: Duration = Duration::from_secs(MAX_HISTORY_KEEP_DAYS * 86_400);
/// `MAX_HISTORY_KEEP` in days, as errors say it.
pub const MAX_HISTORY_KEEP_DAYS: u64 = 3_650;

/// The action every device may name without defining it.
pub const BUILTIN_LOG: &str = "log";
/// Devices the patterns may add in all unless `max_devices` says otherwise:
/// anyone who may publish under a pattern could otherwise invent devices
/// without end.
pub const DEFAULT_MAX_DEVICES: usize = 100_000;

#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    pub broker: Broker,
    pub presence: Presence,
    pub devices: Vec<DeviceSpec>,
    pub actions: BTreeMap<String, ActionSpec>,
    /// Where the state file and the dead-letter file live.
    pub state_dir: PathBuf,
    /// Most devices the patterns add in all (exact devices take none of
    /// it), shared among them: `monitor/fleet/room.rs`.
    pub max_devices: usize,
    /// How far a decision must get before its notification goes out.
    pub state_sync: StateSync,
    /// Where `/status`, `/healthz` and `/metrics` are served; `None`: off.
    pub http_listen: Option<std::net::SocketAddr>,
    /// Who may read it (`[http] users_file`); `None`: anyone who reaches it.
    pub http_users: Option<Arc<Users>>,
    /// Things that work but look wrong, as `PATH:LINE:COL: warning: …`.
    pub warnings: Vec<String>,
    /// How long transitions stay in `history.db` (zero: no history).
    pub history_keep: Duration,
    /// The most `history.db` may hold, in bytes; the oldest go first.
    pub history_max_size: u64,
    /// Credentials (`credential:NAME`) only the service can read: this
    /// config can be checked here but not run.
    pub unread_credentials: Vec<String>,
    /// `[cluster]`: this instance is one of an active/standby group.
    pub cluster: Option<crate::cluster::Settings>,
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
    /// After a (re)connect, offlines wait this long for the replayed
    /// retained states to settle.
    pub settle: Duration,
    /// Re-read the retained states this often (zero: never).
    pub resync: Duration,
    /// After a (re)connect, an offline read from the broker's store or
    /// session queue fires only if the device is still offline this long
    /// after the connect, and a device whose retained state has not come
    /// by then is notified as not seen since the broker restarted.
    pub confirm_within: Duration,
    /// Connect with a session the broker keeps while we are away, so it
    /// queues the (QoS 1) wills and births published meanwhile.
    pub persistent_session: bool,
    /// Unreachable this long: fire `broker_down` to `actions`.
    pub alert_after: Duration,
    pub actions: Vec<String>,
}

#[derive(Clone)]
pub struct Tls {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_config: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("ca_file", &self.ca_file).field("client_cert", &self.client_cert).finish()
    }
}

/// A secret value: shown as `***` by `Debug` so it never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The key a webhook secret stands for: `whsec_<base64>` (Standard
    /// Webhooks' format) decoded, any other text as its bytes.
    pub fn signing_key(&self) -> Vec<u8> {
        use base64::Engine;
        match self.0.strip_prefix("whsec_").map(|b| base64::engine::general_purpose::STANDARD.decode(b)) {
            Some(Ok(key)) => key,
            _ => self.0.as_bytes().to_vec(),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How far a decision must get before its notification goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateSync {
    /// To the disk itself (fsync): survives a power cut.
    #[default]
    Full,
    /// To the operating system: survives the daemon's crash or SIGKILL,
    /// not a power cut; no fsync in the path of an alert.
    Normal,
}

impl StateSync {
    /// SQLite's `synchronous` setting for it (in WAL mode).
    pub fn pragma(self) -> &'static str {
        match self {
            StateSync::Full => "FULL",
            StateSync::Normal => "NORMAL",
        }
    }
}

/// The daemon's own birth and will.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub topic: String,
    pub online: String,
    pub offline: String,
    /// The presence is a Sparkplug host application's STATE (`topic` is
    /// `spBv1.0/STATE/<host_id>`): JSON stamped with the connection's time
    /// instead of `online` / `offline`.
    pub sparkplug_host: bool,
}

impl Presence {
    /// What to publish (or leave as the will) for `online`, on a
    /// connection made at `connected_ms` (milliseconds since the epoch).
    pub fn payload(&self, online: bool, connected_ms: u64) -> Vec<u8> {
        match (self.sparkplug_host, online) {
            (true, online) => crate::sparkplug::state_payload(online, connected_ms),
            (false, true) => self.online.as_bytes().to_vec(),
            (false, false) => self.offline.as_bytes().to_vec(),
        }
    }
}

/// One `[[device]]`: an exact topic with its id, or a pattern.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub watch: Watch,
    /// Where proof of life arrives besides the status topic (same shape:
    /// exact for a device, a `{id}` pattern for a pattern).
    pub heartbeat: Option<Watch>,
    pub rules: Arc<Rules>,
    /// Patterns only: most devices this pattern may add (and its share
    /// of `Config::max_devices` when lower than an equal one).
    pub max_devices: Option<usize>,
    /// Patterns only: the id its devices get, `{id}` standing for what
    /// the topic says (`esp-{id}`: a namespace of their own).
    pub id_template: Option<String>,
    /// Patterns only: topic filters it never turns into devices.
    pub exclude: Vec<String>,
    /// The ecosystem convention it follows (`preset`), if any.
    pub preset: Option<&'static preset::Preset>,
}

impl DeviceSpec {
    /// The id of the device `raw` (what the topic says), as this spec names it.
    fn device_id<'t>(&self, raw: &'t str) -> Cow<'t, str> {
        match &self.id_template {
            Some(template) => Cow::Owned(template.replace(crate::topic::ID_PLACEHOLDER, raw)),
            None => Cow::Borrowed(raw),
        }
    }

    fn excludes(&self, topic: &str) -> bool {
        self.exclude.iter().any(|f| crate::topic::filter_matches(f, topic))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watch {
    Device {
        id: String,
        topic: String,
    },
    Pattern(crate::topic::TopicPattern),
    /// The edge nodes, or their devices, of a `[[sparkplug]]`.
    Sparkplug(SparkplugWatch),
}

impl Watch {
    /// The filter that shows what it watches (in logs, for a pattern's limit).
    pub fn filter(&self) -> String {
        match self {
            Watch::Device { topic, .. } => topic.clone(),
            Watch::Pattern(p) => p.filter(),
            Watch::Sparkplug(s) => s.filters().swap_remove(1),
        }
    }

    /// The id and topic a person reads for it: `{id}` for a pattern.
    pub fn label(&self) -> (String, String) {
        match self {
            Watch::Device { id, topic } => (id.clone(), topic.clone()),
            Watch::Pattern(p) => ("{id}".to_string(), p.to_string()),
            Watch::Sparkplug(s) => {
                let nodes = if s.nodes.is_empty() { "+".to_string() } else { s.nodes.join("|") };
                let (id, topic) = match s.level {
                    SparkplugLevel::Node { .. } => {
                        (format!("{}/{nodes}", s.group), format!("{{NBIRTH,NDEATH,NDATA}}/{nodes}"))
                    }
                    SparkplugLevel::Device => {
                        (format!("{}/{nodes}/+", s.group), format!("{{DBIRTH,DDEATH,DDATA}}/{nodes}/+"))
                    }
                };
                (id, format!("{}/{}/{topic}", crate::sparkplug::topic::NAMESPACE, s.group))
            }
        }
    }

    /// Every subscription it needs.
    pub fn filters(&self) -> Vec<String> {
        match self {
            Watch::Sparkplug(s) => s.filters(),
            other => vec![other.filter()],
        }
    }
}

/// One level of a `[[sparkplug]]`: its edge nodes, or their devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparkplugWatch {
    /// A group id, or `+` for every group.
    pub group: String,
    /// Edge node ids; empty for every node of the group.
    pub nodes: Vec<String>,
    pub level: SparkplugLevel,
}

/// What a Sparkplug device of willwatch's is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SparkplugLevel {
    /// An edge node: NBIRTH / NDEATH, with `bdSeq`. With its devices
    /// watched too, every message of its stream is seen, so its sequence
    /// can be followed.
    Node { with_devices: bool },
    /// A device of an edge node: DBIRTH / DDEATH; its node is its parent.
    Device,
}

impl SparkplugWatch {
    /// Whether `topic` is about this watch's nodes (or their devices).
    pub fn covers(&self, topic: &crate::sparkplug::topic::Topic<'_>) -> bool {
        (self.group == "+" || self.group == topic.group)
            && (self.nodes.is_empty() || self.nodes.iter().any(|n| n == topic.node))
            && (self.level == SparkplugLevel::Device) == topic.device.is_some()
    }

    /// The filters of its births, deaths and data (data proves life and
    /// tells a host which nodes to ask for a rebirth).
    pub fn filters(&self) -> Vec<String> {
        use crate::sparkplug::topic::{Verb, filter};
        let verbs = match self.level {
            SparkplugLevel::Node { .. } => Verb::NODE,
            SparkplugLevel::Device => Verb::DEVICE,
        };
        let nodes: Vec<&str> =
            if self.nodes.is_empty() { vec!["+"] } else { self.nodes.iter().map(String::as_str).collect() };
        verbs.iter().flat_map(|v| nodes.iter().map(|n| filter(&self.group, *v, n))).collect()
    }
}

/// How a device's payloads are read and what runs on its transitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub online: Vec<String>,
    pub offline: Vec<String>,
    pub actions: Vec<String>,
    /// An offline must last this long before offline actions fire.
    pub grace: Duration,
    /// Silent this long (no message on the status or heartbeat topic): offline.
    pub heartbeat_timeout: Option<Duration>,
    /// JSON pointer to the state string, for JSON status payloads.
    pub state_field: Option<String>,
    /// JSON pointer to the session sequence (Sparkplug `bdSeq` style).
    pub seq_field: Option<String>,
    /// The `severity` of its alerts (Alertmanager's label), over the action's.
    pub severity: Option<String>,
    /// The device (a bridge, a gateway) it is reached through: while that
    /// one is offline, this one's offline actions are inhibited.
    pub parent: Option<String>,
    /// A Sparkplug B edge node or device: its payloads are protobuf, its
    /// session rules Sparkplug's.
    pub sparkplug: Option<SparkplugLevel>,
    /// Its status is retained, so the broker can tell it again after a
    /// reconnect (not so for Home Assistant's): a device whose retained
    /// status is gone after a reconnect is not seen.
    pub retained: bool,
}

impl Rules {
    /// The rules of a device nothing configures: plain `online` / `offline`,
    /// the built-in log, no grace, no heartbeat.
    pub fn builtin() -> Rules {
        Rules {
            online: vec!["online".into()],
            offline: vec!["offline".into()],
            actions: vec![BUILTIN_LOG.into()],
            grace: Duration::ZERO,
            heartbeat_timeout: None,
            state_field: None,
            seq_field: None,
            severity: None,
            parent: None,
            sparkplug: None,
            retained: true,
        }
    }

    /// The device it is reached through, if any: its `parent`, or for a
    /// Sparkplug device (`<group>/<node>/<device>`) its edge node.
    pub fn parent_of<'d>(&'d self, id: &'d str) -> Option<&'d str> {
        match self.sparkplug {
            Some(SparkplugLevel::Device) => id.rsplit_once('/').map(|(node, _)| node),
            _ => self.parent.as_deref(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ActionSpec {
    pub kind: ActionKind,
    /// Which events fire it.
    pub on: Vec<crate::event::EventKind>,
}

impl ActionSpec {
    /// Whether `kind` runs this action. Reconnect ladders start on offline
    /// and must hear the online that stops them, whatever `on` says.
    pub fn runs_on(&self, kind: crate::event::EventKind) -> bool {
        use crate::event::EventKind::{Offline, Online};
        match self.kind {
            ActionKind::Reconnect(_) => matches!(kind, Offline | Online),
            _ => self.on.contains(&kind),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ActionKind {
    Log,
    /// An HTTP request per event: a webhook, or a service a person reads.
    Webhook(Box<Webhook>),
    Reconnect(Reconnect),
    Exec(Exec),
    Publish(Publish),
}

impl ActionKind {
    pub fn name(&self) -> &'static str {
        match self {
            ActionKind::Log => "log",
            ActionKind::Webhook(w) => w.service.kind(),
            ActionKind::Reconnect(_) => "reconnect",
            ActionKind::Exec(_) => "exec",
            ActionKind::Publish(_) => "publish",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// The event JSON (an array of events when batched).
    Willwatch,
    /// Alertmanager's webhook payload, version 4.
    Alertmanager,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub url: url::Url,
    pub timeout: Duration,
    pub retries: Retries,
    /// The Alertmanager `severity` label unless the device sets one.
    pub severity: Option<String>,
    /// `[http] external_url`: where receivers reach `/status`.
    pub external_url: Option<url::Url>,
    /// Signs requests the Standard Webhooks way when set.
    pub secret: Option<Secret>,
    pub headers: Vec<(String, Template)>,
    /// Who receives the requests, and so what each one says.
    pub service: Service,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Collect events this long and send them as one request.
    pub batch: Option<Duration>,
    /// Requests at most this often (a chat's or a push service's limit):
    /// what arrives meanwhile goes out as one digest, never dropped.
    pub min_interval: Option<Duration>,
    /// A service's words for one event instead of the usual: its title (an
    /// email's subject) and body.
    pub title: Option<Template>,
    pub body: Option<Template>,
}

/// Who an HTTP action talks to: a plain webhook, or a service a person
/// reads (`actions/notify/`), each with what it needs besides the URL.
#[derive(Debug, Clone, PartialEq)]
pub enum Service {
    Webhook(WebhookFormat),
    /// ntfy: `url` is the server and topic; `authorization` the header's
    /// value (`Bearer` a token, or `Basic` a user and password).
    Ntfy {
        authorization: Option<Secret>,
        priority: Option<u8>,
    },
    /// Slack-compatible incoming webhooks (Slack, Mattermost, Rocket.Chat).
    Slack,
    /// A Discord channel's webhook.
    Discord,
    /// Telegram's Bot API (`url` is its base), `sendMessage` to one chat.
    Telegram {
        bot_token: Secret,
        chat_id: String,
    },
    /// PagerDuty's Events API v2 (`url` is the enqueue endpoint).
    PagerDuty {
        routing_key: Secret,
    },
    /// Gotify: `url` is the server.
    Gotify {
        token: Secret,
        priority: Option<u8>,
    },
    /// Pushover: `url` is its messages API.
    Pushover {
        user: Secret,
        token: Secret,
        priority: Option<i8>,
    },
    /// A Microsoft Teams workflow webhook (an Adaptive Card).
    Teams,
    /// A Matrix room: `url` is the homeserver.
    Matrix {
        room: String,
        token: Secret,
    },
    /// Opsgenie's Alert API (`url` is its base, by region).
    Opsgenie {
        api_key: Secret,
    },
    /// Mail through an SMTP server (`url` is `smtp://` or `smtps://`).
    Email(Box<Email>),
}

/// What an email action needs besides its server.
#[derive(Debug, Clone, PartialEq)]
pub struct Email {
    pub from: lettre::message::Mailbox,
    pub to: Vec<lettre::message::Mailbox>,
    /// The user name and password to log in with (STARTTLS is then
    /// required on `smtp://`).
    pub login: Option<(String, Secret)>,
    /// `smtps://`: TLS from the first byte.
    pub implicit_tls: bool,
    /// The CAs to trust (DER) instead of the system's; empty where
    /// `ca_file` is a credential `check` cannot read.
    pub ca: Option<Vec<Vec<u8>>>,
}

impl Service {
    /// The action type that configures it.
    pub fn kind(&self) -> &'static str {
        match self {
            Service::Webhook(_) => "webhook",
            Service::Ntfy { .. } => "ntfy",
            Service::Slack => "slack",
            Service::Discord => "discord",
            Service::Telegram { .. } => "telegram",
            Service::PagerDuty { .. } => "pagerduty",
            Service::Gotify { .. } => "gotify",
            Service::Pushover { .. } => "pushover",
            Service::Teams => "teams",
            Service::Matrix { .. } => "matrix",
            Service::Opsgenie { .. } => "opsgenie",
            Service::Email(_) => "email",
        }
    }
}

/// How long an action's failed attempts are made again (webhook deliveries,
/// exec runs whose program could not start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries {
    /// Retried until the event is this old, then given up.
    pub max_age: Duration,
    /// The longest wait between two attempts (`Retry-After` included).
    pub max_interval: Duration,
    /// An optional cap on attempts, on top of `max_age`.
    pub max_attempts: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reconnect {
    /// Where the command goes; only Sparkplug devices, which get a rebirth
    /// request instead, may use a reconnect without one.
    pub topic: Option<Template>,
    pub payload: Template,
    pub qos: u8,
    pub retain: bool,
    pub first_after: Duration,
    pub backoff: f64,
    pub max_interval: Duration,
    pub max_attempts: u32,
    pub escalate: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Exec {
    /// The program (never templated) and its templated arguments.
    pub program: PathBuf,
    pub args: Vec<Template>,
    pub timeout: Duration,
    pub concurrency: usize,
    /// For a program that could not be started.
    pub retries: Retries,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    pub topic: Template,
    pub qos: u8,
    pub retain: bool,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = file::read_small(path, file::MAX_CONFIG)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        match String::from_utf8(bytes) {
            Ok(text) => Config::parse(path, &text),
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
                let problem = Problem::new(at..at + 1, "the config file is not UTF-8 text here");
                Err(ConfigError::Invalid { path: path.to_path_buf(), text, problems: vec![problem] })
            }
        }
    }

    /// As `load`, for a process that uses the config (the daemon, a
    /// replay): every credential it names must be readable here.
    pub fn load_runnable(path: &Path) -> Result<Config, ConfigError> {
        let config = Config::load(path)?;
        if config.unread_credentials.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Credentials { path: path.to_path_buf(), names: config.unread_credentials })
        }
    }

    /// Validates `text` as if read from `path` (which errors will name).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        validate::validate(path, text, &outside::System).map_err(|problems| ConfigError::Invalid {
            path: path.to_path_buf(),
            text: text.to_string(),
            problems,
        })
    }

    /// Every subscription filter, each once, in config order.
    pub fn filters(&self) -> Vec<String> {
        let mut seen = HashSet::new();
        let status = self.devices.iter().flat_map(|d| d.watch.filters());
        let heartbeat = self.devices.iter().filter_map(|d| d.heartbeat.as_ref().map(Watch::filter));
        // A Sparkplug host hears its own STATE, to put it right if overwritten.
        let state = self.presence.sparkplug_host.then(|| self.presence.topic.clone());
        // A cluster's instances hear each other: claims, presences, notifications.
        let cluster = self.cluster.as_ref().map(crate::cluster::wire::filter);
        status.chain(heartbeat).chain(state).chain(cluster).filter(|f| seen.insert(f.clone())).collect()
    }

    /// The id of the device whose heartbeat topic `topic` is.
    pub fn resolve_heartbeat<'t>(&self, topic: &'t str) -> Option<Cow<'t, str>> {
        self.devices.iter().find_map(|d| match (&d.heartbeat, &d.watch) {
            (Some(Watch::Device { topic: hb, .. }), Watch::Device { id, .. }) if hb == topic => {
                Some(Cow::Owned(id.clone()))
            }
            (Some(Watch::Pattern(hb)), Watch::Pattern(_)) => hb.device_id(topic).map(|raw| d.device_id(raw)),
            _ => None,
        })
    }

    /// The spec that owns `topic` and the device id it gives it. Exact
    /// topics win over patterns; among patterns the first in the file wins.
    pub fn resolve<'t>(&self, topic: &'t str) -> Option<(Cow<'t, str>, &DeviceSpec)> {
        if let Some(sparkplug) = crate::sparkplug::topic::Topic::parse(topic)
            && let Some(spec) = self.resolve_sparkplug(&sparkplug)
        {
            return Some((Cow::Owned(sparkplug.id()), spec));
        }
        if let Some(&i) = self.exact.get(topic) {
            let spec = &self.devices[i];
            if let Watch::Device { id, .. } = &spec.watch {
                return Some((Cow::Owned(id.clone()), spec));
            }
        }
        self.devices.iter().find_map(|d| match &d.watch {
            Watch::Pattern(_) if d.excludes(topic) => None,
            Watch::Pattern(p) => p.device_id(topic).map(|raw| (d.device_id(raw), d)),
            Watch::Device { .. } | Watch::Sparkplug(_) => None,
        })
    }

    /// The `[[sparkplug]]` level that watches what `topic` is about; the
    /// first in the file wins.
    pub fn resolve_sparkplug(&self, topic: &crate::sparkplug::topic::Topic<'_>) -> Option<&DeviceSpec> {
        self.devices.iter().find(|d| matches!(&d.watch, Watch::Sparkplug(s) if s.covers(topic)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(rest: &str) -> Config {
        let text = format!("[broker]\nurl = \"mqtt://b\"\nclient_id = \"w\"\n{rest}");
        Config::parse(Path::new("w.toml"), &text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn devices_inherit_defaults_unless_they_override_them() {
        let config = parse(
            "[defaults]\noffline = [\"dead\"]\n[action.quiet]\ntype = \"log\"\non = [\"offline\"]\n\
             [[device]]\nid = \"a\"\ntopic = \"x/a\"\n\
             [[device]]\nid = \"b\"\ntopic = \"x/b\"\nonline = [\"up\"]\nactions = [\"quiet\"]\n",
        );
        let a = &config.devices[0].rules;
        let b = &config.devices[1].rules;
        assert_eq!(
            (a.online.as_slice(), a.offline.as_slice(), a.actions.as_slice()),
            (&["online".to_string()][..], &["dead".to_string()][..], &["log".to_string()][..])
        );
        assert_eq!(
            (b.online.as_slice(), b.offline.as_slice(), b.actions.as_slice()),
            (&["up".to_string()][..], &["dead".to_string()][..], &["quiet".to_string()][..])
        );
        assert_eq!(config.actions["quiet"].on, vec![crate::event::EventKind::Offline]);
    }

    #[test]
    fn broker_url_defaults_port_and_presence_topic() {
        let config = parse("");
        assert_eq!((config.broker.host.as_str(), config.broker.port), ("b", 1883));
        assert_eq!(config.broker.keep_alive, Duration::from_secs(30));
        assert_eq!(config.presence.topic, "willwatch/w/status");
        assert!(config.broker.tls.is_none());
    }

    #[test]
    fn exact_topics_win_over_patterns_and_filters_are_unique() {
        let config = parse(
            "[[device]]\ntopic = \"s/{id}/status\"\n[[device]]\ntopic = \"s/+/{id}\"\n\
             [[device]]\nid = \"special\"\ntopic = \"s/t-1/status\"\n",
        );
        let (id, _) = config.resolve("s/t-1/status").unwrap();
        assert_eq!(id, "special");
        let (id, spec) = config.resolve("s/t-2/status").unwrap();
        assert_eq!(id, "t-2");
        assert!(matches!(spec.watch, Watch::Pattern(_)));
        assert!(config.resolve("other/t-2/status").is_none());
        assert_eq!(config.filters(), vec!["s/+/status", "s/+/+", "s/t-1/status"]);
    }

    #[test]
    fn an_exec_action_takes_the_retry_budget_of_a_webhook() {
        let config = parse(
            "[action.page]\ntype = \"exec\"\ncommand = [\"/bin/true\"]\nmax_age = \"1h\"\nmax_attempts = 3\n\
             [action.pager]\ntype = \"exec\"\ncommand = [\"/bin/true\"]\n",
        );
        let retries = |name: &str| match &config.actions[name].kind {
            ActionKind::Exec(exec) => exec.retries,
            other => panic!("{other:?}"),
        };
        let hour = Duration::from_secs(3600);
        let (min5, day) = (Duration::from_secs(300), 24 * hour);
        assert_eq!(retries("page"), Retries { max_age: hour, max_interval: min5, max_attempts: Some(3) });
        assert_eq!(retries("pager"), Retries { max_age: day, max_interval: min5, max_attempts: None }, "the defaults");
    }

    #[test]
    fn problems_carry_line_and_column() {
        let text = "[broker]\nurl = \"mqtt://b\"\n[[device]]\ntopic = \"a/#\"\n";
        let err = Config::parse(Path::new("w.toml"), text).unwrap_err();
        assert_eq!(
            err.locations(),
            vec![(4, 9, "`topic`: `#` is not allowed: a device is one topic, not a subtree".to_string())]
        );
    }
}
