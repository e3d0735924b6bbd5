//! The history a page at a time, for `/api/uptime`, `/api/history` and
//! `willwatch history`: per-device figures in id order, worst uptime
//! first or flappiest first, and a device's transitions in time order.
//! Each page is one pass over the history's index with at most one page
//! (and one device's transitions) in memory, however large the fleet; a
//! page ends with the cursor the next one starts after.
//!
//! In id order a page reads only its own devices. The other orders rank
//! the whole window (the worst device may be the last one read) but keep
//! only the `limit` best-ranked after the cursor, and the `AHEAD` after
//! those for the walk's next pages (`Ahead`): a walk through a large fleet
//! ranks the window once every `AHEAD` devices, not on every page.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use std::collections::BinaryHeap;

use super::report::{Stats, stats};
use super::{History, HistoryError, Row};

/// One device's figures over the window.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceStats {
    pub device: String,
    pub stats: Stats,
}

/// How devices are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// By id.
    Id,
    /// Worst uptime first (a device with nothing known counts as up).
    Uptime,
    /// Most outages first; devices without one are left out.
    Outages,
}

impl Order {
    pub fn parse(s: &str) -> Option<Order> {
        match s {
            "id" => Some(Order::Id),
            "uptime" => Some(Order::Uptime),
            "outages" => Some(Order::Outages),
            _ => None,
        }
    }
}

/// A page, and the cursor of the next one (`None`: this is the last).
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// A cursor that is not one this module wrote.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("after `{0}`: pass the `next` of the previous page")]
pub struct BadCursor(pub String);

/// Where a device ranks: ascending, then by id.
fn rank(order: Order, stats: &Stats) -> Option<u64> {
    match order {
        Order::Id => Some(0),
        // Uptimes are in [0, 1]: their bits order as they do.
        Order::Uptime => Some(stats.uptime().unwrap_or(1.0).to_bits()),
        Order::Outages => (stats.outages > 0).then(|| u64::MAX - stats.outages as u64),
    }
}

/// Where a page ends: the last device's rank and id, and what the walk
/// reads: the end of the window the first page was read over and the last
/// row written then. The pages after it read that window (its length
/// kept) and those rows, or the figures would move as time goes and as
/// transitions are written, and a walk would meet a device twice, or miss
/// it. Written `ORDER:END:ROWS:RANK:ID`; the order is checked, not kept.
struct Cursor {
    end: i64,
    rows: i64,
    rank: u64,
    id: String,
}

impl Order {
    fn name(self) -> &'static str {
        match self {
            Order::Id => "id",
            Order::Uptime => "uptime",
            Order::Outages => "outages",
        }
    }
}

/// A cursor this module wrote for `order`, read while the window ends at
/// `now` and the history's last row is `last_row`: one of another order,
/// from a later time or of rows not yet written is not.
fn parse_cursor(cursor: &str, order: Order, now: i64, last_row: i64) -> Result<Cursor, BadCursor> {
    let mut parts = cursor.splitn(5, ':');
    let same_order = parts.next().filter(|name| *name == order.name());
    let end = parts.next().and_then(|n| n.parse().ok()).filter(|end| (0..=now).contains(end));
    let rows = parts.next().and_then(|n| n.parse().ok()).filter(|rows| (0..=last_row).contains(rows));
    let rank = parts.next().and_then(|n| n.parse().ok());
    let parsed = same_order.zip(end).zip(rows).zip(rank).zip(parts.next());
    parsed
        .map(|((((_, end), rows), rank), id)| Cursor { end, rows, rank, id: id.to_string() })
        .ok_or_else(|| BadCursor(cursor.to_string()))
}

fn cursor(order: Order, end: i64, rows: i64, rank: u64, device: &str) -> String {
    format!("{}:{end}:{rows}:{rank}:{device}", order.name())
}

/// Ranked devices read past a page, kept for the pages after it.
pub const AHEAD: usize = 10_000;
/// Walks read ahead for at once; the oldest makes room.
const AHEAD_WALKS: usize = 4;

/// What pages of ranked orders read past themselves, for the walks they
/// belong to (each named by its order, window and rows, as its cursors
/// are): at most `AHEAD_WALKS` walks of `AHEAD` devices.
pub struct Ahead {
    walks: VecDeque<ReadAhead>,
    /// Devices read ahead past a page (`AHEAD`).
    size: usize,
}

