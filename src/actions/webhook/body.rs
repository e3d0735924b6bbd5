//! Request bodies: willwatch's own event JSON, or Alertmanager's webhook
//! payload (version 4) so receivers built for Alertmanager work unchanged.
//!
//! An `offline` is a firing alert `DeviceOffline`; the `online` that ends
//! it is the same alert resolved (same labels, so the same fingerprint);
//! `reconnect_failed` is a firing `DeviceReconnectFailed`. Every alert has
//! a `severity` label (the device's, else the action's, else `critical`),
//! a `generatorURL` to its device on `/status` and the payload's
//! `externalURL` when `[http] external_url` is set; `commonLabels` and
//! `commonAnnotations` hold what all alerts of a request share.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::{Service, Webhook, WebhookFormat};
use crate::event::{Event, EventKind, rfc3339};

/// Alertmanager's "not ended yet".
const NOT_ENDED: &str = "0001-01-01T00:00:00Z";

/// The severity of an alert nobody gave one.
const DEFAULT_SEVERITY: &str = "critical";

/// The body for `events`: one event, or a batch.
pub fn render(spec: &Webhook, receiver: &str, events: &[Arc<Event>], batched: bool) -> Vec<u8> {
    let value = match spec.service {
        Service::Webhook(WebhookFormat::Alertmanager) => alertmanager(spec, receiver, events),
        _ if batched => Value::Array(events.iter().map(|e| e.to_json()).collect()),
        _ => events[0].to_json(),
    };
    value.to_string().into_bytes()
}

fn labels(spec: &Webhook, event: &Event) -> BTreeMap<&'static str, String> {
    let alertname = match event.kind {
        EventKind::Offline | EventKind::Online => "DeviceOffline",
        EventKind::ReconnectFailed => "DeviceReconnectFailed",
        EventKind::BrokerDown | EventKind::BrokerUp => "BrokerDown",
    };
    let severity = event.severity.as_deref().or(spec.severity.as_deref()).unwrap_or(DEFAULT_SEVERITY);
    BTreeMap::from([
        ("alertname", alertname.to_string()),
        ("device", event.device.clone()),
        ("topic", event.topic.clone()),
        ("source", "willwatch".to_string()),
        ("severity", severity.to_string()),
    ])
}

fn annotations(event: &Event) -> BTreeMap<&'static str, String> {
    let summary = match event.kind {
        EventKind::Offline => format!("{} is offline", event.device),
        EventKind::Online => format!("{} is back online", event.device),
        EventKind::ReconnectFailed => {
            format!("{} still offline after {} reconnect attempts", event.device, event.attempts.unwrap_or(0))
        }
        EventKind::BrokerDown => format!("willwatch {} cannot reach the broker {}", event.device, event.topic),
        EventKind::BrokerUp => format!("willwatch {} reaches the broker {} again", event.device, event.topic),
    };
    BTreeMap::from([("summary", summary), ("event_id", event.id.clone()), ("payload", event.payload.clone())])
}

/// Where a person sees the alert's device: `/status?device=ID` under
/// `[http] external_url` (empty without one, as Alertmanager leaves it
/// when it does not know).
fn generator_url(spec: &Webhook, event: &Event) -> String {
    let Some(base) = &spec.external_url else { return String::new() };
    let mut url = base.clone();
    url.set_path(&format!("{}/status", base.path().trim_end_matches('/')));
    if !matches!(event.kind, EventKind::BrokerDown | EventKind::BrokerUp) {
        url.query_pairs_mut().clear().append_pair("device", &event.device);
    }
    url.to_string()
}

