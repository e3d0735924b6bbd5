//! What a webhook's response means for its delivery: pure rules over HTTP
//! status codes and `Retry-After` (how long a failed delivery is retried:
//! `actions::retry`).

use std::time::{Duration, SystemTime};

/// What a response means for the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Worth another attempt: 408, 429, 5xx (and network errors).
    Retry,
    /// The receiver said no for good: other 4xx, and 3xx (redirects are
    /// not followed: a webhook URL that moved is a config error).
    GiveUp,
}

pub fn verdict(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 429 | 500..=599 => Verdict::Retry,
        _ => Verdict::GiveUp,
    }
}

/// `Retry-After` as delay-seconds or an HTTP date.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    match value.parse::<u64>() {
        Ok(secs) => Some(Duration::from_secs(secs)),
        Err(_) => Some(httpdate::parse_http_date(value).ok()?.duration_since(now).unwrap_or(Duration::ZERO)),
    }
}

/// How long a 429's body asks to wait when no `Retry-After` header says
/// it: Discord's `retry_after` (seconds, fractional), Telegram's
/// `parameters.retry_after`.
pub fn retry_after_in_body(body: &[u8]) -> Option<Duration> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let seconds = value["retry_after"].as_f64().or_else(|| value["parameters"]["retry_after"].as_f64())?;
    Duration::try_from_secs_f64(seconds).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_decide_retry_or_give_up() {
        assert_eq!(verdict(200), Verdict::Delivered);
        assert_eq!(verdict(204), Verdict::Delivered);
        for retry in [408, 429, 500, 502, 503, 504] {
            assert_eq!(verdict(retry), Verdict::Retry, "{retry}");
        }
        for give_up in [301, 302, 400, 401, 403, 404, 410, 422] {
            assert_eq!(verdict(give_up), Verdict::GiveUp, "{give_up}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_is_capped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now), Some(Duration::from_secs(10)));
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(retry_after("86400", now), Some(Duration::from_secs(86400)));
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn a_429_body_says_how_long_where_discord_and_telegram_put_it() {
        assert_eq!(retry_after_in_body(br#"{"retry_after": 1.5, "global": false}"#), Some(Duration::from_millis(1500)));
        let telegram = br#"{"ok":false,"error_code":429,"parameters":{"retry_after":7}}"#;
        assert_eq!(retry_after_in_body(telegram), Some(Duration::from_secs(7)));
        assert_eq!(retry_after_in_body(br#"{"retry_after": -1}"#), None);
        assert_eq!(retry_after_in_body(b"slow down"), None);
    }
}
