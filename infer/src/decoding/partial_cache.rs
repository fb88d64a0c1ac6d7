//! The partial KV cache the draft pass attends to (DESIGN §5): per layer and KV head, `budget`
//! slots holding the 16 attention sinks and the most important other positions by the current
//! query's q·k (summed over the query heads of the KV group), filled from the full cache. Newly
//! accepted tokens overwrite the least important entries from the end; when the recent region
//! reaches the sinks, the next full-cache draft pass re-selects over the whole history.
//! Memory is O(budget) whatever the output length.

use crate::error::Result;
use crate::model::Model;
use crate::model::cache::KvCache;

use super::partial::{PartialSlots, SINKS, select_positions};

pub struct PartialKvCache {
    /// `budget` slots plus one scratch slot for the draft token.
    pub cache: KvCache,
    /// Slot bookkeeping per layer and KV head (the cursors move together).
    slots: Vec<Vec<PartialSlots>>,
    budget: usize,
}

/// Importance of every cached position for each layer and KV head: the dot product of the key
/// with the last query, summed over the query heads that share the KV head.
pub fn importance(model: &Model, full: &KvCache, queries: &[Vec<f32>]) -> Vec<Vec<Vec<f32>>> {
    let c = model.config();
    let (nkv, hd, group) = (c.num_kv_heads, c.head_dim, c.group_size());
    let len = full.len();
    queries
        .iter()
        .enumerate()
        .map(|(layer, q)| {
            let keys = full.host_keys(layer);
            (0..nkv)
                .map(|h| {
                    (0..len)
                        .map(|p| {
                            let k = &keys[(h * len + p) * hd..][..hd];
                            (0..group)
                                .map(|g| {
                                    let qh = &q[(h * group + g) * hd..][..hd];
                                    qh.iter().zip(k).map(|(a, b)| a * b).sum::<f32>()
                                })
                                .sum()
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

impl PartialKvCache {
    /// An empty partial cache of `budget` slots for `model`.
    pub fn new(model: &Model, budget: usize) -> Self {
        Self {
            cache: model.new_cache(budget + 1),
            slots: Vec::new(),
            budget,
        }
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Whether a selection has been made and recent tokens still fit.
    pub fn is_ready(&self) -> bool {
        !self.slots.is_empty()
    }

    /// (Re-)selects from the whole of `full` with the current `queries` (one per layer) and
    /// copies the chosen keys/values.
    pub fn select(&mut self, model: &Model, full: &KvCache, queries: &[Vec<f32>]) -> Result<()> {
        let scores = importance(model, full, queries);
        let positions: Vec<Vec<Vec<usize>>> = scores
            .iter()
            .map(|layer| {
                layer
                    .iter()
                    .map(|s| select_positions(s, SINKS, self.budget))
                    .collect()
            })
            .collect();
        self.cache.fill_from(full, &positions)?;
        self.slots = positions
            .into_iter()
            .map(|l| l.into_iter().map(|p| PartialSlots::new(p, SINKS)).collect())
            .collect();
        Ok(())
    }

    /// Writes the newly accepted position `pos` (already in `full`) over the least important
    /// entry. Returns `false` when the recent region has reached the sinks: a re-selection is due
    /// and the partial cache must not be drafted with until then.
    pub fn place_recent(&mut self, full: &KvCache, pos: usize) -> Result<bool> {
        if self.slots.is_empty() {
            return Ok(false);
        }
        for (layer, heads) in self.slots.iter_mut().enumerate() {
            for (h, s) in heads.iter_mut().enumerate() {
                match s.place_recent(pos) {
                    Some(slot) => self.cache.copy_position(full, layer, h, pos, slot)?,
                    None => {
                        self.slots.clear();
                        return Ok(false);
                    }
                }
            }
        }
        Ok(true)
    }

    /// Number of filled slots (the draft token goes after them).
    pub fn filled(&self) -> usize {
        self.slots
            .first()
            .and_then(|l| l.first())
            .map_or(0, |s| s.slots.len())
    }

    /// Positions held per slot for `layer`, KV head `h` (for tests).
    pub fn positions(&self, layer: usize, h: usize) -> &[usize] {
        &self.slots[layer][h].slots
    }
}
