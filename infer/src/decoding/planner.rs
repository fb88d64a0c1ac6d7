//! The step planner: what each TokenSwift step drafts and how many candidates it verifies.
//!
//! Any step shape is lossless (every emitted token is a target draw at its node), so the planner
//! is free to choose per step, and it chooses by measurement:
//!
//! - **Candidates with calibrated probabilities.** Every draft source (the n-gram tables, the
//!   heads on the last verified hidden state, the paper's separate draft pass) proposes tokens
//!   below the root, each tagged with a *bucket* describing its evidence (context length and
//!   count of an n-gram, rank and draft probability of a head's token). A [`Calibration`] turns
//!   buckets into acceptance probabilities, measured on this run's own output.
//! - **Exact shadow scoring.** The output does not depend on the drafts (it is the AR output for
//!   the seed), so the acceptance of *any* proposal, verified or not, is known once the output
//!   has been emitted: walk the proposal along the emitted tokens. Every proposal is scored this
//!   way, so the statistics are never censored by the shapes the planner happened to pick.
//! - **A measured cost curve.** [`CostModel`] keeps the wall time of a step as a function of the
//!   number of verified nodes: the plain AR step's (an exponential average), and each wider
//!   step's relative to it, so costs measured earlier follow the context and the machine.
//! - **Choosing.** The best prefix of candidates by path probability maximises expected tokens
//!   per second; zero candidates is a plain AR step. Sources that cost time (heads, the separate
//!   pass) are switched on and off by their measured gain, with exploration and hysteresis.
//!
//! Fixed trees (`--tree 1,3,3,3`) bypass all of this and verify the whole tree every step, as
//! the paper does.

use crate::error::{InferError, Result};

use super::ngram::Support;

/// How the heads' draft distributions are obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DraftMode {
    /// Chosen per step by measured gain: no heads, the heads on the verify pass's hidden state,
    /// or the separate pass.
    Auto,
    /// The paper's extra base pass over the partial cache, plus the heads: K + 1 depths.
    Separate,
    /// The heads on the verify pass's hidden state at the last accepted node (Medusa-style): no
    /// extra pass, K depths.
    Fused,
    /// No heads: n-gram drafts only (with `--ngram-topk 0`, every step is a plain AR step).
    None,
}

/// The tree setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeChoice {
    /// A fixed arity per depth, verified whole every step (the paper's `1,3,3,3`).
    Fixed(Vec<usize>),
    /// The planner's per-step choice.
    Auto,
}

impl TreeChoice {
    /// Parses `auto` or comma-separated arities such as `1,3,3,3`.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        if s.trim().eq_ignore_ascii_case("auto") {
            return Ok(TreeChoice::Auto);
        }
        let arity: std::result::Result<Vec<usize>, _> =
            s.split(',').map(|p| p.trim().parse::<usize>()).collect();
        match arity {
            Ok(a) if !a.is_empty() && a.iter().all(|&x| (1..=16).contains(&x)) => {
                Ok(TreeChoice::Fixed(a))
            }
            _ => Err(format!(
                "`{s}` is not a tree: give `auto` or comma-separated arities between 1 and 16, e.g. 1,3,3,3"
            )),
        }
    }
}

/// How far behind the emitted text the n-gram tables are fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NgramLag {
    /// The paper's: one penalty window (recently penalised n-grams are not proposed).
    Paper,
    /// This many tokens (0: every emitted token at once).
    Tokens(usize),
    /// Both the unlagged and the paper-lagged tables, chosen by measured acceptance.
    Auto,
}

impl NgramLag {
    /// Parses `paper`, `auto` or a number of tokens.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "paper" => Ok(NgramLag::Paper),
            "auto" => Ok(NgramLag::Auto),
            t => t.parse::<usize>().map(NgramLag::Tokens).map_err(|_| {
                format!("`{s}` is not an n-gram lag: give `paper`, `auto` or a number of tokens")
            }),
        }
    }

    /// The lags of the tables to keep, for a penalty window of `window` tokens.
    pub fn lags(self, window: usize) -> Vec<usize> {
        match self {
            NgramLag::Paper => vec![window],
            NgramLag::Tokens(n) => vec![n],
            NgramLag::Auto if window == 0 => vec![0],
            NgramLag::Auto => vec![0, window],
        }
    }
}

/// Nodes of a draft tree with these arities per depth, the root included (`[1, 3, 3, 3]` → 41).
pub fn nodes_of(arity: &[usize]) -> usize {
    let mut total = 1;
    let mut level = 1;
    for &a in arity {
        level *= a;
        total += level;
    }
    total
}

/// Which n-gram table proposed a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NgramKind {
    /// The output's own table, fed at once (or with a lag below the penalty window).
    Recent,
    /// The output's own table, fed one penalty window behind (the paper's lag).
    Lagged,
    /// The heads' training corpus (`heads.ngrams`), read-only.
    Corpus,
}

impl NgramKind {
    fn index(self) -> usize {
        match self {
            NgramKind::Recent => 0,
            NgramKind::Lagged => 1,
            NgramKind::Corpus => 2,
        }
    }
}

/// Where a candidate token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An n-gram table.
    Ngram(NgramKind),
    /// The heads on the last verified hidden state.
    Heads,
    /// The separate pass: its base row (depth 1) and the heads on it (depths 2+).
    Separate,
    /// A caller-supplied drafter ([`crate::decoding::session::Session::set_external_drafter`]),
    /// trusted with probability 1 and never calibrated.
    External,
}

impl Source {
    fn bit(self) -> u8 {
        match self {
            Source::Ngram(NgramKind::Recent) => 1,
            Source::Ngram(NgramKind::Lagged) => 2,
            Source::Heads => 4,
            Source::Separate => 8,
            Source::External => 16,
            Source::Ngram(NgramKind::Corpus) => 32,
        }
    }
}

/// Bit mask of sources.
pub const NGRAM_SOURCES: u8 = 1 | 2 | 32;
pub const HEADS_SOURCE: u8 = 4;
pub const SEPARATE_SOURCE: u8 = 8;

/// Calibration buckets (see [`Calibration`]).
pub mod bucket {
    use super::{NgramKind, Support};

    const NGRAM: usize = 3 * 3 * 5 * 4 * 3;
    const PAPER: usize = 2 * 8;
    /// Kinds of model-based proposals: fused heads, separate base row, separate heads.
    pub const FUSED_HEADS: usize = 0;
    pub const SEPARATE_BASE: usize = 1;
    pub const SEPARATE_HEADS: usize = 2;
    const MODEL: usize = 3 * 4 * 4 * 6 * 3;
    pub const COUNT: usize = NGRAM + PAPER + MODEL;
    /// Groups of buckets that share a pooled prior (see [`super::Calibration`]): one per n-gram
    /// table kind, the paper's chains, one per model kind.
    pub const GROUPS: usize = 3 + 1 + 3;
    /// The groups' names, in [`group`]'s order.
    pub const GROUP_NAMES: [&str; GROUPS] = [
        "recent n-grams",
        "lagged n-grams",
        "corpus n-grams",
        "paper chains",
        "fused heads",
        "separate base row",
        "separate heads",
    ];

    /// The group of bucket `b`.
    pub fn group(b: u16) -> usize {
        let b = b as usize;
        if b < NGRAM {
            b / (NGRAM / 3)
        } else if b < NGRAM + PAPER {
            3
        } else {
            4 + ((b - NGRAM - PAPER) / (MODEL / 3)).min(2)
        }
    }

