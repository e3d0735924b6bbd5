//! `type = "pushover"`: a push notification through Pushover
//! (`actions/notify/pushover.rs`). The user (or group) key from
//! `user_key_file`, the application token from `token_file`; `priority`
//! from -2 to 1 (default: 1 for an alarm, 0 for its end); `api_url` for
//! another endpoint; at most one message every `min_interval` (2 s), what
//! arrives meanwhile sent as one digest.

use serde::Deserialize;
use toml::Spanned;

use super::super::error::Problem;
use super::super::raw::RawDuration;
use super::super::validate::Validator;
use super::super::{Service, Webhook};
use super::shared;

/// Pushover's messages API.
pub(super) const API_URL: &str = "https://api.pushover.net/1/messages.json";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPushover {
    user_key_file: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    priority: Option<Spanned<i64>>,
    api_url: Option<Spanned<String>>,
    min_interval: Option<RawDuration>,
    timeout: Option<RawDuration>,
    max_age: Option<RawDuration>,
    max_interval: Option<RawDuration>,
    max_attempts: Option<Spanned<i64>>,
    title: Option<Spanned<String>>,
    body: Option<Spanned<String>>,
}

impl Validator<'_> {
    pub(super) fn pushover(&mut self, a: RawPushover, span: std::ops::Range<usize>) -> Option<Webhook> {
        let url = match &a.api_url {
            Some(raw) => self.http_url(raw, "api_url"),
            None => url::Url::parse(API_URL).ok(),
        };
        let missing = |key: &str| Problem::new(span.clone(), format!("a pushover action needs a `{key}`"));
        let user = self.required_secret(&a.user_key_file, "user_key_file", missing("user_key_file"));
        let token = self.required_secret(&a.token_file, "token_file", missing("token_file"));
        let priority = match &a.priority {
            None => Some(None),
            Some(p) if (-2..=1).contains(p.get_ref()) => Some(Some(*p.get_ref() as i8)),
            Some(p) => {
                self.problem(
                    Problem::new(p.span(), "`priority` must be from -2 to 1")
                        .hint("emergency (2) needs acknowledging in Pushover, which willwatch does not ask for"),
                );
                None
            }
        };
        let service = match (user, token, priority) {
            (Some(user), Some(token), Some(priority)) => Some(Service::Pushover { user, token, priority }),
            _ => None,
        };
        let common = shared!(a, "pushover");
        self.service(url, service, &common)
    }
}
