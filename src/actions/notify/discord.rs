//! A Discord channel's webhook: one embed (title, the lines, red for an
//! alarm and green for its end, the link as its URL), mentions disabled so
//! an id cannot ping anyone, Markdown in names escaped.
//! See <https://discord.com/developers/docs/resources/webhook#execute-webhook>.

use serde_json::json;

use super::Request;
use super::text::Message;

/// An embed's limits: title, description.
const MAX_TITLE: usize = 256;
const MAX_DESCRIPTION: usize = 4096;
const RED: u32 = 0xD6_45_45;
const GREEN: u32 = 0x2E_A0_43;

pub fn request(url: &url::Url, m: &Message) -> Request {
    let mut embed = json!({
        "title": super::cut(&escape(&m.title), MAX_TITLE),
        "description": super::cut(&escape(&m.lines.join("\n")), MAX_DESCRIPTION),
        "color": if m.alarm { RED } else { GREEN },
    });
    if let Some(link) = &m.link {
        embed["url"] = json!(link.as_str());
    }
    Request::json(url.clone(), &json!({"embeds": [embed], "allowed_mentions": {"parse": []}}))
}

/// Text as Discord's Markdown shows it literally.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '*' | '_' | '~' | '`' | '|' | '>' | '#' | '[' | ']') {
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
    fn one_embed_coloured_by_alarm_with_mentions_off_and_markdown_escaped() {
        let m = Message { title: "pump_7 is offline".into(), lines: vec!["@everyone".into()], alarm: true, link: None };
        let r = request(&"https://discord.com/api/webhooks/1/x".parse().unwrap(), &m);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["embeds"][0]["title"], "pump\\_7 is offline");
        assert_eq!(body["embeds"][0]["color"], RED);
        assert_eq!(body["allowed_mentions"]["parse"], json!([]));
        assert!(body["embeds"][0].get("url").is_none());
    }
}