    /// A token of a context-table draft: which table, the matched context length, the count of
    /// the token after that context, the ratio of it to all continuations, and how probable the
    /// root's own draw was (0: below 0.3, 1: below 0.8, 2: above; a confident root marks a
    /// predictable stretch, such as the middle of a word).
    pub fn ngram(kind: NgramKind, s: Support, root_confidence: usize) -> u16 {
        let c = (s.context.clamp(1, 3) - 1) as usize;
        let cb = match s.count {
            0 | 1 => 0,
            2 => 1,
            3..=4 => 2,
            5..=8 => 3,
            _ => 4,
        };
        let r = f64::from(s.count) / f64::from(s.total.max(1));
        let rb = if r < 0.34 {
            0
        } else if r < 0.67 {
            1
        } else if r < 0.9 {
            2
        } else {
            3
        };
        (((kind.index() * 60) + (c * 5 + cb) * 4 + rb) * 3 + root_confidence.min(2)) as u16
    }

    /// The confidence class of a root drawn with probability `p` (see [`ngram`]).
    pub fn confidence(p: f32) -> usize {
        if p < 0.3 {
            0
        } else if p < 0.8 {
            1
        } else {
            2
        }
    }

    /// A token at `depth` (1-based) of a paper n-gram chain.
    pub fn paper_chain(lagged: bool, depth: usize) -> u16 {
        (NGRAM + usize::from(lagged) * 8 + depth.clamp(1, 8) - 1) as u16
    }

    /// A model-proposed token: `kind` (above), depth (1-based), rank among the proposals at that
    /// depth (0 = most likely), its draft probability, and the root draw's confidence (see
    /// [`ngram`]; the fused heads never see the root they continue, so they are right more often
    /// when it was the likely token).
    pub fn model(kind: usize, depth: usize, rank: usize, prob: f32, root_confidence: usize) -> u16 {
        let pb = if prob < 0.1 {
            0
        } else if prob < 0.25 {
            1
        } else if prob < 0.5 {
            2
        } else if prob < 0.75 {
            3
        } else if prob < 0.9 {
            4
        } else {
            5
        };
        let i = (((kind * 4 + depth.clamp(1, 4) - 1) * 4 + rank.min(3)) * 6 + pb) * 3
            + root_confidence.min(2);
        (NGRAM + PAPER + i) as u16
    }
}

/// Acceptance probability per bucket, measured: hits / trials, with old evidence halved once a
/// bucket has many trials, so it follows the text as it changes.
///
/// A bucket with few trials leans on its *group's* pooled rate (empirical Bayes): the buckets of
/// one n-gram table, the paper's chains, or one model source (see [`bucket::group`]). With a
/// fixed prior instead (1 in 4), every rarely seen bucket looked promising under the paper's
/// sampler, where this model's n-gram drafts are accepted 2–8 % of the time, and the planner kept
/// paying to verify them; under greedy decoding the pooled rate is high and new buckets start
/// optimistic, as they should.
#[derive(Debug, Clone)]
pub struct Calibration {
    hits: Vec<f32>,
    trials: Vec<f32>,
    group_hits: [f32; bucket::GROUPS],
    group_trials: [f32; bucket::GROUPS],
    /// Per group, over the *verified* tokens whose parent the walk reached: the sum of their
    /// uncorrected probabilities and their hits (decayed). See [`Calibration::selection_factor`].
    verified_expected: [f32; bucket::GROUPS],
    verified_hits: [f32; bucket::GROUPS],
}

/// No estimate exceeds this (a selection factor above 1 must not make a token certain).
const MAX_P: f32 = 0.995;
/// The prior of a group with no trials yet: 0.5 hits in 2 trials.
const PRIOR_HITS: f32 = 0.5;
const PRIOR_TRIALS: f32 = 2.0;
const CALIBRATION_MEMORY: f32 = 400.0;
/// A group pools many buckets, so it keeps more evidence before halving.
const GROUP_MEMORY: f32 = 4000.0;
/// Verified tokens' evidence is halved once a group's expected hits pass this.
const VERIFIED_MEMORY: f32 = 100.0;
/// The selection factor's prior: this many expected hits, realised as expected.
const VERIFIED_PRIOR: f32 = 3.0;

/// Adds one observation to decayed counts: `weight` to `total` and one to `hits` on a hit; both
/// are halved once `total` passes `memory`, so old evidence fades.
fn add_decayed(hits: &mut f32, total: &mut f32, hit: bool, weight: f32, memory: f32) {
    *total += weight;
    if hit {
        *hits += 1.0;
    }
    if *total > memory {
        *total *= 0.5;
        *hits *= 0.5;
    }
}

impl Default for Calibration {
    fn default() -> Self {
        Self {
            hits: vec![0.0; bucket::COUNT],
            trials: vec![0.0; bucket::COUNT],
            group_hits: [0.0; bucket::GROUPS],
            group_trials: [0.0; bucket::GROUPS],
            verified_expected: [0.0; bucket::GROUPS],
            verified_hits: [0.0; bucket::GROUPS],
        }
    }
}

impl Calibration {
    /// The probability that a token of bucket `b` is accepted (given its parent was): its own
    /// hits and trials, plus [`PRIOR_TRIALS`] trials at its group's pooled rate, times its
    /// group's [selection factor](Calibration::selection_factor).
    pub fn p(&self, b: u16) -> f32 {
        (self.raw_p(b) * self.selection_factor(bucket::group(b))).min(MAX_P)
    }

    /// [`Calibration::p`] before the selection factor.
    fn raw_p(&self, b: u16) -> f32 {
        let prior = self.group_p(bucket::group(b));
        let b = b as usize;
        (self.hits[b] + PRIOR_TRIALS * prior) / (self.trials[b] + PRIOR_TRIALS)
    }

    /// How the tokens of group `g` that were verified fared against their estimates: realised
    /// over expected hits (uncorrected estimates, with [`VERIFIED_PRIOR`] expected hits realised
    /// as expected), within 0.05–1.25.
    ///
    /// Every bucket's rate is measured over all of its tokens (shadow scoring), so it is right
    /// on average; but the planner verifies the tokens whose buckets read highest, and where a
    /// group has many thin buckets and little real signal, those read high by chance. Measured
    /// on the README command, greedy: the corpus table's verified tokens were expected to be
    /// accepted 34 % of the time and were 9 %, the output's own tables' 77 % and 77 %. The
    /// factor corrects each group by what its selected tokens actually did.
    pub fn selection_factor(&self, g: usize) -> f32 {
        ((self.verified_hits[g] + VERIFIED_PRIOR) / (self.verified_expected[g] + VERIFIED_PRIOR))
            .clamp(0.05, 1.25)
    }

    /// Records a verified token of bucket `b` whose parent the walk reached, and whether the walk
    /// accepted it (see [`Calibration::selection_factor`]).
    pub fn record_verified(&mut self, b: u16, hit: bool) {
        let (g, raw) = (bucket::group(b), self.raw_p(b));
        add_decayed(
            &mut self.verified_hits[g],
            &mut self.verified_expected[g],
            hit,
            raw,
            VERIFIED_MEMORY,
        );
    }

    /// The pooled acceptance rate of group `g` (the fixed prior before any trial).
    fn group_p(&self, g: usize) -> f32 {
        (self.group_hits[g] + PRIOR_HITS) / (self.group_trials[g] + PRIOR_TRIALS)
    }

    pub fn record(&mut self, b: u16, hit: bool) {
        let g = bucket::group(b);
        let b = b as usize;
        let (hits, trials) = (&mut self.hits[b], &mut self.trials[b]);
        add_decayed(hits, trials, hit, 1.0, CALIBRATION_MEMORY);
        let (hits, trials) = (&mut self.group_hits[g], &mut self.group_trials[g]);
        add_decayed(hits, trials, hit, 1.0, GROUP_MEMORY);
    }

    /// Trials recorded for bucket `b` (decayed).
    pub fn trials(&self, b: u16) -> f32 {
        self.trials[b as usize]
    }
}

