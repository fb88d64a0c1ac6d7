//! Building blocks of TokenSwift decoding that need no model: the candidate trie, the acceptance
//! walk and the n-gram table. Pure functions over small structs, tested by hand-computed cases.
//! The driver (draft, verify, partial cache) builds on them.

pub mod accept;
pub mod ngram;
pub mod trie;
