//! `willwatch notify test NAME`: a made-up offline (of a device named
//! `willwatch-test`) sent once through one HTTP action, a webhook or a
//! service a person reads, and the service's answer in plain words. It
//! touches no state: nothing is queued, retried or dead-lettered.

use crate::config::{ActionKind, Config};

#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("no action `{name}` in the config (actions: {known})")]
    NoSuchAction { name: String, known: String },
    #[error("`{name}` is a `{kind}` action; only webhooks and notification services can be tried")]
    NotHttp { name: String, kind: &'static str },
    /// The service did not take the message: what it said.
    #[error("{0}")]
    Refused(String),
}

/// The service's answer when it accepted the message.
pub async fn test(config: &Config, name: &str) -> Result<String, TestError> {
    let Some(spec) = config.actions.get(name) else {
        let known: Vec<&str> = config.actions.keys().map(String::as_str).collect();
        return Err(TestError::NoSuchAction { name: name.to_string(), known: known.join(", ") });
    };
    let ActionKind::Webhook(webhook) = &spec.kind else {
        return Err(TestError::NotHttp { name: name.to_string(), kind: spec.kind.name() });
    };
    super::webhook::test(name, webhook, &super::http_client()).await.map_err(TestError::Refused)
}
