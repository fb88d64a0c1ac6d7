//! The n-gram table of token reutilisation (SPEC §4): counts of n-grams (n = gamma) keyed by their
//! first token; lookup returns the most frequent continuations. Unlike the reference code's heap of
//! items that hash by continuation but compare by count, the ranking here is always exact: counts
//! live in one map and the top-k is computed from it (ties broken by token ids, deterministic).

use std::collections::HashMap;

/// Counts of n-grams, `n ≥ 2`.
#[derive(Debug, Clone)]
pub struct NgramTable {
    n: usize,
    counts: HashMap<u32, HashMap<Vec<u32>, u32>>,
}

impl NgramTable {
    pub fn new(n: usize) -> Self {
        assert!(n >= 2, "an n-gram table needs n ≥ 2");
        Self {
            n,
            counts: HashMap::new(),
        }
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// Counts the n-gram starting at `tokens[0]` (`tokens.len() == n`).
    pub fn add(&mut self, tokens: &[u32]) {
        debug_assert_eq!(tokens.len(), self.n);
        *self
            .counts
            .entry(tokens[0])
            .or_default()
            .entry(tokens[1..].to_vec())
            .or_insert(0) += 1;
    }

    /// Counts every n-gram of `tokens`.
    pub fn add_all(&mut self, tokens: &[u32]) {
        for w in tokens.windows(self.n) {
            self.add(w);
        }
    }

    /// The `k` most frequent continuations of `first` as full n-grams `[first, c1, ..]`, most
    /// frequent first (ties: smaller continuation first).
    pub fn top_k(&self, first: u32, k: usize) -> Vec<Vec<u32>> {
        let Some(map) = self.counts.get(&first) else {
            return Vec::new();
        };
        let mut items: Vec<(&Vec<u32>, u32)> = map.iter().map(|(c, &n)| (c, n)).collect();
        items.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        items
            .into_iter()
            .take(k)
            .map(|(c, _)| std::iter::once(first).chain(c.iter().copied()).collect())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_by_exact_count_and_breaks_ties_by_tokens() {
        let mut t = NgramTable::new(3);
        t.add_all(&[1, 2, 3, 1, 2, 3, 1, 2, 4, 1, 5, 6]);
        // 3-grams starting with 1: [1,2,3] ×2, [1,2,4] ×1, [1,5,6] ×1
        assert_eq!(
            t.top_k(1, 10),
            vec![vec![1, 2, 3], vec![1, 2, 4], vec![1, 5, 6]]
        );
        assert_eq!(t.top_k(1, 1), vec![vec![1, 2, 3]]);
        assert!(t.top_k(9, 3).is_empty());
        // More [1,5,6] overtakes [1,2,4] and then [1,2,3]: never stale.
        t.add(&[1, 5, 6]);
        t.add(&[1, 5, 6]);
        assert_eq!(t.top_k(1, 2), vec![vec![1, 5, 6], vec![1, 2, 3]]);
    }

    #[test]
    fn no_duplicates_in_top_k() {
        let mut t = NgramTable::new(2);
        for _ in 0..5 {
            t.add(&[7, 8]);
        }
        t.add(&[7, 9]);
        assert_eq!(t.top_k(7, 5), vec![vec![7, 8], vec![7, 9]]);
    }
}
