//! The TokenSwift decoding session (DESIGN §2): the one place where the model, the caches, the
//! candidate trie and sampling meet. One step is five named phases:
//!
//! 1. **draft** — the sources the planner asks for propose candidates below the root (the last
//!    sampled token, not yet in any cache): the n-gram tables (free), the heads on the last
//!    verified hidden state (`fused`), or the paper's separate pass over the partial cache;
//! 2. **build_trie** — the planner picks which candidates to verify (all of a fixed tree; for
//!    `auto`, the prefix that maximises expected tokens per second, possibly none: an AR step);
//! 3. **verify** — one forward pass over the full cache with the tree mask;
//! 4. **accept** — the walk down the trie, one target draw per visited node, with logits computed
//!    only for the rows the walk reaches;
//! 5. **commit** — keep the accepted path in the full cache, feed the partial cache and the
//!    n-gram tables, score every candidate against the emitted output.
//!
//! Lossless: every emitted token is drawn from the target distribution at its node, processed
//! exactly as autoregressive decoding processes it (same sampler, penalty window along the node's
//! own path), with one uniform number per emitted token in emission order — so with the same seed
//! the output is the autoregressive output, and greedy decoding matches token for token.

use std::time::{Duration, Instant};

use burn::tensor::{DType, Tensor};

use crate::draft::heads::DraftHeads;
use crate::draft::vocab::{Choices, DraftProjection};
use crate::error::{InferError, Result};
use crate::model::cache::KvCache;
use crate::model::prompt::{check_context, forward_chunks};
use crate::model::{AttentionMask, LogitRows, Model, Outputs};
use crate::sampling::{SamplerRng, SamplingConfig, draw, draw_ranked, penalty_window_tokens};
use crate::tensor::to_host_f32;

use super::accept::{AcceptOutcome, accept_path, accept_per_row_reference};
use super::ngram::{ContextTable, NgramTable};
use super::partial::SINKS;
use super::partial_cache::PartialKvCache;
use super::planner::{
    AUTO_HEADS_ARITY, Candidates, DraftMode, NGRAM_SOURCES, NgramKind, NgramLag, Planner,
    PlannerConfig, Source, SourcePlan, SourceTimes, StepOutcome, TreeChoice, bucket, nodes_of,
};
use super::trie::CandidateTrie;

/// TokenSwift settings. [`TokenSwiftConfig::default`] is this project's (the planner chooses
/// everything per step); [`TokenSwiftConfig::paper`] is the paper's configuration.
#[derive(Debug, Clone)]
pub struct TokenSwiftConfig {
    /// Fixed arity per depth, or the planner's per-step choice.
    pub tree: TreeChoice,
    /// With a fixed tree: n-gram chains retrieved per depth-1 token (the paper's k). With `auto`:
    /// the alternative first tokens each lookup draft may offer (at most 4). 0: no n-grams.
    pub ngram_topk: usize,
    /// How far behind the emitted text the n-gram tables are fed.
    pub ngram_lag: NgramLag,
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
    /// A read-only n-gram table of the heads' training corpus (`heads.ngrams`), drafted from with
    /// `--tree auto` like the output's own tables (free, calibrated on this run).
    pub corpus_ngrams: Option<std::sync::Arc<ContextTable>>,
    /// Deliberate departures from the lossless algorithm, for the negative controls of the tests
    /// (each must make a lossless test fail). Never set outside tests.
    #[doc(hidden)]
    pub faults: Faults,
}

/// Deliberate bugs that the lossless tests must catch (see `infer/tests/tokenswift.rs`).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// The penalty window is taken once per step for all nodes, without the node's own path (the
    /// reference code's way).
    pub one_window_per_step: bool,
    /// Only the root row is penalised (the reference code's `[1, L]` index).
    pub penalty_on_root_only: bool,
    /// One extra uniform number is drawn at every step that verifies candidates.
    pub extra_uniform: bool,
    /// The cache keeps the node after each accepted one instead of the accepted one.
    pub keep_next_node: bool,
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

/// Default partial KV cache budget (the paper's).
pub const DEFAULT_KV_BUDGET: usize = 4096;
/// Default n-gram chains per depth-1 token (the paper's k).
pub const DEFAULT_NGRAM_TOPK: usize = 20;
/// Longest n-gram lookup draft an `auto` step may verify.
const LOOKUP_MAX_LEN: usize = 16;
/// A lookup chain stops growing below this calibrated probability of being accepted to its end.
/// Such a node adds under 0.01 expected tokens: on a CPU, where a verified node costs 10–15 % of a
/// pass, it never pays; on a GPU, where nodes are nearly free, a whole tail of them adds little.
const LOOKUP_MIN_PATH_P: f32 = 0.01;
/// Most tokens a caller-supplied drafter may add per step.
pub const EXTERNAL_MAX_NODES: usize = 32;

