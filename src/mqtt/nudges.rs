//! When to send the broker a packet that carries our ACK while a probe is
//! out. The broker's echo of the probe is a small packet: its Nagle holds
//! it while something it sent us before is not acknowledged, and our TCP
//! stack delays that acknowledgement (40 ms) while we send nothing. Under
//! a flood of messages that stalled the whole intake, and the probe (and
//! the offline it confirms) with it, for 40 ms about every third time.
//! Any packet of ours carries the ACK at once, so while a probe is out a
//! tiny one goes every `EVERY`: a probe back within 2 ms (as it is when
//! nothing holds it) costs none. A probe that never comes back (a broker
//! whose ACL refuses the probe topic, a message it dropped) is nudged for
//! `AT_MOST`, then left: at most 250 nudges for it.

use std::time::{Duration, Instant};

/// While a probe is out, a nudge this long after it or the last nudge.
pub const EVERY: Duration = Duration::from_millis(2);
/// A probe is nudged for at most this long (a delayed ACK waits at most
/// 200 ms).
pub const AT_MOST: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
pub struct Nudges {
    /// The newest probe out, when it went and when it or the last nudge went.
    out: Option<(u64, Instant, Instant)>,
}

impl Nudges {
    /// Probe `n` was sent at `now`.
    pub fn probe_sent(&mut self, n: u64, now: Instant) {
        self.out = Some((n, now, now));
    }

    /// Probe `n` came back: nothing is out once the newest is.
    pub fn probe_back(&mut self, n: u64) {
        if self.out.is_some_and(|(newest, _, _)| n >= newest) {
            self.out = None;
        }
    }

    /// The connection ended: its probes never come back.
    pub fn reset(&mut self) {
        self.out = None;
    }

    /// When the next nudge is due, while a probe is out and not given up.
    pub fn due(&self) -> Option<Instant> {
        self.out.map(|(_, _, last)| last + EVERY)
    }

    /// A nudge went at `now`; past `AT_MOST` the probe is given up.
    pub fn nudged(&mut self, now: Instant) {
        match &mut self.out {
            Some((_, sent, _)) if now.saturating_duration_since(*sent) >= AT_MOST => self.out = None,
            Some((_, _, last)) => *last = now,
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nudges_are_due_every_two_milliseconds_while_a_probe_is_out() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut nudges = Nudges::default();
        assert_eq!(nudges.due(), None, "no probe out: quiet");
        nudges.probe_sent(1, at(10));
        assert_eq!(nudges.due(), Some(at(12)));
        nudges.nudged(at(12));
        assert_eq!(nudges.due(), Some(at(14)));
        nudges.probe_sent(2, at(13));
        nudges.probe_back(1);
        assert_eq!(nudges.due(), Some(at(15)), "probe 2 is still out");
        nudges.probe_back(2);
        assert_eq!(nudges.due(), None, "every probe back: quiet again");
        nudges.nudged(at(20));
        assert_eq!(nudges.due(), None);
        nudges.probe_sent(3, at(30));
        nudges.reset();
        assert_eq!(nudges.due(), None, "a new connection starts quiet");
    }

    /// Guards the broker's load against a probe that never comes back (an
    /// ACL refusing the probe topic): it was nudged every 2 ms for good.
    #[test]
    fn a_probe_that_never_comes_back_is_nudged_for_half_a_second_at_most() {
        let t0 = Instant::now();
        let mut nudges = Nudges::default();
        nudges.probe_sent(7, t0);
        let mut sent = 0;
        while let Some(at) = nudges.due() {
            nudges.nudged(at);
            sent += 1;
            assert!(sent <= 260, "still nudging after {sent}");
        }
        assert_eq!(sent, 250);
    }
}
