//! An Apprise-style URL read as Apprise documents each scheme, into the
//! settings of the service built here. Pure. What a URL holds is secret:
//! no error says more than its scheme and which part is wrong.

use lettre::message::Mailbox;

/// What one URL names.
#[derive(Debug, Clone, PartialEq)]
pub enum Apprise {
    /// `ntfy://`/`ntfys://`: the server and topic, and the value of the
    /// `Authorization` header (a token, or a user and password).
    Ntfy { url: url::Url, authorization: Option<String>, priority: Option<u8> },
    /// `gotify://`/`gotifys://`: the server, an application's token.
    Gotify { url: url::Url, token: String, priority: Option<u8> },
    /// `pover://USER@TOKEN`.
    Pushover { user: String, token: String, priority: Option<i8> },
    /// `slack://A/B/C`, `discord://ID/TOKEN`: the incoming webhook.
    Webhook { url: url::Url },
    /// `tgram://BOT_TOKEN/CHAT_ID`.
    Telegram { bot_token: String, chat_id: String },
    /// `matrixs://TOKEN@HOST/!room:server`.
    Matrix { homeserver: url::Url, token: String, room: String },
    /// `mailto://`/`mailtos://USER:PASSWORD@DOMAIN?smtp=…&from=…&to=…`.
    Email { smtp: url::Url, login: Option<(String, String)>, from: Mailbox, to: Vec<Mailbox> },
}

/// The schemes of each action type.
pub fn schemes(kind: &str) -> &'static [&'static str] {
    match kind {
        "ntfy" => &["ntfy", "ntfys"],
        "gotify" => &["gotify", "gotifys"],
        "pushover" => &["pover"],
        "slack" => &["slack"],
        "discord" => &["discord"],
        "telegram" => &["tgram"],
        "matrix" => &["matrix", "matrixs"],
        "email" => &["mailto", "mailtos"],
        _ => &[],
    }
}

/// The scheme of `text` when it is one Apprise knows for a service built
/// here (`None` for anything else, an http(s) URL among them).
pub fn scheme_of(text: &str) -> Option<&'static str> {
    let scheme = text.trim().split_once("://")?.0.to_ascii_lowercase();
    ["ntfy", "gotify", "pushover", "slack", "discord", "telegram", "matrix", "email"]
        .into_iter()
        .flat_map(schemes)
        .find(|s| **s == scheme)
        .copied()
}