impl Default for Ahead {
    fn default() -> Ahead {
        Ahead::reading(AHEAD)
    }
}

struct ReadAhead {
    /// (order, window end, window length, rows)
    walk: (Order, i64, i64, i64),
    /// The rank and id of the last device of the page that read them: a
    /// cursor before it (a page asked again, a walk gone back) is not
    /// served from them.
    from: (u64, String),
    /// In ranking order, after the page that read them.
    ranked: Vec<Ranked>,
    /// No device ranks after the last of them.
    complete: bool,
}

impl Ahead {
    /// Reads `size` devices ahead.
    pub fn reading(size: usize) -> Ahead {
        Ahead { walks: VecDeque::new(), size }
    }

    /// The page after `after` of `walk`, from what was read ahead, if it
    /// holds one.
    fn page(&self, walk: (Order, i64, i64, i64), after: &Cursor, limit: usize) -> Option<(Vec<Ranked>, bool)> {
        let kept = self.walks.iter().find(|w| w.walk == walk)?;
        if (after.rank, after.id.as_str()) < (kept.from.0, kept.from.1.as_str()) {
            return None;
        }
        let at = kept.ranked.partition_point(|r| (r.key.0, r.key.1.as_str()) <= (after.rank, after.id.as_str()));
        let rest = &kept.ranked[at..];
        let more = rest.len() > limit;
        (more || kept.complete).then(|| (rest[..rest.len().min(limit)].to_vec(), more))
    }

    fn keep(&mut self, walk: (Order, i64, i64, i64), from: (u64, String), ranked: Vec<Ranked>, complete: bool) {
        self.walks.retain(|w| w.walk != walk);
        if self.walks.len() == AHEAD_WALKS {
            self.walks.pop_front();
        }
        self.walks.push_back(ReadAhead { walk, from, ranked, complete });
    }
}

/// A device in a ranking; the heap keeps the worst-ranked on top.
#[derive(Clone)]
struct Ranked {
    key: (u64, String),
    stats: Stats,
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Ranked) -> bool {
        self.key == other.key
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Ranked) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Ranked) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

/// Up to `limit` devices' figures over `window` (ms), in `order`, after
/// `after` (a cursor of the same order); `device` alone when given. With
/// `ahead`, a ranked order's page is taken from what an earlier page of
/// its walk read ahead when it can be, and reads ahead for the next.
pub fn figures(
    history: &History,
    device: Option<&str>,
    window: (i64, i64),
    order: Order,
    after: Option<&str>,
    limit: usize,
    ahead: Option<&Mutex<Ahead>>,
) -> Result<Result<Page<DeviceStats>, BadCursor>, HistoryError> {
    let last_row = history.last_row()?;
    let after = match after.map(|c| parse_cursor(c, order, window.1, last_row)).transpose() {
        Ok(after) => after,
        Err(bad) => return Ok(Err(bad)),
    };
    // The window and the rows the first page read, the window's length kept.
    let ((from, to), rows) = match &after {
        Some(c) => ((c.end.saturating_sub(window.1 - window.0), c.end), c.rows),
        None => (window, last_row),
    };
    let window = (from, to);
    let walk = (order, to, to - from, rows);
    let ahead = ahead.filter(|_| order != Order::Id && device.is_none());
    let read_ahead = |c: &Cursor| ahead?.lock().unwrap_or_else(PoisonError::into_inner).page(walk, c, limit);
    if let Some((ranked, more)) = after.as_ref().and_then(read_ahead) {
        return Ok(Ok(page_of(ranked, more, walk)));
    }
    // One more than the page, to know whether another follows; and those
    // to read ahead.
    let reads_ahead = ahead.map_or(0, |a| a.lock().unwrap_or_else(PoisonError::into_inner).size);
    let keep = limit.saturating_add(1).saturating_add(reads_ahead);
    let mut heap: BinaryHeap<Ranked> = BinaryHeap::new();
    // In id order the rows come ranked: start after the cursor's id, and
    // stop once the page is full.
    let start = if order == Order::Id { after.as_ref().map(|c| c.id.as_str()) } else { None };
    history.each_device(device, start, window, rows, |id, before, changes| {
        let stats = stats(before, changes, from, to);
        let Some(rank) = rank(order, &stats) else { return true };
        if after.as_ref().is_some_and(|c| (rank, id) <= (c.rank, c.id.as_str())) {
            return true;
        }
        if heap.len() == keep && heap.peek().is_some_and(|worst| (rank, id) >= (worst.key.0, worst.key.1.as_str())) {
            return true;
        }
        heap.push(Ranked { key: (rank, id.to_string()), stats });
        if heap.len() > keep {
            heap.pop();
        }
        order != Order::Id || heap.len() < keep
    })?;
    let complete = heap.len() < keep;
    let mut ranked = heap.into_sorted_vec();
    let more = ranked.len() > limit;
    let rest = ranked.split_off(ranked.len().min(limit));
    if let (Some(ahead), Some(last)) = (ahead, ranked.last())
        && !rest.is_empty()
    {
        ahead.lock().unwrap_or_else(PoisonError::into_inner).keep(walk, last.key.clone(), rest, complete);
    }
    Ok(Ok(page_of(ranked, more, walk)))
}

