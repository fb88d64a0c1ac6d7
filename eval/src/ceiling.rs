//! The speedup ceiling of lossless multi-token decoding on the machine at hand: how fast
//! TokenSwift could be with a *perfect* drafter, one that proposes at every trie node the top-k
//! tokens of the target distribution there (the best candidate set of its size), and whose draft
//! costs nothing.
//!
//! How: an autoregressive run gives the sampled tokens; one batched pass over prompt + output gives
//! each sampled token's rank in its processed distribution (ban, temperature, penalty over its
//! window). Because TokenSwift's output *is* the autoregressive output (same draws), a perfect
//! drafter with arity `a_d` at depth `d` accepts, at each step, the longest run of following
//! tokens whose rank at depth `d` is below `a_d`, then adds the bonus token. Replaying that over
//! the run gives tokens per step exactly for this output; the measured cost of one verify pass
//! over that many nodes, relative to one autoregressive pass, turns it into a speedup. Drafting,
//! n-gram lookups and sampling overheads are left out, so real TokenSwift can only be slower.

use std::time::{Duration, Instant};

use tokenswift_infer::decoding::ngram::ContextTable;
use tokenswift_infer::decoding::planner::nodes_of;
use tokenswift_infer::model::prompt::forward_chunks;
use tokenswift_infer::model::{AttentionMask, LogitRows, Model};
use tokenswift_infer::sampling::{SamplingConfig, adjust_logits, penalty_window_tokens};
use tokenswift_infer::tensor::to_host_f32;

use crate::error::Result;

/// Replays a perfect drafter with `arity` over `ranks` (each emitted token's rank in its target
/// distribution): returns (tokens emitted, steps).
pub fn replay(ranks: &[usize], arity: &[usize]) -> (usize, usize) {
    let (mut i, mut steps) = (0, 0);
    while i < ranks.len() {
        let mut run = 0;
        while run < arity.len() && i + run < ranks.len() && ranks[i + run] < arity[run] {
            run += 1;
        }
        // The accepted run, then the bonus token drawn at the last accepted node.
        i += run + 1;
        steps += 1;
    }
    (ranks.len(), steps)
}

/// The rank of each of `output`'s tokens in its processed target distribution after `prompt` and
/// the output before it (0 = the most likely token). One causal pass over everything.
pub fn ranks(
    model: &Model,
    prompt: &[u32],
    output: &[u32],
    sampling: &SamplingConfig,
) -> Result<Vec<usize>> {
    let all: Vec<u32> = prompt.iter().chain(output).copied().collect();
    let vocab = model.config().vocab_size;
    let mut cache = model.new_cache(all.len());
    let mut ranks = Vec::with_capacity(output.len());
    // Only rows that predict an output token are needed: from the prompt's last token on.
    let mut done = 0usize;
    let mut row = Vec::with_capacity(vocab);
    forward_chunks(
        model,
        &all[..all.len() - 1],
        &mut cache,
        LogitRows::All,
        &mut |out, len| {
            let rows = to_host_f32(out.logits.expect("logits were requested"));
            let first = done;
            done = len;
            for (r, logits) in rows.chunks_exact(vocab).enumerate() {
                let pos = first + r; // this row predicts token pos + 1
                if pos + 1 < prompt.len() {
                    continue;
                }
                row.clear();
                row.extend_from_slice(logits);
                let window = penalty_window_tokens(&all[..=pos], &[], sampling.penalty_window);
                adjust_logits(sampling, &mut row, &window);
                let t = row[all[pos + 1] as usize];
                ranks.push(row.iter().filter(|&&x| x > t).count());
            }
            Ok(())
        },
    )?;
    Ok(ranks)
}

