//! Microsoft Teams through a workflow (Power Automate) webhook: a message
//! with one Adaptive Card (the title, red for an alarm and green for its
//! end, the lines, a button to the device).
//! See <https://learn.microsoft.com/en-us/connectors/teams/#microsoft-teams-webhook>.

use serde_json::json;

use super::Request;
use super::text::Message;

pub fn request(url: &url::Url, m: &Message) -> Request {
    let mut body = vec![json!({
        "type": "TextBlock", "text": escape(&m.title), "weight": "Bolder", "size": "Medium", "wrap": true,
        "color": if m.alarm { "Attention" } else { "Good" },
    })];
    body.extend(m.lines.iter().map(|line| json!({"type": "TextBlock", "text": escape(line), "wrap": true})));
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    });
    if let Some(link) = &m.link {
        card["actions"] = json!([{"type": "Action.OpenUrl", "title": "Open in willwatch", "url": link.as_str()}]);
    }
    let message = json!({
        "type": "message",
        "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": null, "content": card}],
    });
    Request::json(url.clone(), &message)
}

/// Text as a TextBlock's Markdown shows it literally: a device id cannot
/// make a link or emphasis.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '[' | ']' | '(' | ')' | '*' | '_' | '`' | '#' | '>' | '-' | '+') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_adaptive_card_with_the_title_the_lines_and_a_button() {
        let m = Message {
            title: "pump-7 is offline".into(),
            lines: vec!["since then".into()],
            alarm: true,
            link: Some("https://ww.example/?q=pump-7".parse().unwrap()),
        };
        let r = request(&"https://prod.example/workflows/x".parse().unwrap(), &m);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let card = &body["attachments"][0]["content"];
        assert_eq!(body["attachments"][0]["contentType"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(card["type"], "AdaptiveCard");
        assert_eq!(card["body"][0]["text"], "pump\\-7 is offline");
        assert_eq!(card["body"][0]["color"], "Attention");
        assert_eq!(card["body"][1]["text"], "since then");
        assert_eq!(card["actions"][0]["url"], "https://ww.example/?q=pump-7");
        let m = Message { title: "[ack](https://evil.example) *now*".into(), lines: vec![], alarm: true, link: None };
        let body: serde_json::Value =
            serde_json::from_slice(&request(&"https://prod.example/x".parse().unwrap(), &m).body).unwrap();
        let title = &body["attachments"][0]["content"]["body"][0]["text"];
        assert_eq!(title, "\\[ack\\]\\(https://evil.example\\) \\*now\\*", "no link, no emphasis");
    }
}
