//! Bookkeeping of the partial KV cache the draft pass attends to (DESIGN §5, the reference's
//! `RetrievalCache`): a budget of `B` slots holds the first `sinks` positions (attention sinks)
//! and the `B − sinks` most important other positions, ranked by q·k importance; newly accepted
//! tokens overwrite the least important selected entries from the end of the budget backwards, and
//! when the recent region reaches the sinks the selection is redone over the whole history.
//! This module decides *which* positions sit in which slot; the driver copies the keys/values.

/// Default number of attention-sink positions always kept.
pub const SINKS: usize = 16;

/// Positions `0..sinks`, then the top `budget − sinks` of the remaining positions by `scores`
/// (one importance per position, e.g. the last query's q·k summed over the query heads of a KV
/// group), most important first; ties go to the earlier position. Fewer positions than the
/// budget: all of them, in the same order.
pub fn select_positions(scores: &[f32], sinks: usize, budget: usize) -> Vec<usize> {
    let len = scores.len();
    let sinks = sinks.min(len).min(budget);
    let mut rest: Vec<usize> = (sinks..len).collect();
    rest.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    rest.truncate(budget - sinks);
    (0..sinks).chain(rest).collect()
}

/// Which position each slot of the partial cache holds, and where the next recent token goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialSlots {
    /// `slots[i]` is the position held in slot `i`.
    pub slots: Vec<usize>,
    sinks: usize,
    /// Next slot a recent token overwrites (moves from the end of the budget towards the sinks).
    cursor: usize,
}

impl PartialSlots {
    /// Slots after a selection (see [`select_positions`]): sinks first, then by importance, so the
    /// least important entries sit at the end and are overwritten first.
    pub fn new(selected: Vec<usize>, sinks: usize) -> Self {
        let cursor = selected.len();
        Self {
            sinks: sinks.min(selected.len()),
            slots: selected,
            cursor,
        }
    }

    /// Records that position `pos` (a newly accepted token) now occupies a slot and returns that
    /// slot, or `None` when the recent region has reached the sinks and a re-selection is due.
    pub fn place_recent(&mut self, pos: usize) -> Option<usize> {
        if self.cursor <= self.sinks {
            return None;
        }
        self.cursor -= 1;
        self.slots[self.cursor] = pos;
        Some(self.cursor)
    }

    /// Number of slots still free for recent tokens before a re-selection.
    pub fn room(&self) -> usize {
        self.cursor - self.sinks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sinks_then_the_most_important_in_score_order() {
        // positions 0..8; sinks = 2; budget = 5 → [0, 1] + top 3 of 2..8 by score.
        let scores = [9.0, 9.0, 0.1, 5.0, 0.3, 7.0, 5.0, 0.2];
        assert_eq!(select_positions(&scores, 2, 5), vec![0, 1, 5, 3, 6]);
        // Shorter history than the budget: everything.
        assert_eq!(select_positions(&scores[..3], 2, 5), vec![0, 1, 2]);
    }

    #[test]
    fn recent_tokens_overwrite_the_least_important_from_the_end() {
        let mut s = PartialSlots::new(vec![0, 1, 5, 3, 6], 2);
        assert_eq!(s.room(), 3);
        assert_eq!(s.place_recent(8), Some(4)); // replaces 6, the least important
        assert_eq!(s.place_recent(9), Some(3)); // replaces 3
        assert_eq!(s.place_recent(10), Some(2)); // replaces 5
        assert_eq!(s.slots, vec![0, 1, 10, 9, 8]);
        assert_eq!(
            s.place_recent(11),
            None,
            "the recent region reached the sinks: re-select"
        );
    }
}
