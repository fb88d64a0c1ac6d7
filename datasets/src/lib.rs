//! tokenswift-datasets: corpora and prompt sets. The offline corpus (Jane Austen's six novels from
//! Debian's `r-cran-janeaustenr`, read from R's lazy-load database without R) serves CI and the
//! default run; local corpora (a directory of `.txt`, a text file, JSONL with a `text` field)
//! serve everything else.

pub mod corpus;
pub mod error;
pub mod rdata;

pub use corpus::{
    CorpusSource, Document, HELD_OUT_NOVEL, HeldOutSplit, PG19_COPIES, TokenizedDocument, Windows,
    split_held_out, tokenize, training_sequences, training_windows,
};
pub use error::{DatasetError, Result};

/// The opening of *Pride and Prejudice* (public domain), the default long-generation prompt.
pub const DEFAULT_PROMPT: &str = include_str!("../prompts/pride-and-prejudice.txt");

#[cfg(test)]
mod tests {
    #[test]
    fn default_prompt_is_present() {
        assert!(super::DEFAULT_PROMPT.starts_with("It is a truth universally acknowledged"));
    }
}
