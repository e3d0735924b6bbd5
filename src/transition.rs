//! One transition of one device, as the fleet core decides it and hands it
//! on: to the history (which keeps it) and to the live page's stream. A
//! leaf: the core names it without importing the history, which does I/O.

use std::time::{Duration, SystemTime};

/// One transition of one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// Inline up to 24 bytes, as devices keep their ids: a burst of
    /// transitions costs no allocation per entry.
    pub device: compact_str::CompactString,
    pub at: SystemTime,
    pub from: &'static str,
    pub to: &'static str,
    /// Why: `will` (it said so), `silence` (its heartbeat stopped),
    /// `birth`, `cleared` (its retained state was removed).
    pub cause: &'static str,
    pub payload: compact_str::CompactString,
    /// On a return online: how long it was offline.
    pub offline_for: Option<Duration>,
}