/// Reads `text`, whose scheme is `scheme` (from `scheme_of`); the error
/// says what is wrong without any secret.
pub fn parse(text: &str, scheme: &str) -> Result<Apprise, String> {
    let rest = text.trim().trim_start_matches('\u{feff}').split_once("://").map_or("", |(_, r)| r);
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    if rest.contains('#') && !scheme.starts_with("matrix") {
        return Err(format!("`{scheme}://…`: a `#` has no meaning here (write it as %23)"));
    }
    if rest.contains('#') {
        return Err(format!(
            "`{scheme}://…`: the room must be its id, `!AbCdEf:example.org` (a `#` alias is not resolved)"
        ));
    }
    // A `+` stays a `+`, as Apprise reads it.
    let query = query.replace('+', "%2B");
    let query: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let param = |name: &str| query.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let secure = scheme.ends_with('s') && scheme != "pover";
    let http = if secure { "https" } else { "http" };
    let wrong = |what: &str| format!("`{scheme}://…`: {what}");
    match scheme {
        "tgram" => match parts[..] {
            [token, chat] => {
                let token = token.strip_prefix("bot").unwrap_or(token);
                let well_formed = token
                    .split_once(':')
                    .is_some_and(|(id, key)| !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()) && is_token(key));
                if !well_formed {
                    return Err(wrong("the bot token is not NUMBER:KEY, as @BotFather gives it"));
                }
                let chat = decode(chat);
                let chat_id = if chat.parse::<i64>().is_ok() || chat.strip_prefix('@').is_some_and(is_name) {
                    chat
                } else if is_name(&chat) {
                    format!("@{chat}")
                } else {
                    return Err(wrong("the chat is neither a number nor a channel name"));
                };
                Ok(Apprise::Telegram { bot_token: token.to_string(), chat_id })
            }
            [_, _, _, ..] => Err(wrong("one chat per action (write another action for another chat)")),
            _ => Err(wrong("expected the bot token and the chat: tgram:// then BOT_TOKEN/CHAT_ID")),
        },
        "slack" => {
            let tokens: Vec<&str> = parts.iter().map(|p| p.rsplit('@').next().unwrap_or(p)).collect();
            match tokens[..] {
                [a, b, c] if [a, b, c].iter().all(|t| is_token(t)) => {
                    webhook(&format!("https://hooks.slack.com/services/{a}/{b}/{c}"))
                }
                _ => {
                    Err(wrong("expected slack://TOKEN_A/TOKEN_B/TOKEN_C (an incoming webhook; its channel is its own)"))
                }
            }
        }
        "discord" => match parts[..] {
            [id, token] => {
                let id = id.rsplit('@').next().unwrap_or(id);
                if id.chars().all(|c| c.is_ascii_digit()) && is_token(token) {
                    webhook(&format!("https://discord.com/api/webhooks/{id}/{token}"))
                } else {
                    Err(wrong("expected discord://WEBHOOK_ID/WEBHOOK_TOKEN"))
                }
            }
            _ => Err(wrong("expected discord://WEBHOOK_ID/WEBHOOK_TOKEN")),
        },
        "pover" => match parts[..] {
            [login] => match login.split_once('@') {
                Some((user, token)) if is_token(user) && is_token(token) => {
                    let priority = match param("priority").map(|p| p.to_ascii_lowercase()) {
                        None => None,
                        Some(p) => Some(match p.as_str() {
                            "lowest" | "-2" => -2,
                            "low" | "-1" => -1,
                            "normal" | "0" => 0,
                            "high" | "1" => 1,
                            _ => {
                                return Err(wrong(
                                    "`priority=` is lowest, low, normal or high (emergency needs acknowledging, which willwatch does not ask for)",
                                ));
                            }
                        }),
                    };
                    Ok(Apprise::Pushover { user: user.to_string(), token: token.to_string(), priority })
                }
                _ => Err(wrong("expected the user key and the token: pover:// then USER_KEY, @, TOKEN")),
            },
            _ => Err(wrong("sending to chosen devices is not supported; one user key and one token")),
        },
        "ntfy" | "ntfys" => {
            let (login, host, topic) = match parts[..] {
                [topic] if !topic.contains(['@', ':', '.']) => (None, "ntfy.sh", topic),
                [server, topic] => {
                    let (login, host) = server.rsplit_once('@').map_or((None, server), |(l, h)| (Some(l), h));
                    (login, host, topic)
                }
                [_, _, _, ..] => return Err(wrong("one topic per action (write another action for another topic)")),
                _ => {
                    return Err(wrong(
                        "expected the server and the topic: ntfys://HOST/TOPIC, a token or a login before the host",
                    ));
                }
            };
            // ntfy.sh has no plain-HTTP publishing; a bare topic goes there
            // over TLS.
            let http = if host.eq_ignore_ascii_case("ntfy.sh") { "https" } else { http };
            let url = server_url(http, host, &[topic]).ok_or_else(|| wrong("no server or topic"))?;
            let authorization = match login.map(|l| l.split_once(':')) {
                None => None,
                Some(Some((user, password))) if !user.is_empty() && !user.contains(':') => {
                    Some(basic(&decode(user), &decode(password)))
                }
                Some(Some(_)) => return Err(wrong("a login needs a user")),
                Some(None) if login.is_some_and(|l| !l.is_empty()) => {
                    Some(format!("Bearer {}", decode(login.unwrap_or_default())))
                }
                Some(None) => return Err(wrong("an empty token before the host")),
            };
            let priority = match param("priority") {
                None => None,
                Some(word) => Some(
                    ntfy_priority(&word)
                        .ok_or_else(|| wrong("`priority=` is min, low, default, high, max or 1 to 5"))?,
                ),
            };
            Ok(Apprise::Ntfy { url, authorization, priority })
        }
        "gotify" | "gotifys" => match parts[..] {
            [host, ref path @ .., token] if !token.is_empty() => {
                let mut url = server_url(http, host, path).ok_or_else(|| wrong("no server"))?;
                if !url.path().ends_with('/') {
                    url.set_path(&format!("{}/", url.path()));
                }
                let priority = match param("priority") {
                    None => None,
                    Some(word) => Some(
                        gotify_priority(&word)
                            .ok_or_else(|| wrong("`priority=` is low, moderate, normal, high, emergency or 0 to 10"))?,
                    ),
                };
                Ok(Apprise::Gotify { url, token: decode(token), priority })
            }
            _ => Err(wrong("expected gotifys://HOST/TOKEN")),
        },
        "matrix" | "matrixs" => match parts[..] {
            [server, room] => {
                let room = decode(room);
                match server.rsplit_once('@') {
                    Some((token, _)) if token.contains(':') => Err(wrong(
                        "a user and password are not supported; give the account's access token as TOKEN@HOST",
                    )),
                    Some(("", _)) => Err(wrong("an empty access token before the host")),
                    Some((token, host)) if super::super::matrix::is_room_id(&room) => Ok(Apprise::Matrix {
                        homeserver: server_url(http, host, &[]).ok_or_else(|| wrong("no homeserver"))?,
                        token: decode(token),
                        room,
                    }),
                    Some(_) => {
                        Err(wrong("the room must be its id, `!AbCdEf:example.org` (a `#` alias is not resolved)"))
                    }
                    None => Err(wrong(
                        "expected matrixs://HOST/!ROOM_ID with the access token before the host (TOKEN@HOST)",
                    )),
                }
            }
            _ => Err(wrong(
                "expected matrixs://HOST/!ROOM_ID with the access token before the host, one room per action",
            )),
        },
        "mailto" | "mailtos" => email(scheme, parts.first().copied().unwrap_or_default(), &parts[1..], &param, &wrong),
        _ => Err(wrong("not a scheme willwatch reads")),
    }
}

