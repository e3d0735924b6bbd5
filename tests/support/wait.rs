//! Waiting in tests: poll a condition until a deadline, never a fixed sleep.

use std::time::Duration;

/// Polls `check` every 20 ms until it returns `Some`, or panics after
/// `timeout` saying what was awaited.
pub async fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lets `window` pass, for asserting that something does *not* happen in
/// it (a ladder that must stay stopped, a grace period that must stay
/// quiet). Waiting *for* something is `eventually`'s job.
pub async fn observe(window: Duration) {
    tokio::time::sleep(window).await;
}
