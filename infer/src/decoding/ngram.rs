//! Token reutilisation (DESIGN §4): n-gram statistics of the prompt and of the generated text, used
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

// Keys are token ids from this process's own tables, so a fast non-keyed hash (Fx) serves: the
// lookups run every decoding step, and SipHash made them ~0.4 % of a step.
use rustc_hash::FxHashMap as HashMap;

use crate::error::{InferError, Result};

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
            counts: HashMap::default(),
            top: HashMap::default(),
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

    /// Counts a whole document as a stream of its own (its first tokens are not taken to follow
    /// anything counted before), leaving the running stream's position as it was.
    pub fn add_document(&mut self, tokens: &[u32]) {
        let (tail, counted) = (std::mem::take(&mut self.tail), self.counted);
        for &t in tokens {
            self.push(t);
        }
        self.tail = tail;
        self.counted = counted;
    }

    /// Number of distinct contexts.
    pub fn contexts(&self) -> usize {
        self.entries.len()
    }

    /// Keeps only the contexts whose best next token was seen at least `min_count` times and
    /// makes up at least `min_share` of what followed them (the rest could not draft a token
    /// worth verifying), and forgets the per-token counts outside the kept lists: a compact,
    /// read-only table (further counting would be inexact).
    pub fn prune(&mut self, min_count: u32, min_share: f64) {
        self.entries.retain(|_, e| {
            let (_, best) = e.top.items[0];
            best >= min_count && f64::from(best) >= min_share * f64::from(e.total)
        });
        self.counts.clear();
        self.counts.shrink_to_fit();
        self.entries.shrink_to_fit();
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
        self.draft_while(context, max_len, alternatives, |_| true)
    }

    /// As [`ContextTable::draft`], but a chain stops growing once `more(chain so far)` returns
    /// false (asked after each token is added; that token stays). Lets a caller stop extending
    /// a chain no step could afford to verify, instead of looking up every one of its tokens.
    pub fn draft_while(
        &self,
        context: &[u32],
        max_len: usize,
        alternatives: usize,
        mut more: impl FnMut(&DraftChain) -> bool,
    ) -> Vec<DraftChain> {
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
            while chain.tokens.len() < max_len && more(&chain) {
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

/// Magic and version of a saved [`ContextTable`] (a corpus n-gram table, `heads.ngrams`).
const MAGIC: &[u8; 8] = b"TSNGRAM1";

impl ContextTable {
    /// Serialises the table (contexts in key order, so the same corpus gives the same bytes) for
    /// a base with `vocab_size` tokens and fingerprint `base`; see [`ContextTable::from_bytes`].
    pub fn to_bytes(&self, vocab_size: usize, base: &str) -> Vec<u8> {
        let mut keys: Vec<&u128> = self.entries.keys().collect();
        keys.sort_unstable();
        let mut out = Vec::with_capacity(32 + base.len() + keys.len() * 40);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(vocab_size as u32).to_le_bytes());
        out.extend_from_slice(&(base.len() as u16).to_le_bytes());
        out.extend_from_slice(base.as_bytes());
        out.extend_from_slice(&(keys.len() as u64).to_le_bytes());
        for k in keys {
            let e = &self.entries[k];
            let len = (k >> 96) as usize;
            out.push(len as u8);
            for i in 0..len {
                out.extend_from_slice(&((k >> (32 * i)) as u32).to_le_bytes());
            }
            out.extend_from_slice(&e.total.to_le_bytes());
            out.push(e.top.items.len() as u8);
            for &(t, c) in &e.top.items {
                out.extend_from_slice(&t.to_le_bytes());
                out.extend_from_slice(&c.to_le_bytes());
            }
        }
        out
    }

    /// Reads a table written by [`ContextTable::to_bytes`], checking that it was built for a base
    /// of `vocab_size` tokens with fingerprint `base`. A truncated, corrupted or foreign file is
    /// one error sentence; nothing is allocated from a length the file's size cannot back.
    pub fn from_bytes(bytes: &[u8], vocab_size: usize, base: &str) -> Result<Self> {
        let bad = |why: &str| InferError::Context(format!("the corpus n-gram table {why}"));
        let mut r = Reader { bytes, at: 0 };
        if r.take(8).ok_or_else(|| bad("is too short"))? != MAGIC {
            return Err(bad("is not a TokenSwift n-gram table (bad magic)"));
        }
        let vocab = r.u32().ok_or_else(|| bad("is truncated"))? as usize;
        let blen = r.u16().ok_or_else(|| bad("is truncated"))? as usize;
        let fp = r.take(blen).ok_or_else(|| bad("is truncated"))?;
        if vocab != vocab_size || fp != base.as_bytes() {
            return Err(bad(&format!(
                "was built for another base model (vocabulary {vocab}, fingerprint {}), not this one (vocabulary {vocab_size}, fingerprint {})",
                String::from_utf8_lossy(&fp[..fp.len().min(12)]),
                &base[..base.len().min(12)]
            )));
        }
        let n = r.u64().ok_or_else(|| bad("is truncated"))?;
        // Every entry takes at least 14 bytes: the count cannot exceed what the file holds.
        if n > (bytes.len() / 14) as u64 {
            return Err(bad(&format!(
                "claims {n} contexts, more than its size can hold"
            )));
        }
        let mut table = ContextTable::default();
        table.entries.reserve(n as usize);
        for _ in 0..n {
            let len = r.u8().ok_or_else(|| bad("is truncated"))? as usize;
            if !(1..=MAX_CONTEXT).contains(&len) {
                return Err(bad(&format!(
                    "has a context of {len} tokens (1 to {MAX_CONTEXT} allowed)"
                )));
            }
            let mut ctx = [0u32; MAX_CONTEXT];
            for c in ctx.iter_mut().take(len) {
                *c = r.u32().ok_or_else(|| bad("is truncated"))?;
            }
            let total = r.u32().ok_or_else(|| bad("is truncated"))?;
            let k = r.u8().ok_or_else(|| bad("is truncated"))? as usize;
            if k == 0 || k > CONTEXT_RANK {
                return Err(bad(&format!(
                    "has a context with {k} next tokens (1 to {CONTEXT_RANK} allowed)"
                )));
            }
            let mut top = TopList::new();
            for _ in 0..k {
                let t = r.u32().ok_or_else(|| bad("is truncated"))?;
                let c = r.u32().ok_or_else(|| bad("is truncated"))?;
                top.items.push((t, c));
            }
            let ids = ctx[..len].iter().chain(top.items.iter().map(|(t, _)| t));
            if let Some(t) = ids.into_iter().find(|&&t| t as usize >= vocab_size) {
                return Err(bad(&format!(
                    "holds token {t}, outside the vocabulary of {vocab_size}"
                )));
            }
            let ranked = top.items.windows(2).all(|w| w[0].1 >= w[1].1);
            let counted: u64 = top.items.iter().map(|&(_, c)| u64::from(c)).sum();
            if !ranked || counted > u64::from(total) {
                return Err(bad("has inconsistent counts"));
            }
            table
                .entries
                .insert(context_key(&ctx[..len]), ContextEntry { total, top });
        }
        if r.at != bytes.len() {
            return Err(bad("has trailing bytes after its last context"));
        }
        Ok(table)
    }
}

/// A bounds-checked little-endian reader.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus_table() -> ContextTable {
        let mut t = ContextTable::new();
        t.add_document(&[1, 2, 3, 4, 1, 2, 3, 4, 9, 2, 3, 5]);
        t.add_document(&[7, 2, 3, 4]);
        t
    }

    /// Saved and loaded tables draft the same chains; the bytes are reproducible.
    #[test]
    fn corpus_table_round_trips() {
        let t = corpus_table();
        let bytes = t.to_bytes(10, "fp");
        assert_eq!(bytes, corpus_table().to_bytes(10, "fp"));
        let u = ContextTable::from_bytes(&bytes, 10, "fp").unwrap();
        for ctx in [&[1u32, 2, 3][..], &[9, 2, 3], &[2], &[7]] {
            assert_eq!(t.draft(ctx, 4, 3), u.draft(ctx, 4, 3), "{ctx:?}");
        }
        // Documents are separate streams: 4 (end of the first) is never followed by 7.
        assert!(t.draft(&[4], 1, 4).iter().all(|c| c.tokens[0] != 7));
    }

    /// `draft_while` keeps the token that made `more` say no and looks up nothing after it; with
    /// `more` always true it is `draft`.
    #[test]
    fn draft_while_stops_a_chain_where_asked() {
        let t = corpus_table();
        let ctx = [1u32, 2, 3];
        let full = t.draft(&ctx, 6, 2);
        assert!(full[0].tokens.len() > 2, "{full:?}");
        assert_eq!(t.draft_while(&ctx, 6, 2, |_| true), full);
        let mut asked = 0;
        let cut = t.draft_while(&ctx, 6, 2, |c| {
            asked += 1;
            c.tokens.len() < 2
        });
        for (c, f) in cut.iter().zip(&full) {
            let n = f.tokens.len().min(2);
            assert_eq!(c.tokens, f.tokens[..n]);
            assert_eq!(c.support, f.support[..n]);
        }
        assert_eq!(cut.len(), full.len());
        assert!(asked <= 2 * full.len(), "asked {asked} times");
    }

    /// Every truncation, every single flipped byte and a hostile count are errors, never panics
    /// or huge allocations; a foreign base is named.
    #[test]
    fn corrupted_corpus_tables_are_one_sentence_errors() {
        let bytes = corpus_table().to_bytes(10, "fp");
        for n in 0..bytes.len() {
            assert!(
                ContextTable::from_bytes(&bytes[..n], 10, "fp").is_err(),
                "truncated at {n}"
            );
        }
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                // Either an error or a valid table; never a panic.
                let _ = ContextTable::from_bytes(&b, 10, "fp");
            }
        }
        let mut huge = bytes.clone();
        let at = 8 + 4 + 2 + 2;
        huge[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = ContextTable::from_bytes(&huge, 10, "fp")
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than its size"), "{e}");
        let e = ContextTable::from_bytes(&bytes, 10, "other")
            .unwrap_err()
            .to_string();
        assert!(e.contains("another base"), "{e}");
        let e = ContextTable::from_bytes(&bytes, 5, "fp")
            .unwrap_err()
            .to_string();
        assert!(e.contains("another base"), "{e}");
    }

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
        let mut counts: HashMap<u32, u32> = HashMap::default();
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
