//! The training objective: head `i` (0-based) at position `p` is trained with cross-entropy
//! against the token at `p + 2 + i`; the loss is the sum over heads of each head's mean.
//!
//! The cross-entropy over the vocabulary is computed in row chunks: each chunk runs the heads,
//! its `K × rows × vocab` logits, and its backward pass, then drops them, so the full
//! `K × seq × vocab` logits (≈ 5 GB per head for 152K × 8K in f32) never exist at once. The heads
//! act on each position independently, so chunked gradients add up to the whole sequence's.
//!
//! With a training vocabulary (`--train-vocab N`), the softmax runs over the `N` most frequent
//! tokens of the training corpus only — the draft vocabulary the heads serve with
//! (`tokenswift --draft-vocab`, which drafts from exactly those `lm_head` rows). Rows whose target
//! lies outside it cannot be drafted at all; they leave the loss and count as misses in the
//! accuracy. The cross-entropy then costs `N / vocab` of the full one.

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use tokenswift_infer::draft::heads::DraftHeads;

/// Per-head sums over the rows seen (divide by `rows` for means).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeadStats {
    /// Sum of cross-entropies.
    pub loss_sum: f64,
    /// Rows whose target is the top-1 / within the top-2 / within the top-3.
    pub top: [u64; 3],
    pub rows: u64,
    /// Rows in the loss (all of them, unless a training vocabulary leaves some out).
    pub loss_rows: u64,
}

impl HeadStats {
    pub fn add(&mut self, o: &HeadStats) {
        self.loss_sum += o.loss_sum;
        for k in 0..3 {
            self.top[k] += o.top[k];
        }
        self.rows += o.rows;
        self.loss_rows += o.loss_rows;
    }
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.loss_rows.max(1) as f64
    }
    pub fn accuracy(&self, k: usize) -> f64 {
        self.top[k - 1] as f64 / self.rows.max(1) as f64
    }
}

/// Number of rows head `i` can be trained on in a sequence of `len` tokens (targets at
/// `p + 2 + i < len`).
pub fn valid_rows(len: usize, head: usize) -> usize {
    len.saturating_sub(2 + head)
}

/// The target of head `i` at position `p`.
pub fn target(tokens: &[u32], p: usize, head: usize) -> u32 {
    tokens[p + 2 + head]
}

/// Ranks of the targets among the logits (0 = the target is the argmax), counted per row.
fn target_ranks(logits: Tensor<2>, targets: Tensor<2, Int>) -> Vec<i64> {
    let picked = logits.clone().gather(1, targets);
    let [rows, vocab] = logits.dims();
    logits
        .greater(picked.expand([rows, vocab]))
        .int()
        .sum_dim(1)
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .expect("int ranks")
}

fn stats_from(loss_sum: f64, ranks: &[i64], loss_rows: usize) -> HeadStats {
    let mut s = HeadStats {
        loss_sum,
        rows: ranks.len() as u64,
        loss_rows: loss_rows as u64,
        ..Default::default()
    };
    for &r in ranks {
        for k in 0..3 {
            if r <= k as i64 {
                s.top[k] += 1;
            }
        }
    }
    s
}

/// Marks a token outside the training vocabulary in a [`Vocabulary::remap`].
pub const OUTSIDE: u32 = u32::MAX;

/// The rows of `lm_head` the softmax runs over.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocabulary {
    /// The token ids, in row order.
    pub ids: Vec<u32>,
    /// Token id → row, or [`OUTSIDE`]; one entry per token of the full vocabulary.
    pub remap: Vec<u32>,
}

impl Vocabulary {
    /// The first `size` ids of `ranking` (most frequent first) in a vocabulary of `vocab_size`.
    pub fn from_ranking(ranking: &[u32], size: usize, vocab_size: usize) -> Self {
        let ids: Vec<u32> = ranking
            .iter()
            .copied()
            .filter(|&t| (t as usize) < vocab_size)
            .take(size)
            .collect();
        let mut remap = vec![OUTSIDE; vocab_size];
        for (row, &t) in ids.iter().enumerate() {
            remap[t as usize] = row as u32;
        }
        Self { ids, remap }
    }

    /// `lm_head`'s rows for this vocabulary.
    pub fn select_rows(&self, lm_head: &Tensor<2>) -> Tensor<2> {
        let idx = Tensor::<1, Int>::from_data(
            TensorData::new(
                self.ids.iter().map(|&t| t as i64).collect::<Vec<_>>(),
                [self.ids.len()],
            ),
            &lm_head.device(),
        );
        lm_head.clone().select(0, idx)
    }
}

