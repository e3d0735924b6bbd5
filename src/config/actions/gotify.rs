//! `type = "gotify"`: a push notification through a Gotify server
//! (`actions/notify/gotify.rs`). `url` is the server; the application
//! token from `token_file`; `priority` from 0 to 10 (default: 8 for an
//! alarm, 4 for its end); at most one message every `min_interval` (1 s),
//! what arrives meanwhile sent as one digest.

use serde::Deserialize;
use toml::Spanned;

use super::super::error::Problem;
use super::super::raw::RawDuration;
use super::super::validate::Validator;
use super::super::{Service, Webhook};
use super::shared;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGotify {
    url: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    priority: Option<Spanned<i64>>,
    min_interval: Option<RawDuration>,
    timeout: Option<RawDuration>,
    max_age: Option<RawDuration>,
    max_interval: Option<RawDuration>,
    max_attempts: Option<Spanned<i64>>,
    title: Option<Spanned<String>>,
    body: Option<Spanned<String>>,
}

impl Validator<'_> {
    pub(super) fn gotify(&mut self, a: RawGotify, span: std::ops::Range<usize>) -> Option<Webhook> {
        let url = match &a.url {
            Some(raw) => self.http_url(raw, "url"),
            None => {
                self.problem(Problem::new(span.clone(), "a gotify action needs the server's `url`"));
                None
            }
        };
        let missing = Problem::new(span, "a gotify action needs an application's `token_file`");
        let token = self.required_secret(&a.token_file, "token_file", missing);
        let priority = match &a.priority {
            None => Some(None),
            Some(_) => self.count(&a.priority, 0, 0, 10, "priority").map(|p| Some(p as u8)),
        };
        let service = match (token, priority) {
            (Some(token), Some(priority)) => Some(Service::Gotify { token, priority }),
            _ => None,
        };
        let common = shared!(a, "gotify");
        self.service(url, service, &common)
    }
}
