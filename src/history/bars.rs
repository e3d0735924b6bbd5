//! The live page's availability bars: per device, the uptime of each hour
//! of the last day and of each six hours of the last week, and the
//! uptime over each window. Read from `history.db`; the arithmetic is
//! `report::stats`, slot by slot.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::report::stats;
use super::{History, HistoryError, ms};

const DAY: (Duration, usize) = (Duration::from_secs(86_400), 24);
const WEEK: (Duration, usize) = (Duration::from_secs(7 * 86_400), 28);

/// One device's bars: each slot's uptime, oldest first (`None` where
/// nothing was known), and the window's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bars {
    pub id: String,
    pub day: Vec<Option<f64>>,
    pub day_uptime: Option<f64>,
    pub week: Vec<Option<f64>>,
    pub week_uptime: Option<f64>,
}

pub fn bars(state_dir: &Path, ids: &[String], now: SystemTime) -> Result<Vec<Bars>, HistoryError> {
    let history = History::open_read(state_dir)?;
    let to = ms(now);
    let from = ms(now - WEEK.0);
    let mut all = Vec::with_capacity(ids.len());
    for id in ids {
        let (mut before, mut changes) = (None, Vec::new());
        history.each_device(Some(id), None, (from, to), i64::MAX, |_, b, c| {
            (before, changes) = (b, c.to_vec());
            false
        })?;
        let (day, day_uptime) = slots(before, &changes, to, DAY);
        let (week, week_uptime) = slots(before, &changes, to, WEEK);
        all.push(Bars { id: id.clone(), day, day_uptime, week, week_uptime });
    }
    Ok(all)
}

/// The uptime of each of `n` slots of the window `span` ending at `to`,
/// and of the whole window. `before` is the state at the week's start.
fn slots(
    before: Option<&str>,
    changes: &[(i64, &str)],
    to: i64,
    (span, n): (Duration, usize),
) -> (Vec<Option<f64>>, Option<f64>) {
    let from = to - span.as_millis() as i64;
    let width = (to - from) / n as i64;
    let state_at = |at: i64| changes.iter().rev().find(|(when, _)| *when < at).map(|(_, s)| *s).or(before);
    let slots = (0..n as i64)
        .map(|i| {
            let start = from + i * width;
            stats(state_at(start), changes, start, start + width).uptime()
        })
        .collect();
    (slots, stats(state_at(from), changes, from, to).uptime())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_shows_in_its_slots_and_in_the_windows_uptime() {
        let hour = 3_600_000;
        let to = 7 * 24 * hour;
        // Online all week but hours 2 and 3 before the end.
        let changes = [(0, "online"), (to - 3 * hour, "offline"), (to - hour, "online")];
        let (day, day_uptime) = slots(None, &changes, to, DAY);
        assert_eq!(day.len(), 24);
        assert_eq!(&day[20..], &[Some(1.0), Some(0.0), Some(0.0), Some(1.0)]);
        assert!((day_uptime.unwrap() - 22.0 / 24.0).abs() < 1e-9);
        let (week, _) = slots(None, &changes, to, WEEK);
        assert_eq!(week.len(), 28);
        assert!((week[27].unwrap() - 4.0 / 6.0).abs() < 1e-9);
        assert_eq!(slots(None, &[], to, DAY).1, None, "nothing known");
    }
}
