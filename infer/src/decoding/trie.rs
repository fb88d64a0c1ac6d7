//! The candidate trie verified in one forward pass: the draft tree (a Medusa-style cartesian tree
//! of per-depth top-k choices) and the n-gram chains, merged on shared prefixes so every path
//! appears once and the acceptance walk is unambiguous (DESIGN §2).

/// A trie of candidate continuations below a root token (the last sampled token, not yet in any
/// cache). Node 0 is the root; nodes are stored parents-first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateTrie {
    tokens: Vec<u32>,
    parent: Vec<Option<usize>>,
    depth: Vec<usize>,
    children: Vec<Vec<usize>>,
}

impl CandidateTrie {
    /// A trie holding only `root`.
    pub fn new(root: u32) -> Self {
        Self {
            tokens: vec![root],
            parent: vec![None],
            depth: vec![0],
            children: vec![Vec::new()],
        }
    }

    /// The draft tree: depth `d + 1` holds, under every node of depth `d`, the first `arity[d]`
    /// tokens of `choices[d]` (the top-k of distribution `d`, most likely first), so
    /// `arity = [1, 3, 3, 3]` gives 1 + 3 + 9 + 27 = 40 nodes below the root.
    pub fn from_tree(root: u32, choices: &[Vec<u32>], arity: &[usize]) -> Self {
        let mut trie = Self::new(root);
        let mut frontier = vec![0usize];
        for (d, &a) in arity.iter().enumerate() {
            let Some(tokens) = choices.get(d) else { break };
            let mut next = Vec::new();
            for &node in &frontier {
                for &t in tokens.iter().take(a) {
                    next.push(trie.child_or_insert(node, t));
                }
            }
            frontier = next;
        }
        trie
    }

    fn child_or_insert(&mut self, node: usize, token: u32) -> usize {
        if let Some(c) = self.child_with(node, token) {
            return c;
        }
        self.push_child(node, token)
    }

    /// Appends `token` as a new child of `node` (the caller guarantees no sibling carries it);
    /// returns its index.
    pub fn push_child(&mut self, node: usize, token: u32) -> usize {
        debug_assert!(self.child_with(node, token).is_none());
        let id = self.tokens.len();
        self.tokens.push(token);
        self.parent.push(Some(node));
        self.depth.push(self.depth[node] + 1);
        self.children.push(Vec::new());
        self.children[node].push(id);
        id
    }

    /// Adds the chain `path` below the root, sharing every prefix already present.
    pub fn insert_path(&mut self, path: &[u32]) {
        let mut node = 0;
        for &t in path {
            node = self.child_or_insert(node, t);
        }
    }

    /// Number of nodes, the root included (= tokens in the verify pass).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn parent(&self, node: usize) -> Option<usize> {
        self.parent[node]
    }

    pub fn depth(&self, node: usize) -> usize {
        self.depth[node]
    }

    pub fn children(&self, node: usize) -> &[usize] {
        &self.children[node]
    }

    /// The child of `node` carrying `token`.
    pub fn child_with(&self, node: usize, token: u32) -> Option<usize> {
        self.children[node]
            .iter()
            .copied()
            .find(|&c| self.tokens[c] == token)
    }

    /// Nodes from the root's first child down to `node` (the root itself excluded).
    pub fn path_to(&self, node: usize) -> Vec<usize> {
        let mut path = Vec::with_capacity(self.depth[node]);
        let mut n = node;
        while let Some(p) = self.parent[n] {
            path.push(n);
            n = p;
        }
        path.reverse();
        path
    }

    /// Tokens on the path to `node` (root excluded).
    pub fn path_tokens(&self, node: usize) -> Vec<u32> {
        self.path_to(node)
            .into_iter()
            .map(|n| self.tokens[n])
            .collect()
    }

    /// Tree attention mask over the nodes, row-major `[len, len]`: each node sees its ancestors
    /// (the root included) and itself.
    pub fn mask(&self) -> Vec<bool> {
        let n = self.len();
        let mut m = vec![false; n * n];
        for i in 0..n {
            let mut j = Some(i);
            while let Some(k) = j {
                m[i * n + k] = true;
                j = self.parent[k];
            }
        }
        m
    }

    /// Position ids: `base + depth` (the root sits at `base`, the current cache length).
    pub fn positions(&self, base: usize) -> Vec<usize> {
        self.depth.iter().map(|d| base + d).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_tree_has_forty_nodes_below_the_root() {
        let choices = vec![
            vec![10, 11],
            vec![20, 21, 22, 23],
            vec![30, 31, 32],
            vec![40, 41, 42],
        ];
        let t = CandidateTrie::from_tree(1, &choices, &[1, 3, 3, 3]);
        assert_eq!(t.len(), 41);
        assert_eq!(t.tokens()[1], 10);
        assert_eq!(
            t.children(1)
                .iter()
                .map(|&c| t.tokens()[c])
                .collect::<Vec<_>>(),
            vec![20, 21, 22]
        );
        let leaf = t.len() - 1;
        assert_eq!(t.depth(leaf), 4);
        assert_eq!(t.path_tokens(leaf), vec![10, 22, 32, 42]);
    }

    #[test]
    fn ngram_chains_merge_on_shared_prefixes() {
        let mut t = CandidateTrie::from_tree(1, &[vec![5], vec![6, 7]], &[1, 2]);
        assert_eq!(t.len(), 4);
        t.insert_path(&[5, 6, 9, 9]); // shares 5 → 6
        t.insert_path(&[5, 8]);
        t.insert_path(&[5, 6, 9, 9]); // already there
        assert_eq!(t.len(), 4 + 2 + 1);
        let n = t.child_with(0, 5).unwrap();
        let n = t.child_with(n, 6).unwrap();
        let n = t.child_with(n, 9).unwrap();
        assert_eq!(t.path_tokens(t.child_with(n, 9).unwrap()), vec![5, 6, 9, 9]);
    }

    #[test]
    fn mask_and_positions_by_hand() {
        // root(0) → a(1) → c(3); root → b(2)
        let mut t = CandidateTrie::new(7);
        t.insert_path(&[1, 3]);
        t.insert_path(&[2]);
        let m = t.mask();
        let rows: Vec<Vec<u8>> = m
            .chunks(4)
            .map(|r| r.iter().map(|&b| b as u8).collect())
            .collect();
        assert_eq!(
            rows,
            vec![
                vec![1, 0, 0, 0],
                vec![1, 1, 0, 0],
                vec![1, 1, 1, 0],
                vec![1, 0, 0, 1]
            ]
        );
        assert_eq!(t.tokens(), &[7, 1, 3, 2]);
        assert_eq!(t.positions(100), vec![100, 101, 102, 101]);
    }
}
