//! Availability over a window from a device's transitions: time online,
//! offline and unknown, outages, the longest one and the mean time to
//! recovery. Pure: the state at the window's start and the transitions in
//! it go in, the figures come out.

/// What a device's transitions in a window add up to (milliseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub online_ms: i64,
    pub offline_ms: i64,
    pub unknown_ms: i64,
    /// Outages that began in the window.
    pub outages: usize,
    /// The longest offline stretch inside the window (one still going
    /// counts up to the window's end).
    pub longest_ms: i64,
    /// Outages that ended in the window, and their total length (the part
    /// inside the window).
    pub recovered: usize,
    pub recovery_ms: i64,
}

impl Stats {
    /// Online time over known time; `None` when nothing was known.
    pub fn uptime(&self) -> Option<f64> {
        let known = self.online_ms + self.offline_ms;
        (known > 0).then(|| self.online_ms as f64 / known as f64)
    }

    /// Mean time to recovery, over the outages that ended in the window.
    pub fn mttr_ms(&self) -> Option<i64> {
        (self.recovered > 0).then(|| self.recovery_ms / self.recovered as i64)
    }
}

/// The figures for `[from, to)`: `before` is the state the device was in
/// at `from` (its last transition before the window, if any); `changes`
/// are its transitions in time order (those outside the window are
/// ignored).
pub fn stats(before: Option<&str>, changes: &[(i64, &str)], from: i64, to: i64) -> Stats {
    let mut s = Stats::default();
    let mut state = before.unwrap_or("unknown");
    let mut at = from;
    let mut outage_from = (state == "offline").then_some(from);
    let add = |s: &mut Stats, state: &str, ms: i64| match state {
        "online" => s.online_ms += ms,
        "offline" => s.offline_ms += ms,
        _ => s.unknown_ms += ms,
    };
    for &(when, next) in changes.iter().filter(|(when, _)| (from..to).contains(when)) {
        add(&mut s, state, when - at);
        if next == "offline" && state != "offline" {
            s.outages += 1;
            outage_from = Some(when);
        } else if state == "offline"
            && next != "offline"
            && let Some(began) = outage_from.take()
        {
            s.longest_ms = s.longest_ms.max(when - began);
            if next == "online" {
                s.recovered += 1;
                s.recovery_ms += when - began;
            }
        }
        (state, at) = (next, when);
    }
    add(&mut s, state, to - at);
    if let Some(began) = outage_from.filter(|_| state == "offline") {
        s.longest_ms = s.longest_ms.max(to - began);
    }
    s
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn uptime_outages_and_recovery_inside_the_window() {
        // Online from before the window; down 10..30 and 60..70; the window 0..100.
        let changes = [(10, "offline"), (30, "online"), (60, "offline"), (70, "online")];
        let s = stats(Some("online"), &changes, 0, 100);
        assert_eq!((s.online_ms, s.offline_ms, s.unknown_ms), (70, 30, 0));
        assert_eq!((s.outages, s.longest_ms, s.recovered, s.mttr_ms()), (2, 20, 2, Some(15)));
        assert_eq!(s.uptime(), Some(0.7));
    }

    #[test]
    fn the_windows_edges_cut_outages() {
        // Offline since before the window, back at 40, down again at 90 to the end.
        let s = stats(Some("offline"), &[(40, "online"), (90, "offline"), (150, "online")], 0, 100);
        assert_eq!((s.online_ms, s.offline_ms), (50, 50));
        assert_eq!(s.outages, 1, "only the one that began inside");
        assert_eq!((s.recovered, s.recovery_ms), (1, 40), "the part inside the window");
        assert_eq!(s.longest_ms, 40);
        let never = stats(None, &[], 0, 100);
        assert_eq!((never.unknown_ms, never.uptime()), (100, None));
    }

    proptest! {
        /// Whatever the transitions: the window's time is all accounted for,
        /// and an outage is never longer than the offline time.
        #[test]
        fn time_adds_up(before in proptest::option::of(0..3usize),
                        raw in proptest::collection::vec((-50i64..150, 0..3usize), 0..30)) {
            let states = ["online", "offline", "unknown"];
            let mut changes: Vec<(i64, &str)> = raw.iter().map(|&(at, s)| (at, states[s])).collect();
            changes.sort_by_key(|c| c.0);
            let s = stats(before.map(|b| states[b]), &changes, 0, 100);
            prop_assert_eq!(s.online_ms + s.offline_ms + s.unknown_ms, 100);
            prop_assert!(s.longest_ms <= s.offline_ms);
            prop_assert!(s.recovery_ms <= s.offline_ms);
            prop_assert!(s.uptime().is_none_or(|u| (0.0..=1.0).contains(&u)));
        }
    }
}
