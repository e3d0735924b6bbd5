//! A device transition as the actions see it.
//!
//! The monitor makes one `Event` per transition (the reconnect action makes
//! `reconnect_failed` ones); every action gets the same value, so they all
//! agree on what happened and when, and its `id` stays the same through
//! every retry of every delivery.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

/// What happened to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    Offline,
    Online,
    ReconnectFailed,
    /// The daemon lost the broker for longer than `broker_alert_after`.
    BrokerDown,
    BrokerUp,
}

impl EventKind {
    pub const ALL: [EventKind; 5] =
        [EventKind::Offline, EventKind::Online, EventKind::ReconnectFailed, EventKind::BrokerDown, EventKind::BrokerUp];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Offline => "offline",
            EventKind::Online => "online",
            EventKind::ReconnectFailed => "reconnect_failed",
            EventKind::BrokerDown => "broker_down",
            EventKind::BrokerUp => "broker_up",
        }
    }
}

impl EventKind {
    /// The journal's MESSAGE_ID for this kind of event, fixed for ever so
    /// `journalctl MESSAGE_ID=…` finds every one of them.
    pub fn message_id(self) -> &'static str {
        match self {
            EventKind::Offline => "6f0c2a4e9b1d4c7a8e35d1f0b2a9c401",
            EventKind::Online => "6f0c2a4e9b1d4c7a8e35d1f0b2a9c402",
            EventKind::ReconnectFailed => "6f0c2a4e9b1d4c7a8e35d1f0b2a9c403",
            EventKind::BrokerDown => "6f0c2a4e9b1d4c7a8e35d1f0b2a9c404",
            EventKind::BrokerUp => "6f0c2a4e9b1d4c7a8e35d1f0b2a9c405",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = ();

    fn from_str(s: &str) -> Result<EventKind, ()> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or(())
    }
}

/// One transition of one device, with everything an action may report.
#[derive(Debug, Clone)]
pub struct Event {
    /// Unique per event; the same on every retry of its deliveries.
    pub id: String,
    pub kind: EventKind,
    pub device: String,
    pub topic: String,
    /// The payload that caused it, lossily decoded for display.
    pub payload: String,
    /// The state the device left ("unknown", "online", "offline"; for the
    /// broker events "connected" or "disconnected"). For broker events the
    /// device is the daemon's client id and the topic the broker URL.
    pub previous: &'static str,
    pub at: SystemTime,
    /// When the device went offline, if it is or was.
    pub offline_since: Option<SystemTime>,
    /// On `online`: how long it was offline.
    pub offline_for: Option<Duration>,
    /// On `reconnect_failed`: how many commands were sent.
    pub attempts: Option<u32>,
    /// The device's `severity`, when its config sets one.
    pub severity: Option<String>,
    /// On a parent's `offline`: how many of its children it took down.
    pub children_offline: Option<usize>,
    /// Decided from a message the broker queued while willwatch was away
    /// (a persistent session): its times are when willwatch saw it.
    pub seen_late: bool,
    /// About a Sparkplug B edge node or device (`"kind": "sparkplug"`).
    pub sparkplug: bool,
    /// In a `[cluster]`: the leader's epoch when it fired.
    pub epoch: Option<u64>,
    /// The actions to run for it.
    pub actions: Arc<[String]>,
}

/// The `previous` values an event can carry, as the static strings events
/// hold (for events read back from disk).
pub fn previous_state(s: &str) -> Option<&'static str> {
    ["unknown", "online", "offline", "connected", "disconnected"].into_iter().find(|p| *p == s)
}

/// An id that follows from others (a batch from its events, an escalation
/// from the offline it escalates): made again from the same parts after a
/// restart, it is the same, so receivers still deduplicate.
pub fn derived_id<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let bytes: [u8; 16] = hash.finalize()[..16].try_into().expect("a SHA-256 has 32 bytes");
    uuid::Builder::from_custom_bytes(bytes).into_uuid().to_string()
}

/// A fresh event id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The event JSON's `kind` of a Sparkplug B edge node or device.
pub const SPARKPLUG: &str = "sparkplug";

/// RFC 3339 with milliseconds, in UTC.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl Event {
    /// When the transition was established: an offline when the device
    /// went offline, anything else when it was decided.
    pub fn established(&self) -> SystemTime {
        match self.kind {
            EventKind::Offline => self.offline_since.unwrap_or(self.at),
            _ => self.at,
        }
    }

    /// The outage this event belongs to: its device and when it went
    /// offline. An offline and the online that ends it share it, whatever
    /// their own ids, so a service that deduplicates (an incident's key)
    /// sees one outage however often it is told.
    pub fn outage_id(&self) -> String {
        let since = rfc3339(self.offline_since.unwrap_or(self.at));
        derived_id(["outage", self.device.as_str(), since.as_str()])
    }

    /// The event as it leaves the process (webhooks, exec stdin, publish).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "event": self.kind.as_str(),
            "device": self.device,
            "topic": self.topic,
            "payload": self.payload,
            "previous": self.previous,
            "at": rfc3339(self.at),
        });
        if let Some(since) = self.offline_since {
            v["offline_since"] = json!(rfc3339(since));
        }
        if let Some(d) = self.offline_for {
            v["offline_for_s"] = json!((d.as_secs_f64() * 1000.0).round() / 1000.0);
        }
        if let Some(n) = self.attempts {
            v["attempts"] = json!(n);
        }
        if let Some(severity) = &self.severity {
            v["severity"] = json!(severity);
        }
        if let Some(n) = self.children_offline {
            v["children_offline"] = json!(n);
        }
        if self.seen_late {
            v["seen_late"] = json!(true);
        }
        if self.sparkplug {
            v["kind"] = json!(SPARKPLUG);
        }
        if let Some(epoch) = self.epoch {
            v["epoch"] = json!(epoch);
        }
        v
    }
}

