//! `type = "matrix"`: a message in a Matrix room (`actions/notify/matrix.rs`).
//! `homeserver` is its base URL, `room` a room id (`!abc:example.org`, or
//! `!abc…` from room version 12 on: an
//! alias would need resolving first), the access token from `token_file`;
//! at most one message every `min_interval` (1 s), what arrives meanwhile
//! sent as one digest.

use serde::Deserialize;
use toml::Spanned;

use super::super::error::Problem;
use super::super::raw::RawDuration;
use super::super::validate::Validator;
use super::super::{Service, Webhook};
use super::shared;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMatrix {
    homeserver: Option<Spanned<String>>,
    room: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    min_interval: Option<RawDuration>,
    timeout: Option<RawDuration>,
    max_age: Option<RawDuration>,
    max_interval: Option<RawDuration>,
    max_attempts: Option<Spanned<i64>>,
    title: Option<Spanned<String>>,
    body: Option<Spanned<String>>,
}

impl Validator<'_> {
    pub(super) fn matrix(&mut self, a: RawMatrix, span: std::ops::Range<usize>) -> Option<Webhook> {
        let url = match &a.homeserver {
            Some(raw) => self.http_url(raw, "homeserver"),
            None => {
                self.problem(Problem::new(span.clone(), "a matrix action needs its `homeserver`"));
                None
            }
        };
        let room = match &a.room {
            Some(r) if is_room_id(r.get_ref()) => Some(r.get_ref().clone()),
            Some(r) => {
                self.problem(
                    Problem::new(r.span(), format!("`room` `{}` is not a room id", r.get_ref()))
                        .hint("a room id looks like !AbCdEf:example.org, or !AbCdEf… in newer rooms (Element: room settings, Advanced)"),
                );
                None
            }
            None => {
                self.problem(Problem::new(span.clone(), "a matrix action needs a `room`"));
                None
            }
        };
        let missing = Problem::new(span, "a matrix action needs an access token's `token_file`");
        let token = self.required_secret(&a.token_file, "token_file", missing);
        let service = match (room, token) {
            (Some(room), Some(token)) => Some(Service::Matrix { room, token }),
            _ => None,
        };
        let common = shared!(a, "matrix");
        self.service(url, service, &common)
    }
}

/// A room id: `!` and an opaque id, `!localpart:server` in rooms before
/// version 12, `!` and a hash from version 12 on; no spaces or controls.
pub(super) fn is_room_id(text: &str) -> bool {
    let Some(id) = text.strip_prefix('!') else { return false };
    let parts_filled = id.split_once(':').is_none_or(|(local, server)| !local.is_empty() && !server.is_empty());
    !id.is_empty() && parts_filled && !id.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/')
}

#[cfg(test)]
mod tests {
    use super::is_room_id;

    /// Guards rooms of version 12 and later, whose ids have no server part
    /// (`!` and a hash): a real Synapse makes them, and they were refused.
    #[test]
    fn room_ids_of_every_room_version_are_taken_and_aliases_are_not() {
        assert!(is_room_id("!AbCdEf:example.org"));
        assert!(is_room_id("!p_rAmoTVeKMbrdQkMeu2imDLwhWXlmAy11eYGoOqAhs"));
        for wrong in ["#plant:example.org", "!", "!:x", "!a:", "!a b", "!a/b", "AbCdEf:example.org"] {
            assert!(!is_room_id(wrong), "{wrong}");
        }
    }
}
