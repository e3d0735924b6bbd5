//! `[defaults]` and `[[device]]`: each watched device or pattern, its
//! rules (payloads, JSON fields, grace, heartbeat, preset, parent), its
//! actions and its share of `max_devices`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::Validator;
use crate::config::error::{Problem, did_you_mean};
use crate::config::preset::{self, Preset};
use crate::config::raw::{RawDefaults, RawDevice, RawDuration, SpannedList};
use crate::config::{ActionSpec, BUILTIN_LOG, DeviceSpec, Rules, Watch};
use crate::topic::{ID_PLACEHOLDER, MAX_DEVICE_ID, MAX_DEVICE_TOPIC, TopicError, WatchedTopic};

impl Validator<'_> {
    pub(in crate::config) fn defaults(
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

    pub(in crate::config) fn action_names(
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
    pub(in crate::config) fn commands_known(
        &mut self,
        rules: &Rules,
        span: std::ops::Range<usize>,
        actions: &BTreeMap<String, ActionSpec>,
    ) {
        for name in &rules.actions {
            if let Some(ActionSpec { kind: crate::config::ActionKind::Reconnect(r), .. }) = actions.get(name)
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
    pub(in crate::config) fn disjoint(&mut self, rules: &Rules, span: std::ops::Range<usize>) {
        if let Some(both) = rules.online.iter().find(|p| rules.offline.contains(p)) {
            self.problem(Problem::new(span, format!("payload `{both}` is listed as both online and offline")));
        }
    }

    pub(in crate::config) fn devices(
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

    /// A `max_devices` value: a positive count.
    pub(in crate::config) fn max_devices(&mut self, raw: Option<&Spanned<i64>>) -> Option<usize> {
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
    pub(in crate::config) fn parent(&mut self, raw: Option<Spanned<String>>) -> Option<String> {
        let raw = raw?;
        if raw.get_ref().trim().is_empty() || raw.get_ref().chars().any(char::is_control) {
            self.problem(Problem::new(raw.span(), "`parent` must name a device id"));
            return None;
        }
        Some(raw.into_inner())
    }

    /// A `preset` by name.
    pub(in crate::config) fn preset(&mut self, raw: &Spanned<String>) -> Option<&'static Preset> {
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
    pub(in crate::config) fn exclude(&mut self, raw: Option<SpannedList>, watch: &Watch) -> Vec<String> {
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
    pub(in crate::config) fn short_enough(&mut self, raw: &Spanned<String>, key: &str, max: usize) -> bool {
        let len = raw.get_ref().len();
        if len > max {
            self.problem(Problem::new(raw.span(), format!("`{key}` is {len} bytes; at most {max}")));
        }
        len <= max
    }

    /// A heartbeat topic of the same shape as the status topic.
    pub(in crate::config) fn heartbeat_topic(&mut self, raw: Option<Spanned<String>>, status: &Watch) -> Option<Watch> {
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

    pub(in crate::config) fn heartbeat(
        &mut self,
        raw: Option<RawDuration>,
        default: Option<Duration>,
    ) -> Option<Duration> {
        if raw.is_none() {
            return default;
        }
        self.duration(&raw, Duration::ZERO, "heartbeat_timeout", Duration::from_secs(1))
    }

    /// A JSON pointer such as `/bdSeq` or `/status/state`.
    pub(in crate::config) fn pointer(
        &mut self,
        raw: Option<Spanned<String>>,
        default: Option<String>,
    ) -> Option<String> {
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
    pub(in crate::config) fn fields_fit(&mut self, rules: &Rules, span: std::ops::Range<usize>) {
        if rules.seq_field.is_some() && rules.state_field.is_none() {
            self.problem(
                Problem::new(span, "`seq_field` needs `state_field`")
                    .hint("JSON payloads carry the state in a field, e.g. state_field = \"/state\""),
            );
        }
    }

    pub(in crate::config) fn grace(&mut self, raw: Option<RawDuration>, default: Duration) -> Duration {
        let Some(raw) = raw else { return default };
        let value = raw.get_ref().into_inner();
        if value > Duration::from_secs(24 * 3600) {
            self.problem(Problem::new(raw.span(), "`grace` must be at most 24h"));
        }
        value
    }

    /// `[http] listen`: an address, or "" for no endpoint.
    /// A `severity` label: words, not empty.
    pub(in crate::config) fn severity(&mut self, raw: Option<Spanned<String>>) -> Option<String> {
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
