//! The TokenSwift driver (SPEC §2): draft (a base pass over the partial cache plus the heads, or
//! the heads on the verify pass's hidden state in `fused` mode) → candidate trie (tree + n-gram
//! chains) → one verify pass over the full cache with a tree mask → acceptance walk (one target
//! draw per node) → cache compaction, partial-cache and n-gram updates.
//!
//! Lossless: every emitted token is drawn from the target distribution at its node, processed
//! exactly as autoregressive decoding processes it (same sampler, penalty window along the node's
//! own path), with one uniform number per emitted token in emission order — so with the same
//! seed the output is the autoregressive output, and greedy decoding matches token for token.

use std::time::{Duration, Instant};

use burn::tensor::{DType, Tensor};

use crate::error::{InferError, Result};
use crate::generate::{check_context, forward_chunks, logits_to_vec};
use crate::heads::DraftHeads;
use crate::model::{AttentionMask, LmHeadSubset, LogitRows, Model};
use crate::sampling::{
    SamplerRng, SamplingConfig, adjust_logits, distribution, penalty_window_tokens, top_k_indices,
};

use super::accept::{accept_path, accept_per_row_reference};
use super::ngram::NgramTable;
use super::partial::SINKS;
use super::partial_cache::PartialKvCache;
use super::tree::{DraftMode, TreeChoice, TreePlanner};
use super::trie::CandidateTrie;

/// TokenSwift settings.
#[derive(Debug, Clone)]
pub struct TokenSwiftConfig {
    /// Fixed arity per depth, or chosen from measured costs and acceptance.
    pub tree: TreeChoice,
    /// N-gram chains retrieved per depth-1 token (0 = no n-gram reuse); with an `auto` tree, the
    /// maximum (the planner lowers it while n-gram nodes do not pay for their verification).
    pub ngram_topk: usize,
    /// Partial KV cache budget (slots per layer and KV head), sinks included.
    pub kv_budget: usize,
    pub draft: DraftMode,
    pub stop_at_eos: bool,
    /// How draft tokens are accepted; anything but [`AcceptRule::PerNode`] is not lossless.
    pub accept: AcceptRule,
    /// Tokens the draft may propose (`None`: the whole vocabulary). The draft rows then go through
    /// only these rows of `lm_head` — on a CPU, `lm_head` is the largest single read of a draft.
    /// Verification always uses the whole vocabulary, so this never changes the output, only
    /// which candidates are proposed.
    pub draft_vocab: Option<Vec<u32>>,
}

/// The acceptance rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AcceptRule {
    /// One target draw per visited trie node (lossless).
    #[default]
    PerNode,
    /// The reference code's per-candidate-row sampling; exists only to prove the statistical
    /// test detects it.
    PerRowReference,
}

impl Default for TokenSwiftConfig {
    fn default() -> Self {
        Self {
            tree: TreeChoice::Fixed(vec![1, 3, 3, 3]),
            ngram_topk: 20,
            kv_budget: 4096,
            draft: DraftMode::Separate,
            stop_at_eos: false,
            accept: AcceptRule::PerNode,
            draft_vocab: None,
        }
    }
}

/// Counts and timings of one TokenSwift generation.
#[derive(Debug, Clone, Default)]
pub struct TokenSwiftStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Verification steps.
    pub steps: usize,
    /// Draft tokens accepted (bonus tokens excluded).
    pub accepted: usize,
    /// Draft tokens proposed: the depth of the candidate trie, per step (gamma for the paper's tree).
    pub proposed: usize,
    /// Accepted tokens that only an n-gram chain proposed.
    pub accepted_from_ngrams: usize,
    /// Nodes verified (root included), summed over steps.
    pub verified_nodes: usize,
    pub prefill_time: Duration,
    pub draft_time: Duration,
    pub verify_time: Duration,
    pub update_time: Duration,
    pub decode_time: Duration,
    /// Partial-cache (re-)selections.
    pub selections: usize,
    /// Positions the draft pass's KV cache holds (the partial budget plus the draft token): the
    /// draft path's memory, whatever the output length.
    pub draft_cache_capacity: usize,
    /// Tokens the draft could propose (the vocabulary, or the `--draft-vocab` subset).
    pub draft_vocab: usize,
    pub stopped_at_eos: bool,
    /// The arity used by the last step.
    pub last_tree: Vec<usize>,
}

