//! Apprise-style URLs: the one-line form of a notification that Home
//! Assistant, Uptime Kuma and Apprise itself use (`tgram://TOKEN/CHAT`),
//! accepted in `url` or `url_file` of a notification action instead of
//! the service's own keys. `parse.rs` reads one; this file makes the action
//! from it and the settings given beside it (its pace, retries, priority,
//! an email's subject and body), and refuses a key the URL already gives.

mod parse;

use serde::Deserialize;
use serde_aux::serde_introspection::serde_introspect;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::super::error::Problem;
use super::super::raw::RawDuration;
use super::super::validate::Validator;
use super::super::{Email, Secret, Service, Webhook};
use super::{ServiceSettings, pace};
use parse::Apprise;

/// What may be given beside the URL.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBeside {
    api_url: Option<Spanned<String>>,
    priority: Option<Spanned<i64>>,
    title: Option<Spanned<String>>,
    /// An email's title.
    subject: Option<Spanned<String>>,
    body: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    min_interval: Option<RawDuration>,
    timeout: Option<RawDuration>,
    max_age: Option<RawDuration>,
    max_interval: Option<RawDuration>,
    max_attempts: Option<Spanned<i64>>,
}

/// The action types that take an Apprise-style URL.
pub fn takes(kind: &str) -> bool {
    !parse::schemes(kind).is_empty()
}

/// Whether `key` (`url`, `url_file`) is one of `kind`'s own keys, which
/// also takes an http(s) URL.
fn own(kind: &str, key: &str) -> bool {
    matches!((kind, key), ("ntfy" | "gotify", "url"))
}

/// The incoming-webhook URL an Apprise-style `slack://` or `discord://`
/// URL in `text` stands for (a chat action reads its own `url` and
/// `url_file`, and asks here); `None` when `text` is none.
pub fn chat_url(kind: &str, text: &str) -> Option<Result<::url::Url, String>> {
    let scheme = parse::scheme_of(text)?;
    if !parse::schemes(kind).contains(&scheme) {
        return Some(Err(format!("a `{scheme}://` URL is not for a `{kind}` action")));
    }
    Some(match parse::parse(text, scheme) {
        Ok(Apprise::Webhook { url }) => Ok(url),
        Ok(_) => Err(format!("a `{scheme}://` URL names no incoming webhook")),
        Err(e) => Err(e),
    })
}

/// A URL standing for an action whose `url_file` is a credential `check`
/// cannot read: a config that is checked, never run.
fn unread(kind: &str) -> &'static str {
    match kind {
        "ntfy" => "ntfys://credential.invalid/topic",
        "gotify" => "gotifys://credential.invalid/token",
        "pushover" => "pover://user@token",
        "telegram" => "tgram://1:token/1",
        "matrix" => "matrixs://token@credential.invalid/!room:credential.invalid",
        _ => "mailtos://user:password@credential.invalid",
    }
}