/// Time of a verify pass of `q` new tokens (tree mask of a chain, logits of the first row, as
/// TokenSwift computes them) over a cache of `context` positions: `qs[0]`'s median time, and for
/// every q the median over repetitions of its ratio to `qs[0]` measured in the same repetition
/// (each repetition runs every q once, so drift hits them alike) times that median.
pub fn pass_cost(
    model: &Model,
    context: usize,
    qs: &[usize],
    reps: usize,
) -> Result<Vec<Duration>> {
    let vocab = model.config().vocab_size;
    let max_q = qs.iter().copied().max().unwrap_or(1);
    let mut cache = model.new_cache(context + max_q);
    // Pseudo-text: the cost does not depend on the token ids.
    let filler: Vec<u32> = (0..context + max_q)
        .map(|i| ((i * 7919 + 13) % vocab) as u32)
        .collect();
    forward_chunks(
        model,
        &filler[..context],
        &mut cache,
        LogitRows::None,
        &mut |_, _| Ok(()),
    )?;
    let mut rows = Vec::new();
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(reps); qs.len()];
    for rep in 0..=reps {
        for (j, &q) in qs.iter().enumerate() {
            let toks = &filler[context..context + q];
            let pos: Vec<usize> = (context..context + q).collect();
            let mask: Vec<bool> = (0..q).flat_map(|i| (0..q).map(move |j| j <= i)).collect();
            let t = Instant::now();
            let o = model.forward(
                toks,
                &pos,
                &AttentionMask::Tree(mask),
                &mut cache,
                LogitRows::None,
            )?;
            model.logits_of_rows_vec(&o.hidden, &[0], &mut rows);
            let d = t.elapsed().as_secs_f64();
            cache.rollback_to(context)?;
            if rep > 0 {
                times[j].push(d); // the first repetition warms up
            }
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let base = median(times[0].clone());
    Ok(times
        .iter()
        .map(|t| {
            let ratios: Vec<f64> = t.iter().zip(&times[0]).map(|(a, b)| a / b).collect();
            Duration::from_secs_f64(base * median(ratios))
        })
        .collect())
}

/// The cheapest way to emit `n` tokens when, before token `i`, a step may verify the root alone
/// (1 node, 1 token) or any option of `options(i)`: (nodes verified, tokens emitted). Dynamic
/// programming over the whole run with the outcomes known: the bound for a planner that chooses
/// each step's shape (including none) perfectly. Returns (total cost, steps).
pub fn best_schedule(
    n: usize,
    options: &dyn Fn(usize) -> Vec<(usize, usize)>,
    cost: &dyn Fn(usize) -> f64,
) -> (f64, usize) {
    let mut dp = vec![(0.0f64, 0usize); n + 1];
    for i in (0..n).rev() {
        let mut best = (cost(1) + dp[i + 1].0, dp[i + 1].1 + 1);
        for (nodes, tokens) in options(i) {
            let j = (i + tokens.max(1)).min(n);
            let c = cost(nodes) + dp[j].0;
            if c < best.0 {
                best = (c, dp[j].1 + 1);
            }
        }
        dp[i] = best;
    }
    dp[0]
}

/// Options of a perfect drafter before each token (`ranks[i]`: rank of token `i` in its target
/// distribution): every tree shape of `trees`, emitting its accepted run plus the bonus token.
pub fn perfect_options(ranks: &[usize], trees: &[Vec<usize>]) -> Vec<Vec<(usize, usize)>> {
    (0..ranks.len())
        .map(|i| {
            trees
                .iter()
                .map(|arity| {
                    let mut run = 0;
                    while run < arity.len() && i + run < ranks.len() && ranks[i + run] < arity[run]
                    {
                        run += 1;
                    }
                    (nodes_of(arity), run + 1)
                })
                .collect()
        })
        .collect()
}

/// Options of the planner's n-gram lookup drafts before each output token: the tables (one per
/// lag) fed with the prompt and the output so far, their chains (up to `max_len` tokens,
/// `alternatives` first tokens), and the longest prefix of the actual output any chain matches.
/// Verifying the best chain's first `L` tokens emits `min(L, match) + 1` tokens.
pub fn ngram_options(
    prompt: &[u32],
    output: &[u32],
    lags: &[usize],
    corpus: Option<&ContextTable>,
    max_len: usize,
    alternatives: usize,
) -> Vec<Vec<(usize, usize)>> {
    let all: Vec<u32> = prompt.iter().chain(output).copied().collect();
    let mut tables: Vec<(usize, ContextTable)> =
        lags.iter().map(|&l| (l, ContextTable::new())).collect();
    (0..output.len())
        .map(|i| {
            // Before output token i the stream is prompt + output[..i] (the root last).
            let end = prompt.len() + i;
            let stream = &all[..end];
            let mut best = 0;
            for (lag, table) in &mut tables {
                table.catch_up(stream, end.saturating_sub(*lag));
            }
            let all_tables = tables.iter().map(|(_, t)| t).chain(corpus);
            for table in all_tables {
                for chain in table.draft(stream, max_len, alternatives) {
                    let m = chain
                        .tokens
                        .iter()
                        .zip(&output[i..])
                        .take_while(|(a, b)| a == b)
                        .count();
                    best = best.max(m);
                }
            }
            (1..=max_len).map(|l| (l + 1, l.min(best) + 1)).collect()
        })
        .collect()
}

/// One row of the ceiling table.
#[derive(Debug, Clone)]
pub struct CeilingRow {
    pub arity: Vec<usize>,
    pub nodes: usize,
    pub tokens_per_step: f64,
    /// Cost of one verify pass over `nodes` nodes / one autoregressive pass.
    pub cost_ratio: f64,
    pub speedup: f64,
}

/// The ceiling for each tree shape, given ranks and the cost of a pass of `q` nodes (`costs[i]` for
/// `qs[i]`, `qs[0] == 1`); a shape needing more nodes than measured is skipped.
pub fn ceiling(
    ranks: &[usize],
    trees: &[Vec<usize>],
    qs: &[usize],
    costs: &[Duration],
) -> Vec<CeilingRow> {
    let one = costs[0].as_secs_f64();
    trees
        .iter()
        .filter_map(|arity| {
            let nodes = nodes_of(arity);
            // Linear interpolation between the measured sizes.
            let i = qs.iter().position(|&q| q >= nodes)?;
            let c = if qs[i] == nodes || i == 0 {
                costs[i].as_secs_f64()
            } else {
                let (q0, q1) = (qs[i - 1] as f64, qs[i] as f64);
                let (c0, c1) = (costs[i - 1].as_secs_f64(), costs[i].as_secs_f64());
                c0 + (c1 - c0) * (nodes as f64 - q0) / (q1 - q0)
            };
            let (tokens, steps) = replay(ranks, arity);
            let tps = tokens as f64 / steps.max(1) as f64;
            Some(CeilingRow {
                arity: arity.clone(),
                nodes,
                tokens_per_step: tps,
                cost_ratio: c / one,
                speedup: tps / (c / one),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schedule picks, per position, drafting only where it pays: with a cost of 1 per node
    /// plus 1 per pass, a 3-token run verified as 3 nodes (cost 4) beats 3 AR steps (cost 6).
    #[test]
    fn best_schedule_by_hand() {
        let cost = |q: usize| 1.0 + q as f64;
        // Before token 0 an option emits 3 tokens with 3 nodes; elsewhere nothing.
        let opts = |i: usize| if i == 0 { vec![(3, 3)] } else { vec![] };
        assert_eq!(best_schedule(5, &opts, &cost), (4.0 + 2.0 * 2.0, 3));
        // An option that costs more than it emits is never taken.
        let opts = |_: usize| vec![(4, 2)];
        assert_eq!(best_schedule(4, &opts, &cost), (8.0, 4));
    }

    #[test]
    fn ngram_options_see_the_output_so_far() {
        // Output repeats the prompt's pattern: after [1 2] comes 3 in the prompt, so a chain
        // drafted before output token 0 (root 2) proposes 3 1 2 ... and matches.
        let prompt = [1, 2, 3, 1, 2];
        let output = [3, 1, 2, 3, 9];
        let o = ngram_options(&prompt, &output, &[0], None, 4, 1);
        // Verifying 3 draft tokens (4 nodes) before token 0 emits the 3 matches + the bonus.
        assert!(o[0].contains(&(4, 4)), "{:?}", o[0]);
        // Before the last token (9, never seen), nothing matches: 1 token whatever L.
        assert!(o[4].iter().all(|&(_, t)| t == 1));
    }

    #[test]
    fn replay_accepts_the_longest_run_then_the_bonus() {
        // Ranks: hit hit miss | hit miss | miss | hit hit hit hit(capped) ...
        let ranks = [0, 0, 5, 0, 5, 5, 0, 0, 0, 0];
        // Chain of depth 2: step 1 accepts ranks[0..2], bonus ranks[2] → 3 tokens;
        // step 2 accepts ranks[3], bonus ranks[4] → 2; step 3: bonus ranks[5] → 1;
        // step 4 accepts ranks[6..8], bonus ranks[8] → 3; step 5: bonus ranks[9] → 1.
        assert_eq!(replay(&ranks, &[1, 1]), (10, 5));
        // No draft at all: one token per step.
        assert_eq!(replay(&ranks, &[]), (10, 10));
        // Arity 6 accepts rank 5 too: everything in runs of 3 (2 accepted + bonus), 4 steps.
        assert_eq!(replay(&ranks, &[6, 6]), (10, 4));
    }

    #[test]
    fn tree_sizes() {
        assert_eq!(nodes_of(&[1, 3, 3, 3]), 41);
        assert_eq!(nodes_of(&[1]), 2);
        assert_eq!(nodes_of(&[]), 1);
    }

    #[test]
    fn ceiling_divides_tokens_per_step_by_the_cost_ratio() {
        let ranks = [0, 9, 0, 9];
        let qs = [1, 2, 4];
        let costs = [10, 12, 20].map(Duration::from_millis);
        let rows = ceiling(
            &ranks,
            &[vec![1], vec![1, 1], vec![1, 1, 1, 1]],
            &qs,
            &costs,
        );
        // [1]: 2 nodes cost 1.2; runs "0 9" "0 9" → 2 tokens/step → 2 / 1.2.
        assert_eq!(rows[0].nodes, 2);
        assert!((rows[0].cost_ratio - 1.2).abs() < 1e-9);
        assert!((rows[0].speedup - 2.0 / 1.2).abs() < 1e-9);
        // [1, 1]: 3 nodes, interpolated cost 16 ms → 1.6.
        assert!((rows[1].cost_ratio - 1.6).abs() < 1e-9);
        // 5 nodes were not measured: skipped.
        assert_eq!(rows.len(), 2);
    }
}
