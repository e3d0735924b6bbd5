//! What a person reads, in words every service shares: a title and lines
//! for one event ("pump-7 is offline", since when, the cause) or for a
//! digest of many ("37 devices offline, 2 back online", each named), and
//! the link to the device on the live page when `[http] external_url` is
//! set. Pure: each service (`ntfy.rs`, `slack.rs`, …) puts these into its
//! own form.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::event::{Event, EventKind};
use crate::template::Template;

/// The most characters of names a digest line holds; the rest are counted
/// ("… and 31 more"). Each service's message limit is a few thousand.
const NAMES_MAX: usize = 2500;

/// The longest title and body a template renders to (a payload may be
/// megabytes): what every service shows whole.
const TITLE_MAX: usize = 250;
const BODY_MAX: usize = 3000;

/// A message: its title, its lines, whether it raises an alarm (an
/// offline) or ends one, and where the person can look.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub title: String,
    pub lines: Vec<String>,
    pub alarm: bool,
    pub link: Option<url::Url>,
}

/// Whether an event raises an alarm (rather than ending one).
pub fn alarm(kind: EventKind) -> bool {
    matches!(kind, EventKind::Offline | EventKind::ReconnectFailed | EventKind::BrokerDown)
}

/// The message for `events`: one event's, or a digest's. One event's
/// `title` and `body`, when the action sets them, replace the usual words
/// (the link stays).
pub fn message(
    events: &[Arc<Event>],
    external: Option<&url::Url>,
    title: Option<&Template>,
    body: Option<&Template>,
) -> Message {
    match events {
        [one] => {
            let mut m = single(one, external);
            // What renders empty (an empty payload) keeps the usual words:
            // services refuse an empty message.
            if let Some(title) = title.map(|t| t.render(one).lines().collect::<Vec<_>>().join(" "))
                && !title.trim().is_empty()
            {
                m.title = super::cut(&title, TITLE_MAX);
            }
            if let Some(body) = body.map(|b| super::cut(&b.render(one), BODY_MAX))
                && !body.trim().is_empty()
            {
                m.lines = body.lines().map(String::from).collect();
            }
            m
        }
        _ => digest(events, external),
    }
}

fn single(e: &Event, external: Option<&url::Url>) -> Message {
    let device = &e.device;
    let since = e.offline_since.unwrap_or(e.at);
    let (title, mut lines) = match e.kind {
        EventKind::Offline => {
            let mut lines = vec![format!("offline since {}", clock(since))];
            lines.push(cause(e));
            if let Some(children) = e.children_offline.filter(|n| *n > 0) {
                lines.push(format!("{children} devices behind it are unreachable"));
            }
            (format!("{device} is offline"), lines)
        }
        EventKind::Online => {
            let lasted = e.offline_for.map(|d| format!(" after {} offline", span(d))).unwrap_or_default();
            (format!("{device} is back online"), vec![format!("online at {}{lasted}", clock(e.at))])
        }
        EventKind::ReconnectFailed => (
            format!("{device} is still offline"),
            vec![
                format!("{} reconnect attempts went unanswered", e.attempts.unwrap_or(0)),
                format!("offline since {}", clock(since)),
            ],
        ),
        EventKind::BrokerDown => (
            format!("willwatch {device} cannot reach its broker"),
            vec![format!("{} unreachable since {}", crate::redact::url(&e.topic), clock(since))],
        ),
        EventKind::BrokerUp => (
            format!("willwatch {device} reaches its broker again"),
            vec![format!("{} reachable again at {}", crate::redact::url(&e.topic), clock(e.at))],
        ),
    };
    if let Some(severity) = &e.severity {
        lines.push(format!("severity: {severity}"));
    }
    let broker = matches!(e.kind, EventKind::BrokerDown | EventKind::BrokerUp);
    Message { title, lines, alarm: alarm(e.kind), link: external.map(|u| page_link(u, (!broker).then_some(device))) }
}

fn digest(events: &[Arc<Event>], external: Option<&url::Url>) -> Message {
    let groups = [
        (EventKind::Offline, "offline"),
        (EventKind::ReconnectFailed, "still offline after reconnecting"),
        (EventKind::Online, "back online"),
        (EventKind::BrokerDown, "broker unreachable"),
        (EventKind::BrokerUp, "broker reachable again"),
    ];
    let mut counts = Vec::new();
    let mut lines = Vec::new();
    for (kind, words) in groups {
        let names: Vec<&str> = events.iter().filter(|e| e.kind == kind).map(|e| e.device.as_str()).collect();
        if names.is_empty() {
            continue;
        }
        let noun = if names.len() == 1 { "device" } else { "devices" };
        counts.push(match kind {
            EventKind::BrokerDown | EventKind::BrokerUp => words.to_string(),
            _ => format!("{} {noun} {words}", names.len()),
        });
        lines.push(format!("{words}: {}", named(&names)));
    }
    Message {
        title: counts.join(", "),
        lines,
        alarm: events.iter().any(|e| alarm(e.kind)),
        link: external.map(|u| page_link(u, None)),
    }
}

/// Why a device is offline: what its status said, or that it fell silent.
fn cause(e: &Event) -> String {
    match e.payload.as_str() {
        crate::device::SILENCE => "cause: silence, nothing heard within its heartbeat timeout".to_string(),
        crate::device::NOT_SEEN => "cause: not seen since the broker restarted".to_string(),
        payload => format!("cause: `{}` on {}", cut_short(payload), e.topic),
    }
}