/// `mailto(s)://[USER[:PASSWORD]@]DOMAIN[:PORT][/TO…]`: the server is
/// DOMAIN unless `smtp=` names it; `from` is USER@DOMAIN unless `from=`
/// says; `to` the addresses in the path and in `to=` (comma-separated),
/// else `from`.
/// `mailtos` is STARTTLS, or TLS from the first byte with `mode=ssl`.
fn email(
    scheme: &str,
    server: &str,
    targets: &[&str],
    param: &dyn Fn(&str) -> Option<String>,
    wrong: &dyn Fn(&str) -> String,
) -> Result<Apprise, String> {
    let (login, domain) = server.rsplit_once('@').map_or((None, server), |(l, d)| (Some(l), d));
    let login = login.map(|l| match l.split_once(':') {
        Some((user, password)) => (decode(user), Some(decode(password))),
        None => (decode(l), None),
    });
    let (domain_name, _) = domain.split_once(':').unwrap_or((domain, ""));
    if domain_name.is_empty() {
        return Err(wrong("no domain"));
    }
    let implicit = scheme == "mailtos" && param("mode").is_some_and(|m| m.eq_ignore_ascii_case("ssl"));
    let host = param("smtp").unwrap_or_else(|| domain.to_string());
    let smtp = url::Url::parse(&format!("{}://{host}", if implicit { "smtps" } else { "smtp" }))
        .ok()
        .filter(|u| u.host_str().is_some_and(|h| !h.is_empty()) && u.port() != Some(0))
        .ok_or_else(|| wrong("the mail server is not a host and a port"))?;
    let user = param("user").or_else(|| login.as_ref().map(|(u, _)| u.clone()));
    let from_text = match (param("from"), &user) {
        (Some(from), _) => from,
        (None, Some(user)) if user.contains('@') => user.clone(),
        (None, Some(user)) => format!("{user}@{domain_name}"),
        (None, None) => return Err(wrong("no sender: give USER@DOMAIN or `from=`")),
    };
    let from: Mailbox = from_text.parse().map_err(|_| wrong("`from` is not a mail address"))?;
    let mut to: Vec<Mailbox> = Vec::new();
    let listed = param("to").unwrap_or_default();
    let path: Vec<String> = targets.iter().map(|t| decode(t)).collect();
    for address in path.iter().map(String::as_str).chain(listed.split(',')).map(str::trim).filter(|a| !a.is_empty()) {
        to.push(address.parse().map_err(|_| wrong("a recipient is not a mail address"))?);
    }
    if to.is_empty() && param("to").is_none() {
        to.push(from.clone());
    }
    if to.is_empty() {
        return Err(wrong("`to=` names nobody"));
    }
    let password = param("pass").or_else(|| login.and_then(|(_, p)| p));
    let login = match (user, password) {
        (Some(user), Some(password)) => Some((user, password)),
        (_, None) => None,
        (None, Some(_)) => return Err(wrong("a password without a user")),
    };
    Ok(Apprise::Email { smtp, login, from, to })
}

