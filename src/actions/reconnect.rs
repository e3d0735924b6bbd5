//! The `reconnect` action: tries to bring an offline device back by
//! publishing a command to it, on a backoff ladder.
//!
//! On `offline` a ladder starts for that device (one at a time): the command
//! goes out after `first_after`, then again after each interval, multiplied
//! by `backoff` up to `max_interval`. The device's `online` stops it at once.
//! After `max_attempts` commands and one more interval without the device,
//! the `escalate` actions get a `reconnect_failed` event. A reload that
//! drops the device, or drops this action from it, cancels the ladder.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Context, Job};
use crate::config::{Config, Reconnect};
use crate::event::{Event, EventKind, derived_id};

/// A ladder under way; its offline stays owed until the ladder ends, so
/// one cut short by a stop or a crash starts again at the next start.
struct Ladder {
    offline: Arc<Event>,
    attempts: Arc<AtomicU32>,
    task: JoinHandle<()>,
}

pub async fn run(name: String, spec: Reconnect, context: Context, mut jobs: mpsc::Receiver<Job>) {
    let spec = Arc::new(spec);
    let mut ladders: HashMap<String, Ladder> = HashMap::new();
    while let Some(job) = jobs.recv().await {
        ladders.retain(|_, l| !l.task.is_finished());
        match job {
            Job::Event(event) if event.kind == EventKind::Offline => {
                if ladders.contains_key(&event.device) {
                    context.done(&name, &event);
                    continue;
                }
                let attempts = Arc::new(AtomicU32::new(0));
                let task = tokio::spawn(climb(
                    name.clone(),
                    Arc::clone(&spec),
                    context.clone(),
                    event.clone(),
                    Arc::clone(&attempts),
                ));
                ladders.insert(event.device.clone(), Ladder { offline: event, attempts, task });
            }
            Job::Event(event) => {
                if let Some(ladder) = ladders.remove(&event.device).filter(|_| event.kind == EventKind::Online) {
                    ladder.task.abort();
                    context.done(&name, &ladder.offline);
                    let attempts = ladder.attempts.load(Ordering::Relaxed);
                    tracing::info!(action = %name, device = %event.device, attempts,
                        what = "reconnect_stopped", "device came back after {attempts} reconnect attempt(s); stopped");
                }
                context.done(&name, &event);
            }
            Job::Reload(config) => ladders.retain(|device, ladder| {
                let keep = still_wanted(&config, &name, device, &ladder.offline.topic);
                if !keep {
                    ladder.task.abort();
                    context.done(&name, &ladder.offline);
                    tracing::info!(action = %name, device = %device, what = "reconnect_cancelled", "reconnect attempts cancelled by the reload");
                }
                keep
            }),
        }
    }
    for ladder in ladders.into_values() {
        ladder.task.abort();
    }
}

/// Whether the device is still watched with this action after a reload.
fn still_wanted(config: &Config, action: &str, device: &str, topic: &str) -> bool {
    let Some(spec) = config.actions.get(action) else {
        return false;
    };
    if !matches!(spec.kind, crate::config::ActionKind::Reconnect(_)) {
        return false;
    }
    matches!(config.resolve(topic), Some((id, d)) if id == device && d.rules.actions.iter().any(|a| a == action))
}

/// The waits before each attempt, and then before giving up: `first_after`,
/// then intervals starting at `first_after` (1 s when that is zero),
/// multiplied by `backoff` each time and capped at `max_interval`.
pub fn schedule(spec: &Reconnect) -> impl Iterator<Item = Duration> + '_ {
    let start = if spec.first_after.is_zero() { Duration::from_secs(1) } else { spec.first_after };
    let mut interval = start.min(spec.max_interval);
    std::iter::once(spec.first_after).chain((0..spec.max_attempts).map(move |_| {
        let wait = interval;
        interval = interval.mul_f64(spec.backoff).min(spec.max_interval);
        wait
    }))
}

/// What one attempt publishes: topic, QoS, retain, payload.
type Command = (String, u8, bool, Vec<u8>);

/// The command for `event`'s device: the configured one, or for a
/// Sparkplug edge node or device a rebirth request to its node (QoS 0, as
/// Sparkplug sends commands), stamped now.
fn command(spec: &Reconnect, event: &Event) -> Option<Command> {
    if event.sparkplug {
        let topic = crate::sparkplug::topic::command_topic(&event.topic)?;
        let now = crate::sparkplug::timestamp_ms(std::time::SystemTime::now());
        return Some((topic, 0, false, crate::sparkplug::payload::rebirth_request(now)));
    }
    let topic = spec.topic.as_ref()?.render(event);
    Some((topic, spec.qos, spec.retain, spec.payload.render(event).into_bytes()))
}

