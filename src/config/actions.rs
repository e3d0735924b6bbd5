//! `[action.NAME]` tables → `ActionSpec`s: each kind's settings, their
//! defaults and limits, settings that belong to another kind, placeholders,
//! and `escalate` chains that would loop.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::error::{Problem, did_you_mean};
use super::outside::Outside;
use super::raw::{RawAction, RawDuration, SpannedList};
use super::validate::Validator;
use super::{ActionKind, ActionSpec, BUILTIN_LOG, Exec, Publish, Reconnect, Retries, Secret, Webhook, WebhookFormat};
use crate::event::EventKind;
use crate::template::Template;

const ACTION_TYPES: [&str; 5] = ["log", "webhook", "reconnect", "exec", "publish"];

/// How long a failed attempt (a webhook delivery, an exec run whose program
/// did not start) is made again by default: an outage alert's receiver is
/// often down in the same outage.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Standard Webhooks' shortest secret.
const MIN_SECRET_BYTES: usize = 24;
/// The longest an attempt may be retried.
const MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The longest wait between two attempts by default.
const DEFAULT_MAX_INTERVAL: Duration = Duration::from_secs(300);

/// Which settings each kind takes (besides `type` and `on`).
fn settings_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "webhook" => &[
            "url",
            "timeout",
            "max_age",
            "max_interval",
            "max_attempts",
            "secret_file",
            "headers",
            "format",
            "concurrency",
            "batch",
            "severity",
        ],
        "reconnect" => {
            &["topic", "payload", "first_after", "backoff", "max_interval", "max_attempts", "escalate", "qos", "retain"]
        }
        "exec" => &["command", "timeout", "concurrency", "max_age", "max_interval", "max_attempts"],
        "publish" => &["topic", "qos", "retain"],
        _ => &[],
    }
}

/// The settings present in a raw action, with where they are.
fn present(a: &RawAction) -> Vec<(&'static str, std::ops::Range<usize>)> {
    let d = |d: &Option<RawDuration>| d.as_ref().map(Spanned::span);
    let s = |s: &Option<Spanned<String>>| s.as_ref().map(Spanned::span);
    let i = |i: &Option<Spanned<i64>>| i.as_ref().map(Spanned::span);
    let l = |l: &Option<SpannedList>| l.as_ref().map(Spanned::span);
    [
        ("url", s(&a.url)),
        ("timeout", d(&a.timeout)),
        ("max_age", d(&a.max_age)),
        ("max_attempts", i(&a.max_attempts)),
        ("secret_file", s(&a.secret_file)),
        ("headers", a.headers.as_ref().map(Spanned::span)),
        ("format", s(&a.format)),
        ("concurrency", i(&a.concurrency)),
        ("batch", d(&a.batch)),
        ("severity", s(&a.severity)),
        ("topic", s(&a.topic)),
        ("payload", s(&a.payload)),
        ("first_after", d(&a.first_after)),
        ("backoff", a.backoff.as_ref().map(Spanned::span)),
        ("max_interval", d(&a.max_interval)),
        ("escalate", l(&a.escalate)),
        ("retain", a.retain.as_ref().map(Spanned::span)),
        ("qos", i(&a.qos)),
        ("command", l(&a.command)),
    ]
    .into_iter()
    .filter_map(|(name, span)| span.map(|span| (name, span)))
    .collect()
}