impl Validator<'_> {
    /// The action an Apprise-style URL in `url` or `url_file` stands for
    /// (`Some(None)` after a problem), or `None` when there is none and the
    /// kind's own keys say what it is.
    pub(in super::super) fn apprise(
        &mut self,
        kind: &str,
        table: &mut DeTable<'_>,
        span: std::ops::Range<usize>,
    ) -> Option<Option<Webhook>> {
        // A chat action reads its own `url` and `url_file` (`chat_url`).
        if !takes(kind) || matches!(kind, "slack" | "discord") {
            return None;
        }
        let key = ["url", "url_file"].into_iter().find(|k| table.contains_key(*k))?;
        let DeValue::String(value) = table.get(key)?.get_ref() else { return None };
        let raw = Spanned::new(table.get(key)?.span(), value.to_string());
        let text = if key == "url" {
            raw.get_ref().clone()
        } else {
            match self.secret_in(&raw, "url_file") {
                Some(secret) if secret.expose().is_empty() => unread(kind).to_string(),
                Some(secret) => secret.expose().to_string(),
                None => return Some(None),
            }
        };
        let Some(scheme) = parse::scheme_of(&text) else {
            if own(kind, key) {
                return None;
            }
            let example = parse::schemes(kind)[0];
            self.problem(
                Problem::new(
                    raw.span(),
                    format!("`{key}` of a `{kind}` action is an Apprise-style URL, `{example}://…`"),
                )
                .hint(format!("or give the {kind} action's own keys instead")),
            );
            return Some(None);
        };
        if !parse::schemes(kind).contains(&scheme) {
            let owner = ["ntfy", "gotify", "pushover", "slack", "discord", "telegram", "matrix", "email"]
                .into_iter()
                .find(|k| parse::schemes(k).contains(&scheme))
                .unwrap_or_default();
            self.problem(Problem::new(
                raw.span(),
                format!("`{key}` is a `{scheme}://` URL, for a `{owner}` action, not a `{kind}` one"),
            ));
            return Some(None);
        }
        let apprise = match parse::parse(&text, scheme) {
            Ok(apprise) => apprise,
            Err(e) => {
                self.problem(Problem::new(raw.span(), format!("`{key}`: {e}")));
                return Some(None);
            }
        };
        table.remove(key);
        let given: Vec<_> = table
            .keys()
            .filter(|k| !serde_introspect::<RawBeside>().contains(&k.get_ref().as_ref()))
            .cloned()
            .collect();
        for other in &given {
            self.problem(
                Problem::new(
                    other.span(),
                    format!("`{}` is given by the Apprise-style URL in `{key}`", other.get_ref()),
                )
                .hint("give one or the other"),
            );
        }
        if !given.is_empty() {
            return Some(None);
        }
        let Some(beside) = self.read::<RawBeside>(Spanned::new(span, DeValue::Table(std::mem::take(table)))) else {
            return Some(None);
        };
        Some(self.apprise_action(kind, apprise, &beside))
    }

    fn apprise_action(&mut self, kind: &str, apprise: Apprise, beside: &RawBeside) -> Option<Webhook> {
        let priority = |v: &mut Validator<'_>, given: Option<u8>, min: u32, max: u32| match &beside.priority {
            None => Some(given),
            Some(_) => v.count(&beside.priority, min, min, max, "priority").map(|p| Some(p as u8)),
        };
        let (url, service) = match apprise {
            Apprise::Ntfy { url, authorization, priority: given } => {
                let priority = priority(self, given, 1, 5)?;
                (url, Service::Ntfy { authorization: authorization.map(Secret::new), priority })
            }
            Apprise::Gotify { url, token, priority: given } => {
                let priority = priority(self, given, 0, 10)?;
                (url, Service::Gotify { token: Secret::new(token), priority })
            }
            Apprise::Pushover { user, token, priority: given } => {
                let priority = match &beside.priority {
                    None => given,
                    Some(p) if (-2..=1).contains(p.get_ref()) => Some(*p.get_ref() as i8),
                    Some(p) => {
                        self.problem(Problem::new(p.span(), "`priority` must be from -2 to 1"));
                        return None;
                    }
                };
                let url = self.api_url(&beside.api_url, super::pushover::API_URL)?;
                (url, Service::Pushover { user: Secret::new(user), token: Secret::new(token), priority })
            }
            Apprise::Webhook { url } if kind == "discord" => (url, Service::Discord),
            Apprise::Webhook { url } => (url, Service::Slack),
            Apprise::Telegram { bot_token, chat_id } => {
                let url = self.api_url(&beside.api_url, super::telegram::API_URL)?;
                (url, Service::Telegram { bot_token: Secret::new(bot_token), chat_id })
            }
            Apprise::Matrix { homeserver, token, room } => {
                (homeserver, Service::Matrix { room, token: Secret::new(token) })
            }
            Apprise::Email { smtp, login, from, to } => {
                let ca = match &beside.ca_file {
                    None => Some(None),
                    Some(file) => self.email_ca(file).map(Some),
                };
                let implicit_tls = smtp.scheme() == "smtps";
                let login = login.map(|(user, password)| (user, Secret::new(password)));
                let email = Email { from, to, login, implicit_tls, ca: ca? };
                (smtp, Service::Email(Box::new(email)))
            }
        };
        let common = ServiceSettings {
            timeout: &beside.timeout,
            max_age: &beside.max_age,
            max_interval: &beside.max_interval,
            max_attempts: &beside.max_attempts,
            min_interval: &beside.min_interval,
            paced: pace(kind),
            title: if beside.subject.is_some() { &beside.subject } else { &beside.title },
            title_key: if beside.subject.is_some() { "subject" } else { "title" },
            body: &beside.body,
        };
        self.service(Some(url), Some(service), &common)
    }

    /// `api_url` when given, else the service's public API.
    fn api_url(&mut self, given: &Option<Spanned<String>>, public: &str) -> Option<::url::Url> {
        match given {
            Some(raw) => self.http_url(raw, "api_url"),
            None => public.parse().ok(),
        }
    }
}
