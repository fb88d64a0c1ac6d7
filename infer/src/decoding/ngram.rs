//! Token reutilisation (SPEC §4): n-gram statistics of the prompt and of the generated text, used
//! as free drafts. Two tables, both updated incrementally (one n-gram at a time, no sort on the
//! step's path) and both exact:
//!
//! - [`NgramTable`], the paper's: n-grams (n = gamma) keyed by their first token; lookup returns
//!   the `k` most frequent whole continuations. Unlike the reference code's heap of items that
//!   hash by continuation but compare by count, the ranking here is exact: every count lives in
//!   one map and each first token keeps its top list ordered as counts grow.
//! - [`ContextTable`], the lookup drafter the planner uses: next-token counts keyed by the last
//!   1, 2 or 3 tokens, so a draft continues the *current* context token by token (backing off to
//!   shorter contexts) for as long as the planner can afford, not only γ tokens.
//!
//! Which tokens feed a table is the caller's choice: the paper counts generated text only once it
//! has left the penalty window (`--ngram-lag paper`); lag 0 counts every emitted token at once.

use std::collections::HashMap;

/// A list of the best `cap` items by count (descending; equal counts keep the order in which they
/// reached that count, then the smaller item first for items counted in the same call), kept
/// exact under unit increments: an item outside the list can only enter by overtaking the last.
#[derive(Debug, Clone)]
struct TopList<T> {
    items: Vec<(T, u32)>,
}

impl<T: Clone + PartialEq + Ord> TopList<T> {
    fn new() -> Self {
        Self { items: Vec::new() }
    }

    /// Records that `item` now has `count` (one more than before).
    fn bump(&mut self, item: &T, count: u32, cap: usize) {
        let better = |a: (&T, u32), b: (&T, u32)| a.1 > b.1 || (a.1 == b.1 && a.0 < b.0);
        let at = match self.items.iter().position(|(t, _)| t == item) {
            Some(i) => {
                self.items[i].1 = count;
                i
            }
            None if self.items.len() < cap => {
                self.items.push((item.clone(), count));
                self.items.len() - 1
            }
            None => {
                let last = self.items.len() - 1;
                let (lt, lc) = (&self.items[last].0, self.items[last].1);
                if !better((item, count), (lt, lc)) {
                    return;
                }
                self.items[last] = (item.clone(), count);
                last
            }
        };
        let mut i = at;
        while i > 0
            && better(
                (&self.items[i].0, self.items[i].1),
                (&self.items[i - 1].0, self.items[i - 1].1),
            )
        {
            self.items.swap(i, i - 1);
            i -= 1;
        }
    }
}

/// The paper's n-gram table: counts of n-grams (`n ≥ 2`) keyed by their first token, with the
/// `rank` most frequent continuations of every first token kept in order.
#[derive(Debug, Clone)]
pub struct NgramTable {
    n: usize,
    rank: usize,
    counts: HashMap<(u32, Box<[u32]>), u32>,
    top: HashMap<u32, TopList<Box<[u32]>>>,
}

impl NgramTable {
    /// A table of n-grams that can answer `top_k` exactly for `k ≤ 32`.
    pub fn new(n: usize) -> Self {
        Self::with_rank(n, 32)
    }

