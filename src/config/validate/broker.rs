//! `[broker]`: where and how to connect (URL, client id, keep-alive,
//! credentials, TLS) and the connection's timings.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::Validator;
use crate::config::error::Problem;
use crate::config::raw::{RawBroker, RawDuration};
use crate::config::{ActionSpec, Broker, Secret, Tls};

/// Read when the config names no `password_file`.
pub const PASSWORD_ENV: &str = "WILLWATCH_MQTT_PASSWORD";

const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// The shortest `resync` but 0 (never): each one re-reads every device.
const MIN_RESYNC: Duration = Duration::from_secs(1);

impl Validator<'_> {
    pub(in crate::config) fn broker(
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
    pub(in crate::config) fn generated_client_id(&mut self, id: &str, span: std::ops::Range<usize>) {
        let longest_hex = id.split(|c: char| !c.is_ascii_hexdigit()).map(str::len).max().unwrap_or(0);
        if longest_hex >= 12 || uuid::Uuid::try_parse(id).is_ok() {
            self.warning(
                Problem::new(span, format!("client id `{id}` looks generated: the broker keeps our session (persistent_session) under it, and a new id at each start loses what was queued meanwhile"))
                    .hint("use a stable client_id, e.g. willwatch-<host>"),
            );
        }
    }

    pub(in crate::config) fn url(&mut self, raw: &Spanned<String>) -> Option<(String, String, u16, bool)> {
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
    pub(in crate::config) fn resync(&mut self, raw: &Option<RawDuration>) -> Option<Duration> {
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

    pub(in crate::config) fn keep_alive(&mut self, raw: Option<RawDuration>) -> Option<Duration> {
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

    pub(in crate::config) fn password(&mut self, file: Option<Spanned<String>>) -> Option<Secret> {
        let Some(file) = file else {
            return self
                .outside
                .var(PASSWORD_ENV)
                .and_then(|p| p.into_string().ok())
                .filter(|p| !p.is_empty())
                .map(Secret);
        };
        let path = self.file_path(&file, "password_file").ok().flatten()?;
        match self.outside.read_text(&path, crate::config::file::MAX_SECRET) {
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

    pub(in crate::config) fn tls(
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
        match crate::config::tls::client_config(
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
                    crate::config::tls::TlsFile::Ca => ca.map(|c| c.span()),
                    crate::config::tls::TlsFile::Cert => client.as_ref().map(|(c, _)| c.span()),
                    crate::config::tls::TlsFile::Key => client.as_ref().map(|(_, k)| k.span()),
                    crate::config::tls::TlsFile::SystemRoots => None,
                }
                .unwrap_or_else(|| url.span());
                self.problem(Problem::new(span, e.to_string()));
                None
            }
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