fn webhook(url: &str) -> Result<Apprise, String> {
    url::Url::parse(url).map(|url| Apprise::Webhook { url }).map_err(|e| e.to_string())
}

/// `http(s)://HOST/PATH…`, `None` when HOST is not a host.
fn server_url(http: &str, host: &str, path: &[&str]) -> Option<url::Url> {
    if host.is_empty() || host.contains(['@', '#', '?']) {
        return None;
    }
    let mut url = url::Url::parse(&format!("{http}://{host}/")).ok().filter(|u| u.port() != Some(0))?;
    if path.iter().any(|p| p.is_empty()) {
        return None;
    }
    url.path_segments_mut().ok()?.pop_if_empty().extend(path.iter().map(|p| decode(p)));
    Some(url)
}

/// A token part: letters, digits and the punctuation tokens use.
fn is_token(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// ntfy's priority as Apprise writes it: a word or 1 to 5.
fn ntfy_priority(word: &str) -> Option<u8> {
    match word.to_ascii_lowercase().as_str() {
        "min" => Some(1),
        "low" => Some(2),
        "default" | "normal" => Some(3),
        "high" => Some(4),
        "max" | "emergency" | "urgent" => Some(5),
        n => n.parse().ok().filter(|n| (1..=5).contains(n)),
    }
}

/// Gotify's priority as Apprise writes it: a word or 0 to 10.
fn gotify_priority(word: &str) -> Option<u8> {
    match word.to_ascii_lowercase().as_str() {
        "low" => Some(0),
        "moderate" => Some(3),
        "normal" => Some(5),
        "high" => Some(8),
        "emergency" => Some(10),
        n => n.parse().ok().filter(|n| *n <= 10),
    }
}

/// A channel's name: letters, digits and `_`.
fn is_name(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Apprise, String> {
        parse(text, scheme_of(text).expect("a known scheme"))
    }

    #[test]
    fn each_scheme_reads_as_apprise_documents_it() {
        assert_eq!(
            read("tgram://123456:ABC-def/-1001234567890").unwrap(),
            Apprise::Telegram { bot_token: "123456:ABC-def".into(), chat_id: "-1001234567890".into() }
        );
        assert_eq!(
            read("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ").unwrap(),
            Apprise::Webhook {
                url: "https://hooks.slack.com/services/T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ".parse().unwrap()
            }
        );
        assert_eq!(
            read("discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js").unwrap(),
            Apprise::Webhook {
                url: "https://discord.com/api/webhooks/4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js".parse().unwrap()
            }
        );
        assert_eq!(
            read("pover://uQiRzpo4DXghDmr9QzzfQu27cmVRsG@azGDORePK8gMaC0QOYAMyEEuzJnyUi").unwrap(),
            Apprise::Pushover {
                user: "uQiRzpo4DXghDmr9QzzfQu27cmVRsG".into(),
                token: "azGDORePK8gMaC0QOYAMyEEuzJnyUi".into(),
                priority: None
            }
        );
        assert_eq!(
            read("ntfys://tk_abc@ntfy.example/plant?priority=high").unwrap(),
            Apprise::Ntfy {
                url: "https://ntfy.example/plant".parse().unwrap(),
                authorization: Some("Bearer tk_abc".into()),
                priority: Some(4)
            }
        );
        let Apprise::Ntfy { url, authorization, .. } = read("ntfy://plant-alerts").unwrap() else { panic!() };
        assert_eq!((url.as_str(), authorization), ("https://ntfy.sh/plant-alerts", None));
        let Apprise::Ntfy { authorization, .. } = read("ntfy://ops:p%40ss@10.0.0.5:8080/plant").unwrap() else {
            panic!()
        };
        assert_eq!(authorization.unwrap(), basic("ops", "p@ss"));
        assert_eq!(
            read("gotifys://push.example/gotify/AzyoeNS.D4iJLVa?priority=emergency").unwrap(),
            Apprise::Gotify {
                url: "https://push.example/gotify/".parse().unwrap(),
                token: "AzyoeNS.D4iJLVa".into(),
                priority: Some(10)
            }
        );
        assert_eq!(
            read("matrixs://syt_abc@matrix.example.org/!AbCdEf:example.org").unwrap(),
            Apprise::Matrix {
                homeserver: "https://matrix.example.org/".parse().unwrap(),
                token: "syt_abc".into(),
                room: "!AbCdEf:example.org".into()
            }
        );
        let Apprise::Email { smtp, login, from, to } = read(
            "mailtos://alerts:s3cret@plant.example?smtp=mail.plant.example&to=ops@plant.example,night@plant.example",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(smtp.as_str(), "smtp://mail.plant.example");
        assert_eq!(login, Some(("alerts".into(), "s3cret".into())));
        assert_eq!(from.email.to_string(), "alerts@plant.example");
        assert_eq!(to.len(), 2);
        let Apprise::Email { smtp, .. } = read("mailtos://a:b@example.com:465?mode=ssl").unwrap() else { panic!() };
        assert_eq!(smtp.as_str(), "smtps://example.com:465");
        // Recipients in the path, and a `+` in a query value kept.
        let Apprise::Email { to, login, .. } =
            read("mailto://a:b+c@example.com/ops@example.com/night@example.com?to=ops+pager@example.com").unwrap()
        else {
            panic!()
        };
        let to: Vec<String> = to.iter().map(|m| m.email.to_string()).collect();
        assert_eq!(to, ["ops@example.com", "night@example.com", "ops+pager@example.com"]);
        assert_eq!(login.unwrap().1, "b+c");
        let Apprise::Telegram { chat_id, .. } = read("tgram://1:abc/plantchannel").unwrap() else { panic!() };
        assert_eq!(chat_id, "@plantchannel", "a bare name is a channel, as Apprise reads it");
        let Apprise::Gotify { priority, .. } = read("gotify://h/t?priority=low").unwrap() else { panic!() };
        assert_eq!(priority, Some(0));
    }

    #[test]
    fn a_wrong_url_says_what_is_wrong_and_nothing_it_holds() {
        for (text, want) in [
            ("tgram://123456:SECRET", "expected the bot token and the chat"),
            ("tgram://123456:SECRET/1/2", "one chat per action"),
            ("tgram://SECRET/1", "the bot token is not NUMBER:KEY"),
            ("tgram://1:SECRET/bad-name", "neither a number nor a channel name"),
            ("ntfys://SECRET@h/t?priority=bogus", "`priority=` is min"),
            ("ntfys://@h/t", "an empty token"),
            ("ntfys://h/t#SECRET", "a `#` has no meaning here"),
            ("slack://SECRET/B", "expected slack://"),
            ("pover://SECRET", "expected the user key and the token"),
            ("matrixs://me:SECRET@matrix.example/!r:x", "a user and password are not supported"),
            ("matrixs://SECRET@matrix.example/%23room:x", "the room must be its id"),
            ("mailtos://:SECRET@", "no domain"),
        ] {
            let error = read(text).unwrap_err();
            assert!(error.contains(want), "{text}: {error}");
            assert!(!error.contains("SECRET"), "{text}: {error}");
        }
        assert_eq!(scheme_of("https://ntfy.sh/plant"), None);
        assert_eq!(scheme_of("NTFYS://ntfy.sh/plant"), Some("ntfys"));
    }
}