impl TokenSwiftStats {
    /// α: accepted draft tokens / proposed draft tokens.
    pub fn acceptance_rate(&self) -> f64 {
        self.accepted as f64 / self.proposed.max(1) as f64
    }
    /// Mean tokens emitted per verification step (bonus included).
    pub fn tokens_per_step(&self) -> f64 {
        self.generated_tokens as f64 / self.steps.max(1) as f64
    }
    pub fn decode_tokens_per_second(&self) -> f64 {
        self.generated_tokens as f64 / self.decode_time.as_secs_f64().max(1e-9)
    }
    /// Share of accepted tokens proposed only by n-gram chains.
    pub fn ngram_share(&self) -> f64 {
        self.accepted_from_ngrams as f64 / self.accepted.max(1) as f64
    }
}

/// Live progress after each step.
pub struct StepReport<'a> {
    /// Tokens emitted by this step; the first `accepted` came from the draft.
    pub tokens: &'a [u32],
    pub accepted: usize,
    pub stats: &'a TokenSwiftStats,
}

/// The draft's `lm_head`: the whole vocabulary, or a subset with its index maps.
enum DraftHead {
    Full,
    Subset(Box<SubsetDraft>),
}

struct SubsetDraft {
    head: LmHeadSubset,
    /// Column of each vocabulary token in the subset (`u32::MAX`: not in it).
    column: Vec<u32>,
    /// The sampling settings with banned tokens mapped to subset columns.
    cfg: SamplingConfig,
}

impl DraftHead {
    fn new(model: &Model, ids: Option<&[u32]>, sampling: &SamplingConfig) -> Result<Self> {
        let vocab = model.config().vocab_size;
        let Some(ids) = ids.filter(|ids| ids.len() < vocab) else {
            return Ok(DraftHead::Full);
        };
        let head = model.lm_head_subset(ids)?;
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
        Ok(DraftHead::Subset(Box::new(SubsetDraft {
            head,
            column,
            cfg,
        })))
    }

    /// Columns of a draft row: the vocabulary, or the subset's size.
    fn width(&self, vocab: usize) -> usize {
        match self {
            DraftHead::Full => vocab,
            DraftHead::Subset(d) => d.head.len(),
        }
    }

    /// `lm_head` on the normalised draft rows: `[rows, width]`.
    fn logits(&self, model: &Model, normed: Tensor<2>) -> Vec<f32> {
        match self {
            DraftHead::Full => model.lm_head_rows(normed),
            DraftHead::Subset(d) => model.lm_head_rows_subset(normed, &d.head),
        }
    }

    /// The draft distributions' candidate tokens, per depth, most likely first: the rows get the
    /// deterministic part of the target's processing (ban, temperature, penalty over the window)
    /// before the top-k.
    fn choices(
        &self,
        sampling: &SamplingConfig,
        rows: &mut [f32],
        vocab: usize,
        history: &[u32],
        widths: &[usize],
    ) -> Vec<Vec<u32>> {
        let window = penalty_window_tokens(history, &[], sampling.penalty_window);
        let (cfg, window) = match self {
            DraftHead::Full => (sampling, window),
            DraftHead::Subset(d) => (
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
                match self {
                    DraftHead::Full => top,
                    DraftHead::Subset(d) => top.iter().map(|&c| d.head.ids()[c as usize]).collect(),
                }
            })
            .collect()
    }
}

/// Adds the n-grams of `tokens` (ending before `upto`) not counted yet.
fn update_ngrams(table: &mut NgramTable, tokens: &[u32], counted: &mut usize, upto: usize) {
    let n = table.n();
    while *counted + n <= upto.min(tokens.len()) {
        table.add(&tokens[*counted..*counted + n]);
        *counted += 1;
    }
}

