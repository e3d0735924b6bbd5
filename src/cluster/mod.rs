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
//! transition it decides, and its actions run once that word came back
//! from the broker (so every instance has it before any receiver has the
//! notification); it says so again when they are done with it. Every instance keeps each device's last word (`told`,
//! saved with the state), and a new leader fires the difference between
//! what it decided itself and that (`Fleet::take_over`): a transition
//! decided and not done again under its own id, one nobody decided under
//! an id derived from the transition and the device's last word
//! (`next_id`), so a transition two instances fire carries one id.
//!
//! Pure: no I/O, no clock. The monitor feeds it what it hears and carries
//! out its `Output`s.

pub mod wire;
mod words;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::event::{Event, EventKind};
pub use wire::Told;
use wire::{Claim, Heard, Notice, SyncRequest, What};
pub use words::Words;

/// Devices per snapshot message: well under the payload limit.
const SNAPSHOT_PART: usize = 2048;
/// Transitions of one device a standby keeps while the group has not said
/// them (`Cluster::left`); past that the oldest goes, logged.
const LEFT_MAX: usize = 16;

/// `[cluster]`: instances of one `name` form an active/standby group in
/// which one, the leader, runs the actions. Validated by the config, which
/// holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub name: String,
    /// This instance's name among them (the host name unless set).
    pub instance: String,
    /// The host it runs on: told to another run that asks for its name.
    pub host: String,
}

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
    /// notified (`Cluster::told`, less what is `in_flight`).
    TakeOver,
    /// Save what was said of a device.
    Told(String, Words),
    /// Our word numbered so came back from the broker: every instance has
    /// it (and every word before it), their events may go out.
    Confirmed(u64),
    /// The link is gone: words not yet confirmed may never be; their
    /// events are left to whoever leads next (`Cluster::undecided`).
    Unconfirmed,
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
    /// The epoch of an earlier run's claim this run said is void.
    voided: Option<u64>,
    role: Role,
    members: BTreeMap<String, bool>,
    /// We led when the broker was lost: the broker's own alerts are ours.
    led_when_lost: bool,
    /// Stopped: never claim again.
    stopping: bool,
    /// Each device's last word from a leader: its latest transition.
    told: HashMap<String, Words>,
    /// Words of ours not yet published.
    unsent: Vec<(String, Told)>,
    /// The number of our last word (words are numbered from `run`).
    said: u64,
    /// This run of the instance.
    run: wire::Run,
    /// Devices with a transition we fired that is not notified yet.
    in_flight: HashSet<String>,
    /// A snapshot being received, part by part.
    incoming: Option<HashMap<String, Words>>,
    /// Transitions this standby decided and left to the leader, by device,
    /// oldest first, until the group's word covers them. A leader frozen or
    /// cut off meanwhile said none of them: a takeover fires each, in order,
    /// not only the difference they add up to.
    left: HashMap<String, Vec<Event>>,
    outputs: Vec<Output>,
}

