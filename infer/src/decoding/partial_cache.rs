//! The partial KV cache the draft pass attends to (DESIGN §5): per layer and KV head, `budget`
//! slots holding the 16 attention sinks and the most important other positions by the current
//! query's q·k (summed over the query heads of the KV group), filled from the full cache. Newly
//! accepted tokens overwrite the least important entries from the end; when the recent region
//! reaches the sinks, the next full-cache draft pass re-selects over the whole history.
//! Memory is O(budget) whatever the output length.
//!
//! On the device (the burn path a GPU runs) nothing of the cache comes to the host: the scores
//! are one matmul batched over layers and heads, and only they (`layers × kv_heads × len`
//! floats, `1/head_dim` of the keys) are read back, in one transfer, to pick the positions; the
//! picked keys and values are gathered in one op per tensor, and the recent tokens of a step are
//! written in one gather and one write per tensor, whatever the number of layers, heads and
//! tokens (the cache is stacked over layers).

use burn::tensor::{DType, Tensor, TensorData};

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
    if full.is_host() {
        importance_from_host_keys(model, full, queries)
    } else {
        importance_on_device(model, full, queries)
    }
}

/// [`importance`] as device ops: one batched matmul over every layer, `keys [layers, kv, len,
/// hd] × queries [layers, kv, hd, group]`, summed over the group; the scores come back in one
/// transfer.
pub fn importance_on_device(
    model: &Model,
    full: &KvCache,
    queries: &[Vec<f32>],
) -> Vec<Vec<Vec<f32>>> {
    let c = model.config();
    let (nkv, hd, group) = (c.num_kv_heads, c.head_dim, c.group_size());
    let len = full.len();
    let Some(keys) = full.device_keys().filter(|_| len > 0) else {
        return vec![vec![Vec::new(); nkv]; queries.len()];
    };
    let layers = queries.len();
    let q: Vec<f32> = queries.concat();
    let q = Tensor::<4>::from_data(TensorData::new(q, [layers, nkv, group, hd]), model.device())
        .swap_dims(2, 3);
    let scores = keys.cast(DType::F32).matmul(q).sum_dim(3);
    let all = crate::tensor::to_host_f32(scores.reshape([-1i64, len as i64]));
    all.chunks_exact(nkv * len)
        .map(|layer| layer.chunks_exact(len).map(<[f32]>::to_vec).collect())
        .collect()
}

/// [`importance`] from the keys on the host (the CPU fast path's cache lives there).
pub fn importance_from_host_keys(
    model: &Model,
    full: &KvCache,
    queries: &[Vec<f32>],
) -> Vec<Vec<Vec<f32>>> {
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

    /// Writes the newly accepted positions `positions` (already in `full`, ascending) over the
    /// least important entries, from the end of the budget backwards. Returns `false` when they
    /// do not all fit before the sinks: a re-selection is due and the partial cache must not be
    /// drafted with until then. Every layer and KV head moves its cursor alike, so one batched
    /// write per layer and tensor places the whole step.
    pub fn place_recent(
        &mut self,
        full: &KvCache,
        positions: std::ops::Range<usize>,
    ) -> Result<bool> {
        let n = positions.len();
        let room = self
            .slots
            .first()
            .and_then(|l| l.first())
            .map_or(0, PartialSlots::room);
        if self.slots.is_empty() || n > room {
            self.slots.clear();
            return Ok(false);
        }
        let mut slot = 0;
        for heads in &mut self.slots {
            for s in heads.iter_mut() {
                for p in positions.clone() {
                    slot = s.place_recent(p).expect("room was checked");
                }
            }
        }
        // Position `start + i` sits in slot `slot + n - 1 - i`: written lowest slot first.
        let from: Vec<usize> = positions.rev().collect();
        self.cache.copy_positions(full, &from, slot)?;
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
