//! Opsgenie's Alert API: an offline (a failed reconnect, the broker out of
//! reach) creates an alert whose `alias` follows from the outage
//! (`Event::outage_id`), so a retry, a restart or a failover never opens a
//! second one; the online that ends the outage closes it by that alias.
//! The API key goes in `Authorization: GenieKey`. Never digested.
//! See <https://docs.opsgenie.com/docs/alert-api>.

use serde_json::json;

use super::Request;
use super::text::Message;
use crate::config::Secret;
use crate::event::Event;

/// A message's and a description's longest.
const MAX_MESSAGE: usize = 130;
const MAX_DESCRIPTION: usize = 15000;

/// `base`: the API (`https://api.opsgenie.com/`, or the EU one).
pub fn request(base: &url::Url, key: &Secret, event: &Event, m: &Message) -> Request {
    let alias = event.outage_id();
    let mut url = base.clone();
    let root = base.path().trim_end_matches('/');
    let body = if m.alarm {
        url.set_path(&format!("{root}/v2/alerts"));
        json!({
            "message": super::cut(&m.title, MAX_MESSAGE),
            "alias": alias,
            "description": super::cut(&m.lines.join("\n"), MAX_DESCRIPTION),
            "source": "willwatch",
            "entity": event.device,
            "priority": priority(event.severity.as_deref()),
            "details": {"device": event.device, "topic": event.topic, "event": event.kind.as_str()},
        })
    } else {
        url.set_path(&format!("{root}/v2/alerts/{alias}/close"));
        url.set_query(Some("identifierType=alias"));
        json!({"source": "willwatch", "note": m.lines.join("\n")})
    };
    let mut request = Request::json(url, &body);
    request.headers.push(("authorization", format!("GenieKey {}", key.expose())));
    request
}

/// Opsgenie's priorities (P1 the highest); a device's own when it is one.
fn priority(severity: Option<&str>) -> &'static str {
    match severity {
        Some("P2" | "warning") => "P2",
        Some("P3" | "error") => "P3",
        Some("P4") => "P4",
        Some("P5" | "info") => "P5",
        _ => "P1",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::{EventKind, test_event};

    #[test]
    fn an_offline_creates_the_alert_its_online_closes_by_the_same_alias() {
        let mut off = test_event(EventKind::Offline, "pump-7");
        off.offline_since = Some(off.at);
        let mut on = test_event(EventKind::Online, "pump-7");
        on.offline_since = off.offline_since;
        let base = "https://api.eu.opsgenie.com/".parse().unwrap();
        let key = Secret::new("K");
        let make = |e: Event| {
            let e = Arc::new(e);
            request(&base, &key, &e, &super::super::text::message(std::slice::from_ref(&e), None, None, None))
        };
        let (create, close) = (make(off.clone()), make(on));
        assert_eq!(create.url.as_str(), "https://api.eu.opsgenie.com/v2/alerts");
        assert!(create.headers.contains(&("authorization", "GenieKey K".into())));
        let body: serde_json::Value = serde_json::from_slice(&create.body).unwrap();
        assert_eq!(body["alias"], off.outage_id());
        assert_eq!(body["priority"], "P1");
        assert_eq!(
            close.url.as_str(),
            format!("https://api.eu.opsgenie.com/v2/alerts/{}/close?identifierType=alias", off.outage_id())
        );
    }
}
