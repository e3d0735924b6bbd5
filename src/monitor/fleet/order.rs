//! The orders `/status` pages walk: every device by the state it is shown
//! in (offline first, then unknown, then online: `rank`) and then by id,
//! kept as devices change, with a count of each rank; or by id alone (the
//! three ranks merged), the walk that meets every device once however
//! they change meanwhile. A page costs its own size and the log of the
//! fleet, never the fleet.

use std::collections::BTreeSet;
use std::fmt;
use std::iter::Peekable;
use std::ops::Bound;

use compact_str::CompactString;

/// How the pages of a walk are ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sort {
    /// Offline first, then unknown, then online, each by id: what people
    /// read first. A device that changes state during a walk moves past
    /// or behind the cursor, so it may be met twice or not at all.
    #[default]
    State,
    /// By id: every device met once, whatever changes during the walk.
    Id,
}

/// Where a page ended, in the sort it was read in: the next page starts
/// after it. Written `RANK:ID` (by state) or `id:ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    State(u8, String),
    Id(String),
}

impl Cursor {
    /// A cursor this module wrote, or `None`.
    pub fn parse(s: &str) -> Option<Cursor> {
        let (head, id) = s.split_once(':')?;
        match head {
            "id" => Some(Cursor::Id(id.to_string())),
            "0" | "1" | "2" => head.parse().ok().map(|r| Cursor::State(r, id.to_string())),
            _ => None,
        }
    }

    pub fn sort(&self) -> Sort {
        match self {
            Cursor::State(..) => Sort::State,
            Cursor::Id(_) => Sort::Id,
        }
    }

    /// Where a page of `sort` that ends at `id` (shown at `rank`) ends.
    pub fn at(sort: Sort, rank: u8, id: &str) -> Cursor {
        match sort {
            Sort::State => Cursor::State(rank, id.to_string()),
            Sort::Id => Cursor::Id(id.to_string()),
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cursor::State(rank, id) => write!(f, "{rank}:{id}"),
            Cursor::Id(id) => write!(f, "id:{id}"),
        }
    }
}

#[derive(Debug, Default)]
pub struct Order {
    keys: BTreeSet<(u8, CompactString)>,
    counts: [usize; 3],
}

impl Order {
    /// `id` is shown at `rank` from now on.
    pub fn set(&mut self, id: &str, rank: u8) {
        let key = (rank, CompactString::from(id));
        if self.keys.contains(&key) {
            return;
        }
        self.remove(id);
        self.keys.insert(key);
        self.counts[usize::from(rank)] += 1;
    }

    /// `id` is no longer shown.
    pub fn remove(&mut self, id: &str) {
        for rank in 0..3u8 {
            if self.keys.remove(&(rank, CompactString::from(id))) {
                self.counts[usize::from(rank)] -= 1;
            }
        }
    }

    pub fn clear(&mut self) {
        self.keys.clear();
        self.counts = [0; 3];
    }

    /// Devices shown at `rank`.
    pub fn count(&self, rank: u8) -> usize {
        self.counts[usize::from(rank)]
    }

