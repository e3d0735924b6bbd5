//! What the broker sends again at the first connect of a run: messages
//! the last run got and did not acknowledge. A message is acknowledged
//! only once what it decided is committed (`mqtt/acks.rs`), so these are
//! the messages a crash caught between arrival and acknowledgement, and
//! with them, from a broker that restarted from an older copy of its
//! store, messages the last run took in long before.
//!
//! The last message the saved state holds (`store::Taken`) tells them
//! apart: a broker numbers the messages of a session in order (it sends a
//! message again under its packet id), so one at or before the saved one
//! was taken in and is dropped (or a flap would be notified twice, or a
//! stale will paged), and one after it was not: it is applied at once (the
//! last run saw it live; a flap among them is real and is notified, late).
//! With nothing saved, each is applied. A broker that numbers otherwise
//! can only make one dropped: a flap missed, never a false alert.
//!
//! Retained ones among them (a replay the last run had not taken in) are
//! the broker's stored state, applied as such by the caller.

use crate::store::Taken;

/// Packet ids run 1..=65535 and wrap: one less than half the space ahead
/// of another comes after it.
const AHEAD: u32 = 1 << 15;

pub struct Redelivered {
    /// The last message the saved state holds.
    saved: Option<Taken>,
    /// Redelivery of the run's first connection is still under way.
    open: bool,
}

impl Redelivered {
    pub fn new(saved: Option<Taken>) -> Redelivered {
        Redelivered { saved, open: true }
    }

    /// Whether a redelivered message now is one for this (the first
    /// connection's redelivery is not over).
    pub fn open(&self) -> bool {
        self.open
    }

    /// Whether the message sent again under `pkid` on `topic` is one the
    /// last run did not take in (to apply at once).
    pub fn unfinished(&self, pkid: u16, topic: &str) -> bool {
        let Some(saved) = &self.saved else { return true };
        let ahead = (u32::from(pkid) + 65_536 - u32::from(saved.pkid)) % 65_536;
        let after = ahead > 0 && ahead < AHEAD;
        // The same id on another topic: the broker's numbering wrapped.
        after || (ahead == 0 && topic != saved.topic)
    }

    /// Redelivery is over (another message came, the connect's probe, or
    /// the link went).
    pub fn close(&mut self) {
        self.open = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(pkid: u16, topic: &str) -> Redelivered {
        Redelivered::new(Some(Taken { pkid, topic: topic.into() }))
    }

    #[test]
    fn those_after_the_saved_message_are_new_and_those_up_to_it_were_taken_in() {
        let r = saved(17, "d/b");
        assert!(!r.unfinished(16, "d/a"), "before it");
        assert!(!r.unfinished(17, "d/b"), "the saved one");
        assert!(r.unfinished(18, "d/a"), "after it");
    }

    #[test]
    fn a_stale_will_from_a_broker_restored_from_an_older_store_is_dropped() {
        // The last run took in m23-m42 (wills sent at a graceful restart)
        // and later ones up to m60; the broker's older store sends the
        // wills again.
        let r = saved(60, "d/birth");
        assert!((23..=42).all(|pkid| !r.unfinished(pkid, "d/will")));
    }

    #[test]
    fn packet_ids_wrap() {
        let r = saved(65_530, "d/a");
        assert!(r.unfinished(3, "d/a"), "past the wrap, after");
        assert!(!r.unfinished(65_000, "d/a"));
        assert!(r.unfinished(65_530, "d/other"), "the same id on another topic: wrapped around");
    }

    #[test]
    fn with_nothing_saved_each_is_new() {
        let mut r = Redelivered::new(None);
        assert!(r.unfinished(1, "d/a"));
        assert!(r.open());
        r.close();
        assert!(!r.open());
    }
}
