//! The `log` action: one line per event, naming the device, its topic and
//! the event. Offline and failed reconnects are warnings (so `journalctl -p
//! warning` lists outages); coming back is info. In the journal the fields
//! become DEVICE=, TOPIC=, EVENT= and a fixed MESSAGE_ID= per event kind.

use std::time::Duration;

use tokio::sync::mpsc;

use super::{Context, Job};
use crate::event::{Event, EventKind};

pub async fn run(name: String, context: Context, mut jobs: mpsc::Receiver<Job>) {
    while let Some(job) = jobs.recv().await {
        if let Job::Event(event) = job {
            write(&name, &event);
            context.metrics.action_run(&name, "ok");
            context.done(&name, &event);
        }
    }
}

fn write(name: &str, event: &Event) {
    match event.kind {
        EventKind::Offline => tracing::warn!(
            action = %name,
            device = %event.device,
            topic = %event.topic,
            event = "offline",
            payload = %event.payload,
            previous = event.previous,
            event_id = %event.id,
            message_id = event.kind.message_id(),
            "device offline"
        ),
        EventKind::Online => {
            let offline_for = event
                .offline_for
                .map(|d| humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string());
            tracing::info!(
                action = %name,
                device = %event.device,
                topic = %event.topic,
                event = "online",
                previous = event.previous,
                offline_for_s = event.offline_for.map(|d| d.as_secs_f64()),
                event_id = %event.id,
                message_id = event.kind.message_id(),
                "device online after {} offline",
                offline_for.as_deref().unwrap_or("an unknown time")
            )
        }
        EventKind::BrokerDown => tracing::error!(
            action = %name,
            broker = %event.topic,
            event = "broker_down",
            event_id = %event.id,
            message_id = event.kind.message_id(),
            "broker down: unreachable since {}",
            crate::event::rfc3339(event.offline_since.unwrap_or(event.at))
        ),
        EventKind::BrokerUp => tracing::info!(
            action = %name,
            broker = %event.topic,
            event = "broker_up",
            down_for_s = event.offline_for.map(|d| d.as_secs_f64()),
            event_id = %event.id,
            message_id = event.kind.message_id(),
            "broker up again"
        ),
        EventKind::ReconnectFailed => tracing::warn!(
            action = %name,
            device = %event.device,
            topic = %event.topic,
            event = "reconnect_failed",
            attempts = event.attempts,
            event_id = %event.id,
            message_id = event.kind.message_id(),
            "device still offline after {} reconnect attempts",
            event.attempts.unwrap_or(0)
        ),
    }
}
