//! `type = "publish"`: an MQTT message per event, on a templated topic
//! (`actions/publish.rs` sends it). Its settings.

use serde::Deserialize;
use toml::Spanned;

use super::super::Publish;
use super::super::validate::Validator;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPublish {
    topic: Option<Spanned<String>>,
    qos: Option<Spanned<i64>>,
    retain: Option<Spanned<bool>>,
}

impl Validator<'_> {
    pub(super) fn publish(&mut self, a: RawPublish, span: std::ops::Range<usize>) -> Option<Publish> {
        let topic = self.topic_template(&a.topic, "a publish action", span);
        let qos = self.qos(&a.qos);
        Some(Publish { topic: topic?, qos: qos?, retain: a.retain.as_ref().is_some_and(|r| *r.get_ref()) })
    }
}
