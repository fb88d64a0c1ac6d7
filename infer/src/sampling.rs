//! Logits processing and sampling, shared by every decoder (AR, TokenSwift draft and verify), so
//! that the same settings give the same distribution everywhere.
//!
//! Order (as the TokenSwift reference): banned tokens → temperature → contextual penalty over the
//! row's own window → min-p → eta → top-k → top-p → softmax. Temperature 0 is true greedy decoding:
//! ban, penalty, argmax.

use crate::error::{InferError, Result};

/// Sampling settings; every field can be set from the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// Softmax temperature; 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep only the k most likely tokens; 0 = off.
    pub top_k: usize,
    /// Nucleus sampling mass in (0, 1]; 1 = off.
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` × the top probability; 0 = off.
    pub min_p: f32,
    /// The filters never keep fewer tokens than this.
    pub min_tokens_to_keep: usize,
    /// Eta-sampling epsilon; 0 = off.
    pub eta: f32,
    /// Contextual penalty on tokens seen in the window (logit < 0: ×p, else ÷p); 1 = off.
    pub penalty: f32,
    /// How many most recent tokens the penalty looks at; 0 = no penalty window.
    pub penalty_window: usize,
    /// Token ids that are never produced.
    pub ban_tokens: Vec<u32>,
    /// Seed of the sampler's random stream.
    pub seed: u64,
}

impl Default for SamplingConfig {
    /// The paper's setting: temperature 1, min-p 0.1 (keeping at least 20), penalty 1.2 over the
    /// last 1024 tokens.
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.1,
            min_tokens_to_keep: 20,
            eta: 0.0,
            penalty: 1.2,
            penalty_window: 1024,
            ban_tokens: Vec::new(),
            seed: 0,
        }
    }
}

impl SamplingConfig {
    /// Greedy decoding with no penalty.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            min_p: 0.0,
            penalty: 1.0,
            penalty_window: 0,
            min_tokens_to_keep: 1,
            ..Self::default()
        }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Checks every value, naming the setting at fault.
    pub fn validate(&self, vocab_size: usize) -> Result<()> {
        let bad = |field, m: String| Err(InferError::setting(field, m));
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(
                "temperature",
                format!("must be ≥ 0 (0 = greedy), got {}", self.temperature),
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", format!("must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", format!("must be in [0, 1], got {}", self.min_p));
        }
        if !(0.0..1.0).contains(&self.eta) {
            return bad("eta", format!("must be in [0, 1), got {}", self.eta));
        }
        if !self.penalty.is_finite() || self.penalty <= 0.0 {
            return bad(
                "penalty",
                format!("must be > 0 (1 = off), got {}", self.penalty),
            );
        }
        if self.min_tokens_to_keep == 0 {
            return bad("min_tokens_to_keep", "must be at least 1".into());
        }
        if let Some(t) = self.ban_tokens.iter().find(|&&t| t as usize >= vocab_size) {
            return bad(
                "ban_tokens",
                format!("id {t} is outside the vocabulary of {vocab_size} tokens"),
            );
        }
        if self.ban_tokens.len() >= vocab_size {
            return bad("ban_tokens", "bans the whole vocabulary".into());
        }
        Ok(())
    }
}

/// A processed next-token distribution: candidate tokens, most likely first, with probabilities
/// summing to 1 (greedy: the argmax alone, probability 1).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenDistribution {
    pub tokens: Vec<u32>,
    pub probs: Vec<f32>,
}

impl TokenDistribution {
    /// Draws one token with one uniform number `u` in [0, 1).
    pub fn sample_with(&self, u: f64) -> u32 {
        let mut acc = 0.0f64;
        for (&t, &p) in self.tokens.iter().zip(&self.probs) {
            acc += f64::from(p);
            if u < acc {
                return t;
            }
        }
        *self
            .tokens
            .last()
            .expect("a distribution has at least one token")
    }

    /// The most likely token.
    pub fn argmax(&self) -> u32 {
        self.tokens[0]
    }
}

/// The tokens the contextual penalty applies to: the last `window` tokens of `history` followed by
/// `path` (a tree node sees its own ancestors as the most recent tokens).
pub fn penalty_window_tokens(history: &[u32], path: &[u32], window: usize) -> Vec<u32> {
    if window == 0 {
        return Vec::new();
    }
    let from_path = path.len().min(window);
    let from_history = (window - from_path).min(history.len());
    let mut v: Vec<u32> = history[history.len() - from_history..]
        .iter()
        .chain(&path[path.len() - from_path..])
        .copied()
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Applies the deterministic part of processing (ban, temperature, penalty) in place.
/// `penalised` must be deduplicated (see [`penalty_window_tokens`]).
pub fn adjust_logits(cfg: &SamplingConfig, logits: &mut [f32], penalised: &[u32]) {
    for &t in &cfg.ban_tokens {
        if let Some(l) = logits.get_mut(t as usize) {
            *l = f32::NEG_INFINITY;
        }
    }
    if cfg.temperature > 0.0 && cfg.temperature != 1.0 {
        let inv = 1.0 / cfg.temperature;
        logits.iter_mut().for_each(|l| *l *= inv);
    }
    if cfg.penalty != 1.0 && cfg.penalty_window > 0 {
        for &t in penalised {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = if *l < 0.0 {
                    *l * cfg.penalty
                } else {
                    *l / cfg.penalty
                };
            }
        }
    }
}

/// Indices of the `k` largest values, largest first (ties: the lower index first).
///
/// One pass that keeps the best `k` in order: a value enters only if it beats the current
/// `k`-th, which for a vocabulary-wide row and a small `k` (the sampler's `min_tokens_to_keep`,
/// the drafts' arities) is one comparison for nearly every value. An entry costs an insertion
/// into the kept `k`, so a large `k` (over [`TOP_K_BY_INSERTION`]) selects over an index vector
/// instead, as this function did for every `k` before (about a tenth of a millisecond per draw).
pub fn top_k_indices(values: &[f32], k: usize) -> Vec<u32> {
    use std::cmp::Ordering;
    let k = k.min(values.len());
    // Larger value first, then the lower index.
    let order = |&a: &u32, &b: &u32| {
        values[b as usize]
            .total_cmp(&values[a as usize])
            .then(a.cmp(&b))
    };
    if k > TOP_K_BY_INSERTION {
        let mut idx: Vec<u32> = (0..values.len() as u32).collect();
        if k < idx.len() {
            idx.select_nth_unstable_by(k - 1, order);
            idx.truncate(k);
        }
        idx.sort_unstable_by(order);
        return idx;
    }
    let mut best: Vec<u32> = Vec::with_capacity(k + 1);
    if k == 0 {
        return best;
    }
    for (i, &v) in values.iter().enumerate() {
        if best.len() == k && v.total_cmp(&values[best[k - 1] as usize]) != Ordering::Greater {
            continue;
        }
        // After every kept value that is at least as large (an equal one has a lower index).
        let at = best.partition_point(|&b| values[b as usize].total_cmp(&v) != Ordering::Less);
        best.insert(at, i as u32);
        best.truncate(k);
    }
    best
}

/// Above this `k`, [`top_k_indices`] selects instead of inserting (an insertion moves up to `k`
/// indices, so inserting would cost O(n·k) on an ascending row).
const TOP_K_BY_INSERTION: usize = 64;

/// How far (in log-probability) below the threshold a token's logit must lie for [`passing`] to
/// skip its exact test: far more than the rounding of `exp` (an ulp or two) and of the division.
const EXP_SKIP_SLACK: f64 = 1e-3;

/// The tokens of `logits` (with maximum `max` and normaliser `z`) whose probability, computed as
/// the sampler does, is at least `threshold`, in index order. A token whose `l − max` lies more
/// than `slack` below `ln(threshold·z)` has a probability below `threshold·e^-slack` and is
/// skipped without its `exp`: one comparison per token instead of one `exp` (with min-p, nearly
/// every token of a vocabulary-wide row). `slack = ∞` is the exact test alone.
fn passing(logits: &[f32], max: f32, z: f64, threshold: f32, slack: f64) -> Vec<u32> {
    let floor = if threshold > 0.0 {
        (f64::from(threshold) * z).ln() - slack
    } else {
        f64::NEG_INFINITY
    };
    let prob = |l| probability(l, max, z);
    (0..logits.len() as u32)
        .filter(|&i| {
            let l = logits[i as usize];
            l > f32::NEG_INFINITY && f64::from(l - max) >= floor && prob(l) >= threshold
        })
        .collect()
}

/// The sampler's probability of logit `l` in a row with maximum `max` and normaliser `z`.
fn probability(l: f32, max: f32, z: f64) -> f32 {
    (f64::from((l - max).exp()) / z) as f32
}

/// Processes one row of logits (modified in place) into the distribution to sample from.
pub fn distribution(
    cfg: &SamplingConfig,
    logits: &mut [f32],
    penalised: &[u32],
) -> TokenDistribution {
    adjust_logits(cfg, logits, penalised);
    if cfg.is_greedy() {
        let best = argmax(logits);
        return TokenDistribution {
            tokens: vec![best],
            probs: vec![1.0],
        };
    }
    let keep_min = cfg.min_tokens_to_keep.max(1);
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // Unnormalised probabilities; the normaliser is computed in f64 for stability.
    let z: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    let prob = |l| probability(l, max, z);
    // Candidate set: everything with nonzero mass, then narrowed by min-p / eta.
    let mut threshold = 0.0f32;
    if cfg.min_p > 0.0 {
        threshold = threshold.max(cfg.min_p * prob(max));
    }
    if cfg.eta > 0.0 {
        let entropy: f64 = logits
            .iter()
            .map(|&l| {
                let p = f64::from((l - max).exp()) / z;
                if p > 0.0 { -p * p.ln() } else { 0.0 }
            })
            .sum();
        let eps = f64::from(cfg.eta);
        let eta = eps.min(eps.sqrt() * (-entropy).exp());
        threshold = threshold.max(eta as f32);
    }
    let mut cand = passing(logits, max, z, threshold, EXP_SKIP_SLACK);
    if cand.len() < keep_min {
        cand = top_k_indices(logits, keep_min);
    }
    cand.sort_unstable_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    cand.retain(|&i| logits[i as usize] > f32::NEG_INFINITY);
    if cfg.top_k > 0 {
        cand.truncate(cfg.top_k.max(keep_min));
    }
    if cfg.top_p < 1.0 {
        // Remove the low tail whose cumulative mass (ascending) stays within 1 - top_p.
        let total: f64 = cand
            .iter()
            .map(|&i| f64::from(prob(logits[i as usize])))
            .sum();
        let mut acc = 0.0f64;
        let mut cut = cand.len();
        for (pos, &i) in cand.iter().enumerate().rev() {
            acc += f64::from(prob(logits[i as usize])) / total;
            if acc <= f64::from(1.0 - cfg.top_p) {
                cut = pos;
            } else {
                break;
            }
        }
        cand.truncate(cut.max(keep_min).min(cand.len()));
    }
    let weights: Vec<f64> = cand
        .iter()
        .map(|&i| f64::from((logits[i as usize] - max).exp()))
        .collect();
    let sum: f64 = weights.iter().sum();
    TokenDistribution {
        probs: weights.iter().map(|w| (w / sum) as f32).collect(),
        tokens: cand,
    }
}

/// Draws the next token from one row of raw logits (processed in place) with the tokens
/// `penalised` in its window: the argmax when greedy (no random number used), else one uniform
/// number from `rng`. Autoregressive decoding and every TokenSwift node draw through here, so a
/// seed gives the same tokens in both.
pub fn draw(
    cfg: &SamplingConfig,
    rng: &mut SamplerRng,
    logits: &mut [f32],
    penalised: &[u32],
) -> u32 {
    draw_ranked(cfg, rng, logits, penalised).0
}

/// As [`draw`], also returning the drawn token's rank in the processed distribution (0: the
/// most likely) and its probability there (1 when greedy). The same random number is used, so
/// the token is `draw`'s.
pub fn draw_ranked(
    cfg: &SamplingConfig,
    rng: &mut SamplerRng,
    logits: &mut [f32],
    penalised: &[u32],
) -> (u32, usize, f32) {
    let d = distribution(cfg, logits, penalised);
    let token = if cfg.is_greedy() {
        d.argmax()
    } else {
        d.sample_with(rng.uniform())
    };
    let rank = d.tokens.iter().position(|&t| t == token).unwrap_or(0);
    (token, rank, d.probs.get(rank).copied().unwrap_or(1.0))
}

/// Processes a batch of rows (`logits` is `[rows, vocab]`, modified in place), each with its own
/// penalised tokens — e.g. one row per tree node, each penalising its own path.
pub fn distributions(
    cfg: &SamplingConfig,
    logits: &mut [f32],
    vocab: usize,
    penalised: &[Vec<u32>],
) -> Vec<TokenDistribution> {
    assert_eq!(
        logits.len(),
        vocab * penalised.len(),
        "one penalty window per row"
    );
    logits
        .chunks_exact_mut(vocab)
        .zip(penalised)
        .map(|(row, window)| distribution(cfg, row, window))
        .collect()
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// The sampler's random stream: xoshiro256** seeded through SplitMix64, so a seed gives the same
/// tokens on every platform and every version of this crate.
#[derive(Debug, Clone)]
pub struct SamplerRng {
    s: [u64; 4],
}

impl SamplerRng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SamplingConfig {
        SamplingConfig {
            min_p: 0.0,
            min_tokens_to_keep: 1,
            penalty: 1.0,
            penalty_window: 0,
            ..SamplingConfig::default()
        }
    }

    #[test]
    fn greedy_is_argmax_after_penalty_and_ban() {
        let c = SamplingConfig {
            penalty: 2.0,
            penalty_window: 4,
            ban_tokens: vec![3],
            ..SamplingConfig::greedy()
        };
        // token 0 is best (4.0) but penalised to 2.0; token 3 is banned; token 2 wins with 3.0.
        let mut l = vec![4.0, 1.0, 3.0, 9.0];
        let d = distribution(&c, &mut l, &penalty_window_tokens(&[0, 1], &[], 4));
        assert_eq!(d.tokens, vec![2]);
    }

    #[test]
    fn each_row_of_a_batch_uses_its_own_window() {
        let c = SamplingConfig {
            penalty: 10.0,
            penalty_window: 4,
            ..SamplingConfig::greedy()
        };
        // Same logits in both rows; row 0 penalises token 0, row 1 penalises token 1.
        let mut l = vec![3.0, 2.0, 1.0, 3.0, 2.0, 1.0];
        let d = distributions(&c, &mut l, 3, &[vec![0], vec![1]]);
        assert_eq!(d[0].tokens, vec![1]);
        assert_eq!(d[1].tokens, vec![0]);
    }

    #[test]
    fn penalty_multiplies_negatives_and_divides_positives() {
        let c = SamplingConfig {
            penalty: 1.2,
            penalty_window: 8,
            ..cfg()
        };
        let mut l = vec![-1.0, 1.2, 5.0];
        adjust_logits(&c, &mut l, &[0, 1]);
        assert_eq!(l, vec![-1.2, 1.0, 5.0]);
    }

    #[test]
    fn window_takes_path_as_most_recent() {
        assert_eq!(
            penalty_window_tokens(&[1, 2, 3, 4], &[7, 8], 3),
            vec![4, 7, 8]
        );
        assert_eq!(penalty_window_tokens(&[1, 2], &[5, 6, 7], 2), vec![6, 7]);
        assert!(penalty_window_tokens(&[1, 2], &[5], 0).is_empty());
    }

    #[test]
    fn min_p_keeps_at_least_min_tokens() {
        // probs ∝ e^{0, -1, -5, -10}: min-p 0.2 keeps tokens with p ≥ 0.2·p_max: 0 and 1.
        let mut c = cfg();
        c.min_p = 0.2;
        let d = distribution(&c, &mut [0.0, -1.0, -5.0, -10.0], &[]);
        assert_eq!(d.tokens, vec![0, 1]);
        let e1 = (-1.0f64).exp();
        assert!((f64::from(d.probs[1]) - e1 / (1.0 + e1)).abs() < 1e-6);
        c.min_tokens_to_keep = 3;
        let d = distribution(&c, &mut [0.0, -1.0, -5.0, -10.0], &[]);
        assert_eq!(d.tokens, vec![0, 1, 2]);
    }

    #[test]
    fn top_p_and_top_k_by_hand() {
        // probs 0.5, 0.25, 0.125, 0.125
        let l = [0.5f32.ln(), 0.25f32.ln(), 0.125f32.ln(), 0.125f32.ln()];
        let mut c = cfg();
        c.top_p = 0.7;
        let d = distribution(&c, &mut l.to_vec(), &[]);
        assert_eq!(d.tokens, vec![0, 1]);
        c.top_p = 1.0;
        c.top_k = 3;
        let d = distribution(&c, &mut l.to_vec(), &[]);
        assert_eq!(d.tokens, vec![0, 1, 2]);
        assert!((d.probs[0] - 0.5 / 0.875).abs() < 1e-6);
    }

    #[test]
    fn eta_drops_tokens_below_the_entropy_threshold() {
        let mut c = cfg();
        c.eta = 0.08; // H(0.9, 0.09, 0.01) ≈ 0.358: threshold = min(0.08, √0.08·e^{-H} ≈ 0.198) = 0.08
        let l = [0.9f32.ln(), 0.09f32.ln(), 0.01f32.ln()];
        let d = distribution(&c, &mut l.to_vec(), &[]);
        assert_eq!(d.tokens, vec![0, 1]);
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_matches_the_distribution() {
        let d = TokenDistribution {
            tokens: vec![5, 6, 7],
            probs: vec![0.5, 0.3, 0.2],
        };
        let mut a = SamplerRng::new(42);
        let mut b = SamplerRng::new(42);
        let xs: Vec<u32> = (0..100).map(|_| d.sample_with(a.uniform())).collect();
        let ys: Vec<u32> = (0..100).map(|_| d.sample_with(b.uniform())).collect();
        assert_eq!(xs, ys);
        // Chi-square goodness of fit over 30 000 draws, 2 degrees of freedom: 13.8 is p = 0.001.
        let n = 30_000;
        let mut counts = [0f64; 3];
        let mut r = SamplerRng::new(7);
        for _ in 0..n {
            counts[(d.sample_with(r.uniform()) - 5) as usize] += 1.0;
        }
        let chi: f64 = counts
            .iter()
            .zip(&d.probs)
            .map(|(c, &p)| {
                let e = n as f64 * f64::from(p);
                (c - e).powi(2) / e
            })
            .sum();
        assert!(chi < 13.8, "chi-square {chi}");
    }

    /// Rows of 4096 logits of several spreads, some with ties and banned (-inf) entries.
    fn random_rows() -> Vec<Vec<f32>> {
        let mut rng = SamplerRng::new(11);
        let mut rows = Vec::new();
        for spread in [0.5f32, 2.0, 4.0, 8.0] {
            for r in 0..25 {
                let mut row: Vec<f32> = (0..4096)
                    .map(|_| {
                        let u = rng.uniform() as f32;
                        // Quantised to 1/64 for ties, the spread for realistic tails.
                        ((u * u * spread * 64.0).round() / 64.0)
                            * if r % 2 == 0 { 1.0 } else { -1.0 }
                    })
                    .collect();
                for i in (0..4096).step_by(97 + r) {
                    row[i] = f32::NEG_INFINITY;
                }
                rows.push(row);
            }
        }
        rows
    }

    #[test]
    fn top_k_keeps_the_largest_with_the_lower_index_first_on_ties() {
        for row in random_rows() {
            let mut reference: Vec<u32> = (0..row.len() as u32).collect();
            reference.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
            for k in [0, 1, 2, 20, 100, 4096, 5000] {
                let want = &reference[..k.min(row.len())];
                assert_eq!(top_k_indices(&row, k), want, "k = {k}");
            }
        }
    }

    #[test]
    fn skipping_exp_far_below_the_threshold_keeps_exactly_the_same_tokens() {
        let mut differs = 0;
        for row in random_rows() {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let z: f64 = row.iter().map(|&l| f64::from((l - max).exp())).sum();
            for min_p in [0.01f32, 0.1, 0.5] {
                let threshold = min_p * (1.0 / z) as f32;
                let exact = passing(&row, max, z, threshold, f64::INFINITY);
                assert_eq!(passing(&row, max, z, threshold, EXP_SKIP_SLACK), exact);
                // Control: a floor above the boundary (negative slack) drops tokens the exact
                // test keeps, so these rows do reach the boundary.
                differs += usize::from(passing(&row, max, z, threshold, -0.02) != exact);
            }
        }
        assert!(
            differs > 10,
            "the control dropped tokens in only {differs} cases"
        );
    }

    #[test]
    fn invalid_values_are_rejected_with_the_setting_name() {
        let c = SamplingConfig {
            top_p: 0.0,
            ..SamplingConfig::default()
        };
        assert!(c.validate(10).unwrap_err().to_string().contains("`top_p`"));
        let c = SamplingConfig {
            temperature: -1.0,
            ..SamplingConfig::default()
        };
        assert!(
            c.validate(10)
                .unwrap_err()
                .to_string()
                .contains("`temperature`")
        );
        let c = SamplingConfig {
            ban_tokens: vec![10],
            ..SamplingConfig::default()
        };
        assert!(
            c.validate(10)
                .unwrap_err()
                .to_string()
                .contains("`ban_tokens`")
        );
        assert!(SamplingConfig::default().validate(10).is_ok());
    }
}
