//! `type = "matrix"`: a message in a Matrix room (`actions/notify/matrix.rs`).
//! `homeserver` is its base URL, `room` a room id (`!abc:example.org`: an
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
            Some(r)
                if r.get_ref()
                    .strip_prefix('!')
                    .and_then(|id| id.split_once(':'))
                    .is_some_and(|(local, server)| !local.is_empty() && !server.is_empty()) =>
            {
                Some(r.get_ref().clone())
            }
            Some(r) => {
                self.problem(
                    Problem::new(r.span(), format!("`room` `{}` is not a room id", r.get_ref()))
                        .hint("a room id looks like !AbCdEf:example.org (Element: room settings, Advanced)"),
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