fn alert(spec: &Webhook, event: &Event) -> Value {
    let labels = labels(spec, event);
    let resolved = matches!(event.kind, EventKind::Online | EventKind::BrokerUp);
    let starts = event.offline_since.unwrap_or(event.at);
    json!({
        "status": if resolved { "resolved" } else { "firing" },
        "labels": labels,
        "annotations": annotations(event),
        "startsAt": rfc3339(starts),
        "endsAt": if resolved { rfc3339(event.at) } else { NOT_ENDED.to_string() },
        "generatorURL": generator_url(spec, event),
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

/// The pairs every one of `all` has, with the same value.
fn common(all: &[BTreeMap<&'static str, String>]) -> BTreeMap<&'static str, String> {
    let mut common = all[0].clone();
    common.retain(|k, v| all.iter().all(|l| l.get(k) == Some(v)));
    common
}

fn alertmanager(spec: &Webhook, receiver: &str, events: &[Arc<Event>]) -> Value {
    let labels: Vec<BTreeMap<&'static str, String>> = events.iter().map(|e| labels(spec, e)).collect();
    let notes: Vec<BTreeMap<&'static str, String>> = events.iter().map(|e| annotations(e)).collect();
    let common_labels = common(&labels);
    let group: BTreeMap<&str, String> =
        common_labels.iter().filter(|(k, _)| **k == "alertname").map(|(k, v)| (*k, v.clone())).collect();
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
        "commonLabels": common_labels,
        "commonAnnotations": common(&notes),
        "externalURL": spec.external_url.as_ref().map(|u| u.to_string().trim_end_matches('/').to_string()).unwrap_or_default(),
        "alerts": events.iter().map(|e| alert(spec, e)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::test_event;
    use std::time::Duration;

    fn spec(format: WebhookFormat) -> Webhook {
        Webhook {
            url: "http://h/".parse().unwrap(),
            timeout: Duration::from_secs(5),
            retries: crate::config::Retries {
                max_age: Duration::from_secs(3600),
                max_interval: Duration::from_secs(300),
                max_attempts: None,
            },
            severity: None,
            external_url: None,
            secret: None,
            headers: Vec::new(),
            service: Service::Webhook(format),
            concurrency: 4,
            batch: None,
            min_interval: None,
            title: None,
            body: None,
        }
    }

    fn parse(bytes: Vec<u8>) -> Value {
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn willwatch_format_is_the_event_or_an_array_of_them() {
        let e = Arc::new(test_event(EventKind::Offline, "a"));
        assert_eq!(
            parse(render(&spec(WebhookFormat::Willwatch), "ops", std::slice::from_ref(&e), false))["device"],
            "a"
        );
        let batch = parse(render(&spec(WebhookFormat::Willwatch), "ops", &[e.clone(), e], true));
        assert_eq!(batch.as_array().unwrap().len(), 2);
    }

    #[test]
    fn offline_fires_and_online_resolves_the_same_alert() {
        let off = Arc::new(test_event(EventKind::Offline, "pump-7"));
        let mut on = test_event(EventKind::Online, "pump-7");
        on.offline_since = Some(on.at - Duration::from_secs(60));
        let firing = parse(render(&spec(WebhookFormat::Alertmanager), "ops", &[off], false));
        let resolved = parse(render(&spec(WebhookFormat::Alertmanager), "ops", &[Arc::new(on)], false));
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
        let group = parse(render(&spec(WebhookFormat::Alertmanager), "ops", &events, true));
        assert_eq!(group["alerts"].as_array().unwrap().len(), 2);
        assert!(group["commonLabels"].get("device").is_none());
        assert_eq!(group["commonLabels"]["alertname"], "DeviceOffline");
        assert_eq!(group["receiver"], "ops");
    }

    #[test]
    fn severity_generator_and_external_urls_and_common_annotations() {
        let mut spec = spec(WebhookFormat::Alertmanager);
        spec.external_url = Some("https://gw.example.com:9818/willwatch/".parse().unwrap());
        spec.severity = Some("warning".into());
        let mut pump = test_event(EventKind::Offline, "pump 7");
        pump.severity = Some("page".into());
        pump.id = "another-id".into();
        let fan = test_event(EventKind::Offline, "fan");
        let body = parse(render(&spec, "ops", &[Arc::new(pump), Arc::new(fan)], true));
        assert_eq!(body["externalURL"], "https://gw.example.com:9818/willwatch");
        assert_eq!(body["alerts"][0]["labels"]["severity"], "page", "the device's own");
        assert_eq!(body["alerts"][1]["labels"]["severity"], "warning", "the action's");
        assert_eq!(body["alerts"][0]["generatorURL"], "https://gw.example.com:9818/willwatch/status?device=pump+7");
        assert!(body["commonLabels"].get("severity").is_none());
        assert_eq!(body["commonAnnotations"], json!({"payload": "offline"}), "what both alerts say alike");
        let plain = parse(render(&spec_default(), "ops", &[Arc::new(test_event(EventKind::Offline, "a"))], false));
        assert_eq!(plain["alerts"][0]["labels"]["severity"], "critical");
        assert_eq!(plain["alerts"][0]["generatorURL"], "");
        assert_eq!(plain["externalURL"], "");
    }

    fn spec_default() -> Webhook {
        spec(WebhookFormat::Alertmanager)
    }
}
