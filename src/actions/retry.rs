//! When a failed attempt is made again, and when it is given up: the
//! action's budget in time (`max_age`, counted from when the event was
//! decided, so a restart does not renew it) and optionally in attempts.
//! Shared by webhook deliveries and exec runs whose program did not start.

use std::time::Duration;

use crate::config::Retries;

/// The first wait between attempts, before jitter (it doubles from there,
/// up to `max_interval`).
pub const FIRST: Duration = Duration::from_millis(500);

/// Waits `wait` before the next attempt, unless the daemon stops first:
/// whether it waited (if not, the attempt is left owed for the next start).
pub async fn pause(wait: Duration, stopping: &tokio_util::sync::CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(wait) => true,
        () = stopping.cancelled() => false,
    }
}

/// After failed attempt number `attempt`, on an event `age` old: how long
/// to wait before the next, or `None` to give up. The wait is what the
/// receiver asked for (`Retry-After`) or the backoff's, never more than
/// `max_interval` (a receiver asking for hours does not park an alert),
/// and the last attempt falls at `max_age`, not after.
pub fn next_attempt(
    retries: &Retries,
    attempt: u32,
    age: Duration,
    asked: Option<Duration>,
    backoff: Duration,
) -> Option<Duration> {
    if retries.max_attempts.is_some_and(|max| attempt >= max) || age >= retries.max_age {
        return None;
    }
    Some(asked.unwrap_or(backoff).min(retries.max_interval).min(retries.max_age - age))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retries(max_attempts: Option<u32>) -> Retries {
        Retries { max_age: Duration::from_secs(3600), max_interval: Duration::from_secs(300), max_attempts }
    }

    #[test]
    fn retries_by_time_with_a_capped_wait_and_an_optional_attempt_cap() {
        let (s, min) = (Duration::from_secs(1), Duration::from_secs(60));
        let spec = retries(None);
        assert_eq!(next_attempt(&spec, 1, s, None, 2 * s), Some(2 * s), "the backoff's wait");
        assert_eq!(next_attempt(&spec, 1, s, Some(7 * s), 2 * s), Some(7 * s), "what the receiver asked");
        assert_eq!(next_attempt(&spec, 1, s, Some(86_400 * s), 2 * s), Some(5 * min), "at most max_interval");
        assert_eq!(next_attempt(&spec, 500, 58 * min, None, 5 * min), Some(2 * min), "the last falls at max_age");
        assert_eq!(next_attempt(&spec, 501, 60 * min, None, 5 * min), None, "then it is given up");
        assert_eq!(next_attempt(&retries(Some(3)), 2, s, None, s), Some(s));
        assert_eq!(next_attempt(&retries(Some(3)), 3, s, None, s), None, "max_attempts caps it sooner");
    }
}
