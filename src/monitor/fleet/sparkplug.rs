//! The fleet's Sparkplug B rules: births and deaths of edge nodes and
//! their devices, read from protobuf payloads, and rebirth requests.
//!
//! - NBIRTH / NDEATH carry the session's `bdSeq`: a death of another
//!   session than the current birth's is stale and ignored; a birth of the
//!   session whose death just came (the will overtook it) is ignored too
//!   (`Device::on_reading`). Should that birth be a new life that reused
//!   the number within `OVERTAKING_WINDOW`, the node's next data asks for
//!   a rebirth, which counts once the window is past.
//! - An NDEATH takes every device of the node offline, held for the node:
//!   one alert for the node, none for its devices (`hold_children`). When
//!   the node is back, a device that does not send its DBIRTH soon fires
//!   its own offline.
//! - A DBIRTH while its node is not online does not make the device
//!   online, and data from a node or device not known online, or a gap in
//!   a node's message sequence, asks the node for a rebirth (an NCMD with
//!   `Node Control/Rebirth`), at most once per `REBIRTH_EVERY`.
//! - Where willwatch may have missed messages (after a connect, after a
//!   storm of deaths) re-reading means asking for a rebirth: those asked
//!   must answer within `REBIRTH_ANSWER`, or are offline by silence.

use std::time::Duration;

use compact_str::{CompactString, format_compact};

use super::confirm::Source;
use super::{Effect, Fleet};
use crate::config::{DeviceSpec, SparkplugLevel};
use crate::device::{Now, State};
use crate::payload::Reading;
use crate::sparkplug::payload::{Sequence, decode_for};
use crate::sparkplug::topic::{Topic, Verb, command_topic};

/// How long a node (and its devices) asked for a rebirth have to answer
/// where willwatch may have missed its death.
pub const REBIRTH_ANSWER: Duration = Duration::from_secs(15);

/// The payload shown for a device taken offline by its node's death.
pub const NODE_OFFLINE: &str = "(edge node offline)";

impl Fleet {
    /// A message on a Sparkplug topic that `spec` watches (`unfinished`:
    /// one the last run got and did not take in).
    pub(super) fn sparkplug_message(
        &mut self,
        topic: &Topic<'_>,
        spec: &DeviceSpec,
        payload: &[u8],
        unfinished: bool,
        now: Now,
    ) {
        let sequence = match decode_for(topic.verb, payload) {
            Ok(sequence) => sequence,
            Err(e) => {
                self.metrics.unrecognized.inc();
                if let Some(suppressed) = self.malformed.allow(now.mono) {
                    tracing::warn!(topic = %topic.death_topic(), verb = topic.verb.as_str(), bytes = payload.len(), error = %e,
                        suppressed, what = "sparkplug_malformed", "malformed Sparkplug payload; ignored");
                }
                return;
            }
        };
        let id = CompactString::from(topic.id());
        let node = CompactString::from(topic.node_id());
        if !self.admit(&id, spec, &topic.death_topic(), now) {
            return;
        }
        if let (Some(seq), true) = (sequence.seq, topic.verb != Verb::NDeath)
            && self.follows_stream(&node)
            && let Some(device) = self.devices.get_mut(&node)
            && !device.stream_in_order(seq, topic.verb == Verb::NBirth)
        {
            self.metrics.sparkplug_out_of_sequence.inc();
            tracing::debug!(node = %node, seq, "Sparkplug message out of sequence: asking for a rebirth");
            self.ask_rebirth(&node, now);
        }
        let shown = shown(topic.verb, sequence);
        // Never retained: live or queued, unless the last run got it.
        let source = if unfinished { Source::Unfinished } else { self.source(false) };
        match topic.verb {
            Verb::NBirth => self.apply(&id, Reading::Online { seq: sequence.bd_seq }, shown, source, now),
            Verb::NDeath => self.apply(&id, Reading::Offline { seq: sequence.bd_seq }, shown, source, now),
            Verb::DDeath => self.apply(&id, Reading::Offline { seq: None }, shown, source, now),
            Verb::DBirth if self.is_online(&node) => self.apply(&id, Reading::Online { seq: None }, shown, source, now),
            Verb::DBirth => {
                tracing::debug!(device = %id, node = %node, "DBIRTH while its node is not online: ignored; asking for a rebirth");
                self.ask_rebirth(&node, now);
            }
            Verb::NData | Verb::DData => {
                if let Some(device) = self.devices.get_mut(&id) {
                    device.heard(self.link.connects, true);
                }
                self.on_heartbeat(&id, now);
                if !self.is_online(&id) || !self.is_online(&node) {
                    self.ask_rebirth(&node, now);
                }
            }
        }
    }

    /// Whether every message of the node's stream reaches us (its devices'
    /// too), so a gap in its sequence means something was lost.
    fn follows_stream(&self, node: &str) -> bool {
        self.devices.get(node).is_some_and(|d| d.rules.sparkplug == Some(SparkplugLevel::Node { with_devices: true }))
    }

    fn is_online(&self, id: &str) -> bool {
        self.devices.get(id).is_some_and(|d| d.state == State::Online)
    }

    /// Asks the edge node `node` for a rebirth, unless it was asked lately.
    fn ask_rebirth(&mut self, node: &str, now: Now) {
        let Some(device) = self.devices.get_mut(node) else { return };
        if device.may_ask_rebirth(now.mono)
            && let Some(topic) = command_topic(&device.topic)
        {
            self.metrics.sparkplug_rebirths.inc();
            self.effects.push(Effect::Rebirth(topic));
        }
    }

    /// Re-reads Sparkplug devices: their nodes are asked for a rebirth, and
    /// each must answer within `REBIRTH_ANSWER` unless known offline.
    pub(super) fn ask_rebirths(&mut self, ids: Vec<CompactString>, now: Now) {
        let mut nodes = Vec::new();
        for id in &ids {
            let Some(device) = self.devices.get_mut(id) else { continue };
            device.expect_within(REBIRTH_ANSWER, now);
            nodes.push(CompactString::from(device.rules.parent_of(id).unwrap_or(id)));
            self.arm(id);
        }
        nodes.sort_unstable();
        nodes.dedup();
        tracing::info!(nodes = nodes.len(), devices = ids.len(), "asking Sparkplug edge nodes for a rebirth");
        for node in nodes {
            self.ask_rebirth(&node, now);
        }
    }
}

/// What `/status` and events show of a Sparkplug message.
fn shown(verb: Verb, sequence: Sequence) -> CompactString {
    match sequence.bd_seq {
        Some(bd_seq) => format_compact!("{} bdSeq={bd_seq}", verb.as_str()),
        None => CompactString::from(verb.as_str()),
    }
}
