//! `type = "ntfy"`: a push notification through ntfy (`actions/notify/ntfy.rs`
//! builds it). `url` is the server and the topic; a token from
//! `token_file`, or `username` with `password_file`; `priority` from 1 to 5 (default: 4 for an alarm, 3 for its
//! end); at most one request every `min_interval` (5 s: ntfy.sh's pace per
//! visitor), what arrives meanwhile sent as one digest.

use serde::Deserialize;
use toml::Spanned;

use super::super::error::Problem;
use super::super::raw::RawDuration;
use super::super::validate::Validator;
use super::super::{Secret, Service, Webhook};
use super::shared;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNtfy {
    url: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
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
    pub(super) fn ntfy(&mut self, a: RawNtfy, span: std::ops::Range<usize>) -> Option<Webhook> {
        let url = match &a.url {
            Some(raw) => self.http_url(raw, "url").filter(|u| {
                let topic = u.path_segments().and_then(|mut s| s.next_back()).is_some_and(|t| !t.is_empty())
                    && u.query().is_none();
                if !topic {
                    self.problem(
                        Problem::new(raw.span(), "`url` names no topic, or has a query ntfy would not get")
                            .hint("write the server and the topic, e.g. https://ntfy.sh/plant-alerts"),
                    );
                }
                topic
            }),
            None => {
                self.problem(
                    Problem::new(span, "an ntfy action needs a `url`")
                        .hint("e.g. url = \"https://ntfy.sh/plant-alerts\""),
                );
                None
            }
        };
        let authorization = match (&a.token_file, &a.username, &a.password_file) {
            (None, None, None) => Some(None),
            (Some(file), None, None) => {
                self.secret_in(file, "token_file").map(|t| Some(Secret::new(format!("Bearer {}", t.expose()))))
            }
            (Some(file), _, _) => {
                self.problem(Problem::new(
                    file.span(),
                    "give a `token_file` or a `username` and `password_file`, not both",
                ));
                None
            }
            (None, Some(user), _) if user.get_ref().is_empty() => {
                self.problem(Problem::new(user.span(), "`username` is empty"));
                None
            }
            (None, Some(user), Some(file)) => self.secret_in(file, "password_file").map(|p| {
                use base64::Engine;
                let pair = format!("{}:{}", user.get_ref(), p.expose());
                Some(Secret::new(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))))
            }),
            (None, Some(user), None) => {
                self.problem(Problem::new(user.span(), "`username` without a `password_file`"));
                None
            }
            (None, None, Some(file)) => {
                self.problem(Problem::new(file.span(), "`password_file` without a `username`"));
                None
            }
        };
        let priority = match &a.priority {
            None => Some(None),
            Some(_) => self.count(&a.priority, 3, 1, 5, "priority").map(|p| Some(p as u8)),
        };
        let service = match (authorization, priority) {
            (Some(authorization), Some(priority)) => Some(Service::Ntfy { authorization, priority }),
            _ => None,
        };
        let common = shared!(a, "ntfy");
        self.service(url, service, &common)
    }
}
