//! `[action.NAME]` tables → `ActionSpec`s. Each kind reads its own settings
//! in a file of its own (`webhook.rs`, `reconnect.rs`, `exec.rs`,
//! `publish.rs`: a serde struct that declares them, and their defaults and
//! limits); this file takes the `type` and `on` every action has, refuses a
//! setting of another kind (naming the kind it belongs to), holds the checks
//! the kinds share (durations, counts, retries, templates), and refuses
//! `escalate` chains that loop.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use serde_aux::serde_introspection::serde_introspect;
use toml::Spanned;
use toml::de::{DeValue, ValueDeserializer};

use super::error::{Problem, did_you_mean};
use super::raw::{self, RawDuration, SpannedList};
use super::validate::Validator;
use super::{ActionKind, ActionSpec, BUILTIN_LOG, Retries, Secret, Service, Webhook};
use crate::event::EventKind;
use crate::template::Template;

mod apprise;
mod chat;
mod email;
mod exec;
mod gotify;
mod matrix;
mod ntfy;
mod opsgenie;
mod pagerduty;
mod publish;
mod pushover;
mod reconnect;
mod telegram;
mod webhook;

/// How long a failed attempt (a webhook delivery, an exec run whose program
/// did not start) is made again by default: an outage alert's receiver is
/// often down in the same outage.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// The longest an attempt may be retried.
const MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The longest wait between two attempts by default.
const DEFAULT_MAX_INTERVAL: Duration = Duration::from_secs(300);

/// The action types, each with every key it takes: `type`, `on` (but for a
/// reconnect ladder, which an offline starts and an online stops), and the
/// settings its kind's struct declares.
pub fn kinds() -> Vec<(&'static str, Vec<&'static str>)> {
    let declared: [(&str, &[&str]); 16] = [
        ("log", &[]),
        ("webhook", serde_introspect::<webhook::RawWebhook>()),
        ("reconnect", serde_introspect::<reconnect::RawReconnect>()),
        ("exec", serde_introspect::<exec::RawExec>()),
        ("publish", serde_introspect::<publish::RawPublish>()),
        ("ntfy", serde_introspect::<ntfy::RawNtfy>()),
        ("slack", serde_introspect::<chat::RawChat>()),
        ("discord", serde_introspect::<chat::RawChat>()),
        ("telegram", serde_introspect::<telegram::RawTelegram>()),
        ("pagerduty", serde_introspect::<pagerduty::RawPagerDuty>()),
        ("gotify", serde_introspect::<gotify::RawGotify>()),
        ("pushover", serde_introspect::<pushover::RawPushover>()),
        ("teams", serde_introspect::<chat::RawChat>()),
        ("matrix", serde_introspect::<matrix::RawMatrix>()),
        ("opsgenie", serde_introspect::<opsgenie::RawOpsgenie>()),
        ("email", serde_introspect::<email::RawEmail>()),
    ];
    declared
        .into_iter()
        .map(|(kind, settings)| {
            let common: &[&str] = if kind == "reconnect" { &["type"] } else { &["type", "on"] };
            let mut keys: Vec<&str> = common.iter().chain(settings).copied().collect();
            // An Apprise-style URL may stand for a service's own keys.
            if apprise::takes(kind) {
                keys.extend(["url", "url_file"].into_iter().filter(|k| !settings.contains(k)));
            }
            (kind, keys)
        })
        .collect()
}

/// Each paced service's default `min_interval`: the pace its documentation
/// states for one sender (`None`: each event its own request).
fn pace(kind: &str) -> Option<Duration> {
    let seconds = match kind {
        "ntfy" => 5,
        "gotify" | "slack" | "teams" | "matrix" => 1,
        "pushover" | "discord" => 2,
        "telegram" => 3,
        "email" => 10,
        _ => return None,
    };
    Some(Duration::from_secs(seconds))
}

