//! `type = "webhook"`: an HTTP POST per event (`actions/webhook.rs` sends
//! it). Its settings, their defaults and limits: the URL, the signing
//! secret, headers with `${ENV}` expanded, the format, retries, concurrency
//! and batching.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::super::error::Problem;
use super::super::outside::Outside;
use super::super::raw::RawDuration;
use super::super::validate::Validator;
use super::super::{Secret, Service, Webhook, WebhookFormat};
use crate::template::Template;

/// Standard Webhooks' shortest secret.
const MIN_SECRET_BYTES: usize = 24;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    url: Option<Spanned<String>>,
    timeout: Option<RawDuration>,
    max_age: Option<RawDuration>,
    max_interval: Option<RawDuration>,
    max_attempts: Option<Spanned<i64>>,
    secret_file: Option<Spanned<String>>,
    headers: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    format: Option<Spanned<String>>,
    concurrency: Option<Spanned<i64>>,
    batch: Option<RawDuration>,
    severity: Option<Spanned<String>>,
}

impl Validator<'_> {
    pub(super) fn webhook(&mut self, a: RawWebhook, span: std::ops::Range<usize>) -> Option<Webhook> {
        let Some(raw_url) = &a.url else {
            self.problem(Problem::new(span, "a webhook action needs a `url`"));
            return None;
        };
        let url = match url::Url::parse(raw_url.get_ref()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(u),
            Ok(_) | Err(_) => {
                self.problem(
                    Problem::new(
                        raw_url.span(),
                        format!("`url` `{}` is not an http(s) URL", crate::redact::url(raw_url.get_ref())),
                    )
                    .hint("write e.g. https://hooks.example.com/willwatch"),
                );
                None
            }
        };
        let timeout = self.duration(&a.timeout, Duration::from_secs(5), "timeout", Duration::from_millis(1));
        let retries = self.retries(&a.max_age, &a.max_interval, &a.max_attempts);
        let concurrency = self.count(&a.concurrency, 4, 1, 256, "concurrency");
        let secret = match &a.secret_file {
            None => Some(None),
            Some(file) => self.read_secret(file),
        };
        let format = match a.format.as_ref().map(|f| (f.get_ref().as_str(), f.span())) {
            None | Some(("willwatch", _)) => Some(WebhookFormat::Willwatch),
            Some(("alertmanager", _)) => Some(WebhookFormat::Alertmanager),
            Some((other, span)) => {
                self.problem(
                    Problem::new(span, format!("unknown webhook format `{other}`"))
                        .hint("formats: willwatch, alertmanager"),
                );
                None
            }
        };
        let batch = match &a.batch {
            None => Some(None),
            Some(_) => self.duration(&a.batch, Duration::ZERO, "batch", Duration::from_millis(10)).map(Some),
        };
        let headers = self.headers(&a.headers);
        let severity = self.severity(a.severity.clone());
        Some(Webhook {
            url: url?,
            timeout: timeout?,
            retries: retries?,
            severity,
            external_url: None,
            title: None,
            body: None,
            secret: secret?,
            headers: headers?,
            service: Service::Webhook(format?),
            concurrency: concurrency? as usize,
            batch: batch?,
            min_interval: None,
        })
    }

    fn headers(
        &mut self,
        headers: &Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    ) -> Option<Vec<(String, Template)>> {
        let Some(headers) = headers else {
            return Some(Vec::new());
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (name, value) in headers.get_ref() {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                self.problem(Problem::new(headers.span(), format!("`{name}` is not a valid HTTP header name")));
                ok = false;
                continue;
            }
            let expanded = match expand_env(value.get_ref(), self.outside) {
                Ok(v) => v,
                Err(message) => {
                    self.problem(Problem::new(value.span(), message));
                    ok = false;
                    continue;
                }
            };
            // Not shown: a header value is often a credential.
            if expanded.chars().any(|c| c.is_control() && c != '\t') {
                self.problem(
                    Problem::new(value.span(), format!("header `{name}`: its value has a control character"))
                        .hint("a line break would end the header and start another; write the value on one line"),
                );
                ok = false;
                continue;
            }
            match Template::parse(&expanded) {
                Ok(t) => out.push((name.clone(), t)),
                Err(e) => {
                    self.problem(Problem::new(value.span(), format!("header `{name}`: {}", e.message)));
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// The webhook secret; `Some(None)` when only the service can read it.
    fn read_secret(&mut self, file: &Spanned<String>) -> Option<Option<Secret>> {
        let secret = self.secret_in(file, "secret_file")?;
        // Empty: a credential only the service reads, checked when it runs.
        if secret.expose().is_empty() {
            return Some(None);
        }
        let bytes = secret.signing_key().len();
        if bytes < MIN_SECRET_BYTES {
            self.warning(
                Problem::new(
                    file.span(),
                    format!("the webhook secret is {bytes} bytes; Standard Webhooks asks for 24 to 64"),
                )
                .hint("make one with: echo \"whsec_$(head -c 32 /dev/urandom | base64)\""),
            );
        }
        Some(Some(secret))
    }
}

/// Replaces `${NAME}` with the environment variable NAME.
fn expand_env(value: &str, outside: &dyn Outside) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start + 2..].find('}') else {
            return Err("`${` is never closed".into());
        };
        let name = &rest[start + 2..start + 2 + len];
        if name.is_empty() {
            return Err("`${}` names no environment variable".into());
        }
        match outside.var(name).map(std::ffi::OsString::into_string) {
            Some(Ok(v)) => out.push_str(&v),
            Some(Err(_)) => return Err(format!("environment variable `{name}` is not UTF-8 text")),
            None => return Err(format!("environment variable `{name}` is not set")),
        }
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    Ok(out)
}
