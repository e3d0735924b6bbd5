//! Raw TOML → `Config`: every rule of the schema, each broken one reported
//! with the span of the value that breaks it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::error::{Problem, did_you_mean};
use super::outside::Outside;
use super::preset::{self, Preset};
use super::raw::{RawBroker, RawConfig, RawDefaults, RawDevice, RawDuration, RawPresence, SpannedList};
use super::{ActionSpec, BUILTIN_LOG, Broker, Config, DeviceSpec, Presence, Rules, Secret, Tls, Watch};
use crate::topic::{ID_PLACEHOLDER, MAX_DEVICE_ID, MAX_DEVICE_TOPIC, TopicError, WatchedTopic};

mod cluster;
mod sparkplug;
#[cfg(test)]
mod tests;

/// Read when the config names no `password_file`.
pub const PASSWORD_ENV: &str = "WILLWATCH_MQTT_PASSWORD";

const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// The shortest `resync` but 0 (never): each one re-reads every device.
const MIN_RESYNC: Duration = Duration::from_secs(1);

pub(super) fn validate(path: &Path, text: &str, outside: &dyn Outside) -> Result<Config, Vec<Problem>> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let problem = Problem::new(span, e.message().trim_end().to_string());
        if e.message().contains("expected a duration") {
            return vec![problem.hint("write durations like \"500ms\", \"30s\", \"5m\" or \"1h 30m\"")];
        }
        vec![problem]
    })?;
    let mut v = Validator {
        base: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
        text,
        outside,
        problems: Vec::new(),
        warnings: Vec::new(),
        unread_credentials: Vec::new(),
        default_preset: None,
    };
    let actions = v.actions(raw.action);
    let cluster = v.cluster(raw.cluster);
    let broker = v.broker(raw.broker, &actions, cluster.as_ref().and_then(Option::as_ref));
    let presence = match &cluster {
        Some(Some(c)) => v.cluster_presence(raw.presence, c),
        Some(None) => None,
        None => v.presence(raw.presence, broker.as_ref().map(|b| b.client_id.as_str())),
    };
    let (defaults_span, raw_defaults) = match raw.defaults {
        Some(d) => (d.span(), d.into_inner()),
        None => (0..0, RawDefaults::default()),
    };
    let defaults = v.defaults(raw_defaults, defaults_span, &actions);
    let mut devices = v.devices(raw.device, &defaults, &actions);
    devices.extend(v.sparkplug(raw.sparkplug, &defaults, &actions));
    let state_dir = v.state_dir(raw.state_dir);
    let max_devices = v.max_devices(raw.max_devices.as_ref()).unwrap_or(super::DEFAULT_MAX_DEVICES);
    let state_sync = v.state_sync(raw.state_sync);
    let (listen, external_url, users_file) =
        raw.http.map_or((None, None, None), |h| (h.listen, h.external_url, h.users_file));
    let listen_span = listen.as_ref().map_or(0..0, Spanned::span);
    let http_listen = v.http_listen(listen);
    let http_users = v.users(users_file, http_listen, listen_span);
    let external_url = v.external_url(external_url);
    let history_keep = v
        .duration_up_to(
            &raw.history.and_then(|h| h.keep),
            super::DEFAULT_HISTORY_KEEP,
            "keep",
            Duration::ZERO,
            super::MAX_HISTORY_KEEP,
        )
        .unwrap_or_default();
    let warnings = v
        .warnings
        .iter()
        .map(|w| {
            let (line, col) = super::error::line_col(text, w.span.start);
            let hint = w.hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default();
            format!("{}:{line}:{col}: warning: {}{hint}", path.display(), w.message)
        })
        .collect();
    match (broker, presence) {
        (Some(mut broker), Some(presence)) if v.problems.is_empty() => {
            // Sparkplug 3.0: a host application connects with a clean
            // session and recovers by rebirth requests, which it sends.
            broker.persistent_session &= !presence.sparkplug_host;
            let exact = devices
                .iter()
                .enumerate()
                .filter_map(|(i, d)| match &d.watch {
                    Watch::Device { topic, .. } => Some((topic.clone(), i)),
                    Watch::Pattern(_) | Watch::Sparkplug(_) => None,
                })
                .collect();
            let mut actions = actions;
            for spec in actions.values_mut() {
                if let super::ActionKind::Webhook(w) = &mut spec.kind {
                    w.external_url.clone_from(&external_url);
                }
            }
            Ok(Config {
                source: path.to_path_buf(),
                broker,
                presence,
                devices,
                actions,
                state_dir,
                max_devices,
                state_sync,
                http_listen,
                http_users,
                warnings,
                history_keep,
                unread_credentials: v.unread_credentials,
                cluster: cluster.flatten(),
                exact,
            })
        }
        _ => Err(v.problems),
    }
}

pub(super) struct Validator<'t> {
    text: &'t str,
    /// Files, the environment, the host.
    pub(super) outside: &'t dyn Outside,
    /// Relative file paths in the config are relative to the config's folder.
    pub(super) base: PathBuf,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    /// Credentials named by the config that cannot be read here.
    unread_credentials: Vec<String>,
    /// `[defaults] preset`: gives devices without a topic theirs.
    default_preset: Option<&'static Preset>,
}

/// How a `*_file` setting names a systemd credential.
pub const CREDENTIAL_PREFIX: &str = "credential:";

