//! ntfy (ntfy.sh or a server of one's own): the message published as JSON
//! to the server's root, with its topic, title, priority (high for an
//! alarm, default for its end, unless the action sets one), tags (shown
//! as emoji) and a click link to the device. A token (`Bearer`) or a user
//! and password (`Basic`), when set, go as `Authorization`.
//! See <https://docs.ntfy.sh/publish/#publish-as-json>.

use serde_json::json;

use super::Request;
use super::text::Message;
use crate::config::Secret;

/// ntfy's longest message; longer ones become attachments.
const MAX_MESSAGE: usize = 4096;

/// `url` is the server and the topic (`https://ntfy.sh/plant-alerts`).
pub fn request(url: &url::Url, authorization: Option<&Secret>, priority: Option<u8>, m: &Message) -> Request {
    let mut root = url.clone();
    let topic = url.path_segments().and_then(|mut s| s.next_back()).unwrap_or_default().to_string();
    root.set_path(url.path().strip_suffix(&topic).unwrap_or("/"));
    root.set_query(None);
    let mut body = json!({
        "topic": topic,
        "title": m.title,
        "message": super::cut(&m.lines.join("\n"), MAX_MESSAGE),
        "priority": priority.unwrap_or(if m.alarm { 4 } else { 3 }),
        "tags": [if m.alarm { "rotating_light" } else { "white_check_mark" }],
    });
    if let Some(link) = &m.link {
        body["click"] = json!(link.as_str());
    }
    let mut request = Request::json(root, &body);
    if let Some(authorization) = authorization {
        request.headers.push(("authorization", authorization.expose().to_string()));
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(alarm: bool) -> Message {
        Message {
            title: "pump-7 is offline".into(),
            lines: vec!["offline since 2027-01-15 08:00:00 UTC".into()],
            alarm,
            link: Some("https://ww.example/?q=pump-7".parse().unwrap()),
        }
    }

    #[test]
    fn publishes_json_to_the_servers_root_with_the_topic_in_the_body() {
        let url = "https://ntfy.example/base/plant-alerts".parse().unwrap();
        let r = request(&url, Some(&Secret::new("Bearer tk_abc")), None, &message(true));
        assert_eq!(r.url.as_str(), "https://ntfy.example/base/");
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["topic"], "plant-alerts");
        assert_eq!(body["title"], "pump-7 is offline");
        assert_eq!(body["priority"], 4);
        assert_eq!(body["tags"][0], "rotating_light");
        assert_eq!(body["click"], "https://ww.example/?q=pump-7");
        assert!(r.headers.contains(&("authorization", "Bearer tk_abc".into())));
        let r = request(&url, None, Some(2), &message(false));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["priority"], 2, "the action's own");
        assert!(r.headers.iter().all(|(h, _)| *h != "authorization"));
    }
}
