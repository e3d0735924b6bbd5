//! Acknowledgements of QoS 1 messages, sent once what a message decided
//! is committed: the broker keeps a message until we acknowledge it, so a
//! crash between a message and its commit gets it again (redelivered, its
//! DUP flag set) instead of losing it.
//!
//! The session numbers each live message it passes on (its *mark*); the
//! state writer says how far what the monitor decided is committed
//! (`release`). A retained message needs no mark: it is the broker's
//! stored state, read again at the next subscribe whatever happens.
//! Acknowledgements go out in the order the messages came (MQTT 3.1.1
//! 4.6.0-2), those of messages the session kept to itself (probes, the
//! broker's uptime, dropped ones) as soon as everything before them is.
//!
//! The broker sends a client only so many unacknowledged messages (its
//! inflight window: mosquitto's `max_inflight_messages`, 20 by default)
//! and queues the rest, up to a limit past which it drops them. So at
//! most `HELD_MAX` wait: past it the oldest is acknowledged before its
//! commit (counted), and intake never waits for the disk.

use std::collections::VecDeque;

use rumqttc::{Publish, QoS};

/// Acknowledgements held for a commit at most, under mosquitto's default
/// inflight window (20).
pub const HELD_MAX: usize = 16;

/// What waits to be acknowledged.
#[derive(Default)]
pub struct Acks {
    /// Packet id and QoS of each unacknowledged message, in order, with
    /// the mark that must be committed first (`None`: none).
    held: VecDeque<(Option<u64>, u16, QoS)>,
    next_mark: u64,
    /// Every mark up to this one is committed.
    committed: u64,
}

/// A message's place in the session's order, and its packet id (the same
/// when the broker sends it again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub n: u64,
    pub pkid: u16,
}

/// A message to acknowledge now.
pub struct Due {
    pub pkid: u16,
    pub qos: QoS,
    /// Sent before what it decided was committed (`HELD_MAX` reached).
    pub early: bool,
}

impl Due {
    /// The packet rumqttc acknowledges: it reads only the id and the QoS.
    pub fn packet(&self) -> Publish {
        let mut publish = Publish::new("", self.qos, Vec::new());
        publish.pkid = self.pkid;
        publish
    }
}

impl Acks {
    /// Acknowledgements for a session whose marks follow `last` (an
    /// earlier session's, whose marks may still be on their way back).
    pub fn after(last: u64) -> Acks {
        Acks { next_mark: last, committed: last, ..Acks::default() }
    }

    /// The last mark given.
    pub fn last_mark(&self) -> u64 {
        self.next_mark
    }

    /// A message passed on to the monitor: its mark, if its
    /// acknowledgement waits for a commit (QoS 1 and 2, not retained).
    pub fn passed(&mut self, publish: &Publish) -> Option<Mark> {
        if publish.qos == QoS::AtMostOnce {
            return None;
        }
        if publish.retain {
            self.kept(publish);
            return None;
        }
        self.next_mark += 1;
        self.held.push_back((Some(self.next_mark), publish.pkid, publish.qos));
        Some(Mark { n: self.next_mark, pkid: publish.pkid })
    }

    /// A message the session handled itself: acknowledged in turn.
    pub fn kept(&mut self, publish: &Publish) {
        if publish.qos != QoS::AtMostOnce {
            self.held.push_back((None, publish.pkid, publish.qos));
        }
    }

    /// Everything the monitor decided up to `mark` is committed.
    pub fn release(&mut self, mark: u64) {
        self.committed = self.committed.max(mark);
    }

    /// The next message that may be acknowledged now, in order: everything
    /// committed, and the oldest past `HELD_MAX`. It stays first until
    /// `sent` (rumqttc's queue may be full: then it waits, never lost).
    pub fn next(&self) -> Option<Due> {
        let &(mark, pkid, qos) = self.held.front()?;
        let committed = mark.is_none_or(|m| m <= self.committed);
        (committed || self.held.len() > HELD_MAX).then_some(Due { pkid, qos, early: !committed })
    }

    /// The acknowledgement `next` gave is queued.
    pub fn sent(&mut self) {
        self.held.pop_front();
    }

    /// The connection went: the broker sends again what we did not
    /// acknowledge (an acknowledgement now would be for the next
    /// connection's packet ids).
    pub fn lost(&mut self) {
        self.held.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(pkid: u16, qos: QoS) -> Publish {
        let mut p = Publish::new("t", qos, Vec::new());
        p.pkid = pkid;
        p
    }

    /// Every acknowledgement due now, sent.
    fn ids(acks: &mut Acks) -> Vec<(u16, bool)> {
        std::iter::from_fn(|| {
            let due = acks.next()?;
            acks.sent();
            Some((due.pkid, due.early))
        })
        .collect()
    }

    #[test]
    fn a_message_is_acknowledged_once_its_mark_is_committed() {
        let mut acks = Acks::default();
        let mark = acks.passed(&message(7, QoS::AtLeastOnce)).expect("QoS 1 is marked");
        assert_eq!(mark.pkid, 7);
        assert!(ids(&mut acks).is_empty());
        acks.release(mark.n);
        assert_eq!(ids(&mut acks), vec![(7, false)]);
        assert!(ids(&mut acks).is_empty());
    }

    #[test]
    fn a_retained_message_is_acknowledged_in_turn_without_a_mark() {
        let mut acks = Acks::default();
        let mut replay = message(3, QoS::AtLeastOnce);
        replay.retain = true;
        assert_eq!(acks.passed(&replay), None);
        assert_eq!(ids(&mut acks), vec![(3, false)]);
    }

    #[test]
    fn qos_0_needs_no_acknowledgement() {
        let mut acks = Acks::default();
        assert_eq!(acks.passed(&message(0, QoS::AtMostOnce)), None);
        acks.kept(&message(0, QoS::AtMostOnce));
        assert!(ids(&mut acks).is_empty());
    }

    #[test]
    fn acknowledgements_keep_the_order_of_the_messages() {
        let mut acks = Acks::default();
        let first = acks.passed(&message(1, QoS::AtLeastOnce)).unwrap();
        acks.kept(&message(2, QoS::AtLeastOnce));
        let third = acks.passed(&message(3, QoS::AtLeastOnce)).unwrap();
        assert!(ids(&mut acks).is_empty(), "the kept one waits behind the first");
        acks.release(first.n);
        assert_eq!(ids(&mut acks), vec![(1, false), (2, false)]);
        acks.release(third.n);
        assert_eq!(ids(&mut acks), vec![(3, false)]);
    }

    #[test]
    fn past_the_limit_the_oldest_goes_before_its_commit() {
        let mut acks = Acks::default();
        for pkid in 1..=(HELD_MAX as u16 + 2) {
            acks.passed(&message(pkid, QoS::AtLeastOnce));
        }
        assert_eq!(ids(&mut acks), vec![(1, true), (2, true)]);
        assert!(ids(&mut acks).is_empty());
    }

    #[test]
    fn a_lost_connection_forgets_what_it_held() {
        let mut acks = Acks::default();
        let mark = acks.passed(&message(1, QoS::AtLeastOnce)).unwrap();
        acks.lost();
        acks.release(mark.n);
        assert!(ids(&mut acks).is_empty());
        let next = acks.passed(&message(1, QoS::AtLeastOnce)).unwrap();
        assert!(next.n > mark.n, "marks never repeat");
    }
}