async fn climb(name: String, spec: Arc<Reconnect>, context: Context, event: Arc<Event>, attempts: Arc<AtomicU32>) {
    for (i, delay) in schedule(&spec).enumerate() {
        tokio::time::sleep(delay).await;
        if i as u32 == spec.max_attempts {
            break;
        }
        let attempt = i as u32 + 1;
        attempts.store(attempt, Ordering::Relaxed);
        let Some((topic, qos, retain, payload)) = command(&spec, &event) else {
            // Validation lets only Sparkplug devices use a reconnect without a topic.
            tracing::error!(action = %name, device = %event.device, "this reconnect action has no topic for this device");
            break;
        };
        match context.mqtt.publish(topic.clone(), qos, retain, payload).await {
            Ok(()) => {
                context.metrics.action_run(&name, "ok");
                tracing::info!(action = %name, device = %event.device, topic = %topic, attempt,
                    max_attempts = spec.max_attempts, "reconnect command sent");
            }
            Err(e) => {
                context.metrics.action_run(&name, "failed");
                tracing::warn!(action = %name, device = %event.device, topic = %topic, attempt,
                    error = %e, "could not send the reconnect command");
            }
        }
    }
    tracing::error!(action = %name, device = %event.device, attempts = spec.max_attempts,
        escalate = ?spec.escalate, "device still offline after every reconnect attempt; escalating");
    if !spec.escalate.is_empty() {
        escalate(&name, &spec, &context, &event).await;
    }
    context.done(&name, &event);
}

/// The `reconnect_failed` event for the escalation actions, with an id that
/// follows from the offline's, so a ladder run again after a restart
/// escalates under the same id.
async fn escalate(name: &str, spec: &Reconnect, context: &Context, event: &Event) {
    let failed = Event {
        id: derived_id([event.id.as_str(), name, EventKind::ReconnectFailed.as_str()]),
        kind: EventKind::ReconnectFailed,
        attempts: Some(spec.max_attempts),
        at: std::time::SystemTime::now(),
        actions: spec.escalate.iter().cloned().collect(),
        ..event.clone()
    };
    context.fire(failed).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Template;

    fn spec(first: u64, backoff: f64, max_interval: u64, attempts: u32) -> Reconnect {
        Reconnect {
            topic: Some(Template::parse("cmd/{id}").unwrap()),
            payload: Template::parse("reconnect").unwrap(),
            qos: 1,
            retain: false,
            first_after: Duration::from_secs(first),
            backoff,
            max_interval: Duration::from_secs(max_interval),
            max_attempts: attempts,
            escalate: Vec::new(),
        }
    }

    fn secs(spec: &Reconnect) -> Vec<u64> {
        schedule(spec).map(|d| d.as_secs()).collect()
    }

    #[test]
    fn ladder_doubles_from_first_after_up_to_the_cap_then_waits_once_more() {
        // commands at 10, 20, 40, 80, 160 and 320 s; given up 300 s (the cap) later
        assert_eq!(secs(&spec(10, 2.0, 300, 6)), vec![10, 10, 20, 40, 80, 160, 300]);
        assert_eq!(secs(&spec(10, 2.0, 30, 5)), vec![10, 10, 20, 30, 30, 30]);
    }

    #[test]
    fn a_sparkplug_device_gets_a_rebirth_request_to_its_node() {
        let mut event = crate::event::test_event(EventKind::Offline, "plant/press-1/motor");
        event.topic = "spBv1.0/plant/DDEATH/press-1/motor".into();
        event.sparkplug = true;
        let (topic, qos, retain, payload) = command(&spec(1, 1.0, 1, 1), &event).unwrap();
        assert_eq!((topic.as_str(), qos, retain), ("spBv1.0/plant/NCMD/press-1", 0, false));
        use prost::Message;
        let request = crate::sparkplug::payload::Payload::decode(payload.as_slice()).unwrap();
        assert_eq!(request.metrics[0].name.as_deref(), Some(crate::sparkplug::payload::REBIRTH));
        event.sparkplug = false;
        assert_eq!(command(&spec(1, 1.0, 1, 1), &event).unwrap().0, "cmd/plant/press-1/motor");
    }

    #[test]
    fn steady_backoff_keeps_the_interval() {
        assert_eq!(secs(&spec(5, 1.0, 300, 3)), vec![5, 5, 5, 5]);
    }
}
