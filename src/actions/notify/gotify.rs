//! Gotify: the message posted to the server's `/message` with the
//! application token in `X-Gotify-Key`, its priority (8 for an alarm, 4
//! for its end, unless the action sets one) and the device's link as the
//! notification's click URL.
//! See <https://gotify.net/api-docs#/message/createMessage>.

use serde_json::json;

use super::Request;
use super::text::Message;
use crate::config::Secret;

/// `server`: the Gotify server (`https://gotify.example/`).
pub fn request(server: &url::Url, token: &Secret, priority: Option<u8>, m: &Message) -> Request {
    let mut url = server.clone();
    url.set_path(&format!("{}/message", server.path().trim_end_matches('/')));
    let mut body = json!({
        "title": m.title,
        "message": m.lines.join("\n"),
        "priority": priority.unwrap_or(if m.alarm { 8 } else { 4 }),
    });
    if let Some(link) = &m.link {
        body["extras"] = json!({"client::notification": {"click": {"url": link.as_str()}}});
    }
    let mut request = Request::json(url, &body);
    request.headers.push(("x-gotify-key", token.expose().to_string()));
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_to_message_with_the_token_in_its_header() {
        let m = Message { title: "pump-7 is offline".into(), lines: vec!["x".into()], alarm: true, link: None };
        let r = request(&"https://g.example/base/".parse().unwrap(), &Secret::new("AppTok"), None, &m);
        assert_eq!(r.url.as_str(), "https://g.example/base/message");
        assert!(r.headers.contains(&("x-gotify-key", "AppTok".into())));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["priority"], 8);
        assert_eq!(body["title"], "pump-7 is offline");
    }
}
