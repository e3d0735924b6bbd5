//! What a device needs of Sparkplug B's session rules: the node's message
//! sequence, rebirth requests at a bounded rate, an answer expected by a
//! deadline, and the will that overtakes a birth.

use std::time::{Duration, Instant};

use super::{Device, Now, State};

/// A birth of the session whose death came less than this ago is that
/// session's, delivered after its will (through a bridge, say): ignored.
/// A node that restarts and reuses its `bdSeq` takes longer than this.
pub const OVERTAKING_WINDOW: Duration = Duration::from_secs(3);
/// A node is asked for a rebirth at most this often.
pub const REBIRTH_EVERY: Duration = Duration::from_secs(10);

impl Device {
    /// Takes a Sparkplug node's message sequence `seq` (a birth restarts
    /// it); whether it follows the last one seen. The first seen follows.
    pub fn stream_in_order(&mut self, seq: u8, birth: bool) -> bool {
        let rare = self.rare.get_or_insert_default();
        let in_order = birth || rare.stream.is_none_or(|last| last.wrapping_add(1) == seq);
        rare.stream = Some(seq);
        in_order
    }

    /// Whether to ask this node for a rebirth now (at most once per
    /// `REBIRTH_EVERY`); notes that it is asked.
    pub fn may_ask_rebirth(&mut self, now: Instant) -> bool {
        let rare = self.rare.get_or_insert_default();
        if rare.rebirth_asked.is_some_and(|at| now < Instant::from(at) + REBIRTH_EVERY) {
            return false;
        }
        rare.rebirth_asked = Some(now.into());
        true
    }

    /// An answer (any message) is expected within `within`: without one,
    /// the device is offline by silence. Nothing is expected of a device
    /// known offline.
    pub fn expect_within(&mut self, within: Duration, now: Now) {
        if self.state != State::Offline {
            let at = now.mono + within;
            if self.silent_at.is_none_or(|t| Instant::from(t) > at) {
                self.silent_at = Some(at.into());
            }
        }
    }

    /// Whether session `seq` follows session `current` by at most
    /// `MISSED_SESSIONS` (Sparkplug's `bdSeq` counts modulo 256).
    pub(super) fn later_session(&self, current: i64, seq: i64) -> bool {
        let ahead = if self.rules.sparkplug.is_some() { (seq - current).rem_euclid(256) } else { seq - current };
        (1..=super::MISSED_SESSIONS).contains(&ahead)
    }

    /// Whether a birth of session `seq` comes right after the death of
    /// that session or a later one.
    pub(super) fn overtaken(&self, seq: i64, now: Now) -> bool {
        self.state == State::Offline
            && !self.silenced
            && self.seq().is_some_and(|dead| dead == seq || self.later_session(seq, dead))
            && self.since.is_some_and(|t| now.mono < Instant::from(t.mono) + OVERTAKING_WINDOW)
    }
}