/// A page of `ranked`, with the cursor of the next when there is `more`.
fn page_of(ranked: Vec<Ranked>, more: bool, walk: (Order, i64, i64, i64)) -> Page<DeviceStats> {
    let (order, to, _, rows) = walk;
    let next = ranked.last().filter(|_| more).map(|r| cursor(order, to, rows, r.key.0, &r.key.1));
    let items = ranked.into_iter().map(|r| DeviceStats { device: r.key.1, stats: r.stats }).collect();
    Page { items, next }
}

/// Where a page of transitions ended: `AT:N`.
fn parse_place(cursor: &str) -> Result<(i64, i64), BadCursor> {
    cursor
        .split_once(':')
        .and_then(|(at, n)| Some((at.parse().ok()?, n.parse().ok()?)))
        .ok_or_else(|| BadCursor(cursor.to_string()))
}

/// Whether `figures` (or `transitions`, for a device's) would take `after`
/// from a window ending at `end`, without reading a page: what a HEAD
/// answers.
pub fn check(
    history: &History,
    order: Order,
    end: i64,
    transitions: bool,
    after: &str,
) -> Result<Result<(), BadCursor>, HistoryError> {
    if transitions {
        return Ok(parse_place(after).map(drop));
    }
    Ok(parse_cursor(after, order, end, history.last_row()?).map(drop))
}