impl Default for TokenSwiftConfig {
    fn default() -> Self {
        Self {
            tree: TreeChoice::Auto,
            ngram_topk: DEFAULT_NGRAM_TOPK,
            ngram_lag: NgramLag::Auto,
            kv_budget: DEFAULT_KV_BUDGET,
            draft: DraftMode::Auto,
            stop_at_eos: false,
            accept: AcceptRule::PerNode,
            draft_vocab: None,
            corpus_ngrams: None,
            faults: Faults::default(),
        }
    }
}

impl TokenSwiftConfig {
    /// The partial-cache budget for a run of `prompt_len + gen_len` tokens: `requested`, or the
    /// default ([`DEFAULT_KV_BUDGET`], or the whole run when shorter). A budget must exceed the
    /// attention sinks and cannot exceed the run.
    pub fn kv_budget_for(
        requested: Option<usize>,
        prompt_len: usize,
        gen_len: usize,
    ) -> Result<usize> {
        let total = prompt_len + gen_len;
        match requested {
            Some(b) if b > total => Err(InferError::setting(
                "kv_budget",
                format!(
                    "{b} is larger than the prompt plus the generation ({total} tokens); give at most {total}"
                ),
            )),
            Some(b) if b <= SINKS => Err(InferError::setting(
                "kv_budget",
                format!("must be larger than the {SINKS} attention sinks, got {b}"),
            )),
            Some(b) => Ok(b),
            None => Ok(DEFAULT_KV_BUDGET.min(total).max(SINKS + 1)),
        }
    }

