//! Acceptance: the walk down the verified trie (DESIGN §2), stricter than the reference code:
//! one target sample per *node*, never one per candidate row, so a draft token shared by several
//! candidate paths is accepted with exactly the target probability of that token.

use super::trie::CandidateTrie;

/// What one verification step accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptOutcome {
    /// Accepted trie nodes, root excluded, in path order (their tokens extend the output).
    pub accepted: Vec<usize>,
    /// The token drawn at the node where the walk stopped: the next step's root.
    pub next_token: u32,
}

/// Walks from the root: at each node, draws the target token with `draw(node)` (called exactly
/// once per visited node, in path order), moves to the child carrying it if one exists, else
/// stops. Because every visited node's token was drawn from the target distribution given its
/// path, the output is distributed exactly as autoregressive sampling.
pub fn accept_path(trie: &CandidateTrie, mut draw: impl FnMut(usize) -> u32) -> AcceptOutcome {
    let mut node = 0;
    let mut accepted = Vec::new();
    loop {
        let token = draw(node);
        match trie.child_with(node, token) {
            Some(child) => {
                accepted.push(child);
                node = child;
            }
            None => {
                return AcceptOutcome {
                    accepted,
                    next_token: token,
                };
            }
        }
    }
}

/// The reference implementation's acceptance (`exactly_match_sampling`), kept only so the
/// statistical tests can show they detect it: every candidate row (root-to-leaf path) is walked
/// with its *own* draws, so a node shared by R rows gets R chances, and the longest match wins
/// (the first on ties). It over-accepts draft tokens and is **not** lossless.
pub fn accept_per_row_reference(
    trie: &CandidateTrie,
    mut draw: impl FnMut(usize) -> u32,
) -> AcceptOutcome {
    let leaves: Vec<usize> = (0..trie.len())
        .filter(|&n| trie.children(n).is_empty())
        .collect();
    let mut best: Option<AcceptOutcome> = None;
    for leaf in leaves {
        let row = trie.path_to(leaf);
        let mut node = 0;
        let mut accepted = Vec::new();
        let next_token = loop {
            let token = draw(node);
            match row.get(accepted.len()) {
                Some(&child) if trie.tokens()[child] == token => {
                    accepted.push(child);
                    node = child;
                }
                _ => break token,
            }
        };
        if best
            .as_ref()
            .is_none_or(|b| accepted.len() > b.accepted.len())
        {
            best = Some(AcceptOutcome {
                accepted,
                next_token,
            });
        }
    }
    best.expect("a trie has at least its root")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trie() -> CandidateTrie {
        let mut t = CandidateTrie::new(0);
        t.insert_path(&[1, 2, 3]);
        t.insert_path(&[1, 4]);
        t.insert_path(&[5]);
        t
    }

    #[test]
    fn walks_matching_children_and_returns_the_bonus_token() {
        let t = trie();
        // targets: root → 1, node(1) → 4, node(4) → 9 (no child): accept [1, 4], next 9.
        let targets = |n: usize| match t.tokens()[n] {
            0 => 1,
            1 => 4,
            _ => 9,
        };
        let mut visited = Vec::new();
        let out = accept_path(&t, |n| {
            visited.push(n);
            targets(n)
        });
        assert_eq!(
            out.accepted
                .iter()
                .map(|&n| t.tokens()[n])
                .collect::<Vec<_>>(),
            vec![1, 4]
        );
        assert_eq!(out.next_token, 9);
        assert_eq!(visited.len(), 3, "one draw per visited node");
    }

    #[test]
    fn a_miss_at_the_root_accepts_nothing() {
        let t = trie();
        let out = accept_path(&t, |_| 42);
        assert!(out.accepted.is_empty());
        assert_eq!(out.next_token, 42);
    }

    #[test]
    fn full_depth_acceptance_ends_with_a_draw_at_the_leaf() {
        let t = trie();
        let out = accept_path(&t, |n| match t.tokens()[n] {
            0 => 1,
            1 => 2,
            2 => 3,
            _ => 7,
        });
        assert_eq!(out.accepted.len(), 3);
        assert_eq!(out.next_token, 7);
    }

    /// A toy "model": p(next | previous) over 4 tokens.
    const P: [[f64; 4]; 4] = [
        [0.1, 0.5, 0.3, 0.1],
        [0.4, 0.2, 0.2, 0.2],
        [0.25, 0.25, 0.4, 0.1],
        [0.7, 0.1, 0.1, 0.1],
    ];

    fn draw(prev: u32, rng: &mut crate::sampling::SamplerRng) -> u32 {
        let u = rng.uniform();
        let mut acc = 0.0;
        for (t, &p) in P[prev as usize].iter().enumerate() {
            acc += p;
            if u < acc {
                return t as u32;
            }
        }
        3
    }

    /// Draft trie below root 0: children {1, 2}, each with children {1, 2, 3}.
    fn draft() -> CandidateTrie {
        CandidateTrie::from_tree(0, &[vec![1, 2], vec![1, 2, 3]], &[2, 3])
    }

    /// First two generated tokens, by the per-node walk (continuing autoregressively if needed).
    fn two_tokens_per_node(t: &CandidateTrie, rng: &mut crate::sampling::SamplerRng) -> (u32, u32) {
        let out = accept_path(t, |n| draw(t.tokens()[n], rng));
        let mut seq: Vec<u32> = out.accepted.iter().map(|&n| t.tokens()[n]).collect();
        seq.push(out.next_token);
        while seq.len() < 2 {
            let last = *seq.last().unwrap();
            seq.push(draw(last, rng));
        }
        (seq[0], seq[1])
    }

    /// The reference code's flaw: every candidate row (root-to-leaf path) is sampled on its own
    /// and the longest match wins — a node shared by several rows gets several chances.
    fn two_tokens_per_row(t: &CandidateTrie, rng: &mut crate::sampling::SamplerRng) -> (u32, u32) {
        let leaves: Vec<usize> = (1..t.len()).filter(|&n| t.children(n).is_empty()).collect();
        let mut best: Option<Vec<u32>> = None;
        for leaf in leaves {
            let path = t.path_to(leaf);
            let mut seq = Vec::new();
            let mut prev = t.tokens()[0];
            for &node in &path {
                let s = draw(prev, rng);
                seq.push(s);
                if s != t.tokens()[node] {
                    break;
                }
                prev = s;
            }
            if seq.len() == path.len() && seq.last() == Some(&t.tokens()[*path.last().unwrap()]) {
                let s = draw(prev, rng);
                seq.push(s);
            }
            if best.as_ref().is_none_or(|b| seq.len() > b.len()) {
                best = Some(seq);
            }
        }
        let mut seq = best.unwrap();
        while seq.len() < 2 {
            let last = *seq.last().unwrap();
            seq.push(draw(last, rng));
        }
        (seq[0], seq[1])
    }

    fn chi_square(mut sample: impl FnMut() -> (u32, u32), n: usize) -> f64 {
        let mut counts = [[0f64; 4]; 4];
        for _ in 0..n {
            let (a, b) = sample();
            counts[a as usize][b as usize] += 1.0;
        }
        let mut chi = 0.0;
        for a in 0..4 {
            for b in 0..4 {
                let e = n as f64 * P[0][a] * P[a][b];
                chi += (counts[a][b] - e).powi(2) / e;
            }
        }
        chi
    }

    /// 15 degrees of freedom: 37.7 is the p = 0.001 critical value.
    const CRITICAL: f64 = 37.7;

    #[test]
    fn per_node_acceptance_matches_autoregressive_sampling() {
        let t = draft();
        let mut rng = crate::sampling::SamplerRng::new(1);
        let chi = chi_square(|| two_tokens_per_node(&t, &mut rng), 40_000);
        println!("per-node acceptance: chi-square {chi:.1} (critical {CRITICAL})");
        assert!(chi < CRITICAL, "chi-square {chi}");
    }

    #[test]
    fn the_test_rejects_per_row_sampling() {
        let t = draft();
        let mut rng = crate::sampling::SamplerRng::new(1);
        let chi = chi_square(|| two_tokens_per_row(&t, &mut rng), 40_000);
        println!("per-row sampling: chi-square {chi:.1} (critical {CRITICAL})");
        assert!(
            chi > 10.0 * CRITICAL,
            "the biased sampler went unnoticed: chi-square {chi}"
        );
    }
}