/// One proposed token below the root.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Index of the parent candidate (0 = the root).
    pub parent: usize,
    pub token: u32,
    pub depth: usize,
    /// Acceptance probability given the parent was accepted (the best over its sources).
    pub p: f32,
    /// Bit mask of the sources that proposed it.
    pub sources: u8,
    buckets: [u16; 4],
    n_buckets: u8,
}

/// The candidate tokens of one step, as a trie below the root (index 0), parents before
/// children; identical (parent, token) proposals from several sources are one node.
#[derive(Debug, Clone)]
pub struct Candidates {
    nodes: Vec<Candidate>,
}

impl Candidates {
    pub fn new(root: u32) -> Self {
        Self {
            nodes: vec![Candidate {
                parent: 0,
                token: root,
                depth: 0,
                p: 1.0,
                sources: 0,
                buckets: [0; 4],
                n_buckets: 0,
            }],
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.len() == 1
    }

    pub fn nodes(&self) -> &[Candidate] {
        &self.nodes
    }

    fn child(&self, parent: usize, token: u32) -> Option<usize> {
        (parent + 1..self.nodes.len())
            .find(|&i| self.nodes[i].parent == parent && self.nodes[i].token == token)
    }

    /// Adds (or merges) `token` below `parent` with acceptance probability `p`; returns its index.
    pub fn add(
        &mut self,
        parent: usize,
        token: u32,
        p: f32,
        source: Source,
        bucket: Option<u16>,
    ) -> usize {
        let i = match self.child(parent, token) {
            Some(i) => {
                let n = &mut self.nodes[i];
                n.p = n.p.max(p);
                i
            }
            None => {
                let depth = self.nodes[parent].depth + 1;
                self.nodes.push(Candidate {
                    parent,
                    token,
                    depth,
                    p,
                    sources: 0,
                    buckets: [0; 4],
                    n_buckets: 0,
                });
                self.nodes.len() - 1
            }
        };
        let n = &mut self.nodes[i];
        n.sources |= source.bit();
        if let Some(b) = bucket
            && (n.n_buckets as usize) < n.buckets.len()
            && !n.buckets[..n.n_buckets as usize].contains(&b)
        {
            n.buckets[n.n_buckets as usize] = b;
            n.n_buckets += 1;
        }
        i
    }

    /// Adds the chain `tokens` below the root, token `i` with probability `ps[i]` and bucket
    /// `buckets[i]`.
    pub fn add_chain(
        &mut self,
        tokens: &[u32],
        ps: &[f32],
        buckets: &[Option<u16>],
        source: Source,
    ) {
        let mut node = 0;
        for (i, &t) in tokens.iter().enumerate() {
            node = self.add(node, t, ps[i], source, buckets[i]);
        }
    }

    /// A Medusa-style cartesian tree below `from` (the root, or a separate pass's depth-1 node):
    /// depth `d + 1` (relative) holds, under every node of depth `d`, the first `arity[d]` of
    /// `choices[d]` (token, probability, bucket).
    pub fn add_cartesian(
        &mut self,
        from: &[usize],
        choices: &[Vec<(u32, f32, Option<u16>)>],
        arity: &[usize],
        source: Source,
    ) {
        let mut frontier = from.to_vec();
        for (d, &a) in arity.iter().enumerate() {
            let Some(level) = choices.get(d) else { break };
            let mut next = Vec::with_capacity(frontier.len() * a);
            for &node in &frontier {
                for &(t, p, b) in level.iter().take(a) {
                    next.push(self.add(node, t, p, source, b));
                }
            }
            frontier = next;
        }
    }

    /// Probability that the actual output follows the path to each node (the product of the
    /// conditional probabilities along it).
    fn path_probabilities(&self) -> Vec<f32> {
        let mut pp = vec![1f32; self.nodes.len()];
        for i in 1..self.nodes.len() {
            pp[i] = pp[self.nodes[i].parent] * self.nodes[i].p;
        }
        pp
    }

    /// The candidates (root excluded) in the order a planner adds them: by path probability,
    /// parents before children, among those whose sources intersect `mask`.
    fn ranked(&self, mask: u8) -> (Vec<usize>, Vec<f32>) {
        let pp = self.path_probabilities();
        let mut keep = vec![false; self.nodes.len()];
        keep[0] = true;
        for i in 1..self.nodes.len() {
            keep[i] = keep[self.nodes[i].parent] && self.nodes[i].sources & mask != 0;
        }
        let mut order: Vec<usize> = (1..self.nodes.len()).filter(|&i| keep[i]).collect();
        // A child's path probability never exceeds its parent's; the depth breaks ties so
        // parents still come first.
        order.sort_by(|&a, &b| {
            pp[b]
                .total_cmp(&pp[a])
                .then(self.nodes[a].depth.cmp(&self.nodes[b].depth))
                .then(a.cmp(&b))
        });
        (order, pp)
    }

    /// The best set of candidates to verify: the prefix of the ranked candidates (sources in
    /// `mask`, at most `max_nodes`) that maximises expected emitted tokens (1 + `shrink` × the
    /// sum of the path probabilities) per `cost(verified nodes, root included)`, and beats a
    /// plain AR step by more than `margin`. Returns the chosen nodes, parents first, and the
    /// expected tokens per second of the choice.
    pub fn select(
        &self,
        mask: u8,
        max_nodes: usize,
        cost: &dyn Fn(usize) -> f64,
        shrink: f64,
        margin: f64,
    ) -> (Vec<usize>, f64) {
        let (order, pp) = self.ranked(mask);
        let ar = 1.0 / cost(1).max(1e-12);
        let mut best = (0usize, ar);
        let mut expected = 1.0f64;
        for (n, &i) in order.iter().take(max_nodes).enumerate() {
            expected += shrink * f64::from(pp[i]);
            let rate = expected / cost(n + 2).max(1e-12);
            // Leaving a plain AR step needs a clear expected gain: the cost curve is measured on
            // a noisy machine, and a marginal speculation lost to noise is a loss on average.
            if rate > best.1 && rate > ar * (1.0 + margin) {
                best = (n + 1, rate);
            }
        }
        let mut chosen = order[..best.0].to_vec();
        chosen.sort_unstable();
        (chosen, best.1)
    }

    /// Records verified candidates whose parent the walk reached (`(candidate, accepted)`) in
    /// `calib`'s selection audit, each under the bucket that reads highest (the one its estimate
    /// came from when several sources proposed it). Candidates without a bucket are skipped.
    pub fn record_verified(
        &self,
        verified: impl IntoIterator<Item = (usize, bool)>,
        calib: &mut Calibration,
    ) {
        for (i, hit) in verified {
            let n = &self.nodes[i];
            let best = n.buckets[..n.n_buckets as usize]
                .iter()
                .copied()
                .max_by(|&a, &b| calib.raw_p(a).total_cmp(&calib.raw_p(b)));
            if let Some(b) = best {
                calib.record_verified(b, hit);
            }
        }
    }

    /// Every candidate whose sources intersect `mask` (and whose ancestors' do), parents first.
    pub fn all(&self, mask: u8) -> Vec<usize> {
        let mut keep = vec![false; self.nodes.len()];
        keep[0] = true;
        (1..self.nodes.len())
            .filter(|&i| {
                keep[i] = keep[self.nodes[i].parent] && self.nodes[i].sources & mask != 0;
                keep[i]
            })
            .collect()
    }
}

/// Expected gain in tokens per second below which a step stays a plain AR step.
pub const SPECULATION_MARGIN: f64 = 0.02;

/// A step's candidates waiting for the output that scores them.
#[derive(Debug, Clone)]
pub struct Pending {
    cands: Candidates,
    /// Index in the output stream of the first token after the root.
    start: usize,
    node: usize,
    matched: usize,
}

impl Pending {
    pub fn new(cands: Candidates, start: usize) -> Self {
        Self {
            cands,
            start,
            node: 0,
            matched: 0,
        }
    }

