//! URLs as they may be shown: a password in the user info or a token in
//! the query is a secret, and logs, `check` output, config errors and the
//! dead-letter file are not the place for it.
//!
//! Works on text, not on a parsed URL: a URL that does not parse (a typo,
//! a scheme that is not http) is shown in an error, and must be just as
//! redacted there.

use std::borrow::Cow;

/// `url` with its user info as `***@` and every query value as `***`
/// (`http://***@hooks.example/h?token=***`), whether it parses or not: the
/// user info runs to the last `@` before the query, a query value to the
/// next `&` or `#`.
pub fn url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(at) => url.split_at(at + 3),
        None => ("", url),
    };
    let query_at = rest.find(['?', '#']).unwrap_or(rest.len());
    let (mut before_query, query) = rest.split_at(query_at);
    let mut shown = String::with_capacity(url.len());
    shown.push_str(scheme);
    if let Some(at) = before_query.rfind('@') {
        shown.push_str("***@");
        before_query = &before_query[at + 1..];
    }
    shown.push_str(before_query);
    let (query, fragment) = match query.find('#') {
        Some(at) => query.split_at(at),
        None => (query, ""),
    };
    if let Some(pairs) = query.strip_prefix('?') {
        shown.push('?');
        let hidden: Vec<String> = pairs
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) => format!("{key}=***"),
                None if pair.is_empty() => String::new(),
                None => "***".to_string(),
            })
            .collect();
        shown.push_str(&hidden.join("&"));
    }
    shown.push_str(fragment);
    shown
}

/// `url` as far as its host (`https://hooks.slack.com/…`): for a service's
/// URL, whose path may hold its token (Slack's, Discord's, Gotify's).
pub fn origin(url: &str) -> String {
    let shown = self::url(url);
    let host_at = shown.find("://").map_or(0, |at| at + 3);
    match shown[host_at..].find(['/', '?', '#']) {
        Some(end) => format!("{}/…", &shown[..host_at + end]),
        None => shown,
    }
}

/// `text` with every URL in it (a word with `://`) redacted as by `url`:
/// for messages that may quote a config value anywhere in them.
pub fn urls_in(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let start =
            rest[..at].rfind(is_delimiter).map_or(0, |i| i + rest[i..].chars().next().map_or(1, char::len_utf8));
        let end = rest[at..].find(is_delimiter).map_or(rest.len(), |i| at + i);
        out.push_str(&rest[..start]);
        out.push_str(&url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// What ends a URL quoted in a message.
fn is_delimiter(c: char) -> bool {
    c.is_whitespace() || matches!(c, '`' | '"' | '\'' | '<' | '>')
}

#[cfg(test)]
mod tests {
    use super::origin;

    #[test]
    fn an_origin_shows_the_host_and_nothing_of_the_path() {
        assert_eq!(origin("https://hooks.slack.com/services/T/B/SECRET"), "https://hooks.slack.com/…");
        assert_eq!(origin("gotfy://u:p@push.example:8080/SECRET?x=1"), "gotfy://***@push.example:8080/…");
        assert_eq!(origin("https://ntfy.sh"), "https://ntfy.sh");
    }

    use super::*;

    #[test]
    fn user_info_and_query_values_are_hidden() {
        assert_eq!(
            url("https://user:pw@hooks.example/h/1?token=s3cret&x=1"),
            "https://***@hooks.example/h/1?token=***&x=***"
        );
        assert_eq!(url("http://127.0.0.1:8080/hook"), "http://127.0.0.1:8080/hook");
        assert_eq!(url("ftp://u:SECRET@h/x?SECRET#frag"), "ftp://***@h/x?***#frag");
    }

    #[test]
    fn urls_that_do_not_parse_are_hidden_all_the_same() {
        assert_eq!(url("http://u:pa@ss@[::bad/hook?token=SECRET"), "http://***@[::bad/hook?token=***");
        assert_eq!(url("hookuser:SECRET@hooks.example/h?token=SECRET"), "***@hooks.example/h?token=***");
        assert_eq!(url("http://u:pa/ss@h/"), "http://***@h/", "a `/` in the password");
        assert_eq!(url("not a url"), "not a url");
    }

    #[test]
    fn urls_quoted_in_a_message_are_hidden_and_the_rest_kept() {
        assert_eq!(
            urls_in("`url` `ftp://u:SECRET@h/?t=SECRET` is not an http(s) URL"),
            "`url` `ftp://***@h/?t=***` is not an http(s) URL"
        );
        assert_eq!(
            urls_in("invalid type: string \"https://u:SECRET@h\", expected i64"),
            "invalid type: string \"https://***@h\", expected i64"
        );
        assert_eq!(urls_in("write it as mqtt://host:1883"), "write it as mqtt://host:1883");
        assert_eq!(urls_in("no url here? a=b"), "no url here? a=b");
    }
}