impl Event {
    /// An event back from its JSON (a dead-letter record): the inverse of
    /// `to_json`, to the millisecond. `None` when a field is missing or
    /// not what `to_json` writes.
    pub fn from_json(v: &Value) -> Option<Event> {
        let time = |key: &str| match v.get(key) {
            None | Some(Value::Null) => Some(None),
            Some(t) => humantime::parse_rfc3339(t.as_str()?).ok().map(Some),
        };
        let text = |key: &str| v.get(key).and_then(Value::as_str).map(String::from);
        Some(Event {
            id: text("id")?,
            kind: text("event")?.parse().ok()?,
            device: text("device")?,
            topic: text("topic")?,
            payload: text("payload")?,
            previous: previous_state(v.get("previous")?.as_str()?)?,
            at: time("at")??,
            offline_since: time("offline_since")?,
            offline_for: match v.get("offline_for_s") {
                None | Some(Value::Null) => None,
                Some(s) => Some(Duration::try_from_secs_f64(s.as_f64()?).ok()?),
            },
            attempts: match v.get("attempts") {
                None | Some(Value::Null) => None,
                Some(n) => Some(u32::try_from(n.as_u64()?).ok()?),
            },
            severity: text("severity"),
            children_offline: match v.get("children_offline") {
                None | Some(Value::Null) => None,
                Some(n) => Some(usize::try_from(n.as_u64()?).ok()?),
            },
            seen_late: v.get("seen_late").and_then(Value::as_bool).unwrap_or(false),
            sparkplug: v.get("kind").and_then(Value::as_str) == Some(SPARKPLUG),
            epoch: v.get("epoch").and_then(Value::as_u64),
            actions: Arc::from(Vec::new()),
        })
    }
}

/// An event for unit tests.
#[cfg(test)]
pub fn test_event(kind: EventKind, device: &str) -> Event {
    Event {
        id: "00000000-0000-4000-8000-000000000000".into(),
        kind,
        device: device.into(),
        topic: format!("plant/{device}/status"),
        payload: kind.as_str().into(),
        previous: "online",
        at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        offline_since: None,
        offline_for: None,
        attempts: None,
        severity: None,
        children_offline: None,
        seen_late: false,
        sparkplug: false,
        epoch: None,
        actions: Arc::from(vec!["log".to_string()]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_documented_fields_and_only_known_optionals() {
        let mut e = test_event(EventKind::Online, "pump-7");
        e.offline_since = Some(e.at - Duration::from_secs(65));
        e.offline_for = Some(Duration::from_millis(65_250));
        let v = e.to_json();
        assert_eq!(v["event"], "online");
        assert_eq!(v["device"], "pump-7");
        assert_eq!(v["at"], "2027-01-15T08:00:00.000Z");
        assert_eq!(v["offline_since"], "2027-01-15T07:58:55.000Z");
        assert_eq!(v["offline_for_s"], 65.25);
        assert!(v.get("attempts").is_none());
        let failed = test_event(EventKind::ReconnectFailed, "pump-7");
        let mut failed = failed;
        failed.attempts = Some(6);
        assert_eq!(failed.to_json()["attempts"], 6);
        assert_eq!(failed.to_json()["event"], "reconnect_failed");
    }

    proptest::proptest! {
        /// What a dead-letter record keeps of an event is enough to send it
        /// again exactly as it was first sent.
        #[test]
        fn json_reads_back_as_it_was_written(kind in 0..5usize, at_ms in 0u64..4_000_000_000_000,
                                             ago_ms in proptest::option::of(0u64..1_000_000_000),
                                             attempts in proptest::option::of(0u32..1000),
                                             payload in ".{0,20}", previous in 0..5usize,
                                             severity in proptest::option::of("[a-z]{1,8}")) {
            let mut e = test_event(EventKind::ALL[kind], "pump-7");
            e.at = SystemTime::UNIX_EPOCH + Duration::from_millis(at_ms);
            e.offline_since = ago_ms.map(|ms| e.at - Duration::from_millis(ms.min(at_ms)));
            e.offline_for = ago_ms.map(Duration::from_millis);
            e.attempts = attempts;
            e.payload = payload;
            e.previous = ["unknown", "online", "offline", "connected", "disconnected"][previous];
            e.severity = severity;
            e.children_offline = attempts.map(|n| n as usize);
            e.seen_late = previous % 2 == 0;
            e.sparkplug = kind % 2 == 0;
            let back = Event::from_json(&e.to_json()).expect("reads back");
            proptest::prop_assert_eq!(back.to_json(), e.to_json());
        }
    }

    #[test]
    fn json_that_is_not_an_event_is_refused() {
        let mut v = test_event(EventKind::Offline, "pump-7").to_json();
        v["event"] = json!("exploded");
        assert!(Event::from_json(&v).is_none());
        assert!(Event::from_json(&json!({"id": "x"})).is_none());
    }
}