    /// Walks the candidates along `stream` (every token emitted so far), recording one trial per
    /// candidate whose parent the output reached. Returns `true` once finished (the output left
    /// the candidates), `false` if it needs more output.
    pub fn resolve(&mut self, stream: &[u32], calib: &mut Calibration) -> bool {
        loop {
            let Some(&actual) = stream.get(self.start + self.matched) else {
                return false;
            };
            let c = &self.cands.nodes;
            let mut next = None;
            for (i, n) in c.iter().enumerate().skip(self.node + 1) {
                if n.parent != self.node || n.depth != self.matched + 1 {
                    continue;
                }
                let hit = n.token == actual;
                for &b in &n.buckets[..n.n_buckets as usize] {
                    calib.record(b, hit);
                }
                if hit {
                    next = Some(i);
                }
            }
            match next {
                Some(i) => {
                    self.node = i;
                    self.matched += 1;
                }
                None => return true,
            }
        }
    }
}

/// Wall time of a step as a function of the number of verified nodes (root included).
///
/// A plain AR step (one node) is measured most steps, so its cost is an exponential average of
/// recent steps. Wider steps are rarer, and the cost of a step changes during a run (the context
/// grows, so attention costs more; a shared machine speeds up and slows down), so an average of
/// their wall times would go stale: measured at a shorter context or a faster moment, a 2-node
/// step could look cheaper than today's 1-node step, and every guess would look free. Instead a
/// wider step's cost is kept *relative* to the 1-node cost measured at the time, and priced at
/// today's 1-node cost. Node counts never measured are interpolated between measured ones and
/// extrapolated optimistically beyond them (so wider verifies get tried and measured). Before any
/// 1-node step has been measured (fixed trees), absolute averages are used.
#[derive(Debug, Clone)]
pub struct CostModel {
    /// Exponential average of the wall time per node count.
    secs: Vec<f64>,
    seen: Vec<bool>,
    /// Per node count: exponential average of its wall time over the 1-node cost of the moment
    /// (`relative[1]` is 1).
    relative: Vec<f64>,
    relative_seen: Vec<bool>,
}

/// Weight of a new measurement in the average.
const COST_ALPHA: f64 = 0.1;
/// Assumed extra cost per node beyond the widest measured verify, relative to one node.
const COST_PRIOR_SLOPE: f64 = 0.03;

/// `values[q]` where measured, else interpolated between the nearest measured counts, extrapolated
/// upwards with [`COST_PRIOR_SLOPE`] times the smallest measured value per node, and downwards
/// with the same slope (never above the measured value); `None` if nothing is measured.
fn interpolate(values: &[f64], seen: &[bool], q: usize) -> Option<f64> {
    if seen[q] {
        return Some(values[q]);
    }
    let below = (1..q).rev().find(|&i| seen[i]);
    let above = (q + 1..values.len()).find(|&i| seen[i]);
    match (below, above) {
        (Some(a), Some(b)) => {
            let t = (q - a) as f64 / (b - a) as f64;
            Some(values[a] + t * (values[b] - values[a]))
        }
        (Some(a), None) => {
            let unit = values[(1..=a).find(|&i| seen[i]).unwrap_or(a)];
            Some(values[a] + COST_PRIOR_SLOPE * unit * (q - a) as f64)
        }
        (None, Some(b)) => Some(values[b] / (1.0 + COST_PRIOR_SLOPE * (b - q) as f64)),
        (None, None) => None,
    }
}

impl CostModel {
    pub fn new(max_nodes: usize) -> Self {
        let n = max_nodes + 2;
        let mut relative = vec![0.0; n];
        let mut relative_seen = vec![false; n];
        relative[1] = 1.0;
        relative_seen[1] = true;
        Self {
            secs: vec![0.0; n],
            seen: vec![false; n],
            relative,
            relative_seen,
        }
    }

    /// Records that a step verifying `q` nodes took `secs`.
    pub fn observe(&mut self, q: usize, secs: f64) {
        let q = q.clamp(1, self.secs.len() - 1);
        let first_unit = q == 1 && !self.seen[1];
        if self.seen[q] {
            self.secs[q] += COST_ALPHA * (secs - self.secs[q]);
        } else {
            self.secs[q] = secs;
            self.seen[q] = true;
        }
        if first_unit {
            // Wider steps measured before the first 1-node step: relative to it.
            for i in 2..self.secs.len() {
                if self.seen[i] {
                    self.relative[i] = self.secs[i] / secs;
                    self.relative_seen[i] = true;
                }
            }
        } else if q > 1 && self.seen[1] {
            let r = secs / self.secs[1];
            if self.relative_seen[q] {
                self.relative[q] += COST_ALPHA * (r - self.relative[q]);
            } else {
                self.relative[q] = r;
                self.relative_seen[q] = true;
            }
        }
    }

    pub fn is_measured(&self, q: usize) -> bool {
        self.seen.get(q).copied().unwrap_or(false)
    }

    /// Estimated seconds of a step verifying `q` nodes now (1 when nothing is measured yet).
    pub fn cost(&self, q: usize) -> f64 {
        let q = q.clamp(1, self.secs.len() - 1);
        if self.seen[1] {
            let r = interpolate(&self.relative, &self.relative_seen, q).unwrap_or(1.0);
            return self.secs[1] * r;
        }
        interpolate(&self.secs, &self.seen, q).unwrap_or(1.0)
    }
}

/// Which costly sources a step computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SourcePlan {
    /// The heads on the last verified hidden state.
    pub heads: bool,
    /// The separate draft pass (base row + heads).
    pub separate: bool,
}

/// A costly source's on/off state, driven by its measured gain.
#[derive(Debug, Clone)]
struct Switch {
    on: bool,
    /// Exponential average of the relative gain in expected tokens per second when computed.
    gain: f64,
    /// Exponential average of its time per step, seconds.
    time: f64,
    timed: bool,
    /// Steps until the next exploration while off, and the current interval.
    countdown: usize,
    interval: usize,
    min_interval: usize,
}

const GAIN_ALPHA: f64 = 0.1;
/// Hysteresis: switch on above this relative gain, off below its negative.
const GAIN_MARGIN: f64 = 0.01;
const MAX_EXPLORE_INTERVAL: usize = 256;

impl Switch {
    fn new(on: bool, min_interval: usize) -> Self {
        Self {
            on,
            gain: 0.0,
            time: 0.0,
            timed: false,
            countdown: min_interval,
            interval: min_interval,
            min_interval,
        }
    }

    /// Whether to compute the source this step: always while on; while off, once every
    /// `interval` steps, the interval doubling after each look (up to a limit).
    fn wanted(&mut self) -> bool {
        if self.on {
            return true;
        }
        if self.min_interval == 0 {
            return false; // switched on by an estimate, never tried blindly
        }
        if self.countdown > 1 {
            self.countdown -= 1;
            return false;
        }
        self.countdown = self.interval;
        self.interval = (self.interval * 2).min(MAX_EXPLORE_INTERVAL);
        true
    }

    fn observe_time(&mut self, secs: f64) {
        if self.timed {
            self.time += 0.2 * (secs - self.time);
        } else {
            self.time = secs;
            self.timed = true;
        }
    }

    fn observe_gain(&mut self, gain: f64) {
        // Explorations while off are rare, so each weighs more.
        let alpha = if self.on { GAIN_ALPHA } else { 0.5 };
        self.gain += alpha * (gain - self.gain);
        if self.on && self.gain < -GAIN_MARGIN {
            self.on = false;
            self.interval = self.min_interval;
            self.countdown = self.min_interval;
        } else if !self.on && self.gain > GAIN_MARGIN {
            self.on = true;
        }
    }
}

