//! The fleet in a `[cluster]`: what a new leader fires when it takes over.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Fleet;
use crate::cluster::{Told, Words, millis, next_id};
use crate::device::{Device, Now, Saved, State, Transition};
use crate::event::{Event, EventKind};

/// The payload of an event a takeover fires for a device whose last
/// message says otherwise (back and down again while no instance led, or
/// changed since the old leader decided): the message it was decided on
/// is not kept.
pub const CHANGED_SINCE: &str = "(the device has changed since)";

/// An event a takeover owes, with its device's record.
pub type Owed = (Box<Event>, Option<(String, Saved)>);

impl Fleet {
    /// This instance took over its cluster: fires, device by device, the
    /// difference between what it decided itself and the group's last word
    /// (`told`), except for devices with a transition of ours still under
    /// way (`in_flight`). A transition the old leader decided and did not
    /// finish fires again under its id; an outage nobody notified fires its
    /// offline; a notified outage that is over fires its online. An offline
    /// here that is the outage the group notified (seen at the same moment,
    /// or, for an outage that began before this instance's view of the
    /// fleet did, any offline: it saw only the broker's state since) is
    /// taken as that one: notified, dating from the group's moment.
    /// Returns the events, with their ids, each with its device's record.
    pub fn take_over(&mut self, told: &HashMap<String, Words>, in_flight: &HashSet<String>, now: Now) -> Vec<Owed> {
        let mut owed: Vec<(Event, String)> = Vec::new();
        let mut adopted = Vec::new();
        for device in self.devices.iter().filter(|d| !in_flight.contains(d.id.as_str())) {
            let (events, adopt) = self.owed(device, told.get(device.id.as_str()), now);
            owed.extend(events.into_iter().map(|e| (e, device.id.to_string())));
            if let Some(since) = adopt {
                adopted.push((device.id.to_string(), since));
            }
        }
        for (id, since) in adopted {
            if let Some(device) = self.devices.get_mut(&id)
                && device.notified_elsewhere(since, now)
            {
                self.mark_dirty(&id);
            }
        }
        if !owed.is_empty() {
            tracing::info!(fired = owed.len(), "took over: firing what the cluster had not notified");
        }
        owed.into_iter()
            .map(|(mut event, id)| {
                let says = self.devices.get(&id).map(|d| d.state);
                let matches = match event.kind {
                    EventKind::Offline => says == Some(State::Offline),
                    _ => says == Some(State::Online),
                };
                if !matches {
                    event.payload = CHANGED_SINCE.to_string();
                }
                tracing::debug!(device = %id, event = %event.kind, event_id = %event.id, "fired at takeover");
                let record = self.devices.get(&id).map(|d| (id.clone(), d.saved()));
                (Box::new(event), record)
            })
            .collect()
    }

    /// What a takeover owes for `device`, given what the group said of it,
    /// and, when its offline here is the outage the group notified, since
    /// when that is. Each new event's id follows from the one before it
    /// (`next_id`), as the old leader's would have.
    fn owed(&self, device: &Device, words: Option<&Words>, now: Now) -> (Vec<Event>, Option<SystemTime>) {
        let cluster = self.config.cluster.as_ref().map_or("", |c| c.name.as_str());
        let since = device.offline_since().filter(|_| device.state == State::Offline);
        let alerted = device.notified();
        let offline = |offline_since| Transition {
            kind: EventKind::Offline,
            previous: State::Online,
            offline_since,
            offline_for: None,
        };
        let online = |offline_since| Transition {
            kind: EventKind::Online,
            previous: State::Offline,
            offline_since,
            offline_for: None,
        };
        // The device's current outage, after the transition `previous`.
        let current = |previous: Option<&str>| {
            let at = device.offline_since().unwrap_or(now.wall);
            let id = next_id(cluster, &device.id, EventKind::Offline, previous, at);
            self.event_with_id(device, &offline(device.offline_since()), now, id)
        };
        let Some(told) = words.and_then(Words::last) else {
            return (if alerted { vec![current(None)] } else { Vec::new() }, None);
        };
        let told_at = UNIX_EPOCH + Duration::from_millis(told.at);
        let after_told = since.is_some_and(|s| millis(s) > told.at);
        // Earlier transitions the old leader did not finish, in order.
        let mut events: Vec<Event> = words
            .map_or(&[][..], Words::undone_before_last)
            .iter()
            .map(|t| {
                let at = Some(UNIX_EPOCH + Duration::from_millis(t.at));
                let transition = if t.is_offline() { offline(at) } else { online(None) };
                self.event_with_id(device, &transition, now, t.id.clone())
            })
            .collect();
        if told.is_offline() {
            if !told.done {
                events.push(self.event_with_id(device, &offline(Some(told_at)), now, told.id.clone()));
            }
            // Before our view began, we saw none of the device's history:
            // offline here is the outage the group knows.
            let unseen = millis(self.view_since) > told.at && device.state == State::Offline;
            if unseen || since.is_some_and(|s| told.is("offline", millis(s))) {
                // The outage the group knows: notified, or now fired.
                return (events, Some(told_at));
            }
            if device.state == State::Online || after_told {
                let id = next_id(cluster, &device.id, EventKind::Online, Some(&told.id), now.wall);
                let back = self.event_with_id(device, &online(Some(told_at)), now, id);
                if alerted {
                    let next = current(Some(&back.id));
                    events.push(back);
                    events.push(next);
                } else {
                    events.push(back);
                }
            }
        } else {
            if !told.done {
                events.push(self.event_with_id(device, &online(None), now, told.id.clone()));
            }
            if alerted && after_told {
                events.push(current(Some(&told.id)));
            }
        }
        (events, None)
    }

    /// Every outage notified and not over, as a leader's last word: what
    /// an instance that joins a cluster with an older state takes as the
    /// group's.
    pub fn outages(&self) -> HashMap<String, Words> {
        let cluster = self.config.cluster.as_ref().map_or("", |c| c.name.as_str());
        self.devices
            .iter()
            .filter(|d| d.notified())
            .filter_map(|d| {
                let since = d.offline_since()?;
                let told = Told {
                    event: EventKind::Offline.as_str().to_string(),
                    id: next_id(cluster, &d.id, EventKind::Offline, None, since),
                    at: millis(since),
                    done: true,
                };
                let mut words = Words::default();
                words.learn(told);
                Some((d.id.to_string(), words))
            })
            .collect()
    }
}
