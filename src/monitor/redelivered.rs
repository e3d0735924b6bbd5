//! What the broker sends again at the first connect of a run: messages
//! the last run got and did not acknowledge. A message is acknowledged
//! only once what it decided is committed (`mqtt/acks.rs`), so these are
//! the messages a crash caught between arrival and acknowledgement.
//!
//! Those up to the last message the saved state holds (`store::Taken`:
//! the broker sends a message again under its packet id) were taken in:
//! they are dropped, or a flap would be notified twice. The others were
//! not: they are applied as they came, each at once (the last run saw
//! them live; a flap among them is real and is notified, late).
//!
//! Redelivered messages come first after the CONNACK: they are held until
//! the saved one comes (those before it dropped, those after applied at
//! once) or until the first other message (then every one held is
//! applied: the saved one was acknowledged, so all of these are new).
//! Retained ones among them (a replay the last run had not taken in) are
//! the broker's stored state, applied as such by the caller; they count
//! only to find the saved one.

use bytes::Bytes;

use crate::store::Taken;

/// A redelivered message to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
}

pub struct Redelivered {
    /// The last message the saved state holds, until it is found.
    saved: Option<Taken>,
    held: Vec<Message>,
    /// Redelivery of the run's first connection is still under way.
    open: bool,
}

impl Redelivered {
    pub fn new(saved: Option<Taken>) -> Redelivered {
        Redelivered { saved, held: Vec::new(), open: true }
    }

    /// Whether a redelivered message now is one for this (the first
    /// connection's redelivery is not over).
    pub fn open(&self) -> bool {
        self.open
    }

    /// Whether messages wait here (nothing after them may be acknowledged).
    pub fn holds(&self) -> bool {
        !self.held.is_empty()
    }

    /// A redelivered message: those to apply now. A `retained` one is
    /// never held nor returned (the caller applies it as stored state).
    pub fn take(&mut self, pkid: u16, message: Message, retained: bool) -> Vec<Message> {
        match &self.saved {
            Some(saved) if saved.pkid == pkid && saved.topic == message.topic => {
                // It and those before it are in the saved state.
                let dropped = self.held.len() + 1;
                tracing::info!(dropped, "messages sent again that the saved state already holds were dropped");
                self.held.clear();
                self.saved = None;
                Vec::new()
            }
            _ if retained => Vec::new(),
            Some(_) => {
                self.held.push(message);
                Vec::new()
            }
            None => vec![message],
        }
    }

    /// Redelivery is over (another message came, the connect's probe, or
    /// the link went): what was held is new, to apply now.
    pub fn close(&mut self) -> Vec<Message> {
        self.open = false;
        self.saved = None;
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, payload: &str) -> Message {
        Message { topic: topic.into(), payload: Bytes::from(payload.to_string()) }
    }

    fn saved(pkid: u16, topic: &str) -> Option<Taken> {
        Some(Taken { pkid, topic: topic.into() })
    }

    #[test]
    fn those_up_to_the_saved_message_are_dropped_and_the_rest_applied_at_once() {
        let mut r = Redelivered::new(saved(5, "d/b"));
        assert!(r.take(4, message("d/a", "offline"), false).is_empty());
        assert!(r.holds());
        assert!(r.take(5, message("d/b", "offline"), false).is_empty(), "the saved one");
        assert!(!r.holds(), "those before it went with it");
        assert_eq!(r.take(6, message("d/a", "online"), false), vec![message("d/a", "online")]);
        assert!(r.close().is_empty());
        assert!(!r.open());
    }

    #[test]
    fn without_the_saved_message_every_one_held_is_new() {
        let mut r = Redelivered::new(saved(5, "d/b"));
        assert!(r.take(6, message("d/a", "offline"), false).is_empty());
        assert!(r.take(7, message("d/a", "online"), false).is_empty());
        assert_eq!(r.close(), vec![message("d/a", "offline"), message("d/a", "online")]);
    }

    #[test]
    fn a_packet_id_reused_on_another_topic_is_not_the_saved_message() {
        let mut r = Redelivered::new(saved(5, "d/b"));
        assert!(r.take(5, message("d/a", "offline"), false).is_empty());
        assert_eq!(r.close(), vec![message("d/a", "offline")]);
    }

    #[test]
    fn a_retained_one_is_left_to_the_caller_and_can_be_the_saved_one() {
        let mut r = Redelivered::new(saved(3, "d/r"));
        assert!(r.take(2, message("d/a", "offline"), false).is_empty());
        assert!(r.take(4, message("d/s", "online"), true).is_empty());
        assert!(r.holds(), "a retained one that is not the saved one drops nothing");
        assert!(r.take(3, message("d/r", "online"), true).is_empty());
        assert!(!r.holds());
        assert!(r.open());
    }

    #[test]
    fn with_nothing_saved_each_is_applied_as_it_comes() {
        let mut r = Redelivered::new(None);
        assert_eq!(r.take(1, message("d/a", "offline"), false), vec![message("d/a", "offline")]);
        assert!(!r.holds());
    }
}