/// The planner's settings.
#[derive(Debug, Clone)]
pub struct PlannerConfig {
    pub tree: TreeChoice,
    pub draft: DraftMode,
    /// Draft heads available (K).
    pub heads: usize,
}

/// Most nodes an `auto` step verifies (root excluded).
pub const AUTO_MAX_NODES: usize = 31;
/// Arity of the heads' candidates offered to an `auto` step, per depth.
pub const AUTO_HEADS_ARITY: [usize; 4] = [3, 2, 2, 1];

/// The per-step planner (see the module documentation).
#[derive(Debug, Clone)]
pub struct Planner {
    tree: TreeChoice,
    /// The draft mode actually used (`Auto` only with an auto tree).
    draft: DraftMode,
    pub calibration: Calibration,
    pub costs: CostModel,
    heads: Switch,
    separate: Switch,
    pending: Vec<Pending>,
    /// Decayed counts of root draws whose rank in their target distribution was below 1, 2, 3:
    /// what the separate pass's base row (the target at depth 1, up to the partial cache)
    /// would have had accepted with arity 1, 2, 3.
    root_rank_hits: [f64; 3],
    root_draws: f64,
    /// Exponential average of emitted tokens per second of wall time, all steps.
    rate: f64,
    /// The planner's own account, over steps that verified candidates: expected and emitted
    /// tokens, predicted and measured seconds (costly sources excluded).
    audit: Audit,
    /// Expected tokens and predicted seconds of the step in flight.
    last_prediction: Option<(f64, f64)>,
    /// Decayed sums of (raw expected, realized) extra tokens of speculative steps.
    extra: (f64, f64),
    /// Decayed sums over speculative steps of (tokens emitted, seconds, steps, seconds as plain
    /// AR steps).
    speculative: (f64, f64, f64, f64),
}

/// Predicted against realized, summed over the steps that verified candidates.
#[derive(Debug, Clone, Copy, Default)]
pub struct Audit {
    pub steps: usize,
    pub expected_tokens: f64,
    pub emitted_tokens: f64,
    pub predicted_secs: f64,
    pub measured_secs: f64,
    /// The same steps, had each been a plain AR step (the cost of one node).
    pub ar_secs: f64,
}

impl Planner {
    pub fn new(cfg: &PlannerConfig) -> Result<Self> {
        let k = cfg.heads;
        let draft = match (&cfg.tree, cfg.draft) {
            // A fixed tree needs a fixed source: separate when the tree uses its extra depth.
            (TreeChoice::Fixed(a), DraftMode::Auto) => {
                if a.len() > k {
                    DraftMode::Separate
                } else {
                    DraftMode::Fused
                }
            }
            (_, d) => d,
        };
        if let TreeChoice::Fixed(a) = &cfg.tree {
            if draft == DraftMode::None {
                return Err(InferError::setting(
                    "draft",
                    "`none` drafts n-grams only and needs the `auto` tree",
                ));
            }
            let max_depth = match draft {
                DraftMode::Fused => k,
                _ => k + 1,
            };
            if a.len() > max_depth {
                return Err(InferError::setting(
                    "tree",
                    format!(
                        "has {} levels but {k} heads give at most {max_depth} in {} mode",
                        a.len(),
                        if draft == DraftMode::Separate {
                            "separate"
                        } else {
                            "fused"
                        }
                    ),
                ));
            }
        }
        if k == 0 && matches!(draft, DraftMode::Fused | DraftMode::Separate) {
            return Err(InferError::setting(
                "draft",
                "`separate` or `fused` needs at least one draft head",
            ));
        }
        Ok(Self {
            tree: cfg.tree.clone(),
            draft,
            calibration: Calibration::default(),
            costs: CostModel::new(AUTO_MAX_NODES.max(64)),
            // Heads are cheap to try and explored often. The separate pass costs about a whole
            // forward pass, so it is not tried blindly: its depth-1 value is shadow-scored for
            // free from the rank of every root draw, and it is switched on when that estimate
            // beats the measured rate.
            heads: Switch::new(k > 0 && draft == DraftMode::Fused, 4),
            separate: Switch::new(k > 0 && draft == DraftMode::Separate, 0),
            pending: Vec::new(),
            root_rank_hits: [0.0; 3],
            root_draws: 0.0,
            rate: 0.0,
            audit: Audit::default(),
            last_prediction: None,
            extra: (0.0, 0.0),
            speculative: (0.0, 0.0, 0.0, 0.0),
        })
    }

    pub fn tree(&self) -> &TreeChoice {
        &self.tree
    }

    /// The draft mode in use (`Auto`: chosen per step).
    pub fn draft(&self) -> DraftMode {
        self.draft
    }

    /// Most nodes (root included) a step may verify, n-gram chains excluded for fixed trees.
    pub fn max_tree_nodes(&self) -> usize {
        match &self.tree {
            TreeChoice::Fixed(a) => nodes_of(a),
            TreeChoice::Auto => AUTO_MAX_NODES + 1,
        }
    }

    /// Which costly sources this step computes.
    pub fn sources(&mut self, heads_available: bool) -> SourcePlan {
        match self.draft {
            DraftMode::Separate => SourcePlan {
                heads: false,
                separate: true,
            },
            DraftMode::Fused => SourcePlan {
                heads: true,
                separate: false,
            },
            DraftMode::None => SourcePlan::default(),
            DraftMode::Auto if !heads_available => SourcePlan::default(),
            DraftMode::Auto => {
                let separate = self.separate.wanted();
                SourcePlan {
                    // While the separate pass is on it supersedes the fused heads.
                    heads: (!self.separate.on || !separate) && self.heads.wanted(),
                    separate,
                }
            }
        }
    }

    /// The candidates to verify this step (indices into `cands`, parents first). For an auto
    /// tree also updates the measured gain of each costly source computed this step.
    pub fn select(
        &mut self,
        cands: &Candidates,
        plan: SourcePlan,
        times: SourceTimes,
    ) -> Vec<usize> {
        if let Some(t) = times.heads {
            self.heads.observe_time(t);
        }
        if let Some(t) = times.separate {
            self.separate.observe_time(t);
        }
        if let TreeChoice::Fixed(_) = self.tree {
            return cands.all(u8::MAX);
        }
        if !self.costs.is_measured(1) {
            // The first step is a plain AR step: it anchors the cost curve at one node.
            return Vec::new();
        }
        let costs = &self.costs;
        let cost = |q: usize| costs.cost(q);
        let (shrink, margin) = (self.shrink(), self.margin());
        let (chosen, rate) = cands.select(u8::MAX, AUTO_MAX_NODES, &cost, shrink, margin);
        self.last_prediction = (!chosen.is_empty()).then(|| {
            let secs = cost(chosen.len() + 1);
            (rate * secs, secs)
        });
        if self.draft == DraftMode::Auto {
            // Gain of each computed source: the best rate with its candidates, its own time
            // included, against the best rate without them.
            let verify = cost(chosen.len() + 1);
            for (on, mask, switch) in [
                (plan.heads, HEADS_SOURCE, &mut self.heads),
                (plan.separate, SEPARATE_SOURCE, &mut self.separate),
            ] {
                if !on {
                    continue;
                }
                let (_, without) = cands.select(!mask, AUTO_MAX_NODES, &cost, shrink, margin);
                let with = rate * verify / (verify + switch.time);
                switch.observe_gain(with / without.max(1e-12) - 1.0);
            }
        }
        chosen
    }

