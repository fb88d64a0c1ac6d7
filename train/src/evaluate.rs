//! Held-out accuracy of draft heads: per head, top-1/2/3 accuracy of predicting the token at
//! `p + 2 + i` from the base's hidden state at `p`, on sequences the heads were not trained on.

use tokenswift_infer::draft::heads::DraftHeads;
use tokenswift_infer::model::Model;

use crate::error::Result;
use crate::objective::{HeadStats, sequence_pass};
use crate::trainer::base_hidden;

/// Per-head statistics of `heads` (on the model's device, no autodiff) over `sequences`.
pub fn evaluate_heads(
    model: &Model,
    heads: &DraftHeads,
    sequences: &[Vec<u32>],
    chunk_rows: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<HeadStats>> {
    let mut stats = vec![HeadStats::default(); heads.len()];
    let longest = sequences.iter().map(Vec::len).max().unwrap_or(1);
    let mut cache = model.new_cache(longest);
    let lm_head = model
        .lm_head_weight()
        .clone()
        .cast(burn::tensor::DType::F32);
    for (i, seq) in sequences.iter().enumerate() {
        let h0 = base_hidden(model, seq, &mut cache)?.cast(burn::tensor::DType::F32);
        let s = sequence_pass(heads, h0, &lm_head, seq, None, chunk_rows, 1.0, None);
        for (a, b) in stats.iter_mut().zip(&s) {
            a.add(b);
        }
        progress(i + 1);
    }
    Ok(stats)
}
