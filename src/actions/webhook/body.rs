//! Request bodies: willwatch's own event JSON, or Alertmanager's webhook
//! payload (version 4) so receivers built for Alertmanager work unchanged.
//!
//! An `offline` is a firing alert `DeviceOffline`; the `online` that ends
//! it is the same alert resolved (same labels, so the same fingerprint);
//! `reconnect_failed` is a firing `DeviceReconnectFailed`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::WebhookFormat;
use crate::event::{Event, EventKind, rfc3339};

/// Alertmanager's "not ended yet".
const NOT_ENDED: &str = "0001-01-01T00:00:00Z";

/// The body for `events`: one event, or a batch.
pub fn render(format: WebhookFormat, receiver: &str, events: &[Arc<Event>], batched: bool) -> Vec<u8> {
    let value = match format {
        WebhookFormat::Willwatch if batched => Value::Array(events.iter().map(|e| e.to_json()).collect()),
        WebhookFormat::Willwatch => events[0].to_json(),
        WebhookFormat::Alertmanager => alertmanager(receiver, events),
    };
    value.to_string().into_bytes()
}

fn labels(event: &Event) -> BTreeMap<&'static str, String> {
    let alertname = match event.kind {
        EventKind::Offline | EventKind::Online => "DeviceOffline",
        EventKind::ReconnectFailed => "DeviceReconnectFailed",
        EventKind::BrokerDown | EventKind::BrokerUp => "BrokerDown",
    };
    BTreeMap::from([
        ("alertname", alertname.to_string()),
        ("device", event.device.clone()),
        ("topic", event.topic.clone()),
        ("source", "willwatch".to_string()),
    ])
}

fn alert(event: &Event) -> Value {
    let labels = labels(event);
    let resolved = matches!(event.kind, EventKind::Online | EventKind::BrokerUp);
    let starts = event.offline_since.unwrap_or(event.at);
    let summary = match event.kind {
        EventKind::Offline => format!("{} is offline", event.device),
        EventKind::Online => format!("{} is back online", event.device),
        EventKind::ReconnectFailed => {
            format!("{} still offline after {} reconnect attempts", event.device, event.attempts.unwrap_or(0))
        }
        EventKind::BrokerDown => format!("willwatch {} cannot reach the broker {}", event.device, event.topic),
        EventKind::BrokerUp => format!("willwatch {} reaches the broker {} again", event.device, event.topic),
    };
    json!({
        "status": if resolved { "resolved" } else { "firing" },
        "labels": labels,
        "annotations": { "summary": summary, "event_id": event.id, "payload": event.payload },
        "startsAt": rfc3339(starts),
        "endsAt": if resolved { rfc3339(event.at) } else { NOT_ENDED.to_string() },
        "generatorURL": "",
        "fingerprint": fingerprint(&labels),
    })
}

/// A stable id for a label set, as Alertmanager gives (16 hex digits).
fn fingerprint(labels: &BTreeMap<&'static str, String>) -> String {
    let mut hash = Sha256::new();
    for (k, v) in labels {
        hash.update(k.as_bytes());
        hash.update([0xff]);
        hash.update(v.as_bytes());
        hash.update([0xff]);
    }
    hash.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn alertmanager(receiver: &str, events: &[Arc<Event>]) -> Value {
    let all: Vec<BTreeMap<&'static str, String>> = events.iter().map(|e| labels(e)).collect();
    let mut common = all[0].clone();
    common.retain(|k, v| all.iter().all(|l| l.get(k) == Some(v)));
    let group: BTreeMap<&str, String> =
        common.iter().filter(|(k, _)| **k == "alertname").map(|(k, v)| (*k, v.clone())).collect();
    let firing = events.iter().any(|e| !matches!(e.kind, EventKind::Online | EventKind::BrokerUp));
    let group_key =
        format!("{{}}:{{{}}}", group.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect::<Vec<_>>().join(","));
    json!({
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": if firing { "firing" } else { "resolved" },
        "receiver": receiver,
        "groupLabels": group,
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "",
        "alerts": events.iter().map(|e| alert(e)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::test_event;
    use std::time::Duration;

    fn parse(bytes: Vec<u8>) -> Value {
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn willwatch_format_is_the_event_or_an_array_of_them() {
        let e = Arc::new(test_event(EventKind::Offline, "a"));
        assert_eq!(parse(render(WebhookFormat::Willwatch, "ops", std::slice::from_ref(&e), false))["device"], "a");
        let batch = parse(render(WebhookFormat::Willwatch, "ops", &[e.clone(), e], true));
        assert_eq!(batch.as_array().unwrap().len(), 2);
    }

    #[test]
    fn offline_fires_and_online_resolves_the_same_alert() {
        let off = Arc::new(test_event(EventKind::Offline, "pump-7"));
        let mut on = test_event(EventKind::Online, "pump-7");
        on.offline_since = Some(on.at - Duration::from_secs(60));
        let firing = parse(render(WebhookFormat::Alertmanager, "ops", &[off], false));
        let resolved = parse(render(WebhookFormat::Alertmanager, "ops", &[Arc::new(on)], false));
        assert_eq!(firing["status"], "firing");
        assert_eq!(firing["alerts"][0]["endsAt"], NOT_ENDED);
        assert_eq!(resolved["status"], "resolved");
        assert_eq!(resolved["alerts"][0]["startsAt"], "2027-01-15T07:59:00.000Z");
        assert_eq!(firing["alerts"][0]["fingerprint"], resolved["alerts"][0]["fingerprint"]);
        assert_eq!(firing["groupKey"], "{}:{alertname=\"DeviceOffline\"}");
        assert_eq!(firing["commonLabels"]["device"], "pump-7");
    }

    #[test]
    fn a_batch_is_one_group_with_only_shared_labels_common() {
        let events: Vec<_> = ["a", "b"].iter().map(|d| Arc::new(test_event(EventKind::Offline, d))).collect();
        let group = parse(render(WebhookFormat::Alertmanager, "ops", &events, true));
        assert_eq!(group["alerts"].as_array().unwrap().len(), 2);
        assert!(group["commonLabels"].get("device").is_none());
        assert_eq!(group["commonLabels"]["alertname"], "DeviceOffline");
        assert_eq!(group["receiver"], "ops");
    }
}
