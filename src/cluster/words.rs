//! What the group's leaders said of one device: its last word (its latest
//! transition), after the earlier transitions not yet done, oldest first.
//! A takeover fires again what is not done, in order, under its ids; the
//! next transition's id follows from the last word (`next_id`).

use serde::{Deserialize, Serialize};

use super::wire::Told;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Words(Vec<Told>);

impl Words {
    /// The device's latest transition.
    pub fn last(&self) -> Option<&Told> {
        self.0.last()
    }

    /// Whether the transition `id` is among these words.
    pub fn has(&self, id: &str) -> bool {
        self.0.iter().any(|t| t.id == id)
    }

    /// The transitions before the last that are not done, oldest first.
    pub fn undone_before_last(&self) -> &[Told] {
        self.0.split_last().map_or(&[], |(_, earlier)| earlier)
    }

    /// Takes `told` in: the same transition now done, or a later one.
    /// Returns whether anything changed. Earlier transitions done are
    /// dropped; the last word stays.
    pub fn learn(&mut self, told: Told) -> bool {
        let later = self.last().is_none_or(|last| told.at >= last.at);
        let changed = match self.0.iter_mut().find(|t| t.id == told.id) {
            Some(known) => {
                let news = told.done && !known.done;
                known.done |= told.done;
                news
            }
            None if later => {
                self.0.push(told);
                true
            }
            None => false,
        };
        if changed {
            let last = self.0.len() - 1;
            let mut i = 0;
            self.0.retain(|t| {
                i += 1;
                i - 1 == last || !t.done
            });
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn told(event: &str, id: &str, at: u64, done: bool) -> Told {
        Told { event: event.into(), id: id.into(), at, done }
    }

    #[test]
    fn what_is_not_done_stays_until_it_is_and_the_last_word_always_stays() {
        let mut w = Words::default();
        assert!(w.learn(told("offline", "1", 10, false)));
        assert!(w.learn(told("online", "2", 20, false)));
        assert_eq!(w.undone_before_last().len(), 1, "the offline is not done");
        assert!(w.learn(told("offline", "1", 10, true)));
        assert!(w.undone_before_last().is_empty(), "done: no longer kept");
        assert!(w.learn(told("online", "2", 20, true)));
        assert_eq!(w.last().map(|t| t.id.as_str()), Some("2"), "the last word stays, done");
        assert!(!w.learn(told("offline", "0", 5, false)), "an older word changes nothing");
        assert!(!w.learn(told("online", "2", 20, true)), "nor one already known");
    }
}