    /// The correction applied to expected extra tokens: realized / expected extra tokens over
    /// the recent speculative steps (with a prior of 1 worth a few steps). Picking the best of
    /// many estimated candidates, and merging sources by their best estimate, makes the raw
    /// estimates optimistic; the audit measures by how much.
    fn shrink(&self) -> f64 {
        const PRIOR: f64 = 4.0;
        let (e, r) = (self.extra.0, self.extra.1);
        ((r + PRIOR) / (e + PRIOR)).clamp(0.2, 1.5)
    }

    /// The expected gain a step needs before it leaves a plain AR step: [`SPECULATION_MARGIN`],
    /// raised by twice the measured shortfall when the recent speculative steps emitted fewer
    /// tokens per second than plain AR steps would have (with a prior of no shortfall worth a few
    /// steps; the evidence decays, so speculation is measured again).
    fn margin(&self) -> f64 {
        const PRIOR: f64 = 4.0;
        let (tokens, secs, steps, ar_secs) = self.speculative;
        let realized = (tokens + PRIOR) / (secs + PRIOR * self.costs.cost(1));
        let ar = (steps + PRIOR) / (ar_secs + PRIOR * self.costs.cost(1));
        let shortfall = (1.0 - realized / ar.max(1e-12)).max(0.0);
        SPECULATION_MARGIN + 2.0 * shortfall
    }

    /// Records a finished step; its candidates await scoring against the output, from stream
    /// index `start` (the first token after the root).
    pub fn observe_step(&mut self, step: StepOutcome, cands: Candidates, start: usize) {
        let StepOutcome {
            nodes: q,
            secs,
            source_secs: sources,
            tokens,
            root_rank,
        } = step;
        if let Some((expected, predicted)) = self.last_prediction.take() {
            let a = &mut self.audit;
            a.steps += 1;
            a.expected_tokens += expected;
            a.emitted_tokens += tokens as f64;
            a.predicted_secs += predicted;
            a.measured_secs += secs;
            a.ar_secs += self.costs.cost(1);
            // Sums of expected and realized extra tokens (beyond the one every step emits),
            // expected counted before the correction.
            let raw = (expected - 1.0) / self.shrink();
            self.extra.0 += raw;
            self.extra.1 += tokens as f64 - 1.0;
            let v = &mut self.speculative;
            v.0 += tokens as f64;
            v.1 += secs;
            v.2 += 1.0;
            v.3 += self.costs.cost(1);
        }
        // Decayed every step, not only when speculating: a correction learnt from a few early
        // steps must not stop speculation for good, so without new evidence it drifts back to
        // its prior and speculation gets measured again.
        self.extra.0 *= 0.99;
        self.extra.1 *= 0.99;
        let v = &mut self.speculative;
        *v = (v.0 * 0.99, v.1 * 0.99, v.2 * 0.99, v.3 * 0.99);
        self.costs.observe(q, secs);
        let rate = tokens as f64 / (secs + sources).max(1e-9);
        self.rate = if self.rate == 0.0 {
            rate
        } else {
            self.rate + 0.05 * (rate - self.rate)
        };
        self.root_draws = self.root_draws * 0.995 + 1.0;
        for (a, h) in self.root_rank_hits.iter_mut().enumerate() {
            *h = *h * 0.995 + f64::from(u8::from(root_rank <= a));
        }
        if self.draft == DraftMode::Auto && !self.separate.on && self.root_draws > 32.0 {
            // Switch the separate pass on if its estimated rate beats the measured one by 10 %:
            // depth 1 accepted as often as the root draws fell in the top 3, the heads on it
            // accepted as calibrated, for one extra pass plus a verify of about 5 nodes.
            let p1 = self.root_rank_hits[2] / self.root_draws;
            let h =
                f64::from(
                    self.calibration
                        .p(bucket::model(bucket::SEPARATE_HEADS, 2, 0, 0.5, 2)),
                );
            let tokens = 1.0 + p1 + p1 * h;
            let secs = self.costs.cost(1) + self.costs.cost(5);
            if tokens / secs > 1.1 * self.rate {
                self.separate.on = true;
            }
        }
        if !cands.is_empty() {
            self.pending.push(Pending::new(cands, start));
        }
    }

    /// The estimated share of root draws a separate pass would have drafted at depth 1 with
    /// arity 1, 2 and 3.
    pub fn separate_depth1_estimate(&self) -> [f64; 3] {
        self.root_rank_hits.map(|h| h / self.root_draws.max(1e-9))
    }

    /// Scores pending candidates against the output so far (`stream`: prompt + generated).
    pub fn score(&mut self, stream: &[u32]) {
        let calib = &mut self.calibration;
        self.pending.retain_mut(|p| !p.resolve(stream, calib));
    }

    /// A human-readable summary of what the planner has measured: the step cost by verified
    /// nodes, the costly sources' state, and the calibrated acceptance of the busiest buckets.
    pub fn summary(&self) -> String {
        let mut s = String::from("step cost by verified nodes (ms, measured *):");
        for q in 1..=16 {
            s.push_str(&format!(
                " {q}:{:.1}{}",
                1e3 * self.costs.cost(q),
                if self.costs.is_measured(q) { "*" } else { "" }
            ));
        }
        s.push_str(&format!(
            "\nheads: {} (gain {:+.3}, {:.2} ms); separate: {} (gain {:+.3}, {:.2} ms)",
            if self.heads.on { "on" } else { "off" },
            self.heads.gain,
            1e3 * self.heads.time,
            if self.separate.on { "on" } else { "off" },
            self.separate.gain,
            1e3 * self.separate.time
        ));
        let a = &self.audit;
        s.push_str(&format!(
            "\naudit of {} speculative steps: expected {:.0} tokens, emitted {:.0}; predicted {:.2} s, measured {:.2} s; as AR steps {:.2} s",
            a.steps, a.expected_tokens, a.emitted_tokens, a.predicted_secs, a.measured_secs, a.ar_secs
        ));
        s.push_str(&format!(
            "; net saving {:+.2} s (extra tokens at one AR step each, minus the extra verify time)",
            (a.emitted_tokens - a.steps as f64) * self.costs.cost(1)
                - (a.measured_secs - a.ar_secs)
        ));
        s.push_str(&format!(
            "; expected extra tokens now scaled by {:.2}",
            self.shrink()
        ));
        let e = self.separate_depth1_estimate();
        s.push_str(&format!(
            "; its depth 1 would be accepted (shadow, arity 1/2/3): {:.2}/{:.2}/{:.2}; measured rate {:.1} tok/s",
            e[0], e[1], e[2], self.rate
        ));
        // Acceptance of rank-0 proposals per model source and depth, over all probability buckets.
        for (kind, name) in [
            (bucket::FUSED_HEADS, "fused heads"),
            (bucket::SEPARATE_BASE, "separate base row"),
            (bucket::SEPARATE_HEADS, "separate heads"),
        ] {
            s.push_str(&format!("\n{name}, rank 0 (hits/trials by depth):"));
            for d in 1..=4 {
                let (mut h, mut t) = (0.0, 0.0);
                for pb in [0.05, 0.2, 0.4, 0.6, 0.8, 0.95] {
                    for conf in 0..3 {
                        let b = bucket::model(kind, d, 0, pb, conf) as usize;
                        h += self.calibration.hits[b];
                        t += self.calibration.trials[b];
                    }
                }
                s.push_str(&format!(" d{d} {h:.0}/{t:.0}"));
            }
        }
        s.push_str("\nselection factor by group (verified tokens' hits over their estimates):");
        for (g, name) in bucket::GROUP_NAMES.iter().enumerate() {
            s.push_str(&format!(
                " {name} {:.2}",
                self.calibration.selection_factor(g)
            ));
        }
        let mut busy: Vec<usize> = (0..bucket::COUNT)
            .filter(|&b| self.calibration.trials[b] >= 5.0)
            .collect();
        busy.sort_by(|&a, &b| self.calibration.trials[b].total_cmp(&self.calibration.trials[a]));
        s.push_str("\nbusiest buckets (bucket: trials → p):");
        for b in busy.into_iter().take(24) {
            s.push_str(&format!(
                " {b}:{:.0}→{:.2}",
                self.calibration.trials[b],
                self.calibration.p(b as u16)
            ));
        }
        s
    }

