//! Building blocks of TokenSwift decoding that need no model: the candidate trie, the acceptance
//! walk, the n-gram table and the partial-cache slot bookkeeping. Pure functions over small structs, tested by hand-computed cases.
//! The driver (draft, verify, partial cache) builds on them.

pub mod accept;
pub mod engine;
pub mod ngram;
pub mod partial;
pub mod partial_cache;
pub mod tree;
pub mod trie;
