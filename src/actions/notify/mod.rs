//! Notifications a person reads: each service's request built from the
//! events (push: `ntfy.rs`, `gotify.rs`, `pushover.rs`; chat: `slack.rs`,
//! `discord.rs`, `teams.rs`, `telegram.rs`, `matrix.rs`; on-call:
//! `pagerduty.rs`, `opsgenie.rs`), in the words they share (`text.rs`).
//! Pure; they travel the webhook's road (`actions/webhook`): the same
//! queue and order, retries by time with `Retry-After`, dead letters,
//! pacing and digests.

mod discord;
pub mod email;
mod gotify;
mod matrix;
mod ntfy;
mod opsgenie;
mod pagerduty;
mod pushover;
mod slack;
mod teams;
mod telegram;
pub mod text;

use std::sync::Arc;

use crate::config::{Service, Webhook};
use crate::event::Event;

/// One HTTP request: `body` to `url` with `headers`, by POST (or PUT,
/// where the service names the message in its URL and so makes resending
/// it harmless).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub put: bool,
    pub url: url::Url,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Request {
    fn json(url: url::Url, body: &serde_json::Value) -> Request {
        Request {
            put: false,
            url,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }
}

/// The request that tells `spec`'s service about `events` (one event, or
/// a digest of several), `id` the delivery's (the same on every attempt);
/// `None` for a plain webhook, whose body is the event JSON
/// (`webhook/body.rs`), and for email, a mail (`email.rs`).
pub fn request(spec: &Webhook, id: &str, events: &[Arc<Event>]) -> Option<Request> {
    let message = text::message(events, spec.external_url.as_ref(), spec.title.as_ref(), spec.body.as_ref());
    Some(match &spec.service {
        Service::Webhook(_) | Service::Email(_) => return None,
        Service::Ntfy { authorization, priority } => {
            ntfy::request(&spec.url, authorization.as_ref(), *priority, &message)
        }
        Service::Slack => slack::request(&spec.url, &message),
        Service::Discord => discord::request(&spec.url, &message),
        Service::Telegram { bot_token, chat_id } => telegram::request(&spec.url, bot_token, chat_id, &message),
        Service::PagerDuty { routing_key } => pagerduty::request(&spec.url, routing_key, &events[0], &message),
        Service::Gotify { token, priority } => gotify::request(&spec.url, token, *priority, &message),
        Service::Pushover { user, token, priority } => pushover::request(&spec.url, user, token, *priority, &message),
        Service::Teams => teams::request(&spec.url, &message),
        Service::Matrix { room, token } => matrix::request(&spec.url, room, token, id, &message),
        Service::Opsgenie { api_key } => opsgenie::request(&spec.url, api_key, &events[0], &message),
    })
}

/// `text` cut to at most `max` characters, with an ellipsis when cut.
pub fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((end, _)) if text.chars().count() > max => format!("{}…", &text[..end]),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_short_text_and_ends_long_text_with_an_ellipsis() {
        assert_eq!(cut("pump", 10), "pump");
        assert_eq!(cut("pumpé-7", 5), "pump…");
        assert_eq!(cut("pumpé", 5), "pumpé");
    }
}
