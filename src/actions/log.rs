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
            children_offline = event.children_offline,
            seen_late = event.seen_late.then_some(true),
            kind = event.sparkplug.then_some(crate::event::SPARKPLUG),
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
                seen_late = event.seen_late.then_some(true),
                kind = event.sparkplug.then_some(crate::event::SPARKPLUG),
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

    use super::*;
    use crate::event::test_event;

    /// The keys of a JSON object in the order written, duplicates kept (a
    /// map would hide them).
    struct Keys(Vec<String>);

    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
            struct KeysVisitor;
            impl<'de> Visitor<'de> for KeysVisitor {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some(key) = map.next_key::<String>()? {
                        map.next_value::<IgnoredAny>()?;
                        keys.push(key);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(KeysVisitor)
        }
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_event_kind_writes_each_field_exactly_once() {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber =
            tracing_subscriber::fmt().json().flatten_event(true).with_writer(move || sink.clone()).finish();
        tracing::subscriber::with_default(subscriber, || {
            for kind in EventKind::ALL {
                let mut event = test_event(kind, "pump-7");
                event.offline_for = Some(Duration::from_secs(3));
                event.attempts = Some(2);
                write("log", &event);
            }
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), EventKind::ALL.len());
        for line in lines {
            let Keys(keys) = serde_json::from_str(line).unwrap();
            let mut unique = keys.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), keys.len(), "a field written twice: {line}");
            assert!(keys.contains(&"message_id".to_string()) && keys.contains(&"event_id".to_string()), "{line}");
        }
    }
}
