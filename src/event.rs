//! A device transition as the actions see it.
//!
//! The monitor makes one `Event` per transition; every action gets the same
//! value, so they all agree on what happened and when.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What happened to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    Offline,
    Online,
}

impl EventKind {
    pub const ALL: [EventKind; 2] = [EventKind::Offline, EventKind::Online];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Offline => "offline",
            EventKind::Online => "online",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = ();

    fn from_str(s: &str) -> Result<EventKind, ()> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(())
    }
}

/// One transition of one device, with everything an action may report.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    pub device: String,
    pub topic: String,
    /// The payload that caused it, lossily decoded for display.
    pub payload: String,
    /// The state the device left ("unknown", "online", "offline").
    pub previous: &'static str,
    pub at: SystemTime,
    /// When the device went offline, if it is or was.
    pub offline_since: Option<SystemTime>,
    /// On `online`: how long it was offline.
    pub offline_for: Option<Duration>,
    /// The actions configured for the device at the time.
    pub actions: Arc<[String]>,
}
