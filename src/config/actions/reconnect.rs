//! `type = "reconnect"`: a ladder of messages to an offline device, on a
//! backoff, escalating to other actions when it gives up
//! (`actions/reconnect.rs` runs it). Its settings, defaults and limits.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::super::error::Problem;
use super::super::raw::{RawDuration, SpannedList};
use super::super::validate::Validator;
use super::super::{BUILTIN_LOG, Reconnect};
use crate::template::Template;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReconnect {
    topic: Option<Spanned<String>>,
    payload: Option<Spanned<String>>,
    first_after: Option<RawDuration>,
    backoff: Option<Spanned<f64>>,
    max_interval: Option<RawDuration>,
    max_attempts: Option<Spanned<i64>>,
    escalate: Option<SpannedList>,
    qos: Option<Spanned<i64>>,
    retain: Option<Spanned<bool>>,
}

impl Validator<'_> {
    pub(super) fn reconnect(
        &mut self,
        a: RawReconnect,
        span: std::ops::Range<usize>,
        names: &BTreeSet<String>,
    ) -> Option<Reconnect> {
        // Without a topic: Sparkplug devices only (checked with the devices).
        let topic = match &a.topic {
            None => Some(None),
            Some(_) => self.topic_template(&a.topic, "a reconnect action", span).map(Some),
        };
        let payload = match &a.payload {
            Some(p) => self.template(p, "payload"),
            None => Template::parse("reconnect").ok(),
        };
        let first_after = self.duration(&a.first_after, Duration::from_secs(10), "first_after", Duration::ZERO);
        let max_interval =
            self.duration(&a.max_interval, Duration::from_secs(300), "max_interval", Duration::from_millis(1));
        let max_attempts = self.count(&a.max_attempts, 6, 1, 1000, "max_attempts");
        let backoff = match &a.backoff {
            None => Some(2.0),
            Some(b) if (1.0..=10.0).contains(b.get_ref()) => Some(*b.get_ref()),
            Some(b) => {
                self.problem(Problem::new(b.span(), "`backoff` must be from 1.0 (steady) to 10.0"));
                None
            }
        };
        let qos = self.qos(&a.qos);
        let mut escalate = Vec::new();
        for target in a.escalate.iter().flat_map(|l| l.get_ref()) {
            if target.get_ref() == BUILTIN_LOG || names.contains(target.get_ref()) {
                escalate.push(target.get_ref().clone());
            } else {
                self.problem(Problem::new(
                    target.span(),
                    format!("`escalate` names unknown action `{}`", target.get_ref()),
                ));
            }
        }
        Some(Reconnect {
            topic: topic?,
            payload: payload?,
            qos: qos?,
            retain: a.retain.as_ref().is_some_and(|r| *r.get_ref()),
            first_after: first_after?,
            backoff: backoff?,
            max_interval: max_interval?,
            max_attempts: max_attempts?,
            escalate,
        })
    }
}
