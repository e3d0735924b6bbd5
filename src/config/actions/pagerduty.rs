//! `type = "pagerduty"`: an incident through PagerDuty's Events API v2
//! (`actions/notify/pagerduty.rs`): triggered by an offline, resolved by
//! its online, one per outage. The integration's routing key from
//! `routing_key_file` (a file or `credential:NAME`); `api_url` for another
//! endpoint (default PagerDuty's). Never digested: each event is its own
//! request, deduplicated by the outage.

use serde::Deserialize;
use toml::Spanned;

use super::super::error::Problem;
use super::super::raw::RawDuration;
use super::super::validate::Validator;
use super::super::{Service, Webhook};
use super::shared;

/// PagerDuty's Events API v2.
const API_URL: &str = "https://events.pagerduty.com/v2/enqueue";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPagerDuty {
    routing_key_file: Option<Spanned<String>>,
    api_url: Option<Spanned<String>>,
    timeout: Option<RawDuration>,
    max_age: Option<RawDuration>,
    max_interval: Option<RawDuration>,
    max_attempts: Option<Spanned<i64>>,
    title: Option<Spanned<String>>,
    body: Option<Spanned<String>>,
}

impl Validator<'_> {
    pub(super) fn pagerduty(&mut self, a: RawPagerDuty, span: std::ops::Range<usize>) -> Option<Webhook> {
        let url = match &a.api_url {
            Some(raw) => self.http_url(raw, "api_url"),
            None => url::Url::parse(API_URL).ok(),
        };
        let missing = Problem::new(span, "a pagerduty action needs its integration's `routing_key_file`")
            .hint("routing_key_file = \"credential:pagerduty\" (an Events API v2 integration key)");
        let routing_key = self.required_secret(&a.routing_key_file, "routing_key_file", missing);
        let common = shared!(a);
        self.service(url, routing_key.map(|routing_key| Service::PagerDuty { routing_key }), &common)
    }
}
