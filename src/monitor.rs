//! The monitor: the single owner of the device table.
//!
//! It turns what the MQTT session saw into device transitions (through the
//! pure rules in `device.rs`) and hands the resulting events to the action
//! dispatcher. It never does I/O itself and never waits on an action, so it
//! keeps up with whatever the broker delivers. A reload swaps the config it
//! reads but keeps the state of every device that is still watched.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use crate::actions;
use crate::config::{Config, Watch};
use crate::device::{Device, Now, Outcome, State};
use crate::event::Event;

/// What the monitor is told, by the MQTT session and by the daemon.
#[derive(Debug)]
pub enum Input {
    Message { topic: String, payload: Bytes },
    Reload(Arc<Config>),
}

/// How many devices are in each state; for status lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub online: usize,
    pub offline: usize,
    pub unknown: usize,
}

pub struct Monitor {
    config: Arc<Config>,
    devices: BTreeMap<String, Device>,
    /// Topics already reported as clashing with another device's id.
    clashes: HashSet<String>,
    events: mpsc::Sender<actions::Input>,
    counts: watch::Sender<Counts>,
}

impl Monitor {
    pub fn new(
        config: Arc<Config>,
        events: mpsc::Sender<actions::Input>,
        counts: watch::Sender<Counts>,
    ) -> Monitor {
        let mut monitor = Monitor {
            config,
            devices: BTreeMap::new(),
            clashes: HashSet::new(),
            events,
            counts,
        };
        monitor.add_explicit_devices();
        monitor.publish_counts();
        monitor
    }

    /// Runs until `input` closes; dropping the monitor then closes the
    /// dispatcher's input, which drains the actions.
    pub async fn run(mut self, mut input: mpsc::Receiver<Input>) {
        while let Some(message) = input.recv().await {
            match message {
                Input::Message { topic, payload } => self.on_message(topic, &payload).await,
                Input::Reload(config) => self.reload(config).await,
            }
        }
    }

    async fn on_message(&mut self, topic: String, payload: &[u8]) {
        let Some((id, spec)) = self.config.resolve(&topic) else {
            tracing::debug!(topic = %topic, "message on a topic no device watches");
            return;
        };
        let id = id.into_owned();
        let rules = Arc::clone(&spec.rules);
        let device = self
            .devices
            .entry(id.clone())
            .or_insert_with(|| Device::new(id, topic.clone(), rules));
        if device.topic != topic {
            if self.clashes.insert(topic.clone()) {
                tracing::warn!(device = %device.id, topic = %topic, watched_topic = %device.topic,
                    "ignoring topic: its device id is already watched on another topic");
            }
            return;
        }
        let before = device.state;
        let outcome = device.on_message(payload, Now::read());
        match outcome {
            Outcome::Fire(t) => {
                let event = Event {
                    kind: t.kind,
                    device: device.id.clone(),
                    topic: device.topic.clone(),
                    payload: String::from_utf8_lossy(payload).into_owned(),
                    previous: t.previous.as_str(),
                    at: device
                        .since
                        .map_or_else(std::time::SystemTime::now, |s| s.wall),
                    offline_since: t.offline_since,
                    offline_for: t.offline_for,
                    actions: device.rules.actions.iter().cloned().collect(),
                };
                // The dispatcher only enqueues, so this waits for nothing slow.
                let _ = self.events.send(actions::Input::Event(event)).await;
            }
            Outcome::Quiet => {
                if device.state != before {
                    tracing::debug!(device = %device.id, topic = %topic, state = device.state.as_str(), "device state");
                }
            }
            Outcome::Unrecognised {
                warn: true,
                suppressed,
            } => {
                tracing::warn!(device = %device.id, topic = %topic, payload = %preview(payload),
                    suppressed, "payload is neither an online nor an offline payload; state unchanged");
            }
            Outcome::Unrecognised { warn: false, .. } => {}
        }
        if device.state != before {
            self.publish_counts();
        }
    }

    async fn reload(&mut self, config: Arc<Config>) {
        let before: BTreeSet<String> = self.devices.keys().cloned().collect();
        self.config = config;
        let config = Arc::clone(&self.config);
        self.devices
            .retain(|id, device| match config.resolve(&device.topic) {
                Some((new_id, spec)) if new_id == id.as_str() => {
                    device.rules = Arc::clone(&spec.rules);
                    true
                }
                _ => false,
            });
        self.clashes.clear();
        self.add_explicit_devices();
        let after: BTreeSet<String> = self.devices.keys().cloned().collect();
        let added: Vec<&String> = after.difference(&before).collect();
        let removed: Vec<&String> = before.difference(&after).collect();
        tracing::info!(
            added = ?added,
            removed = ?removed,
            devices = after.len(),
            "config reloaded: {} device(s) added, {} removed, {} kept with their state",
            added.len(),
            removed.len(),
            after.len() - added.len()
        );
        self.publish_counts();
        let _ = self
            .events
            .send(actions::Input::Reload(Arc::clone(&self.config)))
            .await;
    }

    fn add_explicit_devices(&mut self) {
        for spec in &self.config.devices {
            if let Watch::Device { id, topic } = &spec.watch {
                self.devices.entry(id.clone()).or_insert_with(|| {
                    Device::new(id.clone(), topic.clone(), Arc::clone(&spec.rules))
                });
            }
        }
    }

    fn publish_counts(&self) {
        let mut counts = Counts::default();
        for device in self.devices.values() {
            match device.state {
                State::Online => counts.online += 1,
                State::Offline => counts.offline += 1,
                State::Unknown => counts.unknown += 1,
            }
        }
        self.counts.send_replace(counts);
    }
}

/// A payload as it may be shown in a log line: lossy UTF-8, at most 64 chars.
fn preview(payload: &[u8]) -> String {
    const MAX: usize = 64;
    let text = String::from_utf8_lossy(&payload[..payload.len().min(MAX * 4)]);
    let mut out: String = text.chars().take(MAX).collect();
    if payload.len() > out.len() {
        out.push_str(&format!("… ({} bytes)", payload.len()));
    }
    out
}
