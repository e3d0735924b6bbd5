//! The `log` action: one line per transition, naming the device, its topic
//! and the word `offline` or `online`. Offline is a warning (so
//! `journalctl -p warning` lists outages); coming back is info.

use crate::event::{Event, EventKind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    name: String,
}

impl Log {
    pub fn new(name: &str) -> Log {
        Log {
            name: name.to_string(),
        }
    }

    pub fn run(&self, event: &Event) {
        match event.kind {
            EventKind::Offline => tracing::warn!(
                action = %self.name,
                device = %event.device,
                topic = %event.topic,
                event = "offline",
                payload = %event.payload,
                previous = event.previous,
                "device offline"
            ),
            EventKind::Online => {
                let offline_for = event
                    .offline_for
                    .map(|d| humantime::format_duration(round_to_ms(d)).to_string());
                tracing::info!(
                    action = %self.name,
                    device = %event.device,
                    topic = %event.topic,
                    event = "online",
                    previous = event.previous,
                    offline_for_s = event.offline_for.map(|d| d.as_secs_f64()),
                    "device online after {} offline",
                    offline_for.as_deref().unwrap_or("an unknown time")
                )
            }
        }
    }
}

fn round_to_ms(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_millis(d.as_millis() as u64)
}
