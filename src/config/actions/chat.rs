//! `type = "slack"` (also Mattermost and Rocket.Chat, which take Slack's
//! incoming webhooks), `type = "discord"` and `type = "teams"` (a workflow
//! webhook): a chat message through the channel's webhook URL
//! (`actions/notify/slack.rs`, `discord.rs`, `teams.rs`).
//! The URL is a secret (it carries the token): written in `url`, or read
//! from `url_file` (a file or `credential:NAME`). At most one request every
//! `min_interval` (1 s for Slack and Teams, 2 s for Discord: their limits
//! per webhook), what arrives meanwhile sent as one digest.

use serde::Deserialize;
use toml::Spanned;

use super::super::error::Problem;
use super::super::raw::RawDuration;
use super::super::validate::Validator;
use super::super::{Service, Webhook};
use super::shared;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChat {
    url: Option<Spanned<String>>,
    url_file: Option<Spanned<String>>,
    min_interval: Option<RawDuration>,
    timeout: Option<RawDuration>,
    max_age: Option<RawDuration>,
    max_interval: Option<RawDuration>,
    max_attempts: Option<Spanned<i64>>,
    title: Option<Spanned<String>>,
    body: Option<Spanned<String>>,
}

impl Validator<'_> {
    /// `kind`: "slack", "discord" or "teams".
    pub(super) fn chat(&mut self, kind: &str, a: RawChat, span: std::ops::Range<usize>) -> Option<Webhook> {
        let url = match (&a.url, &a.url_file) {
            (Some(url), None) => match super::apprise::chat_url(kind, url.get_ref()) {
                None => self.http_url(url, "url"),
                Some(read) => self.apprise_chat(read, url, "url"),
            },
            (None, Some(file)) => match self.secret_in(file, "url_file") {
                // A credential only the service reads: checked when it runs.
                Some(text) if text.expose().is_empty() => url::Url::parse("https://credential.invalid/").ok(),
                Some(text) if super::apprise::chat_url(kind, text.expose()).is_some() => {
                    let read = super::apprise::chat_url(kind, text.expose())?;
                    self.apprise_chat(read, file, "url_file")
                }
                Some(text) => match url::Url::parse(text.expose()) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(u),
                    // Not shown: the URL holds the webhook's token.
                    _ => {
                        self.problem(
                            Problem::new(file.span(), "`url_file` holds no http(s) URL")
                                .hint("the file holds the webhook's whole URL, https://…, on one line"),
                        );
                        None
                    }
                },
                None => None,
            },
            (Some(_), Some(file)) => {
                self.problem(Problem::new(file.span(), "give the webhook's `url` or its `url_file`, not both"));
                None
            }
            (None, None) => {
                self.problem(
                    Problem::new(span, format!("a {kind} action needs its incoming webhook's `url` or `url_file`"))
                        .hint("url_file = \"credential:chat-webhook\" keeps the URL, which holds a token, out of the config"),
                );
                None
            }
        };
        let service = match kind {
            "discord" => Service::Discord,
            "teams" => Service::Teams,
            _ => Service::Slack,
        };
        let common = shared!(a, kind);
        self.service(url, Some(service), &common)
    }

    /// What an Apprise-style URL in `key` came to, or the problem at it.
    fn apprise_chat(&mut self, read: Result<url::Url, String>, at: &Spanned<String>, key: &str) -> Option<url::Url> {
        read.map_err(|e| self.problem(Problem::new(at.span(), format!("`{key}`: {e}")))).ok()
    }
}
