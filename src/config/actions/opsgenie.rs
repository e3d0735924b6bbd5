//! `type = "opsgenie"`: an alert through Opsgenie's Alert API
//! (`actions/notify/opsgenie.rs`): created by an offline, closed by its
//! online, one per outage. The API key from `api_key_file`; `api_url` for
//! the EU instance (`https://api.eu.opsgenie.com/`) or another. Never
//! digested: each event is its own request, deduplicated by the outage.

use serde::Deserialize;
use toml::Spanned;

use super::super::error::Problem;
use super::super::raw::RawDuration;
use super::super::validate::Validator;
use super::super::{Service, Webhook};
use super::shared;

/// Opsgenie's API.
const API_URL: &str = "https://api.opsgenie.com/";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOpsgenie {
    api_key_file: Option<Spanned<String>>,
    api_url: Option<Spanned<String>>,
    timeout: Option<RawDuration>,
    max_age: Option<RawDuration>,
    max_interval: Option<RawDuration>,
    max_attempts: Option<Spanned<i64>>,
    title: Option<Spanned<String>>,
    body: Option<Spanned<String>>,
}

impl Validator<'_> {
    pub(super) fn opsgenie(&mut self, a: RawOpsgenie, span: std::ops::Range<usize>) -> Option<Webhook> {
        let url = match &a.api_url {
            Some(raw) => self.http_url(raw, "api_url"),
            None => url::Url::parse(API_URL).ok(),
        };
        let missing = Problem::new(span, "an opsgenie action needs an API integration's `api_key_file`");
        let api_key = self.required_secret(&a.api_key_file, "api_key_file", missing);
        let common = shared!(a);
        self.service(url, api_key.map(|api_key| Service::Opsgenie { api_key }), &common)
    }
}