/// The settings every service's action shares, as written, and the pace
/// its service wants by default (`None`: each event its own request).
/// `shared!(raw, kind)` takes them from a service's raw settings (its
/// fields of the same names) with the kind's `pace`; `shared!(raw)` for a
/// service never paced, which has no `min_interval`.
macro_rules! shared {
    ($raw:expr, $kind:expr) => {
        super::ServiceSettings {
            timeout: &$raw.timeout,
            max_age: &$raw.max_age,
            max_interval: &$raw.max_interval,
            max_attempts: &$raw.max_attempts,
            min_interval: &$raw.min_interval,
            paced: super::pace($kind),
            title: &$raw.title,
            title_key: "title",
            body: &$raw.body,
        }
    };
    ($raw:expr) => {
        super::ServiceSettings {
            timeout: &$raw.timeout,
            max_age: &$raw.max_age,
            max_interval: &$raw.max_interval,
            max_attempts: &$raw.max_attempts,
            min_interval: &None,
            paced: None,
            title: &$raw.title,
            title_key: "title",
            body: &$raw.body,
        }
    };
}
use shared;

struct ServiceSettings<'a> {
    timeout: &'a Option<RawDuration>,
    max_age: &'a Option<RawDuration>,
    max_interval: &'a Option<RawDuration>,
    max_attempts: &'a Option<Spanned<i64>>,
    min_interval: &'a Option<RawDuration>,
    paced: Option<Duration>,
    /// One event's title and body instead of the usual words.
    title: &'a Option<Spanned<String>>,
    /// The title's key as the action names it (an email's is `subject`).
    title_key: &'static str,
    body: &'a Option<Spanned<String>>,
}

