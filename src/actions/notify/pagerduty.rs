//! PagerDuty's Events API v2: an offline (a failed reconnect, a broker
//! out of reach) triggers an incident, the online that ends it resolves
//! it. The `dedup_key` follows from the outage (the device and when it
//! went offline, `Event::outage_id`), so a retry, a restart or a cluster
//! failover that sends again never opens a second incident, and the
//! resolve finds the trigger. Never digested: each event is its own.
//! See <https://developer.pagerduty.com/docs/events-api-v2/trigger-events/>.

use serde_json::json;

use super::Request;
use super::text::Message;
use crate::config::Secret;
use crate::event::{Event, rfc3339};

/// A summary's longest.
const MAX_SUMMARY: usize = 1024;

/// `url`: the enqueue endpoint (`https://events.pagerduty.com/v2/enqueue`).
pub fn request(url: &url::Url, routing_key: &Secret, event: &Event, m: &Message) -> Request {
    let mut body = json!({
        "routing_key": routing_key.expose(),
        "event_action": if m.alarm { "trigger" } else { "resolve" },
        "dedup_key": event.outage_id(),
    });
    if m.alarm {
        let summary = format!("{}: {}", m.title, m.lines.first().map(String::as_str).unwrap_or_default());
        body["payload"] = json!({
            "summary": super::cut(&summary, MAX_SUMMARY),
            "source": event.device,
            "severity": severity(event.severity.as_deref()),
            "timestamp": rfc3339(event.offline_since.unwrap_or(event.at)),
            "component": event.device,
            "class": event.kind.as_str(),
            "custom_details": event.to_json(),
        });
        body["client"] = json!("willwatch");
        if let Some(link) = &m.link {
            body["client_url"] = json!(link.as_str());
            body["links"] = json!([{"href": link.as_str(), "text": format!("{} in willwatch", event.device)}]);
        }
    }
    Request::json(url.clone(), &body)
}

/// PagerDuty's severities; a device's own when it is one of them.
fn severity(device: Option<&str>) -> &'static str {
    match device {
        Some("info") => "info",
        Some("warning") => "warning",
        Some("error") => "error",
        _ => "critical",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::event::{EventKind, test_event};

    #[test]
    fn the_offline_triggers_and_its_online_resolves_the_same_incident() {
        let mut off = test_event(EventKind::Offline, "pump-7");
        off.id = "a".into();
        off.offline_since = Some(off.at);
        off.severity = Some("warning".into());
        let mut on = test_event(EventKind::Online, "pump-7");
        on.id = "b".into();
        on.offline_since = off.offline_since;
        on.at = off.at + Duration::from_secs(60);
        let url = "https://events.pagerduty.com/v2/enqueue".parse().unwrap();
        let key = Secret::new("R0UT1NG");
        let body = |e: Event| {
            let e = Arc::new(e);
            let m = crate::actions::notify::text::message(std::slice::from_ref(&e), None, None, None);
            serde_json::from_slice::<serde_json::Value>(&request(&url, &key, &e, &m).body).unwrap()
        };
        let (trigger, resolve) = (body(off), body(on));
        assert_eq!(trigger["event_action"], "trigger");
        assert_eq!(trigger["routing_key"], "R0UT1NG");
        assert_eq!(trigger["payload"]["severity"], "warning");
        assert_eq!(trigger["payload"]["source"], "pump-7");
        assert!(trigger["payload"]["summary"].as_str().unwrap().starts_with("pump-7 is offline: "));
        assert_eq!(resolve["event_action"], "resolve");
        assert!(resolve.get("payload").is_none());
        assert_eq!(trigger["dedup_key"], resolve["dedup_key"], "one incident per outage");
    }
}
