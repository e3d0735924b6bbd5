//! The fleet in a `[cluster]`: transition ids every instance derives alike,
//! and what a new leader fires when it takes over.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use super::{Effect, Fleet};
use crate::device::{Now, State, Transition};
use crate::event::{EventKind, new_id};

impl Fleet {
    /// A transition's id: fresh, or in a cluster derived from the device,
    /// the transition and when it was established (`cluster::event_id`),
    /// so every instance that fires it sends one id.
    pub(super) fn event_id(&self, device: &str, kind: EventKind, established: Option<SystemTime>) -> String {
        match (&self.config.cluster, established) {
            (Some(cluster), Some(at)) => crate::cluster::event_id(&cluster.name, device, kind, at),
            _ => new_id(),
        }
    }

    /// This instance took over its cluster: fires, device by device, what
    /// it decided and the group has not notified. `notified` holds the
    /// outages the group notified and not yet over; `in_flight` the
    /// devices with a transition of ours still under way. An outage
    /// nobody notified fires its offline; a notified outage that is over
    /// fires its online. Returns how many fired.
    pub fn take_over(&mut self, notified: &HashMap<String, String>, in_flight: &HashSet<String>, now: Now) -> usize {
        let mut owed = Vec::new();
        for device in self.devices.iter().filter(|d| !in_flight.contains(d.id.as_str())) {
            let told = notified.contains_key(device.id.as_str());
            let t = match (device.notified(), told) {
                (true, false) => Transition {
                    kind: EventKind::Offline,
                    previous: State::Online,
                    offline_since: device.offline_since(),
                    offline_for: None,
                },
                (false, true) if device.state == State::Online => Transition {
                    kind: EventKind::Online,
                    previous: State::Offline,
                    offline_since: None,
                    offline_for: None,
                },
                _ => continue,
            };
            let event = self.event(device, &t, false, now);
            owed.push((event, (device.id.to_string(), device.saved())));
        }
        let fired = owed.len();
        if fired > 0 {
            tracing::info!(fired, "took over: firing what the cluster had not notified");
        }
        for (event, record) in owed {
            self.effects.push(Effect::Fire(Box::new(event), Some(record)));
        }
        fired
    }

    /// Every outage notified and not over, with the id of its offline: what
    /// an instance that joins a cluster with an older state takes as the
    /// group's.
    pub fn outages(&self) -> HashMap<String, String> {
        self.devices
            .iter()
            .filter(|d| d.notified())
            .map(|d| (d.id.to_string(), self.event_id(&d.id, EventKind::Offline, d.offline_since())))
            .collect()
    }
}