/// Up to `limit` transitions of `device` since `from`, in time order,
/// after `after` (a cursor of this kind of page).
pub fn transitions(
    history: &History,
    device: &str,
    from: i64,
    after: Option<&str>,
    limit: usize,
) -> Result<Result<Page<Row>, BadCursor>, HistoryError> {
    let after = match after.map(parse_place).transpose() {
        Ok(after) => after,
        Err(bad) => return Ok(Err(bad)),
    };
    let mut rows = history.transitions_page(device, from, after, limit.saturating_add(1))?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = rows.last().filter(|_| more).map(|r| format!("{}:{}", r.row.at_ms, r.n));
    Ok(Ok(Page { items: rows.into_iter().map(|r| r.row).collect(), next }))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::transition::Transition;

    fn entry(device: &str, at_s: u64, to: &'static str) -> Transition {
        crate::history::tests::entry(device, at_s, "unknown", to)
    }

    /// Every page of `order`, walked with its cursors; each page asked
    /// `later` ms after the one before (the window moves with the clock).
    fn walk(history: &History, order: Order, limit: usize, later: i64) -> Vec<String> {
        walk_reading(history, order, limit, later, None)
    }

    /// As `walk`, reading ahead with `ahead`.
    fn walk_reading(
        history: &History,
        order: Order,
        limit: usize,
        later: i64,
        ahead: Option<&Mutex<Ahead>>,
    ) -> Vec<String> {
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        let mut window = (100_000, 200_000);
        loop {
            let page = figures(history, None, window, order, after.as_deref(), limit, ahead).unwrap().unwrap();
            window = (window.0 + later, window.1 + later);
            assert!(page.items.len() <= limit);
            seen.extend(page.items.iter().map(|d| d.device.clone()));
            match page.next {
                Some(next) => after = Some(next),
                None => return seen,
            }
        }
    }

    proptest! {
        /// Whatever the fleet and the page size: walking the pages of each
        /// order meets every device once, in the order one ranking of the
        /// whole window gives.
        #[test]
        fn pages_walk_every_device_once_in_order(
            fleet in proptest::collection::vec((0u8..40, 50u64..250, 0..2usize), 0..120),
            limit in 1usize..12,
            reading in 1usize..30,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut h = History::open(dir.path()).unwrap();
            let entries: Vec<Transition> = fleet
                .iter()
                .map(|&(d, at, s)| entry(&format!("d{d:02}"), at, ["online", "offline"][s]))
                .collect();
            h.append(&entries).unwrap();
            for order in [Order::Id, Order::Uptime, Order::Outages] {
                let whole = figures(&h, None, (100_000, 200_000), order, None, usize::MAX, None).unwrap().unwrap();
                prop_assert!(whole.next.is_none());
                let expected: Vec<String> = whole.items.iter().map(|d| d.device.clone()).collect();
                prop_assert_eq!(walk(&h, order, limit, 0), expected.clone(), "{:?}", order);
                // Pages asked as time goes read the first page's window.
                prop_assert_eq!(walk(&h, order, limit, 7_000), expected.clone(), "{:?} as time goes", order);
                // Read ahead by a few devices (some pages from what an
                // earlier one kept, some ranked again): the same walk.
                let ahead = Mutex::new(Ahead::reading(reading));
                let read = walk_reading(&h, order, limit, 7_000, Some(&ahead));
                prop_assert_eq!(read, expected.clone(), "{:?} reading {} ahead", order, reading);
                let mut ranks: Vec<(u64, &str)> =
                    whole.items.iter().map(|d| (rank(order, &d.stats).unwrap(), d.device.as_str())).collect();
                let sorted = { let mut r = ranks.clone(); r.sort(); r };
                prop_assert_eq!(&ranks, &sorted);
                ranks.dedup_by(|a, b| a.1 == b.1);
                prop_assert_eq!(ranks.len(), expected.len(), "each device once");
            }
        }
    }

    #[test]
    fn the_outages_order_leaves_out_devices_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::open(dir.path()).unwrap();
        h.append(&[entry("flaky", 10, "online"), entry("steady", 10, "online")]).unwrap();
        h.append(&[entry("flaky", 150, "offline"), entry("flaky", 200, "online")]).unwrap();
        let flappy = figures(&h, None, (100_000, 200_001), Order::Outages, None, 10, None).unwrap().unwrap();
        let ids: Vec<(&str, usize)> = flappy.items.iter().map(|d| (d.device.as_str(), d.stats.outages)).collect();
        assert_eq!(ids, [("flaky", 1)]);
    }

    #[test]
    fn a_devices_transitions_come_in_pages_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::open(dir.path()).unwrap();
        let flaps: Vec<Transition> =
            (0..25).map(|i| entry("a", 100 + i, ["online", "offline"][i as usize % 2])).collect();
        h.append(&flaps).unwrap();
        h.append(&[entry("b", 110, "offline"), entry("a", 50, "online")]).unwrap();
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = transitions(&h, "a", 100_000, after.as_deref(), 7).unwrap().unwrap();
            seen.extend(page.items.iter().map(|r| r.at_ms));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, (100..125).map(|s| s * 1000).collect::<Vec<i64>>(), "a's, since the window, each once");
    }

    /// A history of `n` devices `dNN`, each online from `100 + N` s.
    fn online_fleet(n: u64) -> (tempfile::TempDir, History) {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::open(dir.path()).unwrap();
        let fleet: Vec<Transition> = (0..n).map(|d| entry(&format!("d{d:02}"), 100 + d, "online")).collect();
        h.append(&fleet).unwrap();
        (dir, h)
    }

    /// Guards a walk against transitions written during it: an outage
    /// written after the first page moved a device ahead of the cursor
    /// (lower uptime ranks first), and the walk missed it.
    #[test]
    fn a_walk_reads_the_history_as_it_was_at_its_first_page() {
        let (_dir, mut h) = online_fleet(20);
        let whole = figures(&h, None, (100_000, 200_000), Order::Uptime, None, usize::MAX, None).unwrap().unwrap();
        let first = figures(&h, None, (100_000, 200_000), Order::Uptime, None, 5, None).unwrap().unwrap();
        // Every device not yet walked has an outage now.
        let outages: Vec<Transition> = (5..20).map(|d| entry(&format!("d{d:02}"), 150, "offline")).collect();
        h.append(&outages).unwrap();
        let mut seen: Vec<String> = first.items.iter().map(|d| d.device.clone()).collect();
        let mut after = first.next;
        while let Some(cursor) = after {
            let page = figures(&h, None, (100_000, 200_000), Order::Uptime, Some(&cursor), 5, None).unwrap().unwrap();
            seen.extend(page.items.iter().map(|d| d.device.clone()));
            after = page.next;
        }
        let expected: Vec<String> = whole.items.iter().map(|d| d.device.clone()).collect();
        assert_eq!(expected.len(), 20);
        assert_eq!(seen, expected, "the walk is the ranking of its first page's history");
    }

    /// Guards the read-ahead against a walk that goes back: a page asked
    /// again with an earlier cursor was served from what a later page kept,
    /// and the devices between were never shown.
    #[test]
    fn a_page_asked_again_after_a_later_one_is_the_same_page() {
        let (_dir, mut h) = online_fleet(30);
        let outages: Vec<Transition> = (0..30).map(|d| entry(&format!("d{d:02}"), 150 + d, "offline")).collect();
        h.append(&outages).unwrap();
        let window = (100_000, 200_000);
        let ahead = Mutex::new(Ahead::reading(4));
        let page =
            |after: Option<&str>| figures(&h, None, window, Order::Uptime, after, 3, Some(&ahead)).unwrap().unwrap();
        let first = page(None);
        let second = page(first.next.as_deref());
        let third = page(second.next.as_deref());
        let fourth = page(third.next.as_deref());
        // Back to the second page, after the fourth kept what follows it.
        let again = page(first.next.as_deref());
        assert_eq!(again, second, "the same page, not what the fourth kept");
        assert!(fourth.items.iter().all(|d| !second.items.contains(d)));
    }

    #[test]
    fn a_cursor_this_module_did_not_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path()).unwrap();
        let bad = figures(&h, None, (0, 1), Order::Uptime, Some("nonsense"), 10, None).unwrap();
        assert_eq!(bad, Err(BadCursor("nonsense".into())));
        assert!(check(&h, Order::Uptime, 1, false, "nonsense").unwrap().is_err());
        assert!(check(&h, Order::Uptime, 1, true, "1:x").unwrap().is_err());
        assert!(check(&h, Order::Uptime, 1, true, "1:2").unwrap().is_ok());
        let mut h = h;
        h.append(&[entry("a", 150, "online"), entry("b", 160, "online")]).unwrap();
        let window = (100_000, 200_000);
        let next = figures(&h, None, window, Order::Uptime, None, 1, None).unwrap().unwrap().next.unwrap();
        assert!(figures(&h, None, window, Order::Uptime, Some(&next), 1, None).unwrap().is_ok());
        assert!(check(&h, Order::Uptime, window.1, false, &next).unwrap().is_ok());
        assert!(check(&h, Order::Id, window.1, false, &next).unwrap().is_err(), "another order");
        let refused = |cursor: &str, order| figures(&h, None, window, order, Some(cursor), 1, None).unwrap().is_err();
        assert!(refused(&next, Order::Id), "a cursor of another order: {next}");
        assert!(refused(&next, Order::Outages), "a cursor of another order: {next}");
        let uptime = next.split(':').nth(3).unwrap();
        assert!(refused(&format!("uptime:200001:2:{uptime}:a"), Order::Uptime), "a window ending later than now");
        assert!(refused(&format!("uptime:-1:2:{uptime}:a"), Order::Uptime), "a window ending before 1970");
        assert!(refused(&format!("uptime:200000:3:{uptime}:a"), Order::Uptime), "rows not yet written");
        assert!(!refused(&format!("uptime:200000:2:{uptime}:a:b"), Order::Uptime), "an id with a colon");
        assert!(transitions(&h, "a", 0, Some("1:x"), 10).unwrap().is_err());
    }
}
