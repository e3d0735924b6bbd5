//! sd_notify glue for `Type=notify` units: READY, RELOADING, STOPPING,
//! STATUS and the watchdog. Without `NOTIFY_SOCKET` every call is a no-op,
//! so the daemon runs the same from a shell.

use std::time::Duration;

use sd_notify::NotifyState;

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Config loaded and the MQTT loop running (not waiting for the broker).
pub fn ready() {
    notify(&[NotifyState::Ready]);
}

/// Before a reload; `ready()` follows it whether the reload worked or not.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

pub fn status(text: &str) {
    notify(&[NotifyState::Status(text)]);
}

pub fn watchdog() {
    notify(&[NotifyState::Watchdog]);
}

/// How often to ping the watchdog: half its timeout, when one is set.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}
