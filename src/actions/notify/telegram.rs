//! Telegram's Bot API: `sendMessage` to one chat, the title in bold and the
//! link at the end, as HTML (names escaped), without a link preview. The
//! bot token is part of the request's path, so the URL the action keeps
//! (and shows in errors and dead letters) is only the API's base.
//! See <https://core.telegram.org/bots/api#sendmessage>.

use serde_json::json;

use super::Request;
use super::text::{Message, html};
use crate::config::Secret;

/// A message's longest text, counted after its HTML is read; the words
/// are cut before they are escaped, so no tag or entity is cut in two.
const MAX_TEXT: usize = 4096;
/// Room for the link's words after the title and lines.
const LINK_ROOM: usize = 20;

/// `base`: the Bot API (`https://api.telegram.org/`, or a server of one's own).
pub fn request(base: &url::Url, token: &Secret, chat_id: &str, m: &Message) -> Request {
    let title = super::cut(&m.title, MAX_TEXT / 4);
    let lines = super::cut(&m.lines.join("\n"), MAX_TEXT - title.chars().count() - LINK_ROOM);
    let mut text = format!("<b>{}</b>\n{}", html(&title), html(&lines));
    if let Some(link) = &m.link {
        text.push_str(&format!("\n<a href=\"{}\">Open in willwatch</a>", html(link.as_str())));
    }
    let mut url = base.clone();
    url.set_path(&format!("{}/bot{}/sendMessage", base.path().trim_end_matches('/'), token.expose()));
    let body = json!({
        "chat_id": chat_id,
        "text": text,
        "parse_mode": "HTML",
        "link_preview_options": {"is_disabled": true},
    });
    Request::json(url, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_message_to_the_chat_under_the_bots_path_as_html() {
        let m = Message {
            title: "<b>pump</b> is offline".into(),
            lines: vec!["since then".into()],
            alarm: true,
            link: Some("https://ww.example/?q=a&b".parse().unwrap()),
        };
        let base = "http://127.0.0.1:8081/telegram".parse().unwrap();
        let r = request(&base, &Secret::new("123:ABC"), "-100200", &m);
        assert_eq!(r.url.as_str(), "http://127.0.0.1:8081/telegram/bot123:ABC/sendMessage");
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["chat_id"], "-100200");
        assert_eq!(body["parse_mode"], "HTML");
        let text = body["text"].as_str().unwrap();
        assert!(text.starts_with("<b>&lt;b&gt;pump&lt;/b&gt; is offline</b>\nsince then"), "{text}");
        assert!(text.ends_with("<a href=\"https://ww.example/?q=a&amp;b\">Open in willwatch</a>"), "{text}");
    }

    /// Guards the cut: made after escaping, it left `<b>` open or an
    /// entity in two, and Telegram refuses such a message.
    #[test]
    fn a_long_message_is_cut_before_it_is_escaped() {
        let m = Message { title: "&".repeat(5000), lines: vec!["<".repeat(5000)], alarm: true, link: None };
        let r = request(&"https://api.telegram.org/".parse().unwrap(), &Secret::new("1:T"), "1", &m);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let text = body["text"].as_str().unwrap();
        assert!(text.contains("…</b>\n"), "the title's tag is closed");
        assert!(text.ends_with("&lt;…"), "{}", &text[text.len() - 20..]);
        let shown = text.replace("&amp;", "&").replace("&lt;", "<").replace("<b>", "").replace("</b>", "");
        assert!(shown.chars().count() <= MAX_TEXT, "{}", shown.chars().count());
    }
}
