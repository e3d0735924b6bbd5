//! The order `/status` pages walk: every device by the state it is shown
//! in (offline first, then unknown, then online: `rank`) and then by id,
//! kept as devices change, with a count of each rank. A page costs its own
//! size and the log of the fleet, never the fleet.

use std::collections::BTreeSet;
use std::ops::Bound;

use compact_str::CompactString;

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

    /// The keys after `after`, in order; of `rank` only when given.
    pub fn after<'a>(
        &'a self,
        after: Option<&(u8, String)>,
        rank: Option<u8>,
    ) -> impl Iterator<Item = (u8, &'a CompactString)> + 'a {
        let start = match (after, rank) {
            (Some((r, _)), Some(only)) if *r < only => Bound::Included((only, CompactString::default())),
            (Some((r, id)), _) => Bound::Excluded((*r, CompactString::from(id.as_str()))),
            (None, Some(only)) => Bound::Included((only, CompactString::default())),
            (None, None) => Bound::Unbounded,
        };
        self.keys
            .range((start, Bound::Unbounded))
            .take_while(move |(r, _)| rank.is_none_or(|only| *r == only))
            .map(|(r, id)| (*r, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_move_between_ranks_once_each_and_are_walked_in_order() {
        let mut order = Order::default();
        for (id, rank) in [("b", 2), ("a", 2), ("c", 0), ("d", 1)] {
            order.set(id, rank);
        }
        order.set("a", 0);
        order.set("a", 0);
        let all: Vec<(u8, &str)> = order.after(None, None).map(|(r, id)| (r, id.as_str())).collect();
        assert_eq!(all, [(0, "a"), (0, "c"), (1, "d"), (2, "b")]);
        assert_eq!((order.count(0), order.count(1), order.count(2)), (2, 1, 1));
        let rest: Vec<&str> = order.after(Some(&(0, "a".into())), None).map(|(_, id)| id.as_str()).collect();
        assert_eq!(rest, ["c", "d", "b"]);
        let offline: Vec<&str> = order.after(None, Some(0)).map(|(_, id)| id.as_str()).collect();
        assert_eq!(offline, ["a", "c"]);
        let online_from_before: Vec<&str> =
            order.after(Some(&(0, "z".into())), Some(2)).map(|(_, id)| id.as_str()).collect();
        assert_eq!(online_from_before, ["b"], "a cursor of an earlier rank starts the rank asked for");
        order.remove("c");
        order.remove("nobody");
        assert_eq!(order.count(0), 1);
    }
}