/// Generates up to `max_new` tokens after `prompt` with TokenSwift. `on_step` sees every step's
/// emitted tokens as they are produced.
pub fn generate_tokenswift(
    model: &Model,
    heads: &DraftHeads,
    prompt: &[u32],
    max_new: usize,
    sampling: &SamplingConfig,
    cfg: &TokenSwiftConfig,
    on_step: &mut dyn FnMut(StepReport<'_>) -> Result<()>,
) -> Result<(Vec<u32>, TokenSwiftStats)> {
    sampling.validate(model.config().vocab_size)?;
    if max_new == 0 {
        return Ok((Vec::new(), TokenSwiftStats::default()));
    }
    let k_heads = heads.len();
    let mut planner = TreePlanner::new(&cfg.tree, cfg.draft, k_heads, cfg.ngram_topk)?;
    if cfg.kv_budget <= SINKS {
        return Err(InferError::Context(format!(
            "--kv-budget {} must be larger than the {SINKS} attention sinks",
            cfg.kv_budget
        )));
    }
    let gamma = k_heads + 1;
    let max_trie = planner.max_nodes() + cfg.ngram_topk * planner.max_width() * gamma;
    check_context(model, prompt.len(), max_new + gamma)?;
    let vocab = model.config().vocab_size;
    let eos = model.config().eos_token_ids.clone();
    let mut full = model.new_cache(prompt.len() + max_new + max_trie + 1);
    let mut stats = TokenSwiftStats {
        prompt_tokens: prompt.len(),
        ..Default::default()
    };

    // Prefill, keeping the last hidden state (fused mode drafts from it).
    let t0 = Instant::now();
    let mut last_logits = None;
    let mut last_hidden = None;
    forward_chunks(model, prompt, &mut full, LogitRows::Last, &mut |out, _| {
        let rows = out.hidden.dims()[0];
        last_logits = out.logits;
        last_hidden = Some(out.hidden.narrow(0, rows - 1, 1));
        Ok(())
    })?;
    stats.prefill_time = t0.elapsed();
    let mut logits = logits_to_vec(last_logits.expect("a non-empty prompt yields logits"));
    let mut hidden: Tensor<2> = last_hidden.expect("a non-empty prompt");

    let mut rng = SamplerRng::new(sampling.seed);
    let draw = |rng: &mut SamplerRng, logits: &mut [f32], window: &[u32]| {
        let d = distribution(sampling, logits, window);
        if sampling.is_greedy() {
            d.argmax()
        } else {
            d.sample_with(rng.uniform())
        }
    };
    let mut history: Vec<u32> = prompt.to_vec();
    let t1 = Instant::now();
    let first = draw(
        &mut rng,
        &mut logits,
        &penalty_window_tokens(&history, &[], sampling.penalty_window),
    );
    history.push(first);
    let mut generated = vec![first];
    on_step(StepReport {
        tokens: &[first],
        accepted: 0,
        stats: &stats,
    })?;
    let mut root = first;
    let mut done = generated.len() >= max_new || (cfg.stop_at_eos && eos.contains(&first));
    stats.stopped_at_eos = cfg.stop_at_eos && eos.contains(&first);

    // N-grams lag `penalty_window` tokens behind (SPEC §4).
    let mut ngrams = NgramTable::new(gamma);
    let mut counted = 0usize;
    let lag = sampling.penalty_window;
    update_ngrams(
        &mut ngrams,
        &history,
        &mut counted,
        history.len().saturating_sub(lag),
    );

    let budget = cfg.kv_budget;
    let mut partial = PartialKvCache::new(model, budget.min(prompt.len() + max_new));
    let draft_head = DraftHead::new(model, cfg.draft_vocab.as_deref(), sampling)?;
    stats.draft_vocab = draft_head.width(vocab);
    stats.draft_cache_capacity = partial.cache.capacity();

    while !done {
        let arity = planner.arity();
        let pos = full.len();
        // Draft.
        let td = Instant::now();
        // Rows to project through lm_head in one call: the base's (separate mode), then the heads'.
        let mut normed_rows: Vec<Tensor<2>> = Vec::with_capacity(k_heads + 1);
        let draft_hidden = match cfg.draft {
            DraftMode::Separate => {
                let out = if partial.is_ready() {
                    let slots = partial.filled();
                    let out = model.forward(
                        &[root],
                        &[pos],
                        &AttentionMask::Causal,
                        &mut partial.cache,
                        LogitRows::None,
                    )?;
                    partial.cache.rollback_to(slots)?;
                    out
                } else {
                    // The whole history fits the budget, or a re-selection is due: draft with the
                    // full cache (and take the current query for the selection).
                    let select = pos + 1 > budget;
                    if select {
                        full.capture_queries();
                    }
                    let out = model.forward(
                        &[root],
                        &[pos],
                        &AttentionMask::Causal,
                        &mut full,
                        LogitRows::None,
                    )?;
                    full.rollback_to(pos)?;
                    if select {
                        let queries = full.take_queries().expect("queries were captured");
                        partial.select(model, &full, &queries)?;
                        stats.selections += 1;
                    }
                    out
                };
                normed_rows.push(
                    model
                        .final_norm()
                        .forward(out.hidden.clone())
                        .cast(DType::F32),
                );
                out.hidden
            }
            DraftMode::Fused => hidden.clone(),
        };
        // Heads are f32 whatever the base's dtype (bf16 on CUDA).
        normed_rows.extend(heads.forward(draft_hidden.cast(DType::F32)));
        let mut depth_logits = draft_head.logits(model, Tensor::cat(normed_rows, 0));
        let choices = draft_head.choices(sampling, &mut depth_logits, vocab, &history, &arity);
        let mut trie = CandidateTrie::from_tree(root, &choices, &arity);
        let tree_nodes = trie.len();
        let ngram_k = planner.ngram_k();
        if ngram_k > 0 {
            let firsts: Vec<u32> = match cfg.draft {
                DraftMode::Separate => trie.children(0).iter().map(|&c| trie.tokens()[c]).collect(),
                DraftMode::Fused => vec![root],
            };
            for d in firsts {
                for chain in ngrams.top_k(d, ngram_k) {
                    match cfg.draft {
                        DraftMode::Separate => trie.insert_path(&chain),
                        DraftMode::Fused => trie.insert_path(&chain[1..]),
                    }
                }
            }
        }
        stats.draft_time += td.elapsed();

        // Verify.
        let tv = Instant::now();
        let n = trie.len();
        let out = model.forward(
            trie.tokens(),
            &trie.positions(pos),
            &AttentionMask::Tree(trie.mask()),
            &mut full,
            LogitRows::All,
        )?;
        let mut rows = logits_to_vec(out.logits.expect("logits were requested"));
        stats.verify_time += tv.elapsed();

        // Accept: one draw per visited node, each with its own path in the penalty window.
        let tu = Instant::now();
        // The per-node rule visits each node once and processes its row in place; the
        // reference's per-row rule revisits nodes and needs the raw rows each time.
        let pristine = (cfg.accept == AcceptRule::PerRowReference).then(|| rows.clone());
        let mut target = |node: usize| {
            let path = trie.path_tokens(node);
            let window = penalty_window_tokens(&history, &path, sampling.penalty_window);
            let row = &mut rows[node * vocab..(node + 1) * vocab];
            if let Some(p) = &pristine {
                row.copy_from_slice(&p[node * vocab..(node + 1) * vocab]);
            }
            draw(&mut rng, row, &window)
        };
        let outcome = match cfg.accept {
            AcceptRule::PerNode => accept_path(&trie, &mut target),
            AcceptRule::PerRowReference => accept_per_row_reference(&trie, &mut target),
        };
        let max_depth = (0..n).map(|i| trie.depth(i)).max().unwrap_or(0);
        stats.steps += 1;
        stats.proposed += max_depth;
        stats.verified_nodes += n;
        stats.accepted += outcome.accepted.len();
        stats.accepted_from_ngrams += outcome
            .accepted
            .iter()
            .filter(|&&a| a >= tree_nodes)
            .count();
        planner.observe(
            &trie,
            &outcome.accepted,
            &choices,
            n,
            tree_nodes,
            tv.elapsed() + td.elapsed(),
        );

        // Keep the root and the accepted path in the full cache.
        let keep: Vec<usize> = std::iter::once(pos)
            .chain(outcome.accepted.iter().map(|&a| pos + a))
            .collect();
        full.keep(pos, &keep)?;
        let stop_node = outcome.accepted.last().copied().unwrap_or(0);
        if cfg.draft == DraftMode::Fused {
            hidden = out.hidden.narrow(0, stop_node, 1);
        }
        let mut emitted: Vec<u32> = outcome.accepted.iter().map(|&a| trie.tokens()[a]).collect();
        emitted.push(outcome.next_token);
        let remaining = max_new - generated.len();
        emitted.truncate(remaining);
        if cfg.stop_at_eos
            && let Some(i) = emitted.iter().position(|t| eos.contains(t))
        {
            emitted.truncate(i + 1);
            stats.stopped_at_eos = true;
            done = true;
        }
        history.extend_from_slice(&emitted);
        generated.extend_from_slice(&emitted);
        if generated.len() >= max_new {
            done = true;
        }
        // The partial cache takes the newly cached positions (root + accepted).
        if partial.is_ready() {
            for p in pos..full.len() {
                if !partial.place_recent(&full, p)? {
                    break;
                }
            }
        }
        update_ngrams(
            &mut ngrams,
            &history,
            &mut counted,
            history.len().saturating_sub(lag),
        );
        root = outcome.next_token;
        stats.update_time += tu.elapsed();
        let accepted = outcome.accepted.len().min(emitted.len());
        stats.generated_tokens = generated.len();
        stats.last_tree = arity;
        on_step(StepReport {
            tokens: &emitted,
            accepted,
            stats: &stats,
        })?;
    }
    stats.decode_time = t1.elapsed();
    stats.generated_tokens = generated.len();
    Ok((generated, stats))
}
