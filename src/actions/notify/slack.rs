//! Slack-compatible incoming webhooks (Slack, Mattermost, Rocket.Chat):
//! `text` for every client and for notifications, and Block Kit `blocks`
//! (a header, the lines, a link button) where Slack shows them; the others
//! read `text`. Device names are escaped as Slack's mrkdwn asks (`&`, `<`,
//! `>`, and `@` kept from mentioning), so an id cannot ping a channel or
//! forge a link.
//! See <https://api.slack.com/messaging/webhooks>.

use serde_json::json;

use super::Request;
use super::text::Message;

/// Block Kit's limits: a header's text, a section's text.
const MAX_HEADER: usize = 150;
const MAX_SECTION: usize = 3000;

pub fn request(url: &url::Url, m: &Message) -> Request {
    let icon = if m.alarm { ":red_circle:" } else { ":large_green_circle:" };
    let lines = escape(&m.lines.join("\n"));
    let mut text = format!("{icon} *{}*\n{lines}", escape(&m.title));
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": super::cut(&m.title, MAX_HEADER)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": super::cut(&lines, MAX_SECTION)}}),
    ];
    if let Some(link) = &m.link {
        text.push_str(&format!("\n<{}|Open in willwatch>", link));
        blocks.push(json!({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open in willwatch"}, "url": link.as_str()}
        ]}));
    }
    Request::json(url.clone(), &json!({"text": text, "blocks": blocks}))
}

/// Text as Slack's mrkdwn shows it literally; an `@` is followed by a word
/// joiner, so Mattermost and Rocket.Chat (which read `@channel` in text)
/// mention nobody either.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('@', "@\u{2060}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_for_everyone_blocks_for_slack_and_no_mention_from_an_id() {
        let m = Message {
            title: "<!channel> is offline".into(),
            lines: vec!["cause: `offline` on a&b @channel".into()],
            alarm: true,
            link: Some("https://ww.example/?q=x".parse().unwrap()),
        };
        let r = request(&"https://hooks.slack.com/services/T/B/X".parse().unwrap(), &m);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let text = body["text"].as_str().unwrap();
        assert!(text.starts_with(":red_circle: *&lt;!channel&gt; is offline*"), "{text}");
        assert!(text.contains("a&amp;b @\u{2060}channel"), "{text}");
        assert!(text.ends_with("<https://ww.example/?q=x|Open in willwatch>"));
        assert_eq!(body["blocks"][0]["text"]["text"], "<!channel> is offline", "plain_text is shown as is");
        assert_eq!(body["blocks"][2]["elements"][0]["url"], "https://ww.example/?q=x");
    }
}
