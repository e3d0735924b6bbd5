//! When a failed delivery is tried again, and when it is given up: pure
//! rules over HTTP status codes, `Retry-After`, and the action's budget in
//! time (`max_age`, counted from when the event was decided, so a restart
//! does not renew it) and optionally in attempts.

use std::time::{Duration, SystemTime};

use crate::config::Webhook;

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

/// After failed attempt number `attempt`, on an event `age` old: how long
/// to wait before the next, or `None` to give up. The wait is what the
/// receiver asked for (`Retry-After`) or the backoff's, never more than
/// `max_interval` (a receiver asking for hours does not park an alert),
/// and the last attempt falls at `max_age`, not after.
pub fn next_attempt(
    spec: &Webhook,
    attempt: u32,
    age: Duration,
    asked: Option<Duration>,
    backoff: Duration,
) -> Option<Duration> {
    if spec.max_attempts.is_some_and(|max| attempt >= max) || age >= spec.max_age {
        return None;
    }
    Some(asked.unwrap_or(backoff).min(spec.max_interval).min(spec.max_age - age))
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

    fn webhook(max_attempts: Option<u32>) -> Webhook {
        Webhook {
            url: "http://h/".parse().unwrap(),
            timeout: Duration::from_secs(5),
            max_age: Duration::from_secs(3600),
            max_interval: Duration::from_secs(300),
            max_attempts,
            severity: None,
            external_url: None,
            secret: None,
            headers: Vec::new(),
            format: crate::config::WebhookFormat::Willwatch,
            concurrency: 4,
            batch: None,
        }
    }

    #[test]
    fn retries_by_time_with_a_capped_wait_and_an_optional_attempt_cap() {
        let (s, min) = (Duration::from_secs(1), Duration::from_secs(60));
        let spec = webhook(None);
        assert_eq!(next_attempt(&spec, 1, s, None, 2 * s), Some(2 * s), "the backoff's wait");
        assert_eq!(next_attempt(&spec, 1, s, Some(7 * s), 2 * s), Some(7 * s), "what the receiver asked");
        assert_eq!(next_attempt(&spec, 1, s, Some(86_400 * s), 2 * s), Some(5 * min), "at most max_interval");
        assert_eq!(next_attempt(&spec, 500, 58 * min, None, 5 * min), Some(2 * min), "the last falls at max_age");
        assert_eq!(next_attempt(&spec, 501, 60 * min, None, 5 * min), None, "then it is given up");
        assert_eq!(next_attempt(&webhook(Some(3)), 2, s, None, s), Some(s));
        assert_eq!(next_attempt(&webhook(Some(3)), 3, s, None, s), None, "max_attempts caps it sooner");
    }
}
