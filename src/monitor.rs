//! The monitor: the single owner of the device table.
//!
//! It turns what the MQTT session saw into device transitions (through the
//! pure rules in `device.rs`) and hands the resulting events to the action
//! dispatcher. It never does I/O itself and never waits on an action, so it
//! keeps up with whatever the broker delivers. A reload swaps the config it
//! reads but keeps the state of every device that is still watched.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Instant;

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
    /// Grace periods running out: when, and for which device.
    timers: BTreeSet<(Instant, String)>,
    /// Topics already reported as clashing with another device's id.
    clashes: HashSet<String>,
    events: mpsc::Sender<actions::Input>,
    counts: watch::Sender<Counts>,
}

impl Monitor {
    pub fn new(config: Arc<Config>, events: mpsc::Sender<actions::Input>, counts: watch::Sender<Counts>) -> Monitor {
        let mut monitor = Monitor {
            config,
            devices: BTreeMap::new(),
            timers: BTreeSet::new(),
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
        loop {
            let next_timer = self.timers.first().map(|(at, _)| tokio::time::Instant::from_std(*at));
            tokio::select! {
                message = input.recv() => match message {
                    Some(Input::Message { topic, payload }) => self.on_message(topic, &payload).await,
                    Some(Input::Reload(config)) => self.reload(config).await,
                    None => break,
                },
                () = sleep_until(next_timer) => self.on_timers().await,
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
        let device = self.devices.entry(id.clone()).or_insert_with(|| Device::new(id, topic.clone(), rules));
        if device.topic != topic {
            if self.clashes.insert(topic.clone()) {
                tracing::warn!(device = %device.id, topic = %topic, watched_topic = %device.topic,
                    "ignoring topic: its device id is already watched on another topic");
            }
            return;
        }
        let before = device.state;
        let outcome = device.on_message(payload, Now::read());
        if let Outcome::Unrecognised { warn: true, suppressed } = outcome {
            tracing::warn!(device = %device.id, topic = %topic, payload = %device.last_payload,
                suppressed, "payload is neither an online nor an offline payload; state unchanged");
        }
        let id = device.id.clone();
        self.follow(&id, before, outcome).await;
    }

    /// Acts on what a device reported: fires events, arms grace timers,
    /// keeps the counts current.
    async fn follow(&mut self, id: &str, before: State, outcome: Outcome) {
        let Some(device) = self.devices.get(id) else {
            return;
        };
        match outcome {
            Outcome::Fire(t) => {
                let event = Event {
                    id: crate::event::new_id(),
                    kind: t.kind,
                    device: device.id.clone(),
                    topic: device.topic.clone(),
                    payload: device.last_payload.clone(),
                    previous: t.previous.as_str(),
                    at: std::time::SystemTime::now(),
                    offline_since: t.offline_since,
                    offline_for: t.offline_for,
                    attempts: None,
                    actions: device.rules.actions.iter().cloned().collect(),
                };
                // The dispatcher only enqueues, so this waits for nothing slow.
                let _ = self.events.send(actions::Input::Event(event)).await;
            }
            Outcome::Wait(at) => {
                tracing::debug!(device = %device.id, topic = %device.topic,
                    grace = ?device.rules.grace, "device offline; waiting out its grace period");
                self.timers.insert((at, device.id.clone()));
            }
            Outcome::Quiet if device.state != before => {
                tracing::debug!(device = %device.id, topic = %device.topic, state = device.state.as_str(), "device state");
            }
            Outcome::Quiet | Outcome::Unrecognised { .. } => {}
        }
        if device.state != before {
            self.publish_counts();
        }
    }

    /// Fires the grace timers that are due.
    async fn on_timers(&mut self) {
        let now = Now::read();
        while let Some(first) = self.timers.first().cloned() {
            if first.0 > now.mono {
                break;
            }
            self.timers.pop_first();
            let Some(device) = self.devices.get_mut(&first.1) else {
                continue;
            };
            let before = device.state;
            let outcome = device.on_tick(now);
            self.follow(&first.1, before, outcome).await;
        }
    }

    async fn reload(&mut self, config: Arc<Config>) {
        let before: BTreeSet<String> = self.devices.keys().cloned().collect();
        self.config = config;
        let config = Arc::clone(&self.config);
        self.devices.retain(|id, device| match config.resolve(&device.topic) {
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
        let _ = self.events.send(actions::Input::Reload(Arc::clone(&self.config))).await;
    }

    fn add_explicit_devices(&mut self) {
        for spec in &self.config.devices {
            if let Watch::Device { id, topic } = &spec.watch {
                self.devices
                    .entry(id.clone())
                    .or_insert_with(|| Device::new(id.clone(), topic.clone(), Arc::clone(&spec.rules)));
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

/// Sleeps until `at`, or for ever without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
