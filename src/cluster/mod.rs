//! Active/standby over MQTT itself: which instance of a `[cluster]` runs
//! the actions, and what the group has notified.
//!
//! Every instance watches every device; only the **leader** fires. The
//! broker is the coordination: a retained claim (`wire::Claim`) names the
//! leader and an epoch that only grows; each instance's presence is
//! retained with its will, so a claim whose holder's will arrived is void.
//! When it is, the first online instance by name claims the next epoch,
//! and leads once its own claim comes back to it (claims order by epoch,
//! then name: two at once resolve the same everywhere, the loser stands
//! down). A claim left by an earlier run of this instance is void too, so
//! a restart always takes over anew.
//!
//! What the group notified travels on `notified`: the leader says each
//! transition its actions are done with, every instance keeps the outages
//! notified and not over (`notified`, saved with the state), and a new
//! leader fires the difference between what it decided and that, with ids
//! derived from the transition (`event_id`), so a transition two instances
//! fire carries one id.
//!
//! Pure: no I/O, no clock. The monitor feeds it what it hears and carries
//! out its `Output`s.

pub mod wire;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Cluster as Settings;
use crate::event::EventKind;
use wire::{Claim, Heard, Notice, SyncRequest, What};

/// Outages per snapshot message: well under the payload limit.
const SNAPSHOT_PART: usize = 4096;

/// What this instance is in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Standby,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Standby => "standby",
        }
    }
}

/// What the monitor is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Publish at QoS 1.
    Publish { topic: String, payload: Vec<u8>, retain: bool },
    /// This instance leads from now on: fire what the group has not
    /// notified (`Cluster::notified`, less what is `in_flight`).
    TakeOver,
    /// Save a device's notified outage (its offline's id), or that it has none.
    Notified(String, Option<String>),
}

/// The cluster as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct View {
    pub name: String,
    pub instance: String,
    pub role: &'static str,
    /// The current claim's epoch (0: none yet).
    pub epoch: u64,
    pub leader: Option<String>,
    /// Every instance heard of, and whether it is up.
    pub peers: BTreeMap<String, bool>,
}

pub struct Cluster {
    settings: Settings,
    prefix: String,
    /// The presence payload that says an instance is gone.
    offline: String,
    connected: bool,
    /// Every retained message of this connection is in.
    synced: bool,
    /// Our marker of this connection, until it comes back.
    hello: Option<String>,
    connections: u64,
    /// The highest claim heard.
    claim: Option<Claim>,
    /// The epoch this run claimed last, if any.
    mine: Option<u64>,
    role: Role,
    members: BTreeMap<String, bool>,
    /// We led when the broker was lost: the broker's own alerts are ours.
    led_when_lost: bool,
    /// Stopped: never claim again.
    stopping: bool,
    /// Outages the group notified and not yet over: device → offline id.
    notified: HashMap<String, String>,
    /// Devices with a transition we fired that is not notified yet.
    in_flight: HashSet<String>,
    /// A snapshot being received, part by part.
    incoming: Option<HashMap<String, String>>,
    takeovers: u64,
    outputs: Vec<Output>,
}