/// Runs the heads over one sequence's hidden states (`[len, hidden]`, from the frozen base), in
/// chunks of `chunk_rows`. With `accumulate`, each chunk's backward pass adds the gradient of
/// `scale × Σ_heads mean CE` to it (`scale` spreads a step over its micro-batches); without, this
/// only measures (no autodiff).
///
/// `h0` and `lm_head` must be on the same device as the heads; they carry no gradient. With
/// `remap` (a [`Vocabulary::remap`]), `lm_head` holds that vocabulary's rows only.
#[allow(clippy::too_many_arguments)]
pub fn sequence_pass(
    heads: &DraftHeads,
    h0: Tensor<2>,
    lm_head: &Tensor<2>,
    tokens: &[u32],
    remap: Option<&[u32]>,
    chunk_rows: usize,
    scale: f64,
    accumulate: Option<&mut GradientsAccumulator<DraftHeads>>,
) -> Vec<HeadStats> {
    let k = heads.len();
    let len = tokens.len();
    let device = h0.device();
    let mut stats = vec![HeadStats::default(); k];
    let rows_total = valid_rows(len, 0);
    let row_of = |t: u32| remap.map_or(t, |m| m[t as usize]);
    // Per head: the rows that enter the loss (targets inside the vocabulary).
    let counted: Vec<usize> = (0..k)
        .map(|i| {
            (0..valid_rows(len, i))
                .filter(|&p| row_of(target(tokens, p, i)) != OUTSIDE)
                .count()
        })
        .collect();
    let lm_t = lm_head.clone().transpose();
    let mut accumulate = accumulate;
    let mut start = 0;
    while start < rows_total {
        let end = (start + chunk_rows).min(rows_total);
        let x = h0.clone().narrow(0, start, end - start);
        let outs = if accumulate.is_some() {
            heads.forward(x)
        } else {
            heads.valid().forward(x.without_autodiff())
        };
        let mut loss: Option<Tensor<1>> = None;
        for (i, out) in outs.into_iter().enumerate() {
            let n_valid = valid_rows(len, i);
            if start >= n_valid {
                continue;
            }
            let n = end.min(n_valid) - start;
            let rows: Vec<u32> = (start..start + n)
                .map(|p| row_of(target(tokens, p, i)))
                .collect();
            let inside: Vec<bool> = rows.iter().map(|&r| r != OUTSIDE).collect();
            let tgt: Vec<i64> = rows
                .iter()
                .map(|&r| if r == OUTSIDE { 0 } else { r as i64 })
                .collect();
            let targets = Tensor::<2, Int>::from_data(TensorData::new(tgt, [n, 1]), &device);
            let lm = if accumulate.is_some() {
                lm_t.clone()
            } else {
                lm_t.clone().without_autodiff()
            };
            let logits = out.narrow(0, 0, n).matmul(lm);
            let mut ranks = target_ranks(
                logits.clone().detach().without_autodiff(),
                targets.clone().without_autodiff(),
            );
            let picked = log_softmax(logits, 1).gather(1, targets);
            let nll = if inside.iter().all(|&x| x) {
                picked.sum().neg()
            } else {
                // Targets outside the vocabulary: out of the loss, misses in the accuracy.
                for (r, &ok) in ranks.iter_mut().zip(&inside) {
                    if !ok {
                        *r = i64::MAX;
                    }
                }
                let mask: Vec<f32> = inside.iter().map(|&ok| f32::from(u8::from(ok))).collect();
                let mask = Tensor::<2>::from_data(TensorData::new(mask, [n, 1]), &device);
                let mask = if accumulate.is_some() {
                    mask
                } else {
                    mask.without_autodiff()
                };
                (picked * mask).sum().neg()
            };
            let nll_value = nll
                .clone()
                .without_autodiff()
                .into_data()
                .convert::<f64>()
                .try_into_vec::<f64>()
                .expect("loss")[0];
            let in_loss = inside.iter().filter(|&&x| x).count();
            stats[i].add(&stats_from(nll_value, &ranks, in_loss));
            let term = nll.mul_scalar(scale / counted[i].max(1) as f64);
            loss = Some(match loss {
                Some(l) => l + term,
                None => term,
            });
        }
        if let (Some(acc), Some(loss)) = (accumulate.as_deref_mut(), loss) {
            let grads = loss.backward();
            acc.accumulate(heads, GradientsParams::from_grads(grads, heads));
        }
        start = end;
    }
    stats
}
