//! TokenSwift decoding (DESIGN §2–§5): the session that drives a generation, the planner that
//! chooses each step's shape, and the model-free pieces they use — the candidate trie, the
//! acceptance walk, the n-gram tables and the partial-cache slot bookkeeping (pure functions over
//! small structs, tested by hand-computed cases). Only `session` and `partial_cache` touch the
//! model.

pub mod accept;
pub mod ar;
pub mod corpus;
pub mod ngram;
pub mod paired;
pub mod partial;
pub mod partial_cache;
pub mod planner;
pub mod session;
pub mod trie;
