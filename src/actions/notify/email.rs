//! Email: one mail per event or digest, plain text with an HTML
//! alternative (the title in bold, red for an alarm and green for its end,
//! a link to the device). The `Message-ID` follows from the outage for the
//! offline that opens it, and from the delivery for the rest, so a mail
//! sent again after a crash, a retry or a failover is the same mail to the
//! server and the reader; the online and the failed reconnects of an
//! outage answer its offline (`In-Reply-To`, `References`), so a mail
//! client shows one conversation per outage.

use std::sync::Arc;

use lettre::message::MultiPart;

use super::text::{Message, html};
use crate::config::Email;
use crate::event::{Event, EventKind};

/// The mail about `events` (one event, or a digest), `id` the delivery's.
pub fn mail(
    email: &Email,
    id: &str,
    events: &[Arc<Event>],
    m: &Message,
) -> Result<lettre::Message, lettre::error::Error> {
    // Punycode: a Message-ID is ASCII, whatever the sender's domain.
    let domain = match url::Host::parse(email.from.email.domain()) {
        Ok(url::Host::Domain(ascii)) => ascii,
        _ => "willwatch.invalid".to_string(),
    };
    let one = match events {
        [one] => Some(&**one),
        _ => None,
    };
    let mut builder = lettre::Message::builder().from(email.from.clone()).subject(one_line(&m.title));
    for to in &email.to {
        builder = builder.to(to.clone());
    }
    let outage = one.map(|e| format!("<{}@{domain}>", e.outage_id()));
    builder = match (one.map(|e| e.kind), outage) {
        (Some(kind), Some(outage)) if opens(kind) => builder.message_id(Some(outage)),
        (Some(_), Some(outage)) => {
            builder.message_id(Some(format!("<{id}@{domain}>"))).in_reply_to(outage.clone()).references(outage)
        }
        // A digest names the outages it opens, so each one's later mails
        // (which answer the outage) join its conversation.
        _ => {
            let opened: Vec<String> =
                events.iter().filter(|e| opens(e.kind)).map(|e| format!("<{}@{domain}>", e.outage_id())).collect();
            let builder = builder.message_id(Some(format!("<{id}@{domain}>")));
            if opened.is_empty() { builder } else { builder.references(opened.join(" ")) }
        }
    };
    builder.multipart(MultiPart::alternative_plain_html(plain(m), rich(m)))
}

/// Whether an event opens an outage (its mail starts the conversation).
fn opens(kind: EventKind) -> bool {
    matches!(kind, EventKind::Offline | EventKind::BrokerDown)
}

fn plain(m: &Message) -> String {
    let mut text = format!("{}\n\n{}\n", m.title, m.lines.join("\n"));
    if let Some(link) = &m.link {
        text.push_str(&format!("\n{link}\n"));
    }
    text
}

fn rich(m: &Message) -> String {
    let colour = if m.alarm { "#b00020" } else { "#1b7f3b" };
    let mut out = format!("<p style=\"font-size:1.2em;font-weight:bold;color:{colour}\">{}</p>\n<p>", html(&m.title));
    out.push_str(&m.lines.iter().map(|l| html(l)).collect::<Vec<_>>().join("<br>\n"));
    out.push_str("</p>\n");
    if let Some(link) = &m.link {
        out.push_str(&format!("<p><a href=\"{}\">Open in willwatch</a></p>\n", html(link.as_str())));
    }
    out
}

/// A subject on one line: an id or a template cannot add a header.
fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::event::test_event;

    fn email() -> Email {
        Email {
            from: "willwatch <ww@plant.example>".parse().unwrap(),
            to: vec!["ops@plant.example".parse().unwrap(), "Night <night@plant.example>".parse().unwrap()],
            login: None,
            implicit_tls: false,
            ca: None,
        }
    }

    fn sent(email: &Email, id: &str, events: Vec<Event>) -> String {
        let events: Vec<_> = events.into_iter().map(Arc::new).collect();
        let m = super::super::text::message(&events, Some(&"https://ww.example/".parse().unwrap()), None, None);
        String::from_utf8(mail(email, id, &events, &m).unwrap().formatted()).unwrap()
    }

    fn header<'a>(mail: &'a str, name: &str) -> Option<&'a str> {
        mail.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
    }

    #[test]
    fn the_online_answers_the_offline_of_its_outage() {
        let mut off = test_event(EventKind::Offline, "pump-7");
        off.offline_since = Some(off.at);
        let mut on = test_event(EventKind::Online, "pump-7");
        on.offline_since = off.offline_since;
        on.at = off.at + Duration::from_secs(60);
        let outage = format!("<{}@plant.example>", off.outage_id());
        let first = sent(&email(), "ev-1", vec![off]);
        assert_eq!(header(&first, "Message-ID"), Some(outage.as_str()));
        assert_eq!(header(&first, "In-Reply-To"), None);
        assert_eq!(header(&first, "Subject"), Some("pump-7 is offline"));
        assert!(header(&first, "To").unwrap().contains("ops@plant.example"), "{first}");
        assert!(first.contains("multipart/alternative"), "{first}");
        let second = sent(&email(), "ev-2", vec![on]);
        assert_eq!(header(&second, "Message-ID"), Some("<ev-2@plant.example>"));
        assert_eq!(header(&second, "In-Reply-To"), Some(outage.as_str()));
        assert_eq!(header(&second, "References"), Some(outage.as_str()));
    }

    #[test]
    fn a_message_id_is_ascii_whatever_the_senders_domain() {
        let mut e = email();
        e.from = "ww@plänt.example".parse().unwrap();
        let text = sent(&e, "ev-1", vec![test_event(EventKind::Online, "pump-7")]);
        assert_eq!(header(&text, "Message-ID"), Some("<ev-1@xn--plnt-moa.example>"));
    }

    #[test]
    fn an_id_cannot_add_a_header() {
        let off = test_event(EventKind::Offline, "pump\r\nBcc: thief@evil.example");
        let text = sent(&email(), "ev-1", vec![off]);
        let headers = text.split("\r\n\r\n").next().unwrap();
        assert!(!headers.lines().any(|l| l.starts_with("Bcc")), "{text}");
        assert!(header(&text, "Subject").unwrap().starts_with("pump  Bcc"), "{text}");
    }

    #[test]
    fn a_digest_is_one_mail_of_its_own_that_names_the_outages_it_opens() {
        let events: Vec<Event> = (0..3).map(|i| test_event(EventKind::Offline, &format!("pump-{i}"))).collect();
        let opened = format!("<{}@plant.example>", events[1].outage_id());
        let text = sent(&email(), "digest-1", events);
        assert_eq!(header(&text, "Message-ID"), Some("<digest-1@plant.example>"));
        let parsed = mailparse::parse_mail(text.as_bytes()).unwrap();
        use mailparse::MailHeaderMap;
        let references = parsed.headers.get_first_value("References").unwrap();
        assert!(references.contains(&opened), "{references}");
        assert_eq!(header(&text, "Subject"), Some("3 devices offline"));
        assert!(text.contains("pump-0, pump-1, pump-2"), "{text}");
    }
}
