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

/// Polls the async `check` every 20 ms until it returns `Ok`, or panics
/// after `timeout` saying what was awaited and what `check` saw last
/// (its `Err`).
pub async fn until<T, E: std::fmt::Display>(
    what: &str,
    timeout: Duration,
    check: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    match within(timeout, check).await {
        Ok(value) => value,
        Err(seen) => panic!("timed out after {timeout:?} waiting for {what}; last seen: {seen}"),
    }
}

/// Polls the async `check` every 20 ms until it returns `Ok`; after
/// `timeout`, its last `Err`, for a caller that says more about the
/// failure than `until` can (a daemon's logs, a receiver's record).
pub async fn within<T, E>(timeout: Duration, mut check: impl AsyncFnMut() -> Result<T, E>) -> Result<T, E> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return Ok(value),
            Err(seen) if tokio::time::Instant::now() >= deadline => return Err(seen),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Lets `window` pass, for asserting that something does *not* happen in
/// it (a ladder that must stay stopped, a grace period that must stay
/// quiet). Waiting *for* something is `eventually`'s job.
pub async fn observe(window: Duration) {
    tokio::time::sleep(window).await;
}