    /// Whether the heads / the separate pass are currently switched on (auto draft).
    pub fn switches(&self) -> (bool, bool) {
        (self.heads.on, self.separate.on)
    }
}

/// What a finished step cost and produced.
#[derive(Debug, Clone, Copy)]
pub struct StepOutcome {
    /// Verified nodes, the root included.
    pub nodes: usize,
    /// Wall time of the step, costly sources excluded.
    pub secs: f64,
    /// Wall time of the costly sources (heads, separate pass).
    pub source_secs: f64,
    /// Tokens emitted.
    pub tokens: usize,
    /// Rank of the root's draw in its target distribution.
    pub root_rank: usize,
}

/// Seconds spent this step on costly sources.
#[derive(Debug, Clone, Copy, Default)]
pub struct SourceTimes {
    pub heads: Option<f64>,
    pub separate: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_selection_audit_corrects_the_group_whose_verified_tokens_miss() {
        let s = Support {
            context: 2,
            count: 3,
            total: 6,
        };
        let corpus = bucket::ngram(NgramKind::Corpus, s, 2);
        let recent = bucket::ngram(NgramKind::Recent, s, 2);
        let mut c = Calibration::default();
        // Shadow scoring: both buckets are right half the time.
        for i in 0..40 {
            c.record(corpus, i % 2 == 0);
            c.record(recent, i % 2 == 0);
        }
        let before = c.p(corpus);
        assert!((before - 0.5).abs() < 0.02, "{before}");
        // The corpus table's verified tokens are accepted 1 time in 10, the output's table's
        // half the time, as estimated.
        for i in 0..60 {
            c.record_verified(corpus, i % 10 == 0);
            c.record_verified(recent, i % 2 == 0);
        }
        assert!(c.p(corpus) < 0.2, "{} (was {before})", c.p(corpus));
        assert!((c.p(recent) - 0.5).abs() < 0.05, "{}", c.p(recent));
        // A group whose verified tokens beat their estimates is raised, never to certainty.
        let lagged = bucket::ngram(NgramKind::Lagged, s, 2);
        for _ in 0..40 {
            c.record(lagged, true);
        }
        for _ in 0..60 {
            c.record_verified(lagged, true);
        }
        assert!(c.selection_factor(bucket::group(lagged)) > 1.0);
        assert!(c.p(lagged) <= MAX_P);
    }

    #[test]
    fn an_unseen_bucket_starts_at_its_groups_pooled_rate() {
        let s = |count, total| Support {
            context: 2,
            count,
            total,
        };
        let seen = bucket::ngram(NgramKind::Recent, s(5, 6), 2);
        let unseen = bucket::ngram(NgramKind::Recent, s(1, 9), 0);
        let other_group = bucket::ngram(NgramKind::Corpus, s(1, 9), 0);
        let mut c = Calibration::default();
        assert_eq!(c.p(unseen), 0.25, "no evidence anywhere: the fixed prior");
        for _ in 0..200 {
            c.record(seen, false);
        }
        // The Recent table's drafts have all failed: a Recent bucket never tried starts near
        // that pooled rate instead of 1 in 4 (which made the planner verify it to find out)...
        assert!(c.p(unseen) < 0.01, "{}", c.p(unseen));
        // ...while another table's buckets keep the fixed prior,
        assert_eq!(c.p(other_group), 0.25);
        // and a bucket's own trials outweigh its group's once it has some.
        for _ in 0..50 {
            c.record(unseen, true);
        }
        assert!(c.p(unseen) > 0.9, "{}", c.p(unseen));
        assert!(c.p(seen) < 0.01);
    }

    #[test]
    fn every_bucket_belongs_to_its_sources_group() {
        let s = Support {
            context: 3,
            count: 9,
            total: 9,
        };
        for (kind, g) in [
            (NgramKind::Recent, 0),
            (NgramKind::Lagged, 1),
            (NgramKind::Corpus, 2),
        ] {
            for conf in 0..3 {
                assert_eq!(bucket::group(bucket::ngram(kind, s, conf)), g);
            }
        }
        for depth in 1..=8 {
            assert_eq!(bucket::group(bucket::paper_chain(depth % 2 == 0, depth)), 3);
        }
        for (kind, g) in [
            (bucket::FUSED_HEADS, 4),
            (bucket::SEPARATE_BASE, 5),
            (bucket::SEPARATE_HEADS, 6),
        ] {
            for (depth, rank, prob) in [(1, 0, 0.05), (4, 3, 0.95), (2, 1, 0.5)] {
                assert_eq!(bucket::group(bucket::model(kind, depth, rank, prob, 2)), g);
            }
        }
        assert!((0..bucket::COUNT as u16).all(|b| bucket::group(b) < bucket::GROUPS));
    }

