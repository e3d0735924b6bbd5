//! The fleet in a `[cluster]`: what a new leader fires when it takes over.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Fleet;
use crate::cluster::wire::SAME_TRANSITION;
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
    /// A device with transitions this instance decided as a standby that
    /// the group never said (`left`: its leader was frozen or cut off
    /// meanwhile) fires each of them, in order, as decided, after its own
    /// transition still under way if it has one (it led before a freeze).
    /// Returns the events, with their ids, each with its device's record.
    pub fn take_over(
        &mut self,
        told: &HashMap<String, Words>,
        in_flight: &HashSet<String>,
        mut left: HashMap<String, Vec<Event>>,
        now: Now,
    ) -> Vec<Owed> {
        // Each event, its device, and whether it carries the message it
        // was decided on.
        let mut owed: Vec<(Event, String, bool)> = Vec::new();
        let mut adopted = Vec::new();
        for device in self.devices.iter() {
            let words = told.get(device.id.as_str());
            let ours_under_way = in_flight.contains(device.id.as_str());
            if let Some(decided) = left.remove(device.id.as_str()) {
                if !ours_under_way {
                    // The device's last message came after them.
                    let unfinished = self.unfinished(device, words, now).into_iter().map(|mut e| {
                        e.payload = CHANGED_SINCE.to_string();
                        (e, device.id.to_string(), false)
                    });
                    owed.extend(unfinished);
                }
                let decided = self.chained(device, words, decided);
                owed.extend(decided.into_iter().map(|e| (e, device.id.to_string(), true)));
                continue;
            }
            if ours_under_way {
                continue;
            }
            let (events, adopt) = self.owed(device, words, now);
            owed.extend(events.into_iter().map(|e| (e, device.id.to_string(), false)));
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
            .map(|(mut event, id, as_decided)| {
                let says = self.devices.get(&id).map(|d| d.state);
                let matches = match event.kind {
                    EventKind::Offline => says == Some(State::Offline),
                    _ => says == Some(State::Online),
                };
                if !matches && !as_decided {
                    event.payload = CHANGED_SINCE.to_string();
                }
                tracing::debug!(device = %id, event = %event.kind, event_id = %event.id, "fired at takeover");
                let record = self.devices.get(&id).map(|d| (id.clone(), d.saved()));
                (Box::new(event), record)
            })
            .collect()
    }

    /// The transitions the group's leaders decided for `device` and did not
    /// finish, in order, under their ids. Only the last may carry the
    /// device's last message: the earlier ones came before it.
    fn unfinished(&self, device: &Device, words: Option<&Words>, now: Now) -> Vec<Event> {
        let Some(words) = words else { return Vec::new() };
        let last = words.last().filter(|t| !t.done);
        let earlier = words.undone_before_last().len();
        words
            .undone_before_last()
            .iter()
            .chain(last)
            .enumerate()
            .map(|(i, t)| {
                let at = UNIX_EPOCH + Duration::from_millis(t.at);
                let (kind, previous, offline_since) = if t.is_offline() {
                    (EventKind::Offline, State::Online, Some(at))
                } else {
                    (EventKind::Online, State::Offline, None)
                };
                let transition = Transition { kind, previous, offline_since, offline_for: None };
                let mut event = self.event_with_id(device, &transition, now, t.id.clone());
                if i < earlier {
                    event.payload = CHANGED_SINCE.to_string();
                }
                event
            })
            .collect()
    }

    /// `decided` (by this instance, as a standby) under the ids the group
    /// would have given them: each follows from the one before it, the
    /// first from the group's last word.
    fn chained(&self, device: &Device, words: Option<&Words>, decided: Vec<Event>) -> Vec<Event> {
        let cluster = self.config.cluster.as_ref().map_or("", |c| c.name.as_str());
        let mut previous = words.and_then(Words::last).map(|t| t.id.clone());
        decided
            .into_iter()
            .map(|mut event| {
                event.id = next_id(cluster, &device.id, event.kind, previous.as_deref(), event.established());
                previous = Some(event.id.clone());
                event
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
        // What the old leaders did not finish, in order.
        let mut events = self.unfinished(device, words, now);
        if told.is_offline() {
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
        } else if alerted && after_told {
            events.push(current(Some(&told.id)));
        } else if alerted && device.state == State::Offline {
            // The group saw the device back after the outage this instance
            // still holds (it was away meanwhile and read only the broker's
            // state since): offline now is a new outage, from when it was
            // last read at the latest.
            let since = device.last_seen().filter(|seen| millis(*seen) > told.at).unwrap_or(now.wall);
            let id = next_id(cluster, &device.id, EventKind::Offline, Some(&told.id), since);
            events.push(self.event_with_id(device, &offline(Some(since)), now, id));
            return (events, Some(since));
        }
        (events, None)
    }

    /// The group said `told` of `id` while this instance stands by. An
    /// offline this instance still holds back (its grace, the broker's
    /// confirmation) that began with the one the group notified is that
    /// outage: notified here too, so the device's return is a recovery to
    /// leave to the leader (and to fire at a takeover if it never says it).
    /// Read live, it began when the group's did (`SAME_TRANSITION`); read
    /// from the broker's store since the connect (this instance was away,
    /// or frozen), it began at the latest when it was read, and the group's
    /// offline before that is the one the store holds.
    pub fn group_said(&mut self, id: &str, told: &Told, now: Now) {
        let connects = self.link.connects;
        let Some(device) = self.devices.get_mut(id) else { return };
        let read_late = !device.confirmed(connects, true);
        let same = device.offline_since().is_some_and(|since| {
            told.is(EventKind::Offline.as_str(), millis(since))
                || (read_late && told.is_offline() && told.at <= millis(since) + SAME_TRANSITION)
        });
        if device.state == State::Offline
            && !device.notified()
            && same
            && device.notified_elsewhere(UNIX_EPOCH + Duration::from_millis(told.at), now)
        {
            self.mark_dirty(id);
        }
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