impl Cluster {
    /// A standby of `settings`' group, knowing what was saved before.
    /// `run` tells this run of the instance from earlier ones (whose words
    /// a persistent session may still deliver): it must grow from run to
    /// run, as the time of the start does.
    pub fn new(settings: Settings, offline: &str, told: HashMap<String, Words>, run: wire::Run) -> Cluster {
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
            voided: None,
            role: Role::Standby,
            members: BTreeMap::new(),
            led_when_lost: false,
            stopping: false,
            told,
            unsent: Vec::new(),
            said: run.at,
            run,
            in_flight: HashSet::new(),
            incoming: None,
            left: HashMap::new(),
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

    pub fn told(&self) -> &HashMap<String, Words> {
        &self.told
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

    /// Marks everything told to be saved (it was taken from an older
    /// state, not from the group).
    pub fn save_all(&mut self) {
        let all = self.told.iter().map(|(d, w)| Output::Told(d.clone(), w.clone()));
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
        let nonce = format!("{}-{}", self.run.at, self.connections);
        self.publish(format!("hello/{}", self.settings.instance), nonce.clone().into_bytes(), false);
        self.hello = Some(nonce);
    }

    /// The link is gone: nobody leads from here until it is back and the
    /// claim is still ours.
    pub fn on_disconnected(&mut self) {
        self.outputs.push(Output::Unconfirmed);
        self.connected = false;
        self.synced = false;
        self.hello = None;
        self.led_when_lost = self.role == Role::Leader;
        if self.role == Role::Leader {
            tracing::warn!(instance = %self.settings.instance, "lost the broker while leading; firing nothing until it is back");
        }
        self.role = Role::Standby;
    }

    /// This instance did not run for a while (frozen, starved): it may
    /// have been replaced meanwhile, so a leader stops firing until a round
    /// trip through the broker shows its claim still stands.
    pub fn on_stalled(&mut self, stalled: std::time::Duration) {
        if !self.connected {
            return;
        }
        if self.role == Role::Leader {
            tracing::warn!(instance = %self.settings.instance, stalled_ms = stalled.as_millis() as u64,
                "this instance did not run for a while; firing nothing until the cluster confirms it still leads");
            self.role = Role::Standby;
        }
        self.synced = false;
        self.hello = None;
        self.on_subscribed();
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
                    let leader = self.live_claim().map(|c| c.instance.clone());
                    tracing::info!(instance = %self.settings.instance, leader = leader.as_deref().unwrap_or("none"),
                        epoch = self.epoch(), what = "cluster_synced", "in sync with the cluster");
                    if self.live_claim().is_some_and(|c| c.instance != self.settings.instance) {
                        let request = SyncRequest { instance: self.settings.instance.clone() };
                        self.publish("sync".into(), json(&request), false);
                    }
                }
            }
            Heard::Who { instance, who } => {
                if instance == self.settings.instance && who.asking != self.run.asking {
                    tracing::error!(instance = %instance, asking = %who.asking, clash = true,
                        "another run of this instance name asked to join the cluster; it is told this one holds the name");
                    let here = wire::Here { asking: who.asking, run: self.run.at, host: self.settings.host.clone() };
                    self.publish(format!("here/{instance}"), json(&here), false);
                }
            }
            Heard::Here => {}
            Heard::Sync(request) => {
                if self.role == Role::Leader && request.instance != self.settings.instance {
                    self.publish_snapshot();
                }
            }
            Heard::Notice(notice) => self.on_notice(notice),
        }
        self.evaluate();
    }

    /// The id `event` fires under: the next of the device's chain
    /// (`next_id`), after the group's last word on it.
    pub fn id_for(&self, event: &Event) -> String {
        let previous = self.told.get(&event.device).and_then(Words::last).map(|t| t.id.as_str());
        next_id(&self.settings.name, &event.device, event.kind, previous, event.established())
    }

    /// We fire a device's transition: the group is told before the
    /// actions run.
    pub fn decided(&mut self, event: &Event) {
        if let Some(told) = told_of(event, false) {
            self.in_flight.insert(event.device.clone());
            self.learn(&event.device, told.clone());
            self.unsent.push((event.device.clone(), told));
        }
    }

    /// A device's transition this standby decided and leaves to the leader:
    /// kept until the group says it (or one after it). Whether the oldest
    /// kept for that device was dropped to make room (`LEFT_MAX`).
    pub fn left_to_leader(&mut self, event: &Event) -> bool {
        if !matches!(event.kind, EventKind::Offline | EventKind::Online) {
            return false;
        }
        // A device's transitions alternate. With nothing of this device
        // left unsaid, the group's last word is the transition this
        // standby decided before this one, or this one itself (said before
        // this standby read it, or read late: a reconnect's replay).
        // A transition older than that word is one the group said before
        // it (this standby is behind).
        let at = millis(event.established());
        if !self.left.contains_key(&event.device)
            && self
                .told
                .get(&event.device)
                .and_then(Words::last)
                .is_some_and(|last| last.event == event.kind.as_str() || at + wire::SAME_TRANSITION < last.at)
        {
            return false;
        }
        let left = self.left.entry(event.device.clone()).or_default();
        let full = left.len() == LEFT_MAX;
        if full {
            let gone = left.remove(0);
            tracing::warn!(device = %gone.device, event = %gone.kind, kept = LEFT_MAX,
                "the leader has said none of this device's last transitions; the oldest is no longer kept for a takeover");
        }
        left.push(event.clone());
        full
    }

    /// The group's last word on `device`, unless this standby decided a
    /// transition of it since that the group has not said.
    pub fn last_word(&self, device: &str) -> Option<&Told> {
        if self.left.contains_key(device) {
            return None;
        }
        self.told.get(device).and_then(Words::last)
    }

    /// Takes what this standby left to the leader and the group never
    /// said: a takeover fires it.
    pub fn take_left(&mut self) -> HashMap<String, Vec<Event>> {
        std::mem::take(&mut self.left)
    }

    /// The actions are done with a transition we fired: the group is told.
    pub fn completed(&mut self, event: &Event) {
        self.in_flight.remove(&event.device);
        if let Some(told) = told_of(event, true) {
            self.learn(&event.device, told.clone());
            self.unsent.push((event.device.clone(), told));
        }
    }

    /// Publishes what we decided or finished since the last call, in as
    /// few messages as fit; returns the number of the last (it comes
    /// back `Confirmed`), if any.
    pub fn flush(&mut self) -> Option<u64> {
        let unsent = std::mem::take(&mut self.unsent);
        for chunk in unsent.chunks(SNAPSHOT_PART) {
            self.said += 1;
            let notice = Notice {
                by: self.settings.instance.clone(),
                epoch: self.epoch(),
                seq: self.said,
                what: What::Transitions { transitions: chunk.to_vec() },
            };
            self.publish("notified".into(), json(&notice), false);
        }
        (!unsent.is_empty()).then_some(self.said)
    }

    /// A transition we decided will not go out from here (the link went
    /// before the group had our word on it).
    pub fn undecided(&mut self, device: &str) {
        self.in_flight.remove(device);
    }

    /// A clean stop: a leader hands over at once.
    pub fn stop(&mut self) {
        self.stopping = true;
        if self.role == Role::Leader {
            let claim = Claim { instance: self.settings.instance.clone(), epoch: self.epoch(), released: true };
            tracing::info!(epoch = claim.epoch, what = "cluster_released", "stopping: leadership released");
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
            if matches!(notice.what, What::Transitions { .. }) {
                self.outputs.push(Output::Confirmed(notice.seq));
            }
            return;
        }
        match notice.what {
            What::Transitions { transitions } => {
                tracing::debug!(by = %notice.by, transitions = transitions.len(), "heard the leader's word");
                for (device, told) in transitions {
                    self.learn(&device, told);
                }
            }
            What::Snapshot { part, last, told } => {
                if part == 0 {
                    self.incoming = Some(HashMap::new());
                }
                let Some(incoming) = self.incoming.as_mut() else { return };
                incoming.extend(told);
                if last {
                    let snapshot = self.incoming.take().unwrap_or_default();
                    self.replace_told(snapshot);
                }
            }
        }
    }

    /// Takes `told` into what was said of `device` (`Words::learn`).
    fn learn(&mut self, device: &str, told: Told) {
        // A word on a transition already known (now done) says nothing new
        // of what this standby decided since.
        if !self.told.get(device).is_some_and(|w| w.has(&told.id)) {
            self.covered(device, &told);
        }
        let words = self.told.entry(device.to_string()).or_default();
        if words.learn(told) {
            let words = words.clone();
            self.outputs.push(Output::Told(device.to_string(), words));
        }
    }

    fn replace_told(&mut self, snapshot: HashMap<String, Words>) {
        let old = std::mem::take(&mut self.told);
        for device in old.keys().filter(|d| !snapshot.contains_key(*d)) {
            self.outputs.push(Output::Told(device.clone(), Words::default()));
        }
        for (device, words) in &snapshot {
            if let Some(last) = words.last() {
                self.covered(device, last);
            }
            if old.get(device) != Some(words) {
                self.outputs.push(Output::Told(device.clone(), words.clone()));
            }
        }
        self.told = snapshot;
    }

    /// The group said `told` of `device`: what this standby left to the
    /// leader up to that transition is said. Words come in the order the
    /// leader decided and a device's transitions alternate, so it is the
    /// oldest of its kind (the times two instances see differ when one
    /// reads late).
    fn covered(&mut self, device: &str, told: &Told) {
        let Some(left) = self.left.get_mut(device) else { return };
        let Some(said) = left.iter().position(|e| e.kind.as_str() == told.event) else { return };
        left.drain(..=said);
        if left.is_empty() {
            self.left.remove(device);
        }
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
                    tracing::info!(instance = %me, epoch = claim.epoch, what = "cluster_leading", "leading the cluster");
                    // Said again: a broker that restarted without its
                    // retained messages has it back for instances to come.
                    self.publish("leader".into(), json(claim), true);
                    self.outputs.push(Output::TakeOver);
                    self.publish_snapshot();
                }
                return;
            }
            Some(claim) => {
                if self.role == Role::Leader {
                    tracing::warn!(instance = %me, winner = %claim.instance, epoch = claim.epoch,
                        what = "cluster_standing_down", "another instance holds a higher claim; standing down");
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
        let stale_of_ours = self
            .claim
            .as_ref()
            .filter(|c| c.instance == me && !c.released && self.mine != Some(c.epoch) && self.voided != Some(c.epoch));
        if let Some(stale) = stale_of_ours.filter(|_| first.as_deref() != Some(me.as_str())) {
            // Left by an earlier run of ours and the others may take it as
            // live: say it is void, so whoever is first in line claims.
            let released = Claim { released: true, ..stale.clone() };
            tracing::info!(epoch = released.epoch, "releasing the claim an earlier run of this instance left");
            self.voided = Some(released.epoch);
            self.publish("leader".into(), json(&released), true);
        } else if first.as_deref() == Some(me.as_str()) {
            let claim = Claim { instance: me, epoch: current + 1, released: false };
            tracing::info!(epoch = claim.epoch, previous = ?self.claim.as_ref().map(|c| &c.instance), "the cluster has no leader; claiming");
            self.mine = Some(claim.epoch);
            self.publish("leader".into(), json(&claim), true);
        }
    }

    fn publish_snapshot(&mut self) {
        let mut told: Vec<(String, Words)> = self.told.iter().map(|(d, w)| (d.clone(), w.clone())).collect();
        told.sort_by(|a, b| a.0.cmp(&b.0));
        let parts: Vec<&[(String, Words)]> =
            if told.is_empty() { vec![&[]] } else { told.chunks(SNAPSHOT_PART).collect() };
        let count = parts.len();
        for (part, chunk) in parts.into_iter().enumerate() {
            let notice = Notice {
                by: self.settings.instance.clone(),
                epoch: self.epoch(),
                seq: 0,
                what: What::Snapshot { part: part as u32, last: part + 1 == count, told: chunk.to_vec() },
            };
            self.publish("notified".into(), json(&notice), false);
        }
    }

    fn publish(&mut self, rest: String, payload: Vec<u8>, retain: bool) {
        self.outputs.push(Output::Publish { topic: format!("{}{rest}", self.prefix), payload, retain });
    }
}

/// The id of a device's transition in a cluster, derived from the
/// transition itself: the device, the transition, and the id of the
/// device's transition before it (`previous`, the group's last word), so
/// every instance that knows the same last word makes the same id, and
/// each transition of a device a new one. With no last word, the moment
/// the broker's message established it (to the millisecond) stands in.
pub fn next_id(
    cluster: &str,
    device: &str,
    kind: EventKind,
    previous: Option<&str>,
    established: SystemTime,
) -> String {
    let at = millis(established).to_string();
    let after = previous.unwrap_or(&at);
    crate::event::derived_id([cluster, device, kind.as_str(), after])
}

/// What a leader says of `event`: a device's transition, and when it was
/// established (an offline: when the device went offline).
fn told_of(event: &Event, done: bool) -> Option<Told> {
    if !matches!(event.kind, EventKind::Offline | EventKind::Online) {
        return None;
    }
    Some(Told { event: event.kind.as_str().to_string(), id: event.id.clone(), at: millis(event.established()), done })
}

/// Milliseconds since the Unix epoch.
pub fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("cluster messages always serialise")
}

#[cfg(test)]
mod tests;