    #[test]
    fn parses_fixed_trees_auto_and_lags() {
        assert_eq!(
            TreeChoice::parse("1,3,3,3"),
            Ok(TreeChoice::Fixed(vec![1, 3, 3, 3]))
        );
        assert_eq!(TreeChoice::parse("auto"), Ok(TreeChoice::Auto));
        for bad in ["", "1,,3", "0,1", "a", "1,99"] {
            assert!(TreeChoice::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(nodes_of(&[1, 3, 3, 3]), 41);
        assert_eq!(NgramLag::parse("paper"), Ok(NgramLag::Paper));
        assert_eq!(NgramLag::parse("0"), Ok(NgramLag::Tokens(0)));
        assert_eq!(NgramLag::parse("auto"), Ok(NgramLag::Auto));
        assert!(NgramLag::parse("-1").is_err());
        assert_eq!(NgramLag::Auto.lags(1024), vec![0, 1024]);
        assert_eq!(NgramLag::Paper.lags(1024), vec![1024]);
    }

    #[test]
    fn too_deep_trees_are_refused() {
        let cfg = |draft| PlannerConfig {
            tree: TreeChoice::Fixed(vec![1, 3, 3, 3]),
            draft,
            heads: 3,
        };
        assert!(Planner::new(&cfg(DraftMode::Separate)).is_ok());
        let e = Planner::new(&cfg(DraftMode::Fused))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("at most 3"), "{e}");
        // `auto` with a fixed tree picks the source the tree's depth needs.
        assert_eq!(
            Planner::new(&cfg(DraftMode::Auto)).unwrap().draft(),
            DraftMode::Separate
        );
    }

    fn cost_line(fixed: f64, per_node: f64) -> CostModel {
        let mut c = CostModel::new(40);
        for q in 1..=40 {
            c.observe(q, fixed + per_node * q as f64);
        }
        c
    }

    /// A chain of candidates, each accepted with probability `p` given its parent.
    fn chain(p: &[f32]) -> Candidates {
        let mut c = Candidates::new(0);
        let tokens: Vec<u32> = (1..=p.len() as u32).collect();
        c.add_chain(&tokens, p, &vec![None; p.len()], Source::External);
        c
    }

    /// Scripted costs and acceptances: the planner verifies nothing when drafts are unlikely
    /// (a plain AR step), a long chain when they are likely and nodes are cheap, and stops
    /// the chain where the next node costs more than it is expected to return.
    #[test]
    fn selection_under_scripted_costs_and_acceptances() {
        let cheap = cost_line(0.020, 0.0005);
        let f = |q: usize| cheap.cost(q);
        // Unlikely drafts: AR.
        let (n, _) = chain(&[0.01, 0.5, 0.5]).select(u8::MAX, 31, &f, 1.0, SPECULATION_MARGIN);
        assert!(n.is_empty(), "{n:?}");
        // Likely drafts and cheap nodes: the whole chain.
        let (n, _) = chain(&[0.95; 12]).select(u8::MAX, 31, &f, 1.0, SPECULATION_MARGIN);
        assert_eq!(n.len(), 12);
        // Expensive nodes (a node costs half a pass): only the near-certain first token pays.
        let dear = cost_line(0.020, 0.010);
        let g = |q: usize| dear.cost(q);
        let (n, _) = chain(&[0.99, 0.3, 0.3]).select(u8::MAX, 31, &g, 1.0, SPECULATION_MARGIN);
        assert_eq!(n, vec![1]);
        // The node cap is respected.
        let (n, _) = chain(&[0.99; 40]).select(u8::MAX, 31, &f, 1.0, SPECULATION_MARGIN);
        assert_eq!(n.len(), 31);
    }

    /// Two sources proposing the same token merge into one node with the better probability;
    /// ranking keeps parents before children.
    #[test]
    fn candidates_merge_and_rank_parents_first() {
        let mut c = Candidates::new(7);
        c.add_chain(
            &[1, 2],
            &[0.5, 1.0],
            &[Some(3), Some(4)],
            Source::Ngram(NgramKind::Recent),
        );
        c.add_chain(&[1, 5], &[0.9, 0.2], &[Some(10), Some(11)], Source::Heads);
        assert_eq!(c.len(), 4);
        assert_eq!(c.nodes()[1].p, 0.9);
        assert_eq!(c.nodes()[1].sources, 1 | 4);
        let (order, pp) = c.ranked(u8::MAX);
        assert_eq!(order, vec![1, 2, 3]);
        assert!((pp[2] - 0.9).abs() < 1e-6 && (pp[3] - 0.18).abs() < 1e-6);
        // Without the heads, token 5 (heads only) is gone and token 1 stays (n-gram too).
        assert_eq!(c.all(NGRAM_SOURCES), vec![1, 2]);
    }

    /// Shadow scoring walks the emitted output: every child of a reached node gets one trial,
    /// a chain waits for output not emitted yet, and buckets learn their rates.
    #[test]
    fn shadow_scoring_records_one_trial_per_reached_candidate() {
        let mut calib = Calibration::default();
        let mut c = Candidates::new(0);
        let (a, b, x) = (
            bucket::model(0, 1, 0, 0.5, 0),
            bucket::model(0, 2, 0, 0.5, 0),
            bucket::model(0, 1, 1, 0.5, 0),
        );
        c.add_chain(
            &[10, 11, 12],
            &[1.0; 3],
            &[Some(a), Some(b), Some(b)],
            Source::Heads,
        );
        c.add(0, 20, 0.5, Source::Heads, Some(x));
        // Output after the root: 10, 11 so far.
        let mut p = Pending::new(c, 5);
        let stream = [0, 0, 0, 0, 0, 10, 11];
        assert!(!p.resolve(&stream, &mut calib), "12 is still to come");
        assert_eq!(
            (calib.trials(a), calib.trials(x), calib.trials(b)),
            (1.0, 1.0, 1.0)
        );
        // Then 13: the depth-3 candidate missed.
        let stream = [0, 0, 0, 0, 0, 10, 11, 13];
        assert!(p.resolve(&stream, &mut calib));
        assert_eq!(calib.trials(b), 2.0);
        assert!(calib.p(a) > calib.p(x), "hit vs miss");
    }

    /// When speculative steps have been slower per token than plain AR steps, the required gain
    /// rises with the shortfall (so the planner drafts only where it is surest); when they have
    /// been faster it stays at its floor.
    #[test]
    fn required_gain_follows_the_audit() {
        let mut p = Planner::new(&PlannerConfig {
            tree: TreeChoice::Auto,
            draft: DraftMode::Auto,
            heads: 3,
        })
        .unwrap();
        p.costs.observe(1, 0.02);
        assert!(
            (p.margin() - SPECULATION_MARGIN).abs() < 1e-12,
            "no evidence: the floor"
        );
        // 1000 steps emitting 1100 tokens in 30 s, where AR steps would have taken 20 s.
        p.speculative = (1100.0, 30.0, 1000.0, 20.0);
        let slow = p.margin();
        assert!(slow > 0.3 && slow < 1.0, "{slow}");
        // 1000 steps emitting 2000 tokens in 25 s against 20 s: speculation pays.
        p.speculative = (2000.0, 25.0, 1000.0, 20.0);
        assert!((p.margin() - SPECULATION_MARGIN).abs() < 1e-12);
    }

    #[test]
    fn cost_model_interpolates_and_extrapolates_optimistically() {
        let mut c = CostModel::new(40);
        assert_eq!(c.cost(3), 1.0);
        c.observe(1, 0.02);
        c.observe(5, 0.03);
        assert!((c.cost(3) - 0.025).abs() < 1e-9);
        assert!((c.cost(7) - (0.03 + 2.0 * COST_PRIOR_SLOPE * 0.02)).abs() < 1e-9);
        c.observe(1, 0.04);
        assert!((c.cost(1) - 0.022).abs() < 1e-9, "exponential average");
        // Below the smallest measurement the cost falls with the prior slope.
        let mut c = CostModel::new(40);
        c.observe(9, 0.05);
        assert!(c.cost(1) < c.cost(5) && c.cost(5) < c.cost(9));
    }

    /// Costs of wider steps follow the 1-node cost as it drifts (a growing context, a machine
    /// slowing down): measured when one node took 10 ms and two took 12 ms, a 2-node step is
    /// priced 1.2 times today's 1-node cost once one node takes 20 ms, not a stale 12 ms that
    /// would make every guess look free — so an unlikely draft stays unverified. (With absolute
    /// averages per node count, the negative control, the 2-node step looks cheaper than an AR
    /// step and the unlikely draft is verified.)
    #[test]
    fn wider_step_costs_follow_the_one_node_cost() {
        let mut c = CostModel::new(40);
        for _ in 0..50 {
            c.observe(1, 0.010);
            c.observe(2, 0.012);
        }
        for _ in 0..100 {
            c.observe(1, 0.020);
        }
        assert!((c.cost(1) - 0.020).abs() < 1e-6, "{}", c.cost(1));
        assert!((c.cost(2) / c.cost(1) - 1.2).abs() < 1e-6, "{}", c.cost(2));
        let f = |q: usize| c.cost(q);
        let (n, _) = chain(&[0.05]).select(u8::MAX, 31, &f, 1.0, SPECULATION_MARGIN);
        assert!(n.is_empty(), "a 5 % guess at 1.2 passes: {n:?}");
        // A likely one still pays.
        let (n, _) = chain(&[0.6]).select(u8::MAX, 31, &f, 1.0, SPECULATION_MARGIN);
        assert_eq!(n, vec![1]);
    }

    /// A costly source whose candidates never pay for its time is switched off, and explored
    /// again later, less and less often; one that pays is switched on.
    #[test]
    fn costly_sources_switch_by_measured_gain() {
        let mut s = Switch::new(true, 4);
        for _ in 0..40 {
            s.observe_gain(-0.2);
        }
        assert!(!s.on);
        let explored: Vec<usize> = (0..64).filter(|_| s.wanted()).collect();
        assert!(!explored.is_empty() && explored.len() < 8, "{explored:?}");
        for _ in 0..40 {
            s.observe_gain(0.3);
        }
        assert!(s.on);
    }
}
