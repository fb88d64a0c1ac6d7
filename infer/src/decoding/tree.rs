//! The draft tree's shape: a fixed arity per depth (`--tree 1,3,3,3`, the paper's) or `auto`,
//! which picks the arity that maximises expected accepted tokens per second from the measured
//! cost of a step (as a function of verified nodes) and the measured per-depth acceptance of
//! each top-k rank. On a CPU, verifying 40+ tokens costs several single-token passes, so the
//! paper's GPU tree is not the best there.

use std::time::Duration;

use crate::error::{InferError, Result};

use super::trie::CandidateTrie;

/// How the draft distributions are obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DraftMode {
    /// The paper's extra base pass over the partial cache, plus the heads: K + 1 depths.
    Separate,
    /// The heads on the verify pass's hidden state at the last accepted node (Medusa-style): no
    /// extra pass, K depths.
    Fused,
}

/// The tree setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeChoice {
    Fixed(Vec<usize>),
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

/// Greatest rank tracked by the acceptance statistics (and largest auto arity).
const MAX_RANK: usize = 4;
/// Steps between re-plans of the auto tree.
const REPLAN_EVERY: usize = 16;

/// Chooses the arity each step.
pub struct TreePlanner {
    choice: TreeChoice,
    max_depth: usize,
    current: Vec<usize>,
    /// `hits[d][r]`: steps whose accepted token at depth `d + 1` had draft rank `r`.
    hits: Vec<[u64; MAX_RANK]>,
    /// `visits[d]`: steps whose walk reached a tree node at depth `d`.
    visits: Vec<u64>,
    /// Observed (nodes verified, seconds for draft + verify).
    costs: Vec<(f64, f64)>,
    /// Mean n-gram nodes added beyond the tree.
    extra_nodes: f64,
    steps: usize,
    /// N-gram chains per depth-1 token: the configured maximum, and the current choice (auto
    /// moves it between 0 and the maximum).
    ngram_max: usize,
    ngram_k: usize,
    /// N-gram nodes verified and n-gram-only tokens accepted since the last re-plan.
    ngram_nodes: u64,
    ngram_hits: u64,
    replans: usize,
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

impl TreePlanner {
    /// A planner for `heads` draft heads in `mode`, with at most `ngram_max` n-gram chains per
    /// depth-1 token.
    pub fn new(
        choice: &TreeChoice,
        mode: DraftMode,
        heads: usize,
        ngram_max: usize,
    ) -> Result<Self> {
        let max_depth = match mode {
            DraftMode::Separate => heads + 1,
            DraftMode::Fused => heads,
        };
        let current = match choice {
            TreeChoice::Fixed(a) => {
                if a.len() > max_depth {
                    return Err(InferError::Context(format!(
                        "--tree has {} levels but {heads} heads give at most {max_depth} in {} mode",
                        a.len(),
                        if mode == DraftMode::Separate {
                            "separate"
                        } else {
                            "fused"
                        }
                    )));
                }
                a.clone()
            }
            TreeChoice::Auto => {
                let mut a = vec![1, 3, 3, 3];
                a.truncate(max_depth);
                a
            }
        };
        Ok(Self {
            choice: choice.clone(),
            max_depth,
            current,
            hits: vec![[0; MAX_RANK]; max_depth],
            visits: vec![0; max_depth],
            costs: Vec::new(),
            extra_nodes: 0.0,
            steps: 0,
            ngram_max,
            ngram_k: ngram_max,
            ngram_nodes: 0,
            ngram_hits: 0,
            replans: 0,
        })
    }

    /// The arity for the next step.
    pub fn arity(&self) -> Vec<usize> {
        self.current.clone()
    }

    /// Largest number of tree nodes this planner may ask for (root included).
    pub fn max_nodes(&self) -> usize {
        match &self.choice {
            TreeChoice::Fixed(a) => nodes_of(a),
            TreeChoice::Auto => {
                nodes_of(&vec![MAX_RANK; self.max_depth]).max(nodes_of(&self.current))
            }
        }
    }

    /// N-gram chains to retrieve per depth-1 token for the next step.
    pub fn ngram_k(&self) -> usize {
        self.ngram_k
    }

    /// Largest depth-1 width.
    pub fn max_width(&self) -> usize {
        match &self.choice {
            TreeChoice::Fixed(a) => a[0],
            TreeChoice::Auto => MAX_RANK,
        }
    }

