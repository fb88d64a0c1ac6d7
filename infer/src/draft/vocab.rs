//! The draft vocabulary (DESIGN §1): drafts are projected onto the N most frequent tokens of the
//! heads' training corpus instead of the whole `lm_head` — the largest single memory read of a
//! draft on a CPU. Verification always uses the whole vocabulary, so this changes which candidates
//! are proposed, never the output.

use burn::tensor::{Int, Tensor, TensorData};

use crate::error::{InferError, Result};
use crate::host::kernels::{PackedMatrix, matmul_packed};
use crate::model::Model;
use crate::sampling::{SamplingConfig, adjust_logits, penalty_window_tokens, top_k_indices};
use crate::tensor::to_host_f32;

/// Default size of the draft vocabulary (`--draft-vocab`).
pub const DEFAULT_DRAFT_VOCAB: usize = 8192;

/// `lm_head` rows of a subset of the vocabulary.
pub struct LmHeadSubset {
    ids: Vec<u32>,
    weight: SubsetWeight,
}

enum SubsetWeight {
    /// Packed for the CPU kernel.
    Packed(PackedMatrix),
    /// A device tensor `[subset, hidden]`.
    Tensor(Box<Tensor<2>>),
}

impl LmHeadSubset {
    /// `model`'s `lm_head` restricted to the tokens `ids`: a matrix `ids.len() / vocab` the size
    /// of the full one, so projecting draft rows reads that much less memory.
    pub fn new(model: &Model, ids: &[u32]) -> Result<Self> {
        let (vocab, h) = (model.config().vocab_size, model.config().hidden_size);
        if ids.is_empty() {
            return Err(InferError::setting(
                "draft_vocab",
                "needs at least one token",
            ));
        }
        if let Some(&t) = ids.iter().find(|&&t| t as usize >= vocab) {
            return Err(InferError::setting(
                "draft_vocab",
                format!("token {t} is outside the model's vocabulary of {vocab} tokens"),
            ));
        }
        let idx: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [ids.len()]), model.device());
        let rows = model.lm_head_weight().clone().select(0, idx);
        let weight = if model.uses_cpu_kernels() {
            SubsetWeight::Packed(PackedMatrix::pack(&to_host_f32(rows), ids.len(), h))
        } else {
            SubsetWeight::Tensor(Box::new(rows))
        };
        Ok(Self {
            ids: ids.to_vec(),
            weight,
        })
    }

    /// The subset's token ids, in its column order.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// `lm_head` over the subset's tokens on rows that are already normalised, on the host as
    /// `[rows, len()]` f32.
    pub fn project(&self, normed: Tensor<2>) -> Vec<f32> {
        match &self.weight {
            SubsetWeight::Packed(w) => {
                let [rows, _] = normed.dims();
                let x = to_host_f32(normed);
                let mut out = vec![0f32; rows * w.rows()];
                matmul_packed(&x, rows, w, &mut out);
                out
            }
            SubsetWeight::Tensor(w) => {
                to_host_f32(normed.cast(w.dtype()).matmul((**w).clone().transpose()))
            }
        }
    }
}

/// The draft's `lm_head`: the whole vocabulary, or a subset with its index maps.
pub enum DraftProjection {
    Full,
    Subset(Box<SubsetDraft>),
}

pub struct SubsetDraft {
    head: LmHeadSubset,
    /// Column of each vocabulary token in the subset (`u32::MAX`: not in it).
    column: Vec<u32>,
    /// The sampling settings with banned tokens mapped to subset columns.
    cfg: SamplingConfig,
}

/// A draft distribution's best tokens, most likely first, with their draft probabilities.
pub type Choices = Vec<(u32, f32)>;

impl DraftProjection {
    /// The projection for the draft vocabulary `ids` (`None`, or all of them: the whole
    /// vocabulary), with `sampling`'s banned tokens mapped to its columns.
    pub fn new(model: &Model, ids: Option<&[u32]>, sampling: &SamplingConfig) -> Result<Self> {
        let vocab = model.config().vocab_size;
        let Some(ids) = ids.filter(|ids| ids.len() < vocab) else {
            return Ok(DraftProjection::Full);
        };
        let head = LmHeadSubset::new(model, ids)?;
        let mut column = vec![u32::MAX; vocab];
        for (c, &t) in ids.iter().enumerate() {
            column[t as usize] = c as u32;
        }
        let mut cfg = sampling.clone();
        cfg.ban_tokens = sampling
            .ban_tokens
            .iter()
            .filter_map(|&t| column.get(t as usize).copied().filter(|&c| c != u32::MAX))
            .collect();
        Ok(DraftProjection::Subset(Box::new(SubsetDraft {
            head,
            column,
            cfg,
        })))
    }

    /// Columns of a draft row: the vocabulary, or the subset's size.
    pub fn width(&self, vocab: usize) -> usize {
        match self {
            DraftProjection::Full => vocab,
            DraftProjection::Subset(d) => d.head.len(),
        }
    }

    /// `lm_head` on the normalised draft rows: `[rows, width]`.
    pub fn logits(&self, model: &Model, normed: Tensor<2>) -> Vec<f32> {
        match self {
            DraftProjection::Full => model.lm_head_rows(normed),
            DraftProjection::Subset(d) => d.head.project(normed),
        }
    }

    /// The draft distributions' `widths[d]` best tokens per depth, most likely first, with their
    /// probabilities: the rows get the deterministic part of the target's processing (ban,
    /// temperature, penalty over the window) before the softmax.
    pub fn choices(
        &self,
        sampling: &SamplingConfig,
        rows: &mut [f32],
        vocab: usize,
        history: &[u32],
        widths: &[usize],
    ) -> Vec<Choices> {
        let window = penalty_window_tokens(history, &[], sampling.penalty_window);
        let (cfg, window) = match self {
            DraftProjection::Full => (sampling, window),
            DraftProjection::Subset(d) => (
                &d.cfg,
                window
                    .iter()
                    .map(|&t| d.column[t as usize])
                    .filter(|&c| c != u32::MAX)
                    .collect(),
            ),
        };
        rows.chunks_exact_mut(self.width(vocab))
            .zip(widths)
            .map(|(row, &k)| {
                adjust_logits(cfg, row, &window);
                let top = top_k_indices(row, k.max(1));
                let max = row[top[0] as usize];
                let z: f32 = row.iter().map(|&l| (l - max).exp()).sum();
                top.iter()
                    .map(|&c| {
                        let p = (row[c as usize] - max).exp() / z;
                        let t = match self {
                            DraftProjection::Full => c,
                            DraftProjection::Subset(d) => d.head.ids()[c as usize],
                        };
                        (t, p)
                    })
                    .collect()
            })
            .collect()
    }
}