    /// The paper's configuration: tree `1,3,3,3`, the separate draft pass, k = 20 n-gram chains
    /// per depth-1 token fed one penalty window behind (`--tree 1,3,3,3 --draft separate
    /// --ngram-topk 20 --ngram-lag paper`).
    pub fn paper() -> Self {
        Self {
            tree: TreeChoice::Fixed(vec![1, 3, 3, 3]),
            ngram_lag: NgramLag::Paper,
            draft: DraftMode::Separate,
            ..Self::default()
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
    /// Steps that verified the root alone (plain autoregressive steps).
    pub ar_steps: usize,
    /// Steps that computed the heads on the last verified hidden state.
    pub heads_steps: usize,
    /// Steps that ran the separate draft pass.
    pub separate_steps: usize,
    /// Draft tokens accepted (bonus tokens excluded).
    pub accepted: usize,
    /// Draft tokens proposed: the depth of the verified trie, per step (gamma for the paper's
    /// tree; 0 for an AR step).
    pub proposed: usize,
    /// Accepted tokens that only n-gram tables proposed.
    pub accepted_from_ngrams: usize,
    /// Accepted draft tokens by depth (index 0: depth 1).
    pub accepted_by_depth: Vec<usize>,
    /// Accepted nodes whose column in the verify pass differs from their depth (a sibling came
    /// before them): the rows where the tree mask, not causality, decides what they see.
    pub accepted_off_column: usize,
    /// Nodes verified (root included), summed over steps.
    pub verified_nodes: usize,
    pub prefill_time: Duration,
    pub draft_time: Duration,
    pub verify_time: Duration,
    pub update_time: Duration,
    pub decode_time: Duration,
    /// Partial-cache selections (the first one included).
    pub partial_selections: usize,
    /// Positions the draft pass's KV cache holds (the partial budget plus the draft token; 0 if
    /// the separate pass never ran): the draft path's memory, whatever the output length.
    pub draft_cache_capacity: usize,
    /// Tokens the draft could propose (the vocabulary, or the `--draft-vocab` subset).
    pub draft_vocab: usize,
    pub stopped_at_eos: bool,
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
    /// Share of accepted tokens proposed only by n-gram tables.
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

/// An n-gram table and how far behind the output it is fed.
enum NgramSource {
    /// The paper's first-token table (fixed trees).
    Paper {
        lag: usize,
        table: NgramTable,
        counted: usize,
    },
    /// The context lookup table (`auto`).
    Context { lag: usize, table: ContextTable },
    /// The heads' training corpus (`auto`), never fed.
    Corpus(std::sync::Arc<ContextTable>),
}

impl NgramSource {
    fn kind(&self) -> NgramKind {
        match self {
            NgramSource::Paper { lag, .. } | NgramSource::Context { lag, .. } if *lag > 0 => {
                NgramKind::Lagged
            }
            NgramSource::Corpus(_) => NgramKind::Corpus,
            _ => NgramKind::Recent,
        }
    }

    /// Feeds the table every token of `stream` up to its lag behind the end.
    fn catch_up(&mut self, stream: &[u32]) {
        match self {
            NgramSource::Paper {
                lag,
                table,
                counted,
            } => {
                let upto = stream.len().saturating_sub(*lag);
                let n = table.n();
                while *counted + n <= upto {
                    table.add(&stream[*counted..*counted + n]);
                    *counted += 1;
                }
            }
            NgramSource::Context { lag, table } => {
                table.catch_up(stream, stream.len().saturating_sub(*lag))
            }
            NgramSource::Corpus(_) => {}
        }
    }
}

/// A caller-supplied drafter: given the output so far (prompt + generated, the root last), chains
/// of tokens to verify below the root.
pub type ExternalDrafter<'a> = Box<dyn FnMut(&[u32]) -> Vec<Vec<u32>> + 'a>;

/// What the verify pass produced.
struct Verified {
    /// Last-layer hidden state of every trie node, `[nodes, hidden]`.
    hidden: Tensor<2>,
}

/// One TokenSwift generation in progress.
pub struct Session<'a> {
    model: &'a Model,
    heads: &'a DraftHeads,
    sampling: SamplingConfig,
    cfg: TokenSwiftConfig,
    max_new: usize,
    vocab: usize,
    eos: Vec<u32>,
    full: KvCache,
    /// Allocated when the separate pass first runs.
    partial: Option<PartialKvCache>,
    ngrams: Vec<NgramSource>,
    planner: Planner,
    draft_head: DraftProjection,
    rng: SamplerRng,
    /// Prompt and generated tokens; the root (the last sampled token) is the last one.
    history: Vec<u32>,
    /// Hidden state (before the final norm) of the node whose draw produced the root.
    hidden: Tensor<2>,
    external: Option<ExternalDrafter<'a>>,
    /// Logit rows of the nodes the walk reached, reused across steps.
    rows: Vec<f32>,
    /// Rank (0: the most likely token) and probability of the last root draw in its target
    /// distribution.
    root_rank: (usize, f32),
    stats: TokenSwiftStats,
    started: Instant,
    done: bool,
}

impl<'a> Session<'a> {
    /// Prefills `prompt` and draws the first token (available as [`Session::first_token`]).
    pub fn new(
        model: &'a Model,
        heads: &'a DraftHeads,
        prompt: &[u32],
        max_new: usize,
        sampling: &SamplingConfig,
        cfg: &TokenSwiftConfig,
    ) -> Result<Self> {
        let vocab = model.config().vocab_size;
        sampling.validate(vocab)?;
        if max_new == 0 {
            return Err(InferError::Context(
                "a TokenSwift session needs at least one token to generate".into(),
            ));
        }
        let planner = Planner::new(&PlannerConfig {
            tree: cfg.tree.clone(),
            draft: cfg.draft,
            heads: heads.len(),
        })?;
        if cfg.kv_budget <= SINKS {
            return Err(InferError::setting(
                "kv_budget",
                format!(
                    "must be larger than the {SINKS} attention sinks, got {}",
                    cfg.kv_budget
                ),
            ));
        }
        let gamma = heads.len() + 1;
        check_context(model, prompt.len(), max_new + gamma)?;
        let max_trie = match &cfg.tree {
            TreeChoice::Fixed(a) => nodes_of(a) + cfg.ngram_topk * a[0] * gamma,
            TreeChoice::Auto => planner.max_tree_nodes(),
        } + EXTERNAL_MAX_NODES;
        let mut full = model.new_cache(prompt.len() + max_new + max_trie + 1);
        let mut stats = TokenSwiftStats {
            prompt_tokens: prompt.len(),
            ..Default::default()
        };

        // Prefill, keeping the last hidden state (the heads draft from it).
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
        let mut logits = to_host_f32(last_logits.expect("a non-empty prompt yields logits"));
        let hidden = last_hidden.expect("a non-empty prompt");

        let started = Instant::now();
        let mut rng = SamplerRng::new(sampling.seed);
        let mut history = Vec::with_capacity(prompt.len() + max_new + LOOKUP_MAX_LEN);
        history.extend_from_slice(prompt);
        let window = penalty_window_tokens(&history, &[], sampling.penalty_window);
        let first = draw(sampling, &mut rng, &mut logits, &window);
        history.push(first);
        let eos = model.config().eos_token_ids.clone();
        stats.generated_tokens = 1;
        stats.stopped_at_eos = cfg.stop_at_eos && eos.contains(&first);

        let lags = if cfg.ngram_topk == 0 {
            Vec::new()
        } else {
            cfg.ngram_lag.lags(sampling.penalty_window)
        };
        let mut ngrams: Vec<NgramSource> = lags
            .into_iter()
            .map(|lag| match &cfg.tree {
                TreeChoice::Fixed(_) => NgramSource::Paper {
                    lag,
                    table: NgramTable::with_rank(gamma, cfg.ngram_topk),
                    counted: 0,
                },
                TreeChoice::Auto => NgramSource::Context {
                    lag,
                    table: ContextTable::new(),
                },
            })
            .collect();
        if cfg.tree == TreeChoice::Auto
            && cfg.ngram_topk > 0
            && let Some(table) = &cfg.corpus_ngrams
        {
            ngrams.push(NgramSource::Corpus(table.clone()));
        }
        for source in &mut ngrams {
            source.catch_up(&history);
        }
        let draft_head = DraftProjection::new(model, cfg.draft_vocab.as_deref(), sampling)?;
        stats.draft_vocab = draft_head.width(vocab);
        Ok(Self {
            model,
            heads,
            sampling: sampling.clone(),
            cfg: cfg.clone(),
            max_new,
            vocab,
            done: max_new == 1 || stats.stopped_at_eos,
            eos,
            full,
            partial: None,
            ngrams,
            planner,
            draft_head,
            rng,
            history,
            hidden,
            external: None,
            rows: Vec::new(),
            root_rank: (0, 1.0),
            stats,
            started,
        })
    }

    /// Adds a drafter whose chains are verified below the root every step (tests use an oracle
    /// that knows the output; any other source of guesses works). Lossless whatever it proposes.
    pub fn set_external_drafter(&mut self, drafter: ExternalDrafter<'a>) {
        self.external = Some(drafter);
    }

    /// The first generated token (drawn from the prefill's logits).
    pub fn first_token(&self) -> u32 {
        self.history[self.stats.prompt_tokens]
    }

    /// Whether generation is finished (length reached, or EOS with `stop_at_eos`).
    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn stats(&self) -> &TokenSwiftStats {
        &self.stats
    }

    /// The generated tokens so far.
    pub fn generated(&self) -> &[u32] {
        &self.history[self.stats.prompt_tokens..]
    }

    /// Ends the session: the generated tokens and the statistics.
    pub fn finish(mut self) -> (Vec<u32>, TokenSwiftStats) {
        if std::env::var_os("TOKENSWIFT_EXPLAIN_PLANNER").is_some() {
            eprintln!("{}", self.planner.summary());
            let per_step =
                |d: std::time::Duration| 1e6 * d.as_secs_f64() / self.stats.steps.max(1) as f64;
            eprintln!(
                "per step (µs): draft {:.0}, verify {:.0}, accept+update {:.0}",
                per_step(self.stats.draft_time),
                per_step(self.stats.verify_time),
                per_step(self.stats.update_time)
            );
        }
        self.stats.decode_time = self.started.elapsed();
        let generated = self.history.split_off(self.stats.prompt_tokens);
        (generated, self.stats)
    }

    /// One step: draft → build_trie → verify → accept → commit. Returns the emitted tokens and
    /// how many of them were accepted drafts.
    pub fn step(&mut self) -> Result<(Vec<u32>, usize)> {
        if self.done {
            return Ok((Vec::new(), 0));
        }
        let t_step = Instant::now();
        let plan = self.planner.sources(!self.heads.is_empty());
        let (cands, times) = self.draft(plan)?;
        let (trie, of_candidate) = self.build_trie(&cands, plan, times);
        self.stats.draft_time += t_step.elapsed();

        let tv = Instant::now();
        let verified = self.verify(&trie)?;
        self.stats.verify_time += tv.elapsed();

        let tu = Instant::now();
        let outcome = self.accept(&trie, &verified);
        self.audit_verified(&trie, &of_candidate, &cands, &outcome);
        let start = self.history.len();
        let (emitted, accepted) = self.commit(&trie, &of_candidate, &cands, &outcome, &verified)?;

        let sources = times.heads.unwrap_or(0.0) + times.separate.unwrap_or(0.0);
        let secs = t_step.elapsed().as_secs_f64() - sources;
        let outcome = StepOutcome {
            nodes: trie.len(),
            secs,
            source_secs: sources,
            tokens: emitted.len(),
            root_rank: self.root_rank.0,
        };
        self.planner.observe_step(outcome, cands, start);
        self.planner.score(&self.history);
        self.stats.update_time += tu.elapsed();
        Ok((emitted, accepted))
    }

    /// Phase 1: the candidates of every source the plan asks for, and the time the costly ones
    /// took.
    fn draft(&mut self, plan: SourcePlan) -> Result<(Candidates, SourceTimes)> {
        let root = *self.history.last().expect("the root is in the history");
        let mut cands = Candidates::new(root);
        let mut times = SourceTimes::default();
        let conf = bucket::confidence(self.root_rank.1);
        let k = self.heads.len();
        if plan.separate {
            let t = Instant::now();
            let choices = self.separate_choices()?;
            let arity: Vec<usize> = match &self.cfg.tree {
                TreeChoice::Fixed(a) => a.clone(),
                TreeChoice::Auto => AUTO_HEADS_ARITY[..(k + 1).min(4)].to_vec(),
            };
            let calib = &self.planner.calibration;
            let levels: Vec<Vec<(u32, f32, Option<u16>)>> = choices
                .iter()
                .enumerate()
                .map(|(d, level)| {
                    let kind = if d == 0 {
                        bucket::SEPARATE_BASE
                    } else {
                        bucket::SEPARATE_HEADS
                    };
                    level
                        .iter()
                        .enumerate()
                        .map(|(r, &(t, p))| {
                            let b = bucket::model(kind, d + 1, r, p, conf);
                            (t, calib.p(b), Some(b))
                        })
                        .collect()
                })
                .collect();
            cands.add_cartesian(&[0], &levels, &arity, Source::Separate);
            self.stats.separate_steps += 1;
            times.separate = Some(t.elapsed().as_secs_f64());
        }
        if plan.heads {
            let t = Instant::now();
            let arity: Vec<usize> = match &self.cfg.tree {
                TreeChoice::Fixed(a) => a.clone(),
                TreeChoice::Auto => AUTO_HEADS_ARITY[..k.min(4)].to_vec(),
            };
            let normed = self.heads.forward(self.hidden.clone().cast(DType::F32));
            let mut rows = self.draft_head.logits(self.model, Tensor::cat(normed, 0));
            let choices = self.draft_head.choices(
                &self.sampling,
                &mut rows,
                self.vocab,
                &self.history,
                &arity,
            );
            let calib = &self.planner.calibration;
            let levels: Vec<Vec<(u32, f32, Option<u16>)>> = choices
                .iter()
                .enumerate()
                .map(|(d, level)| {
                    level
                        .iter()
                        .enumerate()
                        .map(|(r, &(t, p))| {
                            let b = bucket::model(bucket::FUSED_HEADS, d + 1, r, p, conf);
                            (t, calib.p(b), Some(b))
                        })
                        .collect()
                })
                .collect();
            cands.add_cartesian(&[0], &levels, &arity, Source::Heads);
            self.stats.heads_steps += 1;
            times.heads = Some(t.elapsed().as_secs_f64());
        }
        // N-grams: free, every step.
        let remaining = self.max_new - self.generated().len();
        for source in &self.ngrams {
            let kind = source.kind();
            let lagged = kind == NgramKind::Lagged;
            match source {
                NgramSource::Paper { table, .. } => {
                    // Chains keyed by each depth-1 token (separate) or by the root (fused).
                    let firsts: Vec<(usize, u32)> = if plan.separate {
                        cands
                            .nodes()
                            .iter()
                            .enumerate()
                            .filter(|(i, n)| *i > 0 && n.depth == 1)
                            .map(|(_, n)| (0, n.token))
                            .collect()
                    } else {
                        vec![(1, root)]
                    };
                    for (skip, d) in firsts {
                        for chain in table.top_k(d, self.cfg.ngram_topk) {
                            let chain = &chain[skip..];
                            let buckets: Vec<Option<u16>> = (0..chain.len())
                                .map(|i| Some(bucket::paper_chain(lagged, i + 1)))
                                .collect();
                            cands.add_chain(
                                chain,
                                &vec![1.0; chain.len()],
                                &buckets,
                                Source::Ngram(kind),
                            );
                        }
                    }
                }
                NgramSource::Context { table, .. } => {
                    self.lookup_drafts(&mut cands, table, kind, remaining)
                }
                NgramSource::Corpus(table) => {
                    self.lookup_drafts(&mut cands, table, kind, remaining)
                }
            }
        }
        if let Some(f) = &mut self.external {
            let mut budget = EXTERNAL_MAX_NODES;
            for chain in f(&self.history) {
                let chain = &chain[..chain.len().min(budget)];
                budget -= chain.len();
                cands.add_chain(
                    chain,
                    &vec![1.0; chain.len()],
                    &vec![None; chain.len()],
                    Source::External,
                );
            }
        }
        Ok((cands, times))
    }

    /// Lookup drafts of a context table continuing the output, each token with its calibrated
    /// probability.
    fn lookup_drafts(
        &self,
        cands: &mut Candidates,
        table: &ContextTable,
        kind: NgramKind,
        remaining: usize,
    ) {
        let max_len = LOOKUP_MAX_LEN.min(remaining.saturating_sub(1));
        let alternatives = self.cfg.ngram_topk.min(4);
        let calib = &self.planner.calibration;
        let conf = bucket::confidence(self.root_rank.1);
        // Each chain grows while the calibrated probability of reaching its end stays above
        // LOOKUP_MIN_PATH_P: beyond that no step verifies it, and looking up the rest of its 16
        // tokens was most of the draft phase's time under the paper's sampler.
        let mut path = 1f32;
        let chains = table.draft_while(&self.history, max_len, alternatives, |chain| {
            let s = *chain.support.last().expect("a chain has a token");
            let p = calib.p(bucket::ngram(kind, s, conf));
            path = if chain.tokens.len() == 1 { p } else { path * p };
            path >= LOOKUP_MIN_PATH_P
        });
        for chain in chains {
            let buckets: Vec<Option<u16>> = chain
                .support
                .iter()
                .map(|&s| Some(bucket::ngram(kind, s, conf)))
                .collect();
            let ps: Vec<f32> = buckets.iter().map(|b| calib.p(b.unwrap())).collect();
            cands.add_chain(&chain.tokens, &ps, &buckets, Source::Ngram(kind));
        }
    }

    /// The separate pass (DESIGN §2): the root through the base over the partial cache (or
    /// the full cache when the history still fits the budget or a re-selection is due), then the
    /// heads on its hidden state; the base row and the heads' rows go through `lm_head` in one
    /// call. Returns the best tokens per depth (the base's first).
    fn separate_choices(&mut self) -> Result<Vec<Choices>> {
        let model = self.model;
        let pos = self.full.len();
        let root = *self.history.last().expect("the root is in the history");
        let budget = self
            .cfg
            .kv_budget
            .min(self.stats.prompt_tokens + self.max_new);
        let partial = self
            .partial
            .get_or_insert_with(|| PartialKvCache::new(model, budget));
        self.stats.draft_cache_capacity = partial.cache.capacity();
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
            // The whole history fits the budget, or a re-selection is due: draft with the full
            // cache (and take the current query for the selection).
            let select = pos + 1 > budget;
            let outputs = Outputs {
                logits: LogitRows::None,
                last_queries: select,
            };
            let out = model.forward_with(
                &[root],
                &[pos],
                &AttentionMask::Causal,
                &mut self.full,
                outputs,
            )?;
            self.full.rollback_to(pos)?;
            if let Some(queries) = &out.last_queries {
                partial.select(model, &self.full, queries)?;
                self.stats.partial_selections += 1;
            }
            out
        };
        let mut normed = vec![
            model
                .final_norm()
                .forward(out.hidden.clone())
                .cast(DType::F32),
        ];
        normed.extend(self.heads.forward(out.hidden.cast(DType::F32)));
        let widths: Vec<usize> = match &self.cfg.tree {
            TreeChoice::Fixed(a) => a.clone(),
            TreeChoice::Auto => AUTO_HEADS_ARITY[..normed.len().min(4)].to_vec(),
        };
        let mut rows = self.draft_head.logits(model, Tensor::cat(normed, 0));
        Ok(self.draft_head.choices(
            &self.sampling,
            &mut rows,
            self.vocab,
            &self.history,
            &widths,
        ))
    }

    /// Phase 2: the trie to verify (the planner's choice among the candidates) and, per trie
    /// node, the candidate it came from.
    fn build_trie(
        &mut self,
        cands: &Candidates,
        plan: SourcePlan,
        times: SourceTimes,
    ) -> (CandidateTrie, Vec<usize>) {
        let mut chosen = self.planner.select(cands, plan, times);
        if let TreeChoice::Fixed(_) = self.cfg.tree
            && self.ngrams.len() > 1
        {
            // Two n-gram tables with a fixed tree: verify the chains of the one whose chains
            // have been accepted more often (both keep being scored).
            let calib = &self.planner.calibration;
            let lagged_better =
                calib.p(bucket::paper_chain(true, 1)) > calib.p(bucket::paper_chain(false, 1));
            let drop_bit = if lagged_better { 1 } else { 2 };
            let nodes = cands.nodes();
            let mut keep = vec![true; nodes.len()];
            for &i in &chosen {
                let n = &nodes[i];
                keep[i] = keep[n.parent] && n.sources & !drop_bit != 0;
            }
            chosen.retain(|&i| keep[i]);
        }
        let root = cands.nodes()[0].token;
        let mut trie = CandidateTrie::new(root);
        let mut node_of = vec![0usize; cands.len()];
        let mut of_candidate = vec![0usize];
        for &i in &chosen {
            let c = &cands.nodes()[i];
            node_of[i] = trie.push_child(node_of[c.parent], c.token);
            of_candidate.push(i);
        }
        (trie, of_candidate)
    }

    /// Phase 3: one forward pass of the trie over the full cache with the tree mask.
    fn verify(&mut self, trie: &CandidateTrie) -> Result<Verified> {
        let pos = self.full.len();
        let out = self.model.forward(
            trie.tokens(),
            &trie.positions(pos),
            &AttentionMask::Tree(trie.mask()),
            &mut self.full,
            LogitRows::None,
        )?;
        Ok(Verified { hidden: out.hidden })
    }

    /// Phase 4: the walk down the trie, one target draw per visited node with the node's own
    /// path in its penalty window. Logits are computed only for the rows the walk reaches: first
    /// the root and its most likely path (first children), then, if the walk leaves that path,
    /// the path below the node it left it at.
    fn accept(&mut self, trie: &CandidateTrie, verified: &Verified) -> AcceptOutcome {
        let model = self.model;
        let (sampling, vocab, faults) = (&self.sampling, self.vocab, self.cfg.faults);
        let history = &self.history;
        let rng = &mut self.rng;
        let n = trie.len();
        if faults.extra_uniform && n > 1 {
            rng.uniform();
        }
        let step_window = if faults.one_window_per_step {
            penalty_window_tokens(history, &[], sampling.penalty_window)
        } else {
            Vec::new()
        };
        let root_rank = &mut self.root_rank;
        let mut no_penalty = sampling.clone();
        no_penalty.penalty = 1.0;
        let rows = &mut self.rows;
        let mut row_of = vec![usize::MAX; n];
        let mut batch = Vec::new();
        let reference = self.cfg.accept == AcceptRule::PerRowReference;
        if reference {
            // The reference rule revisits nodes and needs the raw rows each time.
            let all: Vec<usize> = (0..n).collect();
            model.logits_of_rows_vec(&verified.hidden, &all, rows);
            row_of = all;
        }
        // Rows of `rows` filled this step (all of them for the reference rule). The buffer only
        // ever grows: refilling it from empty would zero a vocabulary-wide row (192 KiB here)
        // every step before lm_head overwrites it.
        let mut used = if reference { n } else { 0 };
        let mut compute = |from: usize, row_of: &mut Vec<usize>, rows: &mut Vec<f32>| {
            // `from` and its first-child path, appended to the rows computed so far.
            batch.clear();
            let mut node = Some(from);
            while let Some(v) = node {
                batch.push(v);
                node = trie.children(v).first().copied();
            }
            let end = (used + batch.len()) * vocab;
            if rows.len() < end {
                rows.resize(end, 0.0);
            }
            model.logits_of_rows(&verified.hidden, &batch, &mut rows[used * vocab..end]);
            for (j, &v) in batch.iter().enumerate() {
                row_of[v] = used + j;
            }
            used += batch.len();
        };
        let pristine = reference.then(|| rows.clone());
        let mut target = |node: usize| {
            if row_of[node] == usize::MAX {
                compute(node, &mut row_of, rows);
            }
            let r = row_of[node];
            let row = &mut rows[r * vocab..(r + 1) * vocab];
            if let Some(p) = &pristine {
                row.copy_from_slice(&p[r * vocab..(r + 1) * vocab]);
            }
            if faults.penalty_on_root_only && node > 0 {
                return draw(&no_penalty, rng, row, &[]);
            }
            if faults.one_window_per_step {
                return draw(sampling, rng, row, &step_window);
            }
            let window =
                penalty_window_tokens(history, &trie.path_tokens(node), sampling.penalty_window);
            if node == 0 {
                let (token, rank, p) = draw_ranked(sampling, rng, row, &window);
                *root_rank = (rank, p);
                return token;
            }
            draw(sampling, rng, row, &window)
        };
        match self.cfg.accept {
            AcceptRule::PerNode => accept_path(trie, &mut target),
            AcceptRule::PerRowReference => accept_per_row_reference(trie, &mut target),
        }
    }

    /// Feeds the planner's selection audit: every verified node whose parent the walk reached,
    /// and whether the walk accepted it.
    fn audit_verified(
        &mut self,
        trie: &CandidateTrie,
        of_candidate: &[usize],
        cands: &Candidates,
        outcome: &AcceptOutcome,
    ) {
        let accepted = |i: usize| i == 0 || outcome.accepted.contains(&i);
        let verified = (1..trie.len())
            .filter(|&i| accepted(trie.parent(i).unwrap_or(0)))
            .map(|i| (of_candidate[i], accepted(i)));
        cands.record_verified(verified, &mut self.planner.calibration);
    }

    /// Phase 5: keep the root and the accepted path in the full cache, extend the output, feed
    /// the partial cache and the n-gram tables, count.
    fn commit(
        &mut self,
        trie: &CandidateTrie,
        of_candidate: &[usize],
        cands: &Candidates,
        outcome: &AcceptOutcome,
        verified: &Verified,
    ) -> Result<(Vec<u32>, usize)> {
        let pos = self.full.len() - trie.len();
        let shift = usize::from(self.cfg.faults.keep_next_node);
        let keep: Vec<usize> = std::iter::once(pos)
            .chain(
                outcome
                    .accepted
                    .iter()
                    .map(|&a| pos + (a + shift).min(trie.len() - 1)),
            )
            .collect();
        let mut keep_sorted = keep.clone();
        keep_sorted.dedup();
        self.full.keep(pos, &keep_sorted)?;
        let stop_node = outcome.accepted.last().copied().unwrap_or(0);
        self.hidden = verified.hidden.clone().narrow(0, stop_node, 1);

        let mut emitted: Vec<u32> = outcome.accepted.iter().map(|&a| trie.tokens()[a]).collect();
        emitted.push(outcome.next_token);
        emitted.truncate(self.max_new - self.generated().len());
        if self.cfg.stop_at_eos
            && let Some(i) = emitted.iter().position(|t| self.eos.contains(t))
        {
            emitted.truncate(i + 1);
            self.stats.stopped_at_eos = true;
            self.done = true;
        }
        self.history.extend_from_slice(&emitted);
        if self.generated().len() >= self.max_new {
            self.done = true;
        }
        // The partial cache takes the newly cached positions (root + accepted).
        if let Some(partial) = &mut self.partial
            && partial.is_ready()
        {
            partial.place_recent(&self.full, pos..self.full.len())?;
        }
        for source in &mut self.ngrams {
            source.catch_up(&self.history);
        }

        let s = &mut self.stats;
        let depth = (0..trie.len()).map(|i| trie.depth(i)).max().unwrap_or(0);
        s.steps += 1;
        s.ar_steps += usize::from(trie.len() == 1);
        s.proposed += depth;
        s.verified_nodes += trie.len();
        let accepted = outcome.accepted.len().min(emitted.len());
        s.accepted += outcome.accepted.len();
        for &a in &outcome.accepted {
            let d = trie.depth(a);
            if s.accepted_by_depth.len() < d {
                s.accepted_by_depth.resize(d, 0);
            }
            s.accepted_by_depth[d - 1] += 1;
            s.accepted_off_column += usize::from(a != d);
        }
        s.accepted_from_ngrams += outcome
            .accepted
            .iter()
            .filter(|&&a| {
                let src = cands.nodes()[of_candidate[a]].sources;
                src & NGRAM_SOURCES != 0 && src & !NGRAM_SOURCES == 0
            })
            .count();
        s.generated_tokens = self.history.len() - s.prompt_tokens;
        Ok((emitted, accepted))
    }
}

/// Generates up to `max_new` tokens after `prompt` with TokenSwift. `on_step` sees every step's
/// emitted tokens as they are produced (the first token alone first).
pub fn generate_tokenswift(
    model: &Model,
    heads: &DraftHeads,
    prompt: &[u32],
    max_new: usize,
    sampling: &SamplingConfig,
    cfg: &TokenSwiftConfig,
    on_step: &mut dyn FnMut(StepReport<'_>) -> Result<()>,
) -> Result<(Vec<u32>, TokenSwiftStats)> {
    if max_new == 0 {
        sampling.validate(model.config().vocab_size)?;
        return Ok((Vec::new(), TokenSwiftStats::default()));
    }
    let mut session = Session::new(model, heads, prompt, max_new, sampling, cfg)?;
    run_session(&mut session, on_step)?;
    Ok(session.finish())
}

/// Runs a session to the end, reporting every step (the first token first).
pub fn run_session(
    session: &mut Session<'_>,
    on_step: &mut dyn FnMut(StepReport<'_>) -> Result<()>,
) -> Result<()> {
    let first = session.first_token();
    on_step(StepReport {
        tokens: &[first],
        accepted: 0,
        stats: session.stats(),
    })?;
    while !session.is_done() {
        let (tokens, accepted) = session.step()?;
        on_step(StepReport {
            tokens: &tokens,
            accepted,
            stats: session.stats(),
        })?;
    }
    Ok(())
}