    /// A table of n-grams keeping the `rank` best continuations of every first token (`top_k`
    /// is exact for `k ≤ rank`).
    pub fn with_rank(n: usize, rank: usize) -> Self {
        assert!(n >= 2, "an n-gram table needs n ≥ 2");
        Self {
            n,
            rank: rank.max(1),
            counts: HashMap::new(),
            top: HashMap::new(),
        }
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// Counts the n-gram starting at `tokens[0]` (`tokens.len() == n`).
    pub fn add(&mut self, tokens: &[u32]) {
        debug_assert_eq!(tokens.len(), self.n);
        let cont: Box<[u32]> = tokens[1..].into();
        let c = self.counts.entry((tokens[0], cont.clone())).or_insert(0);
        *c += 1;
        let count = *c;
        self.top
            .entry(tokens[0])
            .or_insert_with(TopList::new)
            .bump(&cont, count, self.rank);
    }

    /// Counts every n-gram of `tokens`.
    pub fn add_all(&mut self, tokens: &[u32]) {
        for w in tokens.windows(self.n) {
            self.add(w);
        }
    }

    /// The `k` most frequent continuations of `first` as full n-grams `[first, c1, ..]`, most
    /// frequent first (ties: smaller continuation first); at most the table's rank.
    pub fn top_k(&self, first: u32, k: usize) -> Vec<Vec<u32>> {
        let Some(list) = self.top.get(&first) else {
            return Vec::new();
        };
        list.items
            .iter()
            .take(k)
            .map(|(c, _)| std::iter::once(first).chain(c.iter().copied()).collect())
            .collect()
    }
}

/// Longest context a [`ContextTable`] keys on.
pub const MAX_CONTEXT: usize = 3;
/// Next tokens ranked per context.
const CONTEXT_RANK: usize = 4;

/// Packs a context of 1–3 tokens into one exact key (its length in the top bits).
fn context_key(ctx: &[u32]) -> u128 {
    debug_assert!((1..=MAX_CONTEXT).contains(&ctx.len()));
    let mut k = (ctx.len() as u128) << 96;
    for (i, &t) in ctx.iter().enumerate() {
        k |= u128::from(t) << (32 * i);
    }
    k
}

#[derive(Debug, Clone)]
struct ContextEntry {
    total: u32,
    top: TopList<u32>,
}

/// How strongly the table backs one drafted token: the context length it matched, how often the
/// token followed that context and how often the context was seen. The planner turns this into
/// an acceptance probability by measuring (`planner::Calibration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Support {
    pub context: u8,
    pub count: u32,
    pub total: u32,
}

/// A drafted chain with the support of each token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftChain {
    pub tokens: Vec<u32>,
    pub support: Vec<Support>,
}

/// Next-token counts keyed by the previous 1, 2 and 3 tokens.
#[derive(Debug, Clone, Default)]
pub struct ContextTable {
    counts: HashMap<(u128, u32), u32>,
    entries: HashMap<u128, ContextEntry>,
    /// Tokens of the stream counted so far (the last `MAX_CONTEXT` are kept as context).
    tail: Vec<u32>,
    counted: usize,
}