impl Validator<'_> {
    pub(super) fn actions(&mut self, raw: BTreeMap<String, Spanned<RawAction>>) -> BTreeMap<String, ActionSpec> {
        let names: BTreeSet<String> = raw.keys().cloned().collect();
        let spans: BTreeMap<String, std::ops::Range<usize>> = raw.iter().map(|(n, a)| (n.clone(), a.span())).collect();
        let mut out = BTreeMap::new();
        for (name, action) in raw {
            let span = action.span();
            let mut action = action.into_inner();
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
            let kind_name = action.kind.get_ref().clone();
            if !ACTION_TYPES.contains(&kind_name.as_str()) {
                let p = Problem::new(action.kind.span(), format!("unknown action type `{kind_name}`"));
                self.problem(match did_you_mean(&kind_name, ACTION_TYPES) {
                    Some(s) => p.hint(format!("did you mean `{s}`?")),
                    None => p.hint(format!("known types: {}", ACTION_TYPES.join(", "))),
                });
                continue;
            }
            let foreign: Vec<_> =
                present(&action).into_iter().filter(|(field, _)| !settings_of(&kind_name).contains(field)).collect();
            for (field, field_span) in &foreign {
                let owners: Vec<&str> =
                    ACTION_TYPES.iter().copied().filter(|k| settings_of(k).contains(field)).collect();
                self.problem(
                    Problem::new(field_span.clone(), format!("`{field}` is not a setting of a `{kind_name}` action"))
                        .hint(format!("it belongs to: {}", owners.join(", "))),
                );
            }
            if let (Some(on), "reconnect") = (&action.on, kind_name.as_str()) {
                self.problem(
                    Problem::new(on.span(), "`on` is not a setting of a `reconnect` action")
                        .hint("a reconnect ladder starts on offline and stops on online; remove `on`"),
                );
                continue;
            }
            let on = self.event_filter(action.on.take());
            let kind = match kind_name.as_str() {
                "log" => Some(ActionKind::Log),
                "webhook" => self.webhook(&action, span.clone()).map(|w| ActionKind::Webhook(Box::new(w))),
                "reconnect" => self.reconnect(&action, span.clone(), &names).map(ActionKind::Reconnect),
                "exec" => self.exec(&action, span.clone()).map(ActionKind::Exec),
                _ => self.publish(&action, span.clone()).map(ActionKind::Publish),
            };
            if let (Some(kind), Some(on), true) = (kind, on, foreign.is_empty()) {
                out.insert(name, ActionSpec { kind, on });
            }
        }
        self.escalation_cycles(&out, &spans);
        out
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

    fn webhook(&mut self, a: &RawAction, span: std::ops::Range<usize>) -> Option<Webhook> {
        let Some(raw_url) = &a.url else {
            self.problem(Problem::new(span, "a webhook action needs a `url`"));
            return None;
        };
        let url = match url::Url::parse(raw_url.get_ref()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(u),
            Ok(_) | Err(_) => {
                self.problem(
                    Problem::new(
                        raw_url.span(),
                        format!("`url` `{}` is not an http(s) URL", crate::redact::url(raw_url.get_ref())),
                    )
                    .hint("write e.g. https://hooks.example.com/willwatch"),
                );
                None
            }
        };
        let timeout = self.duration(&a.timeout, Duration::from_secs(5), "timeout", Duration::from_millis(1));
        let retries = self.retries(a);
        let concurrency = self.count(&a.concurrency, 4, 1, 256, "concurrency");
        let secret = match &a.secret_file {
            None => Some(None),
            Some(file) => self.read_secret(file),
        };
        let format = match a.format.as_ref().map(|f| (f.get_ref().as_str(), f.span())) {
            None | Some(("willwatch", _)) => Some(WebhookFormat::Willwatch),
            Some(("alertmanager", _)) => Some(WebhookFormat::Alertmanager),
            Some((other, span)) => {
                self.problem(
                    Problem::new(span, format!("unknown webhook format `{other}`"))
                        .hint("formats: willwatch, alertmanager"),
                );
                None
            }
        };
        let batch = match &a.batch {
            None => Some(None),
            Some(_) => self.duration(&a.batch, Duration::ZERO, "batch", Duration::from_millis(10)).map(Some),
        };
        let headers = self.headers(a);
        let severity = self.severity(a.severity.clone());
        Some(Webhook {
            url: url?,
            timeout: timeout?,
            retries: retries?,
            severity,
            external_url: None,
            secret: secret?,
            headers: headers?,
            format: format?,
            concurrency: concurrency? as usize,
            batch: batch?,
        })
    }

    /// `max_age`, `max_interval` and `max_attempts`: how long failed
    /// attempts are made again.
    fn retries(&mut self, a: &RawAction) -> Option<Retries> {
        let max_age = self.duration_up_to(&a.max_age, DEFAULT_MAX_AGE, "max_age", Duration::from_secs(1), MAX_AGE);
        let max_interval =
            self.duration(&a.max_interval, DEFAULT_MAX_INTERVAL, "max_interval", Duration::from_millis(100));
        let max_attempts = match &a.max_attempts {
            None => Some(None),
            Some(_) => self.count(&a.max_attempts, 1, 1, 1_000_000, "max_attempts").map(Some),
        };
        Some(Retries { max_age: max_age?, max_interval: max_interval?, max_attempts: max_attempts? })
    }

    fn headers(&mut self, a: &RawAction) -> Option<Vec<(String, Template)>> {
        let Some(headers) = &a.headers else {
            return Some(Vec::new());
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (name, value) in headers.get_ref() {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                self.problem(Problem::new(headers.span(), format!("`{name}` is not a valid HTTP header name")));
                ok = false;
                continue;
            }
            let expanded = match expand_env(value.get_ref(), self.outside) {
                Ok(v) => v,
                Err(message) => {
                    self.problem(Problem::new(value.span(), message));
                    ok = false;
                    continue;
                }
            };
            // Not shown: a header value is often a credential.
            if expanded.chars().any(|c| c.is_control() && c != '\t') {
                self.problem(
                    Problem::new(value.span(), format!("header `{name}`: its value has a control character"))
                        .hint("a line break would end the header and start another; write the value on one line"),
                );
                ok = false;
                continue;
            }
            match Template::parse(&expanded) {
                Ok(t) => out.push((name.clone(), t)),
                Err(e) => {
                    self.problem(Problem::new(value.span(), format!("header `{name}`: {}", e.message)));
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn reconnect(
        &mut self,
        a: &RawAction,
        span: std::ops::Range<usize>,
        names: &BTreeSet<String>,
    ) -> Option<Reconnect> {
        // Without a topic: Sparkplug devices only (checked with the devices).
        let topic = match &a.topic {
            None => Some(None),
            Some(_) => self.topic_template(&a.topic, "a reconnect action", span).map(Some),
        };
        let payload = match &a.payload {
            Some(p) => self.template(p, "payload"),
            None => Template::parse("reconnect").ok(),
        };
        let first_after = self.duration(&a.first_after, Duration::from_secs(10), "first_after", Duration::ZERO);
        let max_interval =
            self.duration(&a.max_interval, Duration::from_secs(300), "max_interval", Duration::from_millis(1));
        let max_attempts = self.count(&a.max_attempts, 6, 1, 1000, "max_attempts");
        let backoff = match &a.backoff {
            None => Some(2.0),
            Some(b) if (1.0..=10.0).contains(b.get_ref()) => Some(*b.get_ref()),
            Some(b) => {
                self.problem(Problem::new(b.span(), "`backoff` must be from 1.0 (steady) to 10.0"));
                None
            }
        };
        let qos = self.qos(&a.qos);
        let mut escalate = Vec::new();
        for target in a.escalate.iter().flat_map(|l| l.get_ref()) {
            if target.get_ref() == BUILTIN_LOG || names.contains(target.get_ref()) {
                escalate.push(target.get_ref().clone());
            } else {
                self.problem(Problem::new(
                    target.span(),
                    format!("`escalate` names unknown action `{}`", target.get_ref()),
                ));
            }
        }
        Some(Reconnect {
            topic: topic?,
            payload: payload?,
            qos: qos?,
            retain: a.retain.as_ref().is_some_and(|r| *r.get_ref()),
            first_after: first_after?,
            backoff: backoff?,
            max_interval: max_interval?,
            max_attempts: max_attempts?,
            escalate,
        })
    }

    fn exec(&mut self, a: &RawAction, span: std::ops::Range<usize>) -> Option<Exec> {
        let timeout = self.duration(&a.timeout, Duration::from_secs(10), "timeout", Duration::from_millis(1));
        let concurrency = self.count(&a.concurrency, 4, 1, 256, "concurrency");
        let retries = self.retries(a);
        let Some(command) = a.command.as_ref().filter(|c| !c.get_ref().is_empty()) else {
            self.problem(
                Problem::new(a.command.as_ref().map_or(span, Spanned::span), "an exec action needs a `command`")
                    .hint("command = [\"/usr/local/bin/page-oncall\", \"{id}\", \"{event}\"]"),
            );
            return None;
        };
        let program = &command.get_ref()[0];
        if program.get_ref().trim().is_empty() {
            self.problem(
                Problem::new(program.span(), "the program of `command` is empty")
                    .hint("command = [\"/usr/local/bin/page-oncall\", \"{id}\", \"{event}\"]"),
            );
            return None;
        }
        if program.get_ref().contains('{') {
            self.problem(Problem::new(
                program.span(),
                "the program of `command` cannot have placeholders; pass them as arguments",
            ));
            return None;
        }
        let path = PathBuf::from(program.get_ref());
        if !path.is_absolute() {
            self.warning(Problem::new(
                program.span(),
                format!("`{}` is not an absolute path; it will be looked up in PATH when it runs", path.display()),
            ));
        } else {
            match self.outside.mode(&path) {
                Ok((true, mode)) if mode & 0o111 != 0 => {}
                Ok(_) => self
                    .warning(Problem::new(program.span(), format!("`{}` is not an executable file", path.display()))),
                Err(e) => self.warning(Problem::new(program.span(), format!("`{}`: {e}", path.display()))),
            }
        }
        let mut args = Vec::new();
        for arg in &command.get_ref()[1..] {
            args.push(self.template(arg, "command")?);
        }
        Some(Exec { program: path, args, timeout: timeout?, concurrency: concurrency? as usize, retries: retries? })
    }

    fn publish(&mut self, a: &RawAction, span: std::ops::Range<usize>) -> Option<Publish> {
        let topic = self.topic_template(&a.topic, "a publish action", span);
        let qos = self.qos(&a.qos);
        Some(Publish { topic: topic?, qos: qos?, retain: a.retain.as_ref().is_some_and(|r| *r.get_ref()) })
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

    /// The webhook secret; `Some(None)` when only the service can read it.
    fn read_secret(&mut self, file: &Spanned<String>) -> Option<Option<Secret>> {
        let path = match self.file_path(file, "secret_file") {
            Ok(Some(path)) => path,
            Ok(None) => return Some(None),
            Err(()) => return None,
        };
        match self.outside.read_text(&path, super::file::MAX_SECRET) {
            Ok(text) if !text.trim().is_empty() => {
                let secret = Secret(text.trim().to_string());
                let bytes = secret.signing_key().len();
                if bytes < MIN_SECRET_BYTES {
                    self.warning(
                        Problem::new(
                            file.span(),
                            format!("the webhook secret is {bytes} bytes; Standard Webhooks asks for 24 to 64"),
                        )
                        .hint("make one with: echo \"whsec_$(head -c 32 /dev/urandom | base64)\""),
                    );
                }
                Some(Some(secret))
            }
            Ok(_) => {
                self.problem(Problem::new(file.span(), format!("`secret_file` {} is empty", path.display())));
                None
            }
            Err(e) => {
                self.problem(Problem::new(file.span(), format!("cannot read `secret_file` {}: {e}", path.display())));
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

/// Replaces `${NAME}` with the environment variable NAME.
fn expand_env(value: &str, outside: &dyn Outside) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start + 2..].find('}') else {
            return Err("`${` is never closed".into());
        };
        let name = &rest[start + 2..start + 2 + len];
        if name.is_empty() {
            return Err("`${}` names no environment variable".into());
        }
        match outside.var(name).map(std::ffi::OsString::into_string) {
            Some(Ok(v)) => out.push_str(&v),
            Some(Err(_)) => return Err(format!("environment variable `{name}` is not UTF-8 text")),
            None => return Err(format!("environment variable `{name}` is not set")),
        }
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    Ok(out)
}