    /// Records one step: the accepted nodes, the draft choices per depth, the nodes verified (of
    /// which the first `tree_nodes` are the tree's, the rest n-gram chains) and the time of
    /// draft + verify; re-plans the auto tree (and n-gram k) every few steps.
    pub fn observe(
        &mut self,
        trie: &CandidateTrie,
        accepted: &[usize],
        choices: &[Vec<u32>],
        nodes: usize,
        tree_nodes: usize,
        time: Duration,
    ) {
        self.steps += 1;
        let tree_len = tree_nodes;
        self.ngram_nodes += nodes.saturating_sub(tree_len) as u64;
        self.ngram_hits += accepted.iter().filter(|&&a| a >= tree_len).count() as u64;
        self.costs.push((nodes as f64, time.as_secs_f64()));
        if self.costs.len() > 256 {
            self.costs.remove(0);
        }
        let tree_nodes = nodes_of(&self.current);
        self.extra_nodes = 0.9 * self.extra_nodes + 0.1 * nodes.saturating_sub(tree_nodes) as f64;
        // Depth d + 1 is attempted whenever the walk stood on a node at depth d.
        for d in 0..self.max_depth.min(accepted.len() + 1) {
            self.visits[d] += 1;
            if let Some(&node) = accepted.get(d) {
                let token = trie.tokens()[node];
                if let Some(r) = choices
                    .get(d)
                    .and_then(|c| c.iter().position(|&t| t == token))
                    && r < MAX_RANK
                {
                    self.hits[d][r] += 1;
                }
            }
        }
        if self.choice == TreeChoice::Auto && self.steps.is_multiple_of(REPLAN_EVERY) {
            self.replan();
        }
        if self.choice == TreeChoice::Auto && self.steps == REPLAN_EVERY / 2 {
            // Explore a small tree once so the cost curve has two ends.
            self.current = vec![1; self.max_depth.min(2)];
        }
    }

    /// Least-squares line through the observed (nodes, seconds).
    fn cost_line(&self) -> Option<(f64, f64)> {
        let n = self.costs.len() as f64;
        let (sx, sy) = self
            .costs
            .iter()
            .fold((0.0, 0.0), |a, c| (a.0 + c.0, a.1 + c.1));
        let (mx, my) = (sx / n, sy / n);
        let (mut sxx, mut sxy) = (0.0, 0.0);
        for &(x, y) in &self.costs {
            sxx += (x - mx) * (x - mx);
            sxy += (x - mx) * (y - my);
        }
        if sxx < 1e-9 {
            return None;
        }
        let b = (sxy / sxx).max(1e-6);
        Some(((my - b * mx).max(1e-6), b))
    }

    /// Probability that depth `d + 1` accepts one of the top `a` draft tokens.
    fn accept_prob(&self, d: usize, a: usize) -> f64 {
        let v = self.visits[d].max(1) as f64;
        self.hits[d][..a.min(MAX_RANK)].iter().sum::<u64>() as f64 / v
    }

    fn replan(&mut self) {
        let Some((fixed, per_node)) = self.cost_line() else {
            return;
        };
        let mut best = (0.0, self.current.clone());
        let mut candidate = Vec::new();
        self.search(&mut candidate, fixed, per_node, &mut best);
        self.current = best.1;
        self.replan_ngrams(best.0, per_node);
    }

    /// Moves the n-gram k one notch up when the n-gram nodes verified since the last re-plan
    /// paid for themselves (accepted tokens per node above the tree's tokens per second times
    /// the cost of a node), one notch down otherwise; from 0 it retries 1 every 8 re-plans so
    /// that the value of n-grams keeps being measured.
    fn replan_ngrams(&mut self, tree_rate: f64, per_node: f64) {
        const NOTCHES: [usize; 5] = [0, 1, 2, 5, 10];
        self.replans += 1;
        let mut options: Vec<usize> = NOTCHES
            .iter()
            .copied()
            .filter(|&k| k < self.ngram_max)
            .collect();
        options.push(self.ngram_max);
        let i = options.iter().position(|&k| k >= self.ngram_k).unwrap_or(0);
        if self.ngram_k == 0 {
            if self.replans.is_multiple_of(8) && options.len() > 1 {
                self.ngram_k = options[1];
            }
        } else if self.ngram_nodes > 0 {
            let per_node_value = self.ngram_hits as f64 / self.ngram_nodes as f64;
            let worth = per_node_value / per_node >= tree_rate;
            self.ngram_k = if worth {
                options[(i + 1).min(options.len() - 1)]
            } else {
                options[i.saturating_sub(1)]
            };
        }
        self.ngram_nodes = 0;
        self.ngram_hits = 0;
    }