impl Cluster {
    /// A standby of `settings`' group, knowing the outages saved before.
    pub fn new(settings: Settings, offline: &str, notified: HashMap<String, String>) -> Cluster {
        Cluster {
            prefix: wire::prefix(&settings.name),
            settings,
            offline: offline.to_string(),
            connected: false,
            synced: false,
            hello: None,
            connections: 0,
            claim: None,
            mine: None,
            role: Role::Standby,
            members: BTreeMap::new(),
            led_when_lost: false,
            stopping: false,
            notified,
            in_flight: HashSet::new(),
            incoming: None,
            takeovers: 0,
            outputs: Vec::new(),
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The epoch of the current claim (0: none yet).
    pub fn epoch(&self) -> u64 {
        self.claim.as_ref().map_or(0, |c| c.epoch)
    }

    /// How many times this instance took over.
    pub fn takeovers(&self) -> u64 {
        self.takeovers
    }

    pub fn notified(&self) -> &HashMap<String, String> {
        &self.notified
    }

    /// Devices whose transition we fired and is not notified yet: a
    /// takeover does not fire them again.
    pub fn in_flight(&self) -> &HashSet<String> {
        &self.in_flight
    }

    /// Instances up, this one included while connected.
    pub fn peers_up(&self) -> usize {
        let me = &self.settings.instance;
        let others = self.members.iter().filter(|(name, up)| **up && *name != me).count();
        others + usize::from(self.connected)
    }

    /// Marks every notified outage to be saved (they were taken from an
    /// older state, not from the group).
    pub fn save_all(&mut self) {
        let all = self.notified.iter().map(|(d, id)| Output::Notified(d.clone(), Some(id.clone())));
        self.outputs.extend(all.collect::<Vec<_>>());
    }

    /// Whether an event of `kind` decided now is fired here: device events
    /// by the leader, the broker's own by whoever led when it was lost.
    pub fn fires(&self, kind: EventKind) -> bool {
        match kind {
            EventKind::BrokerDown | EventKind::BrokerUp => self.led_when_lost || self.role == Role::Leader,
            _ => self.role == Role::Leader,
        }
    }

    /// Whether `topic` is the cluster's (not a device's).
    pub fn owns(&self, topic: &str) -> bool {
        topic.starts_with(&self.prefix)
    }

    pub fn view(&self) -> View {
        let live = self.live_claim();
        View {
            name: self.settings.name.clone(),
            instance: self.settings.instance.clone(),
            role: self.role.as_str(),
            epoch: self.epoch(),
            leader: live.map(|c| c.instance.clone()),
            peers: self.members.clone(),
        }
    }

    pub fn drain(&mut self) -> std::vec::Drain<'_, Output> {
        self.outputs.drain(..)
    }

    pub fn on_connected(&mut self) {
        self.connected = true;
        self.synced = false;
        self.hello = None;
        self.connections += 1;
    }

    /// Every subscription is acknowledged: send ourselves the marker.
    pub fn on_subscribed(&mut self) {
        if !self.connected || self.synced || self.hello.is_some() {
            return;
        }
        let nonce = format!("{}", self.connections);
        self.publish(format!("hello/{}", self.settings.instance), nonce.clone().into_bytes(), false);
        self.hello = Some(nonce);
    }

    /// The link is gone: nobody leads from here until it is back and the
    /// claim is still ours.
    pub fn on_disconnected(&mut self) {
        self.connected = false;
        self.synced = false;
        self.hello = None;
        self.led_when_lost = self.role == Role::Leader;
        if self.role == Role::Leader {
            tracing::warn!(instance = %self.settings.instance, "lost the broker while leading; firing nothing until it is back");
        }
        self.role = Role::Standby;
    }

    /// A message under the cluster's prefix.
    pub fn on_message(&mut self, topic: &str, payload: &[u8]) {
        let rest = &topic[self.prefix.len().min(topic.len())..];
        let heard = match wire::read(rest, payload, &self.offline) {
            Ok(heard) => heard,
            Err(e) => {
                tracing::warn!(topic, error = %e, "ignored a cluster message that is not understood");
                return;
            }
        };
        match heard {
            Heard::Claim(claim) => self.on_claim(claim),
            Heard::Member { instance, online } => {
                if self.members.insert(instance.clone(), online) != Some(online) {
                    tracing::info!(peer = %instance, up = online, "cluster member {}", if online { "up" } else { "gone" });
                }
            }
            Heard::Hello { instance, nonce } => {
                if instance == self.settings.instance && self.hello.as_deref() == Some(nonce.as_str()) {
                    self.hello = None;
                    self.synced = true;
                    if self.live_claim().is_some_and(|c| c.instance != self.settings.instance) {
                        let request = SyncRequest { instance: self.settings.instance.clone() };
                        self.publish("sync".into(), json(&request), false);
                    }
                }
            }
            Heard::Sync(request) => {
                if self.role == Role::Leader && request.instance != self.settings.instance {
                    self.publish_snapshot();
                }
            }
            Heard::Notice(notice) => self.on_notice(notice),
        }
        self.evaluate();
    }

    /// The actions are done with a transition we fired: the group is told.
    pub fn completed(&mut self, device: &str, kind: EventKind, id: &str) {
        self.in_flight.remove(device);
        if !matches!(kind, EventKind::Offline | EventKind::Online) {
            return;
        }
        self.note(device, kind, id);
        let notice = Notice {
            by: self.settings.instance.clone(),
            epoch: self.epoch(),
            what: What::Transition { device: device.to_string(), event: kind.as_str().to_string(), id: id.to_string() },
        };
        self.publish("notified".into(), json(&notice), false);
    }

    /// We fired a transition of `device`.
    pub fn fired(&mut self, device: &str) {
        self.in_flight.insert(device.to_string());
    }

    /// A clean stop: a leader hands over at once.
    pub fn stop(&mut self) {
        self.stopping = true;
        if self.role == Role::Leader {
            let claim = Claim { instance: self.settings.instance.clone(), epoch: self.epoch(), released: true };
            tracing::info!(epoch = claim.epoch, "stopping: leadership released");
            self.publish("leader".into(), json(&claim), true);
            self.role = Role::Standby;
        }
    }

    fn on_claim(&mut self, claim: Option<Claim>) {
        let Some(claim) = claim else { return };
        let newer = match &self.claim {
            None => true,
            Some(current) => claim.key() > current.key() || (claim.key() == current.key() && claim.released),
        };
        if newer {
            self.claim = Some(claim);
            return;
        }
        tracing::debug!(instance = %claim.instance, epoch = claim.epoch, "ignored a claim older than the current one");
        // A losing claim published after the winner is what the broker now
        // retains: say the winner again, so instances to come see it too.
        if let Some(current) = self.claim.clone()
            && current.key() > claim.key()
        {
            self.publish("leader".into(), json(&current), true);
        }
    }

    fn on_notice(&mut self, notice: Notice) {
        if notice.by == self.settings.instance {
            return;
        }
        match notice.what {
            What::Transition { device, event, id } => match event.parse::<EventKind>() {
                Ok(kind) => self.note(&device, kind, &id),
                Err(()) => {
                    tracing::warn!(device = %device, event = %event, "ignored a notice of an unknown transition")
                }
            },
            What::Snapshot { part, last, outages } => {
                if part == 0 {
                    self.incoming = Some(HashMap::new());
                }
                let Some(incoming) = self.incoming.as_mut() else { return };
                incoming.extend(outages);
                if last {
                    let snapshot = self.incoming.take().unwrap_or_default();
                    self.replace_notified(snapshot);
                }
            }
        }
    }

    /// Keeps `device`'s notified outage as a notice says.
    fn note(&mut self, device: &str, kind: EventKind, id: &str) {
        let changed = match kind {
            EventKind::Offline => self.notified.insert(device.to_string(), id.to_string()).as_deref() != Some(id),
            EventKind::Online => self.notified.remove(device).is_some(),
            _ => false,
        };
        if changed {
            let id = (kind == EventKind::Offline).then(|| id.to_string());
            self.outputs.push(Output::Notified(device.to_string(), id));
        }
    }

    fn replace_notified(&mut self, snapshot: HashMap<String, String>) {
        let old = std::mem::take(&mut self.notified);
        for device in old.keys().filter(|d| !snapshot.contains_key(*d)) {
            self.outputs.push(Output::Notified(device.clone(), None));
        }
        for (device, id) in &snapshot {
            if old.get(device) != Some(id) {
                self.outputs.push(Output::Notified(device.clone(), Some(id.clone())));
            }
        }
        self.notified = snapshot;
    }

    /// The current claim while its holder is up (and, if it is us, made by
    /// this run): the group has a leader.
    fn live_claim(&self) -> Option<&Claim> {
        let claim = self.claim.as_ref()?;
        let ours = claim.instance == self.settings.instance;
        let up = if ours { self.connected } else { self.members.get(&claim.instance) == Some(&true) };
        (!claim.released && up && (!ours || self.mine == Some(claim.epoch))).then_some(claim)
    }

    /// Decides the role after anything changed, and claims when the group
    /// has no leader and we are first in line.
    fn evaluate(&mut self) {
        if !self.connected || !self.synced {
            return;
        }
        let me = self.settings.instance.clone();
        let live = self.live_claim().cloned();
        match &live {
            Some(claim) if claim.instance == me => {
                if self.role != Role::Leader {
                    self.role = Role::Leader;
                    self.led_when_lost = false;
                    self.takeovers += 1;
                    tracing::info!(instance = %me, epoch = claim.epoch, "leading the cluster");
                    self.outputs.push(Output::TakeOver);
                    self.publish_snapshot();
                }
                return;
            }
            Some(claim) => {
                if self.role == Role::Leader {
                    tracing::warn!(instance = %me, winner = %claim.instance, epoch = claim.epoch,
                        "another instance holds a higher claim; standing down");
                }
                self.role = Role::Standby;
                return;
            }
            None => {}
        }
        self.role = Role::Standby;
        let current = self.epoch();
        let waiting = self.mine.is_some_and(|m| m > current);
        if self.stopping || waiting {
            return;
        }
        // Who released is on its way out, even while still connected.
        let leaving = self.claim.as_ref().filter(|c| c.released).map(|c| c.instance.as_str());
        let first = self
            .members
            .iter()
            .filter(|(name, up)| **up && Some(name.as_str()) != leaving)
            .map(|(name, _)| name.as_str())
            .chain(std::iter::once(me.as_str()))
            .min()
            .map(str::to_string);
        let stale_of_ours =
            self.claim.as_ref().filter(|c| c.instance == me && !c.released && self.mine != Some(c.epoch));
        if let Some(stale) = stale_of_ours.filter(|_| first.as_deref() != Some(me.as_str())) {
            // Left by an earlier run of ours and the others may take it as
            // live: say it is void, so whoever is first in line claims.
            let released = Claim { released: true, ..stale.clone() };
            tracing::info!(epoch = released.epoch, "releasing the claim an earlier run of this instance left");
            self.publish("leader".into(), json(&released), true);
        } else if first.as_deref() == Some(me.as_str()) {
            let claim = Claim { instance: me, epoch: current + 1, released: false };
            tracing::info!(epoch = claim.epoch, previous = ?self.claim.as_ref().map(|c| &c.instance), "the cluster has no leader; claiming");
            self.mine = Some(claim.epoch);
            self.publish("leader".into(), json(&claim), true);
        }
    }

    fn publish_snapshot(&mut self) {
        let mut outages: Vec<(String, String)> = self.notified.iter().map(|(d, i)| (d.clone(), i.clone())).collect();
        outages.sort();
        let parts: Vec<&[(String, String)]> =
            if outages.is_empty() { vec![&[]] } else { outages.chunks(SNAPSHOT_PART).collect() };
        let count = parts.len();
        for (part, chunk) in parts.into_iter().enumerate() {
            let notice = Notice {
                by: self.settings.instance.clone(),
                epoch: self.epoch(),
                what: What::Snapshot { part: part as u32, last: part + 1 == count, outages: chunk.to_vec() },
            };
            let payload = json(&notice);
            self.publish("notified".into(), payload, false);
        }
    }

    fn publish(&mut self, rest: String, payload: Vec<u8>, retain: bool) {
        self.outputs.push(Output::Publish { topic: format!("{}{rest}", self.prefix), payload, retain });
    }
}

/// The id of a device's transition in a cluster: the same on every
/// instance that fires it, made from the device, the transition and the
/// second the broker's message established it (`established`: when the
/// device went offline, or came back).
pub fn event_id(cluster: &str, device: &str, kind: EventKind, established: SystemTime) -> String {
    let second = established.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs().to_string();
    crate::event::derived_id([cluster, device, kind.as_str(), second.as_str()])
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("cluster messages always serialise")
}

#[cfg(test)]
mod tests;