impl Validator<'_> {
    pub(super) fn actions(&mut self, raw: BTreeMap<String, Spanned<DeValue<'_>>>) -> BTreeMap<String, ActionSpec> {
        let names: BTreeSet<String> = raw.keys().cloned().collect();
        let spans: BTreeMap<String, Range<usize>> = raw.iter().map(|(n, a)| (n.clone(), a.span())).collect();
        let mut out = BTreeMap::new();
        for (name, action) in raw {
            let span = action.span();
            if name == BUILTIN_LOG {
                self.problem(
                    Problem::new(span, "`log` is the built-in action")
                        .hint("define your own log action under another name, e.g. [action.log-offline]"),
                );
                continue;
            }
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                self.problem(Problem::new(
                    span,
                    format!("action name `{name}` may use only letters, digits, `-` and `_`"),
                ));
                continue;
            }
            let Some(spec) = self.action(&name, action, &names) else { continue };
            out.insert(name, spec);
        }
        self.escalation_cycles(&out, &spans);
        out
    }

    /// One `[action.NAME]` table: its `type`, its `on`, then the settings
    /// its kind declares.
    fn action(&mut self, name: &str, action: Spanned<DeValue<'_>>, names: &BTreeSet<String>) -> Option<ActionSpec> {
        let span = action.span();
        let DeValue::Table(mut table) = action.into_inner() else {
            self.problem(
                Problem::new(span, format!("`action.{name}` is not a table"))
                    .hint(format!("write it as [action.{name}]")),
            );
            return None;
        };
        let types: Vec<&str> = kinds().iter().map(|(k, _)| *k).collect();
        let Some(kind) = table.remove("type") else {
            self.problem(
                Problem::new(span, format!("action `{name}` has no `type`"))
                    .hint(format!("types: {}", types.join(", "))),
            );
            return None;
        };
        let kind: Spanned<String> = self.read(kind)?;
        let kinds = kinds();
        let Some((kind_name, keys)) = kinds.iter().find(|(k, _)| k == kind.get_ref()) else {
            let p = Problem::new(kind.span(), format!("unknown action type `{}`", kind.get_ref()));
            self.problem(match did_you_mean(kind.get_ref(), types.iter().copied()) {
                Some(s) => p.hint(format!("did you mean `{s}`?")),
                None => p.hint(format!("known types: {}", types.join(", "))),
            });
            return None;
        };
        // Every problem of the action is found, though one is enough to
        // refuse it: a key of another kind or a wrong `on` hides nothing.
        let mut refused = false;
        let on = match table.remove_entry("on") {
            Some((key, _)) if *kind_name == "reconnect" => {
                self.problem(
                    Problem::new(key.span(), "`on` is not a setting of a `reconnect` action")
                        .hint("a reconnect ladder starts on offline and stops on online; remove `on`"),
                );
                refused = true;
                None
            }
            Some((_, on)) => {
                let on = self.read::<SpannedList>(on);
                refused |= on.is_none();
                on
            }
            None => None,
        };
        let foreign: Vec<_> = table.keys().filter(|key| !keys.contains(&key.get_ref().as_ref())).cloned().collect();
        let owners = kinds.iter().map(|(k, keys)| (*k, keys.as_slice())).collect::<Vec<_>>();
        for key in &foreign {
            self.problem(unknown_setting(key.get_ref(), key.span(), kind_name, &owners));
        }
        let table: toml::de::DeTable<'_> =
            table.into_iter().filter(|(key, _)| keys.contains(&key.get_ref().as_ref())).collect();
        refused |= !foreign.is_empty();
        let on = if refused { None } else { self.event_filter(on) };
        let mut table = table;
        if let Some(found) = self.apprise(kind_name, &mut table, span.clone()) {
            return if refused {
                None
            } else {
                Some(ActionSpec { kind: ActionKind::Webhook(Box::new(found?)), on: on? })
            };
        }
        let settings = Spanned::new(span.clone(), DeValue::Table(table));
        let kind = match *kind_name {
            "log" => Some(ActionKind::Log),
            "webhook" => {
                let raw = self.read(settings)?;
                self.webhook(raw, span).map(|w| ActionKind::Webhook(Box::new(w)))
            }
            "reconnect" => {
                let raw = self.read(settings)?;
                self.reconnect(raw, span, names).map(ActionKind::Reconnect)
            }
            "exec" => {
                let raw = self.read(settings)?;
                self.exec(raw, span).map(ActionKind::Exec)
            }
            "publish" => {
                let raw = self.read(settings)?;
                self.publish(raw, span).map(ActionKind::Publish)
            }
            "ntfy" => {
                let raw = self.read(settings)?;
                self.ntfy(raw, span).map(|w| ActionKind::Webhook(Box::new(w)))
            }
            "telegram" => {
                let raw = self.read(settings)?;
                self.telegram(raw, span).map(|w| ActionKind::Webhook(Box::new(w)))
            }
            "pagerduty" => {
                let raw = self.read(settings)?;
                self.pagerduty(raw, span).map(|w| ActionKind::Webhook(Box::new(w)))
            }
            "gotify" => {
                let raw = self.read(settings)?;
                self.gotify(raw, span).map(|w| ActionKind::Webhook(Box::new(w)))
            }
            "pushover" => {
                let raw = self.read(settings)?;
                self.pushover(raw, span).map(|w| ActionKind::Webhook(Box::new(w)))
            }
            "matrix" => {
                let raw = self.read(settings)?;
                self.matrix(raw, span).map(|w| ActionKind::Webhook(Box::new(w)))
            }
            "opsgenie" => {
                let raw = self.read(settings)?;
                self.opsgenie(raw, span).map(|w| ActionKind::Webhook(Box::new(w)))
            }
            "email" => {
                let raw = self.read(settings)?;
                self.email(raw, span).map(|w| ActionKind::Webhook(Box::new(w)))
            }
            chat => {
                let raw = self.read(settings)?;
                self.chat(chat, raw, span).map(|w| ActionKind::Webhook(Box::new(w)))
            }
        };
        if refused {
            return None;
        }
        Some(ActionSpec { kind: kind?, on: on? })
    }

    /// A value as the type that reads it, or the problem TOML found.
    fn read<'i, T: Deserialize<'i>>(&mut self, value: Spanned<DeValue<'i>>) -> Option<T> {
        T::deserialize(ValueDeserializer::from(value)).map_err(|e| self.problem(raw::problem(e))).ok()
    }

    fn event_filter(&mut self, raw: Option<SpannedList>) -> Option<Vec<EventKind>> {
        let Some(list) = raw else {
            return Some(EventKind::ALL.to_vec());
        };
        if list.get_ref().is_empty() {
            self.problem(Problem::new(list.span(), "`on` lists no events, so the action would never run"));
            return None;
        }
        let mut out = Vec::new();
        for name in list.into_inner() {
            match name.get_ref().parse::<EventKind>() {
                Ok(kind) if !out.contains(&kind) => out.push(kind),
                Ok(_) => {}
                Err(()) => {
                    let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                    self.problem(
                        Problem::new(name.span(), format!("unknown event `{}`", name.get_ref()))
                            .hint(format!("events: {}", known.join(", "))),
                    );
                    return None;
                }
            }
        }
        Some(out)
    }

    /// `max_age`, `max_interval` and `max_attempts`: how long failed
    /// attempts are made again.
    fn retries(
        &mut self,
        max_age: &Option<RawDuration>,
        max_interval: &Option<RawDuration>,
        max_attempts: &Option<Spanned<i64>>,
    ) -> Option<Retries> {
        let max_age = self.duration_up_to(max_age, DEFAULT_MAX_AGE, "max_age", Duration::from_secs(1), MAX_AGE);
        let max_interval =
            self.duration(max_interval, DEFAULT_MAX_INTERVAL, "max_interval", Duration::from_millis(100));
        let max_attempts = match max_attempts {
            None => Some(None),
            Some(_) => self.count(max_attempts, 1, 1, 1_000_000, "max_attempts").map(Some),
        };
        Some(Retries { max_age: max_age?, max_interval: max_interval?, max_attempts: max_attempts? })
    }

    /// An HTTP action to a service: its URL and what the service needs
    /// (`None` where a problem was recorded), and the settings every
    /// service shares.
    fn service(
        &mut self,
        url: Option<url::Url>,
        service: Option<Service>,
        common: &ServiceSettings,
    ) -> Option<Webhook> {
        let timeout = self.duration(common.timeout, Duration::from_secs(10), "timeout", Duration::from_millis(1));
        let retries = self.retries(common.max_age, common.max_interval, common.max_attempts);
        let min_interval = match (&common.min_interval, common.paced) {
            (None, default) => Some(default),
            (Some(_), _) => self
                .duration_up_to(
                    common.min_interval,
                    Duration::ZERO,
                    "min_interval",
                    Duration::ZERO,
                    Duration::from_secs(3600),
                )
                .map(|d| (!d.is_zero()).then_some(d)),
        };
        let title = match common.title {
            None => Some(None),
            Some(t) => self.template(t, common.title_key).map(Some),
        };
        let body = match common.body {
            None => Some(None),
            Some(b) => self.template(b, "body").map(Some),
        };
        Some(Webhook {
            url: url?,
            timeout: timeout?,
            title: title?,
            body: body?,
            retries: retries?,
            severity: None,
            external_url: None,
            secret: None,
            headers: Vec::new(),
            service: service?,
            concurrency: if common.paced.is_some() { 1 } else { 4 },
            batch: None,
            min_interval: min_interval?,
        })
    }

    /// An http(s) URL with a host, else a problem at it showing no more
    /// than its host (a service's path may hold its token).
    fn http_url(&mut self, raw: &Spanned<String>, key: &str) -> Option<url::Url> {
        match url::Url::parse(raw.get_ref().trim()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(u),
            Ok(_) | Err(_) => {
                self.problem(
                    Problem::new(
                        raw.span(),
                        format!("`{key}` `{}` is not an http(s) URL", crate::redact::origin(raw.get_ref())),
                    )
                    .hint("write e.g. https://hooks.example.com/willwatch"),
                );
                None
            }
        }
    }

    /// The secret a `*_file` setting holds (its text, trimmed). Where only
    /// the service can read it (a credential, `check` outside the unit) it
    /// is left empty: such a config is checked, never run
    /// (`Config::unread_credentials`).
    fn secret_in(&mut self, file: &Spanned<String>, key: &str) -> Option<Secret> {
        let path = match self.file_path(file, key) {
            Ok(Some(path)) => path,
            Ok(None) => return Some(Secret::new("")),
            Err(()) => return None,
        };
        match self.outside.read_text(&path, super::file::MAX_SECRET) {
            Ok(text) if !text.trim().is_empty() => Some(Secret::new(text.trim())),
            Ok(_) => {
                self.problem(Problem::new(file.span(), format!("`{key}` {} is empty", path.display())));
                None
            }
            Err(e) => {
                self.problem(Problem::new(file.span(), format!("cannot read `{key}` {}: {e}", path.display())));
                None
            }
        }
    }

    /// The secret a required `*_file` setting holds; `missing` is the
    /// problem when the setting is not there.
    fn required_secret(&mut self, file: &Option<Spanned<String>>, key: &str, missing: Problem) -> Option<Secret> {
        match file {
            Some(file) => self.secret_in(file, key),
            None => {
                self.problem(missing);
                None
            }
        }
    }

    /// A required topic template without MQTT wildcards.
    fn topic_template(
        &mut self,
        raw: &Option<Spanned<String>>,
        what: &str,
        span: std::ops::Range<usize>,
    ) -> Option<Template> {
        let Some(topic) = raw else {
            self.problem(Problem::new(span, format!("{what} needs a `topic`")));
            return None;
        };
        if topic.get_ref().contains(['+', '#']) || topic.get_ref().is_empty() {
            self.problem(Problem::new(topic.span(), "`topic` must be non-empty, without `+` or `#`"));
            return None;
        }
        self.template(topic, "topic")
    }

    fn template(&mut self, raw: &Spanned<String>, key: &str) -> Option<Template> {
        match Template::parse(raw.get_ref()) {
            Ok(t) => Some(t),
            Err(e) => {
                // +1 for the opening quote; exact for strings without escapes.
                let at = raw.span().start + 1 + e.offset;
                self.problem(Problem::new(at..at + 1, format!("`{key}`: {}", e.message)));
                None
            }
        }
    }

    /// A duration from `min` to 24 hours.
    pub(super) fn duration(
        &mut self,
        raw: &Option<RawDuration>,
        default: Duration,
        key: &str,
        min: Duration,
    ) -> Option<Duration> {
        self.duration_up_to(raw, default, key, min, Duration::from_secs(24 * 3600))
    }

    pub(super) fn duration_up_to(
        &mut self,
        raw: &Option<RawDuration>,
        default: Duration,
        key: &str,
        min: Duration,
        max: Duration,
    ) -> Option<Duration> {
        let Some(raw) = raw else { return Some(default) };
        let value = raw.get_ref().into_inner();
        if value < min || value > max {
            self.problem(Problem::new(
                raw.span(),
                format!(
                    "`{key}` must be from {} to {}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            ));
            return None;
        }
        Some(value)
    }

    fn count(&mut self, raw: &Option<Spanned<i64>>, default: u32, min: u32, max: u32, key: &str) -> Option<u32> {
        let Some(raw) = raw else { return Some(default) };
        match u32::try_from(*raw.get_ref()) {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.problem(Problem::new(raw.span(), format!("`{key}` must be from {min} to {max}")));
                None
            }
        }
    }

    fn qos(&mut self, raw: &Option<Spanned<i64>>) -> Option<u8> {
        match raw {
            None => Some(1),
            Some(q) if (0..=2).contains(q.get_ref()) => Some(*q.get_ref() as u8),
            Some(q) => {
                self.problem(Problem::new(q.span(), "`qos` must be 0, 1 or 2"));
                None
            }
        }
    }

    /// A reconnect action whose escalation leads back to itself would page
    /// for ever; refuse the loop.
    fn escalation_cycles(
        &mut self,
        actions: &BTreeMap<String, ActionSpec>,
        spans: &BTreeMap<String, std::ops::Range<usize>>,
    ) {
        let next = |name: &str| -> Vec<String> {
            match actions.get(name).map(|a| &a.kind) {
                Some(ActionKind::Reconnect(r)) => r.escalate.clone(),
                _ => Vec::new(),
            }
        };
        for start in actions.keys() {
            let mut frontier = next(start);
            let mut seen = BTreeSet::new();
            while let Some(name) = frontier.pop() {
                if name == *start {
                    self.problem(
                        Problem::new(
                            spans.get(start).cloned().unwrap_or(0..0),
                            format!("`escalate` of action `{start}` leads back to itself"),
                        )
                        .hint("an escalation must end in actions that do not escalate"),
                    );
                    return;
                }
                if seen.insert(name.clone()) {
                    frontier.extend(next(&name));
                }
            }
        }
    }
}

/// A setting the action's kind does not take: the kinds it belongs to, or
/// the setting of this kind it is closest to. `kinds`: each kind's keys.
fn unknown_setting(key: &str, span: Range<usize>, kind: &str, kinds: &[(&str, &[&'static str])]) -> Problem {
    let owners: Vec<&str> = kinds.iter().filter(|(_, keys)| keys.contains(&key)).map(|(k, _)| *k).collect();
    if !owners.is_empty() {
        return Problem::new(span, format!("`{key}` is not a setting of a `{kind}` action"))
            .hint(format!("it belongs to: {}", owners.join(", ")));
    }
    let own = kinds.iter().find(|(k, _)| *k == kind).map_or(&[][..], |(_, keys)| keys);
    let p = Problem::new(span, format!("unknown setting `{key}` of a `{kind}` action"));
    match did_you_mean(key, own.iter().copied()) {
        Some(s) => p.hint(format!("did you mean `{s}`?")),
        None => p.hint(format!("a `{kind}` action takes: {}", own.join(", "))),
    }
}