    /// The devices after `after` in `sort`, of `rank` only when given,
    /// each with the rank it is shown at.
    pub fn walk<'a>(
        &'a self,
        sort: Sort,
        after: Option<&Cursor>,
        rank: Option<u8>,
    ) -> Box<dyn Iterator<Item = (u8, &'a CompactString)> + 'a> {
        match (sort, after) {
            (Sort::Id, Some(Cursor::Id(id))) => self.by_id(Some(id), rank),
            (Sort::Id, _) => self.by_id(None, rank),
            (Sort::State, Some(Cursor::State(r, id))) => self.by_state(Some((*r, id)), rank),
            (Sort::State, _) => self.by_state(None, rank),
        }
    }

    fn by_state<'a>(
        &'a self,
        after: Option<(u8, &str)>,
        rank: Option<u8>,
    ) -> Box<dyn Iterator<Item = (u8, &'a CompactString)> + 'a> {
        let start = match (after, rank) {
            (Some((r, _)), Some(only)) if r < only => Bound::Included((only, CompactString::default())),
            (Some((r, id)), _) => Bound::Excluded((r, CompactString::from(id))),
            (None, Some(only)) => Bound::Included((only, CompactString::default())),
            (None, None) => Bound::Unbounded,
        };
        Box::new(
            self.keys
                .range((start, Bound::Unbounded))
                .take_while(move |(r, _)| rank.is_none_or(|only| *r == only))
                .map(|(r, id)| (*r, id)),
        )
    }

    /// The ranks' ranges after `after`, merged by id.
    fn by_id<'a>(
        &'a self,
        after: Option<&str>,
        rank: Option<u8>,
    ) -> Box<dyn Iterator<Item = (u8, &'a CompactString)> + 'a> {
        type Range<'a> = std::collections::btree_set::Range<'a, (u8, CompactString)>;
        let ranks = rank.map_or(0..3, |r| r..r + 1);
        let mut heads: Vec<Peekable<Range<'a>>> = ranks
            .map(|r| {
                let start = match after {
                    Some(id) => Bound::Excluded((r, CompactString::from(id))),
                    None => Bound::Included((r, CompactString::default())),
                };
                self.keys.range((start, Bound::Excluded((r + 1, CompactString::default())))).peekable()
            })
            .collect();
        Box::new(std::iter::from_fn(move || {
            let first = heads
                .iter_mut()
                .enumerate()
                .filter_map(|(i, head)| head.peek().copied().map(|(_, id)| (id, i)))
                .min()?
                .1;
            let (r, id) = heads[first].next()?;
            Some((*r, id))
        }))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ids(order: &Order, sort: Sort, after: Option<&Cursor>, rank: Option<u8>) -> Vec<(u8, String)> {
        order.walk(sort, after, rank).map(|(r, id)| (r, id.to_string())).collect()
    }

    #[test]
    fn devices_move_between_ranks_once_each_and_are_walked_in_order() {
        let mut order = Order::default();
        for (id, rank) in [("b", 2), ("a", 2), ("c", 0), ("d", 1)] {
            order.set(id, rank);
        }
        order.set("a", 0);
        order.set("a", 0);
        let all = ids(&order, Sort::State, None, None);
        assert_eq!(all, [(0, "a".into()), (0, "c".into()), (1, "d".into()), (2, "b".into())]);
        assert_eq!((order.count(0), order.count(1), order.count(2)), (2, 1, 1));
        let rest = ids(&order, Sort::State, Some(&Cursor::State(0, "a".into())), None);
        assert_eq!(rest, [(0, "c".into()), (1, "d".into()), (2, "b".into())]);
        assert_eq!(ids(&order, Sort::State, None, Some(0)), [(0, "a".into()), (0, "c".into())]);
        let online_from_before = ids(&order, Sort::State, Some(&Cursor::State(0, "z".into())), Some(2));
        assert_eq!(online_from_before, [(2, "b".into())], "a cursor of an earlier rank starts the rank asked for");
        let by_id = ids(&order, Sort::Id, Some(&Cursor::Id("a".into())), None);
        assert_eq!(by_id, [(2, "b".into()), (0, "c".into()), (1, "d".into())]);
        assert_eq!(ids(&order, Sort::Id, None, Some(0)), [(0, "a".into()), (0, "c".into())]);
        order.remove("c");
        order.remove("nobody");
        assert_eq!(order.count(0), 1);
    }

    #[test]
    fn cursors_read_back_as_written() {
        for cursor in [Cursor::State(2, "a:b".into()), Cursor::Id("id:x".into()), Cursor::Id(String::new())] {
            assert_eq!(Cursor::parse(&cursor.to_string()), Some(cursor));
        }
        for bad in ["", "x", "3:a", "-1:a", "ID:a", "+1:a", "01:a"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }

    proptest! {
        /// Guards `willwatch status` at scale: a walk by state met a device
        /// that changed state meanwhile twice, or missed it. A walk by id
        /// meets every device present throughout exactly once, in id order,
        /// whatever moves between its pages.
        #[test]
        fn a_walk_by_id_meets_every_device_once_whatever_changes_between_pages(
            fleet in proptest::collection::btree_map(0u8..60, 0u8..3, 0..50),
            changes in proptest::collection::vec((0u8..60, 0u8..4), 0..80),
            limit in 1usize..7,
        ) {
            let mut order = Order::default();
            for (id, rank) in &fleet {
                order.set(&format!("d{id:02}"), *rank);
            }
            let mut changes = changes.into_iter();
            let (mut seen, mut after) = (Vec::new(), None);
            loop {
                let page: Vec<(u8, String)> =
                    order.walk(Sort::Id, after.as_ref(), None).take(limit).map(|(r, id)| (r, id.to_string())).collect();
                seen.extend(page.iter().map(|(_, id)| id.clone()));
                let Some((rank, id)) = page.last().filter(|_| page.len() == limit) else { break };
                after = Some(Cursor::at(Sort::Id, *rank, id));
                // Between pages: devices change state, new ones come (but
                // those present from the start stay: rank 3 moves to 0).
                for (id, rank) in changes.by_ref().take(3) {
                    order.set(&format!("d{id:02}"), rank % 3);
                }
            }
            let mut sorted = seen.clone();
            sorted.sort();
            sorted.dedup();
            prop_assert_eq!(&sorted, &seen, "in id order, each once");
            for id in fleet.keys() {
                prop_assert!(seen.contains(&format!("d{id:02}")), "d{:02} missed", id);
            }
        }
    }
}