    /// Exhaustive search over arities (depth ≤ max, each ≤ MAX_RANK, non-increasing).
    fn search(
        &self,
        cand: &mut Vec<usize>,
        fixed: f64,
        per_node: f64,
        best: &mut (f64, Vec<usize>),
    ) {
        if !cand.is_empty() {
            let mut expected = 1.0;
            let mut reach = 1.0;
            for (d, &a) in cand.iter().enumerate() {
                reach *= self.accept_prob(d, a);
                expected += reach;
            }
            let nodes = nodes_of(cand) as f64 + self.extra_nodes;
            let rate = expected / (fixed + per_node * nodes);
            if rate > best.0 {
                *best = (rate, cand.clone());
            }
        }
        if cand.len() == self.max_depth {
            return;
        }
        let limit = cand.last().copied().unwrap_or(MAX_RANK);
        for a in 1..=limit {
            cand.push(a);
            self.search(cand, fixed, per_node, best);
            cand.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fixed_trees_and_auto() {
        assert_eq!(
            TreeChoice::parse("1,3,3,3"),
            Ok(TreeChoice::Fixed(vec![1, 3, 3, 3]))
        );
        assert_eq!(TreeChoice::parse("auto"), Ok(TreeChoice::Auto));
        for bad in ["", "1,,3", "0,1", "a", "1,99"] {
            assert!(TreeChoice::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(nodes_of(&[1, 3, 3, 3]), 41);
    }

    #[test]
    fn too_deep_trees_are_refused() {
        let t = TreeChoice::Fixed(vec![1, 3, 3, 3]);
        assert!(TreePlanner::new(&t, DraftMode::Separate, 3, 20).is_ok());
        let e = TreePlanner::new(&t, DraftMode::Fused, 3, 20)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("at most 3"), "{e}");
    }

    /// With a measured cost where every node is expensive and acceptance concentrated on rank 0,
    /// the planner prefers a chain over the paper's wide tree.
    #[test]
    fn auto_prefers_a_chain_when_nodes_are_expensive_and_top1_wins() {
        let mut p = TreePlanner::new(&TreeChoice::Auto, DraftMode::Separate, 3, 20).unwrap();
        p.costs = (1..40)
            .map(|n| (n as f64, 0.02 + 0.001 * n as f64))
            .collect();
        p.visits = vec![100, 80, 60, 40];
        p.hits = vec![[80, 2, 1, 0], [60, 3, 1, 0], [40, 2, 1, 0], [20, 1, 1, 0]];
        p.replan();
        assert_eq!(p.arity(), vec![1, 1, 1, 1]);
        // Expensive nodes: a shorter chain (E 2.4 over 3 nodes beats E 3.0 over 5).
        p.costs = (1..40)
            .map(|n| (n as f64, 0.02 + 0.01 * n as f64))
            .collect();
        p.replan();
        assert_eq!(p.arity(), vec![1, 1]);
        // Cheap nodes and spread-out ranks favour width.
        p.costs = (1..40)
            .map(|n| (n as f64, 0.05 + 0.0001 * n as f64))
            .collect();
        p.hits = vec![
            [30, 25, 20, 15],
            [25, 20, 15, 10],
            [20, 15, 10, 5],
            [10, 8, 6, 4],
        ];
        p.replan();
        assert!(p.arity()[0] > 1, "{:?}", p.arity());
    }

    /// N-gram nodes that never get accepted push k down to 0; useful ones push it up.
    #[test]
    fn auto_moves_ngram_k_by_measured_value() {
        let mut p = TreePlanner::new(&TreeChoice::Auto, DraftMode::Separate, 3, 20).unwrap();
        assert_eq!(p.ngram_k(), 20);
        for _ in 0..5 {
            p.ngram_nodes = 600;
            p.ngram_hits = 0;
            p.replan_ngrams(20.0, 0.002);
        }
        assert_eq!(p.ngram_k(), 0);
        // At 0 it retries 1 every 8 re-plans.
        for _ in 0..3 {
            p.replan_ngrams(20.0, 0.002);
        }
        assert_eq!(p.ngram_k(), 1);
        // Each node accepted half the time at 2 ms a node: 250 tokens/s > 20: up.
        p.ngram_nodes = 10;
        p.ngram_hits = 5;
        p.replan_ngrams(20.0, 0.002);
        assert_eq!(p.ngram_k(), 2);
    }
}