/// The names, comma-separated, as many as `NAMES_MAX` allows, then how
/// many more.
fn named(names: &[&str]) -> String {
    let mut text = String::new();
    for (i, name) in names.iter().enumerate() {
        if text.len() + name.len() > NAMES_MAX {
            text.push_str(&format!(" … and {} more", names.len() - i));
            break;
        }
        if i > 0 {
            text.push_str(", ");
        }
        text.push_str(name);
    }
    text
}

/// A payload as a message quotes it: its first line, up to 80 characters.
fn cut_short(payload: &str) -> String {
    let first = payload.lines().next().unwrap_or_default();
    match first.char_indices().nth(80) {
        Some((end, _)) => format!("{}…", &first[..end]),
        None if first.len() < payload.len() => format!("{first}…"),
        None => first.to_string(),
    }
}

/// The live page under `external`, filtered to `device` when there is one.
pub fn page_link(external: &url::Url, device: Option<&str>) -> url::Url {
    let mut url = external.clone();
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    url.set_query(None);
    if let Some(device) = device {
        url.query_pairs_mut().append_pair("q", device);
    }
    url
}

/// Text as HTML shows it literally.
pub fn html(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A moment as people read it in an alert: UTC, to the second.
pub fn clock(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string().replace('T', " ").replace('Z', " UTC")
}

/// A duration to the second ("2m 5s").
fn span(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::test_event;

    #[test]
    fn one_offline_says_which_device_since_when_and_why_with_a_link_to_it() {
        let mut e = test_event(EventKind::Offline, "pump 7");
        e.children_offline = Some(3);
        let external: url::Url = "https://ww.example/plant".parse().unwrap();
        let m = message(&[Arc::new(e)], Some(&external), None, None);
        assert_eq!(m.title, "pump 7 is offline");
        assert_eq!(m.lines[0], "offline since 2027-01-15 08:00:00 UTC");
        assert!(m.lines[1].starts_with("cause: `offline` on "), "{m:?}");
        assert_eq!(m.lines[2], "3 devices behind it are unreachable");
        assert!(m.alarm);
        assert_eq!(m.link.unwrap().as_str(), "https://ww.example/plant/?q=pump+7");
    }

    #[test]
    fn a_silent_device_is_said_to_be_silent_not_to_have_said_something() {
        let mut e = test_event(EventKind::Offline, "pump-7");
        e.payload = crate::device::SILENCE.into();
        let m = message(&[Arc::new(e)], None, None, None);
        assert_eq!(m.lines[1], "cause: silence, nothing heard within its heartbeat timeout");
    }

    #[test]
    fn an_actions_title_and_body_replace_one_events_words_but_not_a_digests() {
        let title = Template::parse("[plant] {id} {event}").unwrap();
        let body = Template::parse("{id} said {payload}\non {topic}").unwrap();
        let e = Arc::new(test_event(EventKind::Offline, "pump-7"));
        let m = message(std::slice::from_ref(&e), None, Some(&title), Some(&body));
        assert_eq!(m.title, "[plant] pump-7 offline");
        assert_eq!(m.lines, ["pump-7 said offline", "on plant/pump-7/status"]);
        assert!(m.alarm);
        let empty = Template::parse("{payload}").unwrap();
        let mut quiet = test_event(EventKind::Offline, "pump-7");
        quiet.payload = String::new();
        let m = message(&[Arc::new(quiet)], None, Some(&empty), Some(&empty));
        assert_eq!(m.title, "pump-7 is offline", "what renders empty keeps the usual words");
        assert!(!m.lines.is_empty());
        let mut loud = test_event(EventKind::Offline, "pump-7");
        loud.payload = "x".repeat(1 << 20);
        let m = message(&[Arc::new(loud)], None, Some(&empty), Some(&empty));
        assert!(m.title.chars().count() <= TITLE_MAX && m.lines.concat().chars().count() <= BODY_MAX);
        let two = [Arc::clone(&e), Arc::new(test_event(EventKind::Offline, "fan"))];
        assert_eq!(message(&two, None, Some(&title), Some(&body)).title, "2 devices offline");
    }

    #[test]
    fn an_online_says_how_long_it_was_offline() {
        let mut e = test_event(EventKind::Online, "pump-7");
        e.offline_for = Some(Duration::from_millis(125_400));
        let m = message(&[Arc::new(e)], None, None, None);
        assert_eq!(m.title, "pump-7 is back online");
        assert!(m.lines[0].ends_with("after 2m 5s offline"), "{m:?}");
        assert!(!m.alarm);
        assert_eq!(m.link, None);
    }

    #[test]
    fn a_digest_counts_and_names_every_device_up_to_the_limit() {
        let mut events: Vec<_> =
            (0..37).map(|i| Arc::new(test_event(EventKind::Offline, &format!("pump-{i}")))).collect();
        events.push(Arc::new(test_event(EventKind::Online, "fan")));
        let m = message(&events, None, None, None);
        assert_eq!(m.title, "37 devices offline, 1 device back online");
        assert!(m.lines[0].starts_with("offline: pump-0, pump-1, "), "{m:?}");
        assert!(m.lines[0].ends_with("pump-36"));
        assert_eq!(m.lines[1], "back online: fan");
        assert!(m.alarm);
        let many: Vec<_> =
            (0..2000).map(|i| Arc::new(test_event(EventKind::Offline, &format!("device-{i:04}")))).collect();
        let m = message(&many, None, None, None);
        assert!(m.lines[0].len() < NAMES_MAX + 40, "{}", m.lines[0].len());
        assert!(m.lines[0].ends_with("more"), "{}", &m.lines[0][m.lines[0].len() - 30..]);
    }
}