impl ContextTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of stream tokens counted so far.
    pub fn counted(&self) -> usize {
        self.counted
    }

    /// Counts the next token of the stream (after every token given before).
    pub fn push(&mut self, token: u32) {
        for c in 1..=self.tail.len().min(MAX_CONTEXT) {
            let key = context_key(&self.tail[self.tail.len() - c..]);
            let n = self.counts.entry((key, token)).or_insert(0);
            *n += 1;
            let count = *n;
            let e = self.entries.entry(key).or_insert_with(|| ContextEntry {
                total: 0,
                top: TopList::new(),
            });
            e.total += 1;
            e.top.bump(&token, count, CONTEXT_RANK);
        }
        self.tail.push(token);
        if self.tail.len() > MAX_CONTEXT {
            self.tail.remove(0);
        }
        self.counted += 1;
    }

    /// Counts `stream[self.counted()..upto]` (the stream is every token so far, in order).
    pub fn catch_up(&mut self, stream: &[u32], upto: usize) {
        let upto = upto.min(stream.len());
        while self.counted < upto {
            self.push(stream[self.counted]);
        }
    }

    /// The ranked next tokens after the longest matching suffix of `context` (3, then 2, then 1
    /// tokens), with their support; empty when even the last token was never followed.
    fn next(&self, context: &[u32]) -> Option<(u8, &ContextEntry)> {
        (1..=context.len().min(MAX_CONTEXT)).rev().find_map(|c| {
            self.entries
                .get(&context_key(&context[context.len() - c..]))
                .map(|e| (c as u8, e))
        })
    }

    /// Up to `alternatives` chains continuing `context` (most likely first token first), each
    /// extended greedily by the best next token of its own growing context, up to `max_len`
    /// tokens. Duplicate first tokens never occur.
    pub fn draft(&self, context: &[u32], max_len: usize, alternatives: usize) -> Vec<DraftChain> {
        if max_len == 0 || context.is_empty() {
            return Vec::new();
        }
        let Some((c, first)) = self.next(context) else {
            return Vec::new();
        };
        let mut chains = Vec::new();
        let mut ctx: Vec<u32> = Vec::with_capacity(MAX_CONTEXT + max_len);
        for &(t, count) in first.top.items.iter().take(alternatives) {
            let mut chain = DraftChain {
                tokens: vec![t],
                support: vec![Support {
                    context: c,
                    count,
                    total: first.total,
                }],
            };
            ctx.clear();
            ctx.extend_from_slice(&context[context.len().saturating_sub(MAX_CONTEXT)..]);
            ctx.push(t);
            while chain.tokens.len() < max_len {
                let Some((c, e)) = self.next(&ctx[ctx.len() - MAX_CONTEXT.min(ctx.len())..]) else {
                    break;
                };
                let (t, count) = e.top.items[0];
                chain.tokens.push(t);
                chain.support.push(Support {
                    context: c,
                    count,
                    total: e.total,
                });
                ctx.push(t);
            }
            chains.push(chain);
        }
        chains
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

    /// The incrementally kept top list equals a full sort of the counts after every update, even
    /// when it holds fewer items than there are continuations (items enter by overtaking).
    #[test]
    fn incremental_ranking_equals_a_full_sort() {
        let mut rng = crate::sampling::SamplerRng::new(3);
        let mut t = NgramTable::with_rank(2, 3);
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for _ in 0..2000 {
            // A skewed stream of continuations of token 0.
            let c = (rng.uniform().powi(2) * 12.0) as u32;
            t.add(&[0, c]);
            *counts.entry(c).or_default() += 1;
            let mut want: Vec<(u32, u32)> = counts.iter().map(|(&c, &n)| (c, n)).collect();
            want.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let got: Vec<u32> = t.top_k(0, 3).iter().map(|g| g[1]).collect();
            let want_counts: Vec<u32> = want.iter().take(3).map(|w| w.1).collect();
            let got_counts: Vec<u32> = got.iter().map(|g| counts[g]).collect();
            // Same counts in the same order (items of equal count may differ in order).
            assert_eq!(got_counts, want_counts);
        }
    }

    #[test]
    fn context_table_continues_the_longest_matching_context() {
        let mut t = ContextTable::new();
        // "a b c d" twice, then "x b c e": after [a b c] the next is d; after [x b c] it is e.
        let stream = [1, 2, 3, 4, 1, 2, 3, 4, 9, 2, 3, 5];
        t.catch_up(&stream, stream.len());
        let chains = t.draft(&[1, 2, 3], 3, 1);
        assert_eq!(chains[0].tokens[0], 4);
        assert_eq!(chains[0].support[0].context, 3);
        assert_eq!(
            (chains[0].support[0].count, chains[0].support[0].total),
            (2, 2)
        );
        let chains = t.draft(&[9, 2, 3], 1, 1);
        assert_eq!(chains[0].tokens, vec![5]);
        // [7 2 3] was never seen: back off to [2 3], whose best next token is 4 (2 of 3).
        let chains = t.draft(&[7, 2, 3], 1, 2);
        assert_eq!(chains[0].tokens, vec![4]);
        assert_eq!(
            chains[0].support[0],
            Support {
                context: 2,
                count: 2,
                total: 3
            }
        );
        assert_eq!(chains[1].tokens, vec![5]);
        // A chain extends through its own drafted tokens: 1 → 2 3 4 1 ...
        let chains = t.draft(&[4, 1], 4, 1);
        assert_eq!(chains[0].tokens, vec![2, 3, 4, 1]);
        // An unseen last token gives nothing.
        assert!(t.draft(&[42], 4, 2).is_empty());
    }

    #[test]
    fn catch_up_counts_only_up_to_the_lag() {
        let mut t = ContextTable::new();
        let stream = [1, 2, 1, 2, 1, 3];
        t.catch_up(&stream, 4);
        assert_eq!(t.counted(), 4);
        assert_eq!(t.draft(&[1], 1, 4).len(), 1, "only 1 → 2 counted so far");
        t.catch_up(&stream, 6);
        assert_eq!(t.draft(&[1], 1, 4).len(), 2);
    }
}