impl Validator<'_> {
    pub(super) fn problem(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    /// The file a `*_file` setting names: a path (relative to the config's
    /// folder), or `credential:NAME`, read from `$CREDENTIALS_DIRECTORY`
    /// (systemd's `LoadCredential=`). `Ok(None)` (with a warning) when
    /// that is a credential and this process has no credentials directory:
    /// only the service can read it, so it is not checked here. `Err` when
    /// the name is not one (a problem is recorded).
    pub(super) fn file_path(&mut self, file: &Spanned<String>, key: &str) -> Result<Option<PathBuf>, ()> {
        let Some(name) = file.get_ref().strip_prefix(CREDENTIAL_PREFIX) else {
            return Ok(Some(self.base.join(file.get_ref())));
        };
        if name.is_empty() || name.contains('/') {
            self.problem(
                Problem::new(file.span(), format!("`{key}`: `{}` is not a credential name", file.get_ref()))
                    .hint("write credential:NAME, with the NAME of a LoadCredential= line of the unit"),
            );
            return Err(());
        }
        match self.outside.var("CREDENTIALS_DIRECTORY") {
            Some(dir) => Ok(Some(PathBuf::from(dir).join(name))),
            None => {
                self.warning(Problem::new(
                    file.span(),
                    format!(
                        "`{key}` is credential `{name}`, which only the service can read ($CREDENTIALS_DIRECTORY is not set here): not checked"
                    ),
                ));
                self.unread_credentials.push(name.to_string());
                Ok(None)
            }
        }
    }

    pub(super) fn warning(&mut self, problem: Problem) {
        self.warnings.push(problem);
    }

    fn broker(
        &mut self,
        raw: Spanned<RawBroker>,
        actions: &BTreeMap<String, ActionSpec>,
        cluster: Option<&crate::cluster::Settings>,
    ) -> Option<Broker> {
        let span = raw.span();
        let raw = raw.into_inner();
        let client_id_span = raw.client_id.as_ref().map_or(span.clone(), Spanned::span);
        let client_id = match raw.client_id {
            Some(id) if id.get_ref().trim().is_empty() => {
                self.problem(
                    Problem::new(id.span(), "`client_id` is empty").hint("leave it out to use willwatch-<hostname>"),
                );
                None
            }
            Some(id) if id.get_ref().len() > crate::topic::MAX_MQTT_STRING => {
                self.problem(Problem::new(id.span(), "`client_id` is longer than MQTT's 65,535 bytes"));
                None
            }
            Some(id) => Some(id.into_inner()),
            None => Some(default_client_id(cluster, self.outside.host_name())),
        };
        let keep_alive = self.keep_alive(raw.keep_alive);
        let username = raw.username.map(Spanned::into_inner);
        let password = self.password(raw.password_file);
        if password.is_some() && username.is_none() {
            self.problem(
                Problem::new(span.clone(), "a broker password is set but no `username`")
                    .hint("MQTT sends a password only with a user name"),
            );
        }
        let (url, host, port, tls_wanted) = self.url(&raw.url)?;
        let tls = self.tls(tls_wanted, &raw.url, raw.ca_file, raw.cert_file, raw.key_file);
        let settle = self.duration(&raw.settle, Duration::from_secs(2), "settle", Duration::ZERO);
        let resync = self.resync(&raw.resync);
        let confirm_within =
            self.duration(&raw.confirm_within, Duration::from_secs(30), "confirm_within", Duration::from_secs(1));
        let persistent_session = raw.persistent_session.as_ref().is_none_or(|p| *p.get_ref());
        if persistent_session && let Some(id) = &client_id {
            self.generated_client_id(id, client_id_span);
        }
        let alert_after =
            self.duration(&raw.broker_alert_after, Duration::from_secs(60), "broker_alert_after", Duration::ZERO);
        let broker_actions = self.action_names(raw.actions, &[], actions);
        Some(Broker {
            url,
            host,
            port,
            tls: tls?,
            client_id: client_id?,
            keep_alive: keep_alive?,
            username,
            password,
            settle: settle?,
            resync: resync?,
            confirm_within: confirm_within?,
            persistent_session,
            alert_after: alert_after?,
            actions: broker_actions,
        })
    }

    /// A persistent session lives under the client id: one that is made
    /// anew at each start (a UUID, a long random hex run) loses it.
    fn generated_client_id(&mut self, id: &str, span: std::ops::Range<usize>) {
        let longest_hex = id.split(|c: char| !c.is_ascii_hexdigit()).map(str::len).max().unwrap_or(0);
        if longest_hex >= 12 || uuid::Uuid::try_parse(id).is_ok() {
            self.warning(
                Problem::new(span, format!("client id `{id}` looks generated: the broker keeps our session (persistent_session) under it, and a new id at each start loses what was queued meanwhile"))
                    .hint("use a stable client_id, e.g. willwatch-<host>"),
            );
        }
    }

    fn url(&mut self, raw: &Spanned<String>) -> Option<(String, String, u16, bool)> {
        let bad = |message: String| {
            Problem::new(raw.span(), message).hint("write it as mqtt://host:1883 or mqtts://host:8883")
        };
        let url = match url::Url::parse(raw.get_ref()) {
            Ok(url) => url,
            Err(e) => {
                self.problem(bad(format!("`url` is not a valid URL: {e}")));
                return None;
            }
        };
        let (tls, default_port) = match url.scheme() {
            "mqtt" => (false, 1883),
            "mqtts" => (true, 8883),
            other => {
                self.problem(bad(format!("`url` scheme `{other}` is not supported")));
                return None;
            }
        };
        if !url.username().is_empty() || url.password().is_some() {
            self.problem(
                Problem::new(raw.span(), "credentials in the broker URL would end up in logs")
                    .hint("use `username` and `password_file` (or the WILLWATCH_MQTT_PASSWORD environment variable)"),
            );
            return None;
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            self.problem(bad("`url` must have no path, query or fragment".into()));
            return None;
        }
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            self.problem(bad("`url` has no host".into()));
            return None;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        Some((raw.get_ref().clone(), host, url.port().unwrap_or(default_port), tls))
    }

    /// `resync`: 0 (never), or from `MIN_RESYNC` to 24 hours.
    fn resync(&mut self, raw: &Option<RawDuration>) -> Option<Duration> {
        let max = Duration::from_secs(24 * 3600);
        let Some(raw) = raw else { return Some(Duration::from_secs(600)) };
        let value = raw.get_ref().into_inner();
        if value == Duration::ZERO || (MIN_RESYNC..=max).contains(&value) {
            return Some(value);
        }
        self.problem(
            Problem::new(
                raw.span(),
                format!(
                    "`resync` must be 0s (never) or from {} to {}",
                    humantime::format_duration(MIN_RESYNC),
                    humantime::format_duration(max)
                ),
            )
            .hint("each resync re-reads the retained state of every device; minutes suit most fleets"),
        );
        None
    }

    fn keep_alive(&mut self, raw: Option<RawDuration>) -> Option<Duration> {
        let Some(raw) = raw else {
            return Some(DEFAULT_KEEP_ALIVE);
        };
        let value = raw.get_ref().into_inner();
        if value < Duration::from_secs(1) || value > Duration::from_secs(u16::MAX.into()) || value.subsec_nanos() != 0 {
            self.problem(
                Problem::new(raw.span(), format!("`keep_alive` {} is out of range", humantime::format_duration(value)))
                    .hint("MQTT counts keep-alive in whole seconds, from 1s to 65535s; 30s suits most brokers"),
            );
            return None;
        }
        Some(value)
    }

    fn password(&mut self, file: Option<Spanned<String>>) -> Option<Secret> {
        let Some(file) = file else {
            return self.outside.var(PASSWORD_ENV).filter(|p| !p.is_empty()).map(Secret);
        };
        let path = self.file_path(&file, "password_file").ok().flatten()?;
        match self.outside.read_text(&path, super::file::MAX_SECRET) {
            Ok(text) if text.trim_end_matches(['\r', '\n']).is_empty() => {
                self.warning(Problem::new(
                    file.span(),
                    format!("`password_file` {} is empty: connecting without a password", path.display()),
                ));
                None
            }
            Ok(text) => Some(Secret(text.trim_end_matches(['\r', '\n']).to_string())),
            Err(e) => {
                self.problem(Problem::new(file.span(), format!("cannot read `password_file` {}: {e}", path.display())));
                None
            }
        }
    }

    fn tls(
        &mut self,
        wanted: bool,
        url: &Spanned<String>,
        ca: Option<Spanned<String>>,
        cert: Option<Spanned<String>>,
        key: Option<Spanned<String>>,
    ) -> Option<Option<Tls>> {
        if !wanted {
            if let Some(file) = ca.as_ref().or(cert.as_ref()).or(key.as_ref()) {
                self.problem(
                    Problem::new(file.span(), "TLS files are set but the broker URL is mqtt://").hint(format!(
                        "use mqtts://{} to connect with TLS",
                        url.get_ref().trim_start_matches("mqtt://")
                    )),
                );
                return None;
            }
            return Some(None);
        }
        let client = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(one), None) | (None, Some(one)) => {
                self.problem(
                    Problem::new(one.span(), "`cert_file` and `key_file` go together")
                        .hint("a client certificate needs its private key"),
                );
                return None;
            }
        };
        let ca_path = match &ca {
            Some(c) => Some(self.file_path(c, "ca_file").ok()?),
            None => None,
        };
        let client_paths = match &client {
            Some((c, k)) => Some((self.file_path(c, "cert_file").ok()?, self.file_path(k, "key_file").ok()?)),
            None => None,
        };
        // A file only the service can read: the TLS settings are checked there.
        if ca_path.as_ref().is_some_and(Option::is_none)
            || client_paths.as_ref().is_some_and(|(c, k)| c.is_none() || k.is_none())
        {
            return Some(None);
        }
        let ca_path = ca_path.flatten();
        let client_paths = client_paths.and_then(|(c, k)| Some((c?, k?)));
        match super::tls::client_config(
            self.outside,
            ca_path.as_deref(),
            client_paths.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        ) {
            Ok(config) => Some(Some(Tls {
                ca_file: ca_path,
                client_cert: client_paths.map(|(c, _)| c),
                client_config: Arc::new(config),
            })),
            Err(e) => {
                let span = match e.file {
                    super::tls::TlsFile::Ca => ca.map(|c| c.span()),
                    super::tls::TlsFile::Cert => client.as_ref().map(|(c, _)| c.span()),
                    super::tls::TlsFile::Key => client.as_ref().map(|(_, k)| k.span()),
                    super::tls::TlsFile::SystemRoots => None,
                }
                .unwrap_or_else(|| url.span());
                self.problem(Problem::new(span, e.to_string()));
                None
            }
        }
    }

    fn presence(&mut self, raw: Option<Spanned<RawPresence>>, client_id: Option<&str>) -> Option<Presence> {
        let (span, raw) = match raw {
            Some(r) => (r.span(), r.into_inner()),
            None => (0..0, RawPresence { sparkplug_host_id: None, topic: None, online: None, offline: None }),
        };
        if let Some(host_id) = raw.sparkplug_host_id {
            return self.sparkplug_host(host_id, [raw.topic, raw.online, raw.offline]);
        }
        let topic = match raw.topic {
            Some(t) => match WatchedTopic::parse(t.get_ref()) {
                Ok(WatchedTopic::Exact(topic)) => Some(topic),
                Ok(WatchedTopic::Pattern(_)) => {
                    self.problem(Problem::new(
                        t.span(),
                        "the presence topic is the daemon's own; it cannot have `{id}`",
                    ));
                    None
                }
                Err(e) => {
                    self.problem(Problem::new(t.span(), format!("presence `topic`: {e}")));
                    None
                }
            },
            None => client_id.map(|id| format!("willwatch/{id}/status")),
        };
        let online = self.payload(raw.online, "online");
        let offline = self.payload(raw.offline, "offline");
        if online.is_some() && online == offline {
            self.problem(Problem::new(span, "presence `online` and `offline` are the same payload"));
            return None;
        }
        Some(Presence { topic: topic?, online: online?, offline: offline?, sparkplug_host: false })
    }

    /// `sparkplug_host_id`: the presence is the host application's STATE.
    /// One connection has one will, so it replaces the plain presence.
    fn sparkplug_host(&mut self, host_id: Spanned<String>, plain: [Option<Spanned<String>>; 3]) -> Option<Presence> {
        let mut ok = self.sparkplug_id(&host_id, "host");
        for key in plain.into_iter().flatten() {
            self.problem(
                Problem::new(key.span(), "with `sparkplug_host_id` the presence is the host's Sparkplug STATE")
                    .hint("an MQTT connection has one will: remove `topic`, `online` and `offline`"),
            );
            ok = false;
        }
        ok.then(|| Presence {
            topic: crate::sparkplug::topic::state_topic(host_id.get_ref()),
            online: String::new(),
            offline: String::new(),
            sparkplug_host: true,
        })
    }

    fn payload(&mut self, raw: Option<Spanned<String>>, default: &str) -> Option<String> {
        match raw {
            None => Some(default.to_string()),
            Some(p) if p.get_ref().trim() != p.get_ref() && !p.get_ref().trim().is_empty() => {
                let trimmed = p.get_ref().trim().to_string();
                self.problem(
                    Problem::new(
                        p.span(),
                        format!(
                            "payload `{}` has spaces around it, which are ignored in what devices send",
                            p.get_ref()
                        ),
                    )
                    .hint(format!("write \"{trimmed}\"")),
                );
                None
            }
            Some(p) if p.get_ref().is_empty() => {
                self.problem(Problem::new(
                    p.span(),
                    "an empty payload clears a retained message; it cannot mean a state",
                ));
                None
            }
            Some(p) => Some(p.into_inner()),
        }
    }

    fn payloads(&mut self, raw: Option<SpannedList>, default: &[String], key: &str) -> Vec<String> {
        let Some(list) = raw else {
            return default.to_vec();
        };
        if list.get_ref().is_empty() {
            self.problem(Problem::new(list.span(), format!("`{key}` lists no payloads")));
        }
        let mut out = Vec::new();
        for p in list.into_inner() {
            match self.payload(Some(p), "") {
                Some(p) if !out.contains(&p) => out.push(p),
                _ => {}
            }
        }
        out
    }

    fn defaults(
        &mut self,
        raw: RawDefaults,
        span: std::ops::Range<usize>,
        actions: &BTreeMap<String, ActionSpec>,
    ) -> Rules {
        self.default_preset = raw.preset.as_ref().and_then(|p| self.preset(p));
        let base = self.default_preset.map(|p| preset_rules(p, &Rules::builtin()));
        let (online, offline) = match &base {
            Some(b) => (b.online.clone(), b.offline.clone()),
            None => (vec!["online".to_string()], vec!["offline".to_string()]),
        };
        let state_field = base.as_ref().and_then(|b| b.state_field.clone());
        let rules = Rules {
            online: self.payloads(raw.online, &online, "online"),
            offline: self.payloads(raw.offline, &offline, "offline"),
            actions: self.action_names(raw.actions, &[BUILTIN_LOG.to_string()], actions),
            grace: self.grace(raw.grace, Duration::ZERO),
            heartbeat_timeout: self.heartbeat(raw.heartbeat_timeout, None),
            state_field: self.pointer(raw.state_field, state_field),
            seq_field: self.pointer(raw.seq_field, None),
            severity: self.severity(raw.severity),
            parent: None,
            sparkplug: None,
            retained: base.as_ref().is_none_or(|b| b.retained),
        };
        self.fields_fit(&rules, span.clone());
        self.disjoint(&rules, span);
        rules
    }

    fn action_names(
        &mut self,
        raw: Option<SpannedList>,
        default: &[String],
        actions: &BTreeMap<String, ActionSpec>,
    ) -> Vec<String> {
        let Some(list) = raw else {
            return default.to_vec();
        };
        let mut out = Vec::new();
        for name in list.into_inner() {
            let known = name.get_ref() == BUILTIN_LOG || actions.contains_key(name.get_ref());
            if !known {
                let names = std::iter::once(BUILTIN_LOG).chain(actions.keys().map(String::as_str));
                let hint = match did_you_mean(name.get_ref(), names.clone()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!(
                        "defined actions: {}; define others as [action.NAME]",
                        names.collect::<Vec<_>>().join(", ")
                    ),
                };
                self.problem(Problem::new(name.span(), format!("unknown action `{}`", name.get_ref())).hint(hint));
            } else if !out.contains(name.get_ref()) {
                out.push(name.into_inner());
            }
        }
        out
    }

    /// A reconnect action without a `topic` sends Sparkplug rebirth
    /// requests: a plain device has nothing to be sent.
    fn commands_known(&mut self, rules: &Rules, span: std::ops::Range<usize>, actions: &BTreeMap<String, ActionSpec>) {
        for name in &rules.actions {
            if let Some(ActionSpec { kind: super::ActionKind::Reconnect(r), .. }) = actions.get(name)
                && r.topic.is_none()
            {
                self.problem(
                    Problem::new(span.clone(), format!("reconnect action `{name}` has no `topic` to send this device a command on"))
                        .hint("give the action a topic; only [[sparkplug]] nodes and devices can do without (they get a rebirth request)"),
                );
            }
        }
    }

    /// A payload cannot mean both online and offline.
    fn disjoint(&mut self, rules: &Rules, span: std::ops::Range<usize>) {
        if let Some(both) = rules.online.iter().find(|p| rules.offline.contains(p)) {
            self.problem(Problem::new(span, format!("payload `{both}` is listed as both online and offline")));
        }
    }

    fn devices(
        &mut self,
        raw: Vec<Spanned<RawDevice>>,
        defaults: &Rules,
        actions: &BTreeMap<String, ActionSpec>,
    ) -> Vec<DeviceSpec> {
        let mut ids: HashMap<String, usize> = HashMap::new();
        let mut topics: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::new();
        for device in raw {
            let span = device.span();
            let mut device = device.into_inner();
            // The device's own preset over the defaults; the defaults' one
            // only gives a topic (its payloads are in `defaults` already).
            let own = device.preset.as_ref().and_then(|p| self.preset(p));
            let with_preset = own.map(|p| preset_rules(p, defaults));
            let defaults = with_preset.as_ref().unwrap_or(defaults);
            let preset = own.or(self.default_preset);
            let preset_span = device.preset.as_ref().map_or(span.clone(), Spanned::span);
            let topic_from_preset = device.topic.is_none() && preset.is_some();
            if device.topic.is_none()
                && let Some(p) = preset
            {
                device.topic = Some(Spanned::new(preset_span.clone(), p.topic.to_string()));
                if device.id.is_none() {
                    device.id = p.id.map(|id| Spanned::new(preset_span.clone(), id.to_string()));
                }
                if device.exclude.is_none() && !p.exclude.is_empty() {
                    let list = p.exclude.iter().map(|f| Spanned::new(preset_span.clone(), f.to_string())).collect();
                    device.exclude = Some(Spanned::new(preset_span.clone(), list));
                }
            }
            let Some(topic) = device.topic.take() else {
                self.problem(
                    Problem::new(span, "this device has no `topic`")
                        .hint(format!("write topic = \"...\", or a preset that gives one: {}", preset::names())),
                );
                continue;
            };
            let topic_fits = self.short_enough(&topic, "topic", MAX_DEVICE_TOPIC);
            let id_fits = device.id.as_ref().is_none_or(|id| self.short_enough(id, "id", MAX_DEVICE_ID));
            if !(topic_fits && id_fits) {
                continue;
            }
            let rules = Rules {
                online: self.payloads(device.online, &defaults.online, "online"),
                offline: self.payloads(device.offline, &defaults.offline, "offline"),
                actions: self.action_names(device.actions, &defaults.actions, actions),
                grace: self.grace(device.grace, defaults.grace),
                heartbeat_timeout: self.heartbeat(device.heartbeat_timeout, defaults.heartbeat_timeout),
                state_field: self.pointer(device.state_field, defaults.state_field.clone()),
                seq_field: self.pointer(device.seq_field, defaults.seq_field.clone()),
                severity: self.severity(device.severity).or_else(|| defaults.severity.clone()),
                parent: self.parent(device.parent),
                sparkplug: None,
                retained: defaults.retained,
            };
            self.fields_fit(&rules, span.clone());
            self.disjoint(&rules, span.clone());
            self.commands_known(&rules, span.clone(), actions);
            let mut id_template = None;
            let watch = match (WatchedTopic::parse(topic.get_ref()), device.id) {
                (Err(e), _) => {
                    let mut p = Problem::new(topic.span(), format!("`topic`: {e}"));
                    if e == TopicError::WildcardInExactTopic {
                        p = p.hint("for one device per matching topic write e.g. sensors/{id}/status");
                    }
                    self.problem(p);
                    continue;
                }
                (Ok(WatchedTopic::Exact(_)), None) => {
                    self.problem(
                        Problem::new(span, "this device has an exact topic but no `id`")
                            .hint("add id = \"...\", or put `{id}` in the topic to make it a pattern"),
                    );
                    continue;
                }
                (Ok(WatchedTopic::Pattern(p)), Some(id)) => {
                    let template = id.get_ref();
                    if template.matches(ID_PLACEHOLDER).count() != 1
                        || template.chars().any(char::is_control)
                        || template.contains(['+', '#'])
                    {
                        self.problem(
                            Problem::new(
                                id.span(),
                                format!("a pattern's `id` is a template with `{{id}}` once; `{template}` is not"),
                            )
                            .hint("write e.g. id = \"esp-{id}\" to give this pattern's devices their own names"),
                        );
                        continue;
                    }
                    id_template = Some(id.into_inner());
                    Watch::Pattern(p)
                }
                (Ok(WatchedTopic::Exact(topic)), Some(id)) => {
                    let id_span = id.span();
                    let id = id.into_inner();
                    if id.trim().is_empty() || id.chars().any(char::is_control) || id.contains(['/', '+', '#']) {
                        self.problem(Problem::new(
                            id_span,
                            format!("device id `{id}` must be non-empty, without `/`, `+`, `#` or control characters"),
                        ));
                        continue;
                    }
                    if let Some(first) = ids.insert(id.clone(), id_span.start) {
                        self.problem(
                            Problem::new(id_span, format!("device id `{id}` is used twice")).hint(self.first_at(first)),
                        );
                        continue;
                    }
                    Watch::Device { id, topic }
                }
                (Ok(WatchedTopic::Pattern(p)), None) => Watch::Pattern(p),
            };
            let key = watch.filter_key();
            if let Some(first) = topics.insert(key.clone(), topic.span().start) {
                self.problem(
                    Problem::new(topic.span(), format!("topic `{key}` is watched twice")).hint(self.first_at(first)),
                );
                continue;
            }
            let exclude = self.exclude(device.exclude, &watch);
            // A preset's own topic is its ecosystem's convention, chosen
            // knowingly (and ESPHome's excludes what it knows collides).
            if let Watch::Pattern(p) = &watch
                && p.starts_with_wildcard()
                && exclude.is_empty()
                && !topic_from_preset
            {
                let filter = p.filter();
                let example = filter.replacen('+', "octoprint", 1).replacen('+', "x", usize::MAX).replace('#', "x");
                self.warning(
                    Problem::new(topic.span(), format!("`{p}` starts with a level that matches anything: it also catches other software's topics (e.g. {example})"))
                        .hint(format!("list them in exclude = [\"{}\"], or give the topic a fixed first level", filter.replacen('+', "octoprint", 1))),
                );
            }
            if !rules.retained
                && let Some(p) = preset
            {
                self.warning(
                    Problem::new(preset_span.clone(), format!("{}'s status is not retained: after a restart of willwatch or of the broker it cannot be read back, so the device shows unconfirmed until it speaks, and a will published while willwatch is away reaches it only through the broker's queue for its session", p.name))
                        .hint("make the birth and will messages retained where they are set (Home Assistant: MQTT integration options), and give mosquitto `queue_qos0_messages true`"),
                );
            }
            let heartbeat = self.heartbeat_topic(device.heartbeat_topic, &watch);
            let max_devices = match (&device.max_devices, &watch) {
                (Some(raw), Watch::Device { .. }) => {
                    self.problem(
                        Problem::new(raw.span(), "`max_devices` limits a pattern; this device has an exact topic")
                            .hint("remove it, or put `{id}` in the topic"),
                    );
                    None
                }
                (raw, _) => self.max_devices(raw.as_ref()),
            };
            let rules = Arc::new(rules);
            out.push(DeviceSpec { watch, heartbeat, rules, max_devices, id_template, exclude, preset });
        }
        out
    }

    fn state_sync(&mut self, raw: Option<Spanned<String>>) -> super::StateSync {
        match raw.as_ref().map(|r| r.get_ref().as_str()) {
            None | Some("full") => super::StateSync::Full,
            Some("normal") => super::StateSync::Normal,
            Some(other) => {
                let span = raw.as_ref().map(Spanned::span).unwrap_or(0..0);
                self.problem(Problem::new(span, format!("`state_sync` `{other}`: use \"full\" or \"normal\"")));
                super::StateSync::Full
            }
        }
    }

    /// A `max_devices` value: a positive count.
    fn max_devices(&mut self, raw: Option<&Spanned<i64>>) -> Option<usize> {
        let raw = raw?;
        match usize::try_from(*raw.get_ref()) {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                self.problem(Problem::new(raw.span(), "`max_devices` must be at least 1"));
                None
            }
        }
    }

    /// A `parent`: a device id.
    fn parent(&mut self, raw: Option<Spanned<String>>) -> Option<String> {
        let raw = raw?;
        if raw.get_ref().trim().is_empty() || raw.get_ref().chars().any(char::is_control) {
            self.problem(Problem::new(raw.span(), "`parent` must name a device id"));
            return None;
        }
        Some(raw.into_inner())
    }

    /// A `preset` by name.
    fn preset(&mut self, raw: &Spanned<String>) -> Option<&'static Preset> {
        let found = preset::find(raw.get_ref());
        if found.is_none() {
            self.problem(
                Problem::new(raw.span(), format!("unknown preset `{}`", raw.get_ref()))
                    .hint(format!("presets: {}", preset::names())),
            );
        }
        found
    }

    /// `exclude`: MQTT topic filters, on a pattern only.
    fn exclude(&mut self, raw: Option<SpannedList>, watch: &Watch) -> Vec<String> {
        let Some(raw) = raw else { return Vec::new() };
        if matches!(watch, Watch::Device { .. }) {
            self.problem(Problem::new(raw.span(), "`exclude` narrows a pattern; this device has an exact topic"));
            return Vec::new();
        }
        let mut out = Vec::new();
        for filter in raw.into_inner() {
            let f = filter.get_ref();
            let levels: Vec<&str> = f.split('/').collect();
            let ok = !f.is_empty()
                && levels.iter().all(|l| (!l.contains('+') || *l == "+") && (!l.contains('#') || *l == "#"))
                && !levels[..levels.len() - 1].contains(&"#");
            let everything = match watch {
                Watch::Pattern(p) if ok && p.covered_by(f) => Some(p),
                _ => None,
            };
            if let Some(p) = everything {
                self.problem(
                    Problem::new(filter.span(), format!("`exclude`: `{f}` excludes every topic of `{p}`"))
                        .hint("the pattern would watch nothing; exclude only the topics that are not devices"),
                );
            } else if ok {
                out.push(filter.into_inner());
            } else {
                self.problem(
                    Problem::new(filter.span(), format!("`exclude`: `{f}` is not an MQTT topic filter"))
                        .hint("whole levels, `+` for one level, `#` last: octoprint/+, zigbee2mqtt/bridge/#"),
                );
            }
        }
        out
    }

    /// Whether `raw` (`key`) is at most `max` bytes; a problem if not.
    fn short_enough(&mut self, raw: &Spanned<String>, key: &str, max: usize) -> bool {
        let len = raw.get_ref().len();
        if len > max {
            self.problem(Problem::new(raw.span(), format!("`{key}` is {len} bytes; at most {max}")));
        }
        len <= max
    }

    /// A heartbeat topic of the same shape as the status topic.
    fn heartbeat_topic(&mut self, raw: Option<Spanned<String>>, status: &Watch) -> Option<Watch> {
        let raw = raw?;
        if !self.short_enough(&raw, "heartbeat_topic", MAX_DEVICE_TOPIC) {
            return None;
        }
        match (WatchedTopic::parse(raw.get_ref()), status) {
            (Ok(WatchedTopic::Exact(topic)), Watch::Device { id, .. }) => Some(Watch::Device { id: id.clone(), topic }),
            (Ok(WatchedTopic::Pattern(p)), Watch::Pattern(_)) => Some(Watch::Pattern(p)),
            (Ok(_), _) => {
                self.problem(Problem::new(
                    raw.span(),
                    "`heartbeat_topic` must be exact for a device with an exact topic, and have `{id}` for a pattern",
                ));
                None
            }
            (Err(e), _) => {
                self.problem(Problem::new(raw.span(), format!("`heartbeat_topic`: {e}")));
                None
            }
        }
    }

    fn heartbeat(&mut self, raw: Option<RawDuration>, default: Option<Duration>) -> Option<Duration> {
        if raw.is_none() {
            return default;
        }
        self.duration(&raw, Duration::ZERO, "heartbeat_timeout", Duration::from_secs(1))
    }

    /// A JSON pointer such as `/bdSeq` or `/status/state`.
    fn pointer(&mut self, raw: Option<Spanned<String>>, default: Option<String>) -> Option<String> {
        let Some(raw) = raw else { return default };
        if !raw.get_ref().starts_with('/') {
            self.problem(
                Problem::new(raw.span(), format!("`{}` is not a JSON pointer", raw.get_ref()))
                    .hint("write it like \"/state\" or \"/metrics/bdSeq\""),
            );
            return None;
        }
        Some(raw.into_inner())
    }

    /// `seq_field` needs `state_field`: a JSON payload has no plain state.
    fn fields_fit(&mut self, rules: &Rules, span: std::ops::Range<usize>) {
        if rules.seq_field.is_some() && rules.state_field.is_none() {
            self.problem(
                Problem::new(span, "`seq_field` needs `state_field`")
                    .hint("JSON payloads carry the state in a field, e.g. state_field = \"/state\""),
            );
        }
    }

    fn grace(&mut self, raw: Option<RawDuration>, default: Duration) -> Duration {
        let Some(raw) = raw else { return default };
        let value = raw.get_ref().into_inner();
        if value > Duration::from_secs(24 * 3600) {
            self.problem(Problem::new(raw.span(), "`grace` must be at most 24h"));
        }
        value
    }

    /// `[http] listen`: an address, or "" for no endpoint.
    /// A `severity` label: words, not empty.
    pub(super) fn severity(&mut self, raw: Option<Spanned<String>>) -> Option<String> {
        let raw = raw?;
        let ok = !raw.get_ref().is_empty()
            && raw.get_ref().len() <= 64
            && raw.get_ref().chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok {
            self.problem(
                Problem::new(raw.span(), format!("`severity` `{}` is not a label value", raw.get_ref()))
                    .hint("use a word such as critical, warning or info"),
            );
            return None;
        }
        Some(raw.into_inner())
    }

    /// `[http] external_url`: where receivers of alerts reach `/status`.
    fn external_url(&mut self, raw: Option<Spanned<String>>) -> Option<url::Url> {
        let raw = raw?;
        match url::Url::parse(raw.get_ref()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && (!u.username().is_empty() || u.password().is_some()) => {
                self.problem(
                    Problem::new(
                        raw.span(),
                        format!(
                            "`external_url` `{}` carries credentials: every alert links to it, so every receiver would get them",
                            crate::redact::url(raw.get_ref())
                        ),
                    )
                    .hint("leave the user and password out; people log in when they open the link"),
                );
                None
            }
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(u),
            _ => {
                self.problem(
                    Problem::new(
                        raw.span(),
                        format!("`external_url` `{}` is not an http(s) URL", crate::redact::url(raw.get_ref())),
                    )
                    .hint("the address people and receivers use, e.g. https://gateway.example.com:9818"),
                );
                None
            }
        }
    }

    /// `[http] users_file`, read and checked now; a listen address others
    /// can reach without one is worth a warning.
    fn users(
        &mut self,
        raw: Option<Spanned<String>>,
        listen: Option<std::net::SocketAddr>,
        listen_span: std::ops::Range<usize>,
    ) -> Option<Arc<super::Users>> {
        let Some(raw) = raw else {
            if listen.is_some_and(|a| !a.ip().is_loopback()) {
                self.warning(
                    Problem::new(listen_span, "the HTTP endpoint listens beyond this machine without `users_file`: anyone who reaches it reads your fleet")
                        .hint("add users_file = \"users\" with user:bcrypt-hash lines (htpasswd -nB NAME), or listen on 127.0.0.1"),
                );
            }
            return None;
        };
        let path = self.file_path(&raw, "users_file").ok()??;
        self.private(&path, raw.span());
        let text = match self.outside.read(&path, super::file::MAX_CONFIG) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => {
                self.problem(Problem::new(raw.span(), format!("`users_file` {}: {e}", path.display())));
                return None;
            }
        };
        match super::Users::parse(&text) {
            Ok(users) => {
                if let Some((low, high)) = users.mixed_costs() {
                    self.warning(
                        Problem::new(raw.span(), format!("`users_file` {}: its hashes have different bcrypt costs ({low} to {high}): how long a refused login takes tells which users exist", path.display()))
                            .hint("make every hash at one cost: htpasswd -nB -C 12 NAME"),
                    );
                }
                Some(Arc::new(users))
            }
            Err(e) => {
                self.problem(Problem::new(raw.span(), format!("`users_file` {}: {e}", path.display())));
                None
            }
        }
    }

    /// A users file others can read gives them its hashes to attack
    /// offline: worth a warning.
    fn private(&mut self, path: &Path, span: std::ops::Range<usize>) {
        let Ok((_, mode)) = self.outside.mode(path) else { return };
        if mode & 0o044 != 0 {
            self.warning(
                Problem::new(
                    span,
                    format!(
                        "`users_file` {} can be read by other users than its owner (mode {:o}): its hashes can be attacked offline",
                        path.display(),
                        mode & 0o777
                    ),
                )
                .hint("chmod 600 it, owned by the user willwatch runs as; or pass it as a systemd credential: users_file = \"credential:users\""),
            );
        }
    }

    fn http_listen(&mut self, raw: Option<Spanned<String>>) -> Option<std::net::SocketAddr> {
        let (text, span) = match &raw {
            Some(l) => (l.get_ref().as_str(), l.span()),
            None => (super::DEFAULT_HTTP_LISTEN, 0..0),
        };
        if text.is_empty() {
            return None;
        }
        match text.parse::<std::net::SocketAddr>() {
            Ok(addr) if addr.port() == 0 => {
                self.problem(
                    Problem::new(span, format!("`listen` `{text}` has port 0: the system would pick one, which nobody (nor `willwatch status`) could know"))
                        .hint("choose the port, e.g. \"127.0.0.1:9818\"; \"\" turns the endpoint off"),
                );
                None
            }
            Ok(addr) => Some(addr),
            Err(_) => {
                self.problem(
                    Problem::new(span, format!("`listen` `{text}` is not an address")).hint(
                        "write host:port with an IP address, e.g. \"127.0.0.1:9818\" or \"[::1]:9818\"; \"\" turns the endpoint off",
                    ),
                );
                None
            }
        }
    }

    /// `state_dir`, else systemd's `$STATE_DIRECTORY`, else /var/lib/willwatch.
    fn state_dir(&mut self, raw: Option<Spanned<String>>) -> PathBuf {
        match raw {
            Some(dir) if dir.get_ref().is_empty() => {
                self.problem(Problem::new(dir.span(), "`state_dir` is empty"));
                PathBuf::new()
            }
            Some(dir) => self.base.join(dir.get_ref()),
            None => self
                .outside
                .var("STATE_DIRECTORY")
                // systemd may pass several, separated by colons; ours is the first.
                .and_then(|v| v.split(':').next().map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("/var/lib/willwatch")),
        }
    }

    fn first_at(&self, offset: usize) -> String {
        let (line, col) = super::error::line_col(self.text, offset);
        format!("first used at line {line}, column {col}")
    }
}

impl Watch {
    /// What makes two devices the same watch: the topic or the pattern text.
    fn filter_key(&self) -> String {
        match self {
            Watch::Device { topic, .. } => topic.clone(),
            Watch::Pattern(p) => p.to_string(),
            Watch::Sparkplug(s) => s.filters().join(" "),
        }
    }
}

/// `willwatch-<host>`; in a cluster `willwatch-<cluster>-<instance>`, so
/// the instances of one config never take each other's session.
fn default_client_id(cluster: Option<&crate::cluster::Settings>, host: Option<String>) -> String {
    match (cluster, host) {
        (Some(c), _) => format!("willwatch-{}-{}", c.name, c.instance),
        (None, Some(host)) => format!("willwatch-{host}"),
        (None, None) => "willwatch".to_string(),
    }
}

/// `base` with a preset's payloads and JSON rule.
fn preset_rules(p: &Preset, base: &Rules) -> Rules {
    Rules {
        online: p.online.iter().map(|s| s.to_string()).collect(),
        offline: p.offline.iter().map(|s| s.to_string()).collect(),
        state_field: p.state_field.map(String::from),
        retained: p.retained,
        ..base.clone()
    }
}
