//! `type = "telegram"`: a message from a bot to one chat
//! (`actions/notify/telegram.rs`). The bot token from `bot_token_file` (a
//! file or `credential:NAME`); `chat_id` a number or `@channelname`;
//! `api_url` for a Bot API server of one's own (default the public one).
//! At most one message every `min_interval` (3 s: Telegram's pace for a
//! group), what arrives meanwhile sent as one digest.

use serde::Deserialize;
use toml::Spanned;

use super::super::error::Problem;
use super::super::raw::RawDuration;
use super::super::validate::Validator;
use super::super::{Service, Webhook};
use super::shared;

/// The public Bot API.
pub(super) const API_URL: &str = "https://api.telegram.org/";

/// A chat id as people write it: a number, or text (`@channel`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ChatId {
    Number(i64),
    Text(String),
    /// Anything else (a fraction, a list), refused with what it must be.
    Other(toml::Value),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelegram {
    bot_token_file: Option<Spanned<String>>,
    chat_id: Option<Spanned<ChatId>>,
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
    pub(super) fn telegram(&mut self, a: RawTelegram, span: std::ops::Range<usize>) -> Option<Webhook> {
        let url = match &a.api_url {
            Some(raw) => self.http_url(raw, "api_url"),
            None => url::Url::parse(API_URL).ok(),
        };
        let missing = Problem::new(span.clone(), "a telegram action needs its bot's `bot_token_file`")
            .hint("bot_token_file = \"credential:telegram-bot\" (the token @BotFather gave)");
        let token = self.required_secret(&a.bot_token_file, "bot_token_file", missing);
        let chat_id = match a.chat_id.as_ref().map(|c| (c.get_ref(), c.span())) {
            Some((ChatId::Number(n), _)) => Some(n.to_string()),
            Some((ChatId::Text(t), _))
                if t.parse::<i64>().is_ok()
                    || t.strip_prefix('@')
                        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')) =>
            {
                Some(t.clone())
            }
            Some((ChatId::Text(t), at)) => {
                self.problem(
                    Problem::new(at, format!("`chat_id` `{t}` is neither a number nor an @channel name"))
                        .hint("a group's id is a number like -1001234567890"),
                );
                None
            }
            Some((ChatId::Other(given), at)) => {
                self.problem(
                    Problem::new(at, format!("`chat_id` {given} must be a chat's number or an @channel name"))
                        .hint("a group's id is a number like -1001234567890"),
                );
                None
            }
            None => {
                self.problem(Problem::new(span, "a telegram action needs a `chat_id`"));
                None
            }
        };
        let service = match (token, chat_id) {
            (Some(bot_token), Some(chat_id)) => Some(Service::Telegram { bot_token, chat_id }),
            _ => None,
        };
        let common = shared!(a, "telegram");
        self.service(url, service, &common)
    }
}
