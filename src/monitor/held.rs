//! A cluster leader's decisions waiting for the group's word: what was
//! decided since the last word was sent (`unsaid`), then, per word sent,
//! what waits for it to come back from the broker (every instance then has
//! it). Anything that must not overtake a held decision (a message's
//! acknowledgement mark) waits behind it. Pure: the shell passes the
//! moments in and sends what comes out to the writer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Decisions (`T`: the writer's operations) in the order they were made.
#[derive(Debug)]
pub struct Held<T> {
    unsaid: Vec<T>,
    /// Per word sent: its number, when it was sent, what waits for it.
    waiting: VecDeque<(u64, Instant, Vec<T>)>,
}

impl<T> Default for Held<T> {
    fn default() -> Held<T> {
        Held { unsaid: Vec::new(), waiting: VecDeque::new() }
    }
}

impl<T> Held<T> {
    /// A decision made now: it waits for the next word.
    pub fn decided(&mut self, op: T) {
        self.unsaid.push(op);
    }

    /// What must not overtake a held decision waits behind the last one;
    /// with nothing held it is handed back, to go out at once.
    pub fn behind(&mut self, op: T) -> Option<T> {
        if !self.unsaid.is_empty() {
            self.unsaid.push(op);
        } else if let Some((_, _, last)) = self.waiting.back_mut() {
            last.push(op);
        } else {
            return Some(op);
        }
        None
    }

    /// The word numbered `seq` was sent at `at`: what was unsaid waits for it.
    pub fn sent(&mut self, seq: u64, at: Instant) {
        let unsaid = std::mem::take(&mut self.unsaid);
        self.waiting.push_back((seq, at, unsaid));
    }

    /// The word numbered `seq` came back: what waited for it and every word
    /// before it, in order.
    pub fn confirmed(&mut self, seq: u64) -> Vec<T> {
        let mut out = Vec::new();
        while self.waiting.front().is_some_and(|(s, _, _)| *s <= seq) {
            out.extend(self.waiting.pop_front().map(|(_, _, ops)| ops).unwrap_or_default());
        }
        out
    }

    /// What has waited longer than `max` at `now` (its word may never come
    /// back), in order.
    pub fn overdue(&mut self, now: Instant, max: Duration) -> Vec<T> {
        let mut out = Vec::new();
        while self.waiting.front().is_some_and(|(_, at, _)| now.saturating_duration_since(*at) > max) {
            out.extend(self.waiting.pop_front().map(|(_, _, ops)| ops).unwrap_or_default());
        }
        out
    }

    /// Everything sent and waiting (the link is gone, or the daemon stops),
    /// in order; what is unsaid stays.
    pub fn sent_and_waiting(&mut self) -> Vec<T> {
        self.waiting.drain(..).flat_map(|(_, _, ops)| ops).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_go_out_when_their_word_or_a_later_one_comes_back_in_order() {
        let t = Instant::now();
        let mut held = Held::default();
        assert_eq!(held.behind("mark 0"), Some("mark 0"), "nothing held: at once");
        held.decided("a");
        assert_eq!(held.behind("mark 1"), None, "behind a");
        held.sent(1, t);
        held.decided("b");
        held.sent(2, t);
        assert_eq!(held.behind("mark 2"), None, "behind b, though b's word was sent");
        assert_eq!(held.confirmed(0), Vec::<&str>::new());
        assert_eq!(held.confirmed(2), ["a", "mark 1", "b", "mark 2"], "word 2 covers word 1");
        assert_eq!(held.confirmed(3), Vec::<&str>::new());
    }

    #[test]
    fn what_waited_too_long_goes_out_and_a_lost_link_hands_back_all_that_was_sent() {
        let t = Instant::now();
        let mut held = Held::default();
        held.decided("a");
        held.sent(1, t);
        held.decided("b");
        held.sent(2, t + Duration::from_secs(5));
        held.decided("c");
        assert_eq!(held.overdue(t + Duration::from_secs(11), Duration::from_secs(10)), ["a"]);
        assert_eq!(held.sent_and_waiting(), ["b"]);
        held.sent(3, t);
        assert_eq!(held.sent_and_waiting(), ["c"], "the unsaid stayed until its word was sent");
    }
}
