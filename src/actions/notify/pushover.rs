//! Pushover: a form posted to its messages API with the application token
//! and the user (or group) key, the title, the message, its priority (1,
//! high, for an alarm; 0 for its end; unless the action sets one) and the
//! device's link.
//! See <https://pushover.net/api>.

use super::Request;
use super::text::Message;
use crate::config::Secret;

/// Pushover's longest message and title.
const MAX_MESSAGE: usize = 1024;
const MAX_TITLE: usize = 250;
const MAX_URL: usize = 512;

/// `url`: the messages API (`https://api.pushover.net/1/messages.json`).
pub fn request(url: &url::Url, user: &Secret, token: &Secret, priority: Option<i8>, m: &Message) -> Request {
    let priority = priority.unwrap_or(if m.alarm { 1 } else { 0 }).to_string();
    let title = super::cut(&m.title, MAX_TITLE);
    let message = super::cut(&m.lines.join("\n"), MAX_MESSAGE);
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("token", token.expose())
        .append_pair("user", user.expose())
        .append_pair("title", &title)
        .append_pair("message", &message)
        .append_pair("priority", &priority);
    // Pushover takes a link of at most 512 characters; a longer one (an id
    // of 256 `&`, escaped) is left out rather than refused with the message.
    if let Some(link) = m.link.as_ref().filter(|l| l.as_str().len() <= MAX_URL) {
        form.append_pair("url", link.as_str()).append_pair("url_title", "Open in willwatch");
    }
    Request {
        put: false,
        url: url.clone(),
        headers: vec![("content-type", "application/x-www-form-urlencoded".into())],
        body: form.finish().into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_with_the_token_the_user_and_the_message() {
        let m = Message { title: "pump 7 is offline".into(), lines: vec!["since &c".into()], alarm: true, link: None };
        let url = "https://api.pushover.net/1/messages.json".parse().unwrap();
        let r = request(&url, &Secret::new("U"), &Secret::new("T"), None, &m);
        let form: Vec<(String, String)> = url::form_urlencoded::parse(&r.body).into_owned().collect();
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("token"), Some("T"));
        assert_eq!(get("user"), Some("U"));
        assert_eq!(get("title"), Some("pump 7 is offline"));
        assert_eq!(get("message"), Some("since &c"));
        assert_eq!(get("priority"), Some("1"));
        let far = Message { link: Some(format!("https://ww.example/?q={}", "%26".repeat(200)).parse().unwrap()), ..m };
        let r = request(&url, &Secret::new("U"), &Secret::new("T"), None, &far);
        assert!(url::form_urlencoded::parse(&r.body).all(|(k, _)| k != "url"), "a link past 512 is left out");
    }
}
