//! What produced a row of results. Every cell carries a fingerprint of everything that can
//! change its numbers — the base model, the heads, the draft vocabulary, the corpus n-gram
//! table, the prompt, the sampling, the TokenSwift settings, the lengths and the program's
//! version — and a rerun into the same run directory reuses a finished cell only when that
//! fingerprint matches exactly; anything else is measured again and stored beside it.

use sha2::{Digest, Sha256};
use tokenswift_infer::decoding::ngram::ContextTable;
use tokenswift_infer::decoding::session::TokenSwiftConfig;
use tokenswift_infer::draft::heads::{DraftHeads, base_fingerprint};
use tokenswift_infer::model::Model;
use tokenswift_infer::sampling::SamplingConfig;

/// The part of a cell's identity fixed for a whole run: model, heads and their companions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// The base model's fingerprint (config plus sampled embedding and `lm_head` rows).
    pub model: String,
    /// SHA-256 of the heads' weights.
    pub heads: String,
    /// SHA-256 of the draft vocabulary's ids (`none`: the whole vocabulary).
    pub draft_vocab: String,
    /// SHA-256 of the corpus n-gram table (`none`: not used).
    pub corpus_ngrams: String,
    /// The formats of the matrices the CPU fast path multiplies by ([`Model::weights_format`]).
    pub weights: String,
}

fn sha(bytes: impl IntoIterator<Item = u8>) -> String {
    let mut h = Sha256::new();
    h.update(bytes.into_iter().collect::<Vec<u8>>());
    format!("{:x}", h.finalize())
}

impl Provenance {
    pub fn of(
        model: &Model,
        heads: &DraftHeads,
        draft_vocab: Option<&[u32]>,
        corpus_ngrams: Option<&ContextTable>,
    ) -> Self {
        Self {
            model: base_fingerprint(model),
            heads: heads.fingerprint(),
            draft_vocab: draft_vocab.map_or_else(
                || "none".into(),
                |v| sha(v.iter().flat_map(|t| t.to_le_bytes())),
            ),
            corpus_ngrams: corpus_ngrams.map_or_else(
                || "none".into(),
                |t| sha(t.to_bytes(model.config().vocab_size, "")),
            ),
            weights: model.weights_format(),
        }
    }

    /// The label stored in every row: which model and heads produced it.
    pub fn label(&self) -> String {
        // f32 (what every older row ran on) is left unsaid, so older rows keep their label.
        let weights = match self.weights.as_str() {
            "f32" => String::new(),
            w => format!(" ({w})"),
        };
        format!(
            "model {}{weights} heads {}",
            short(&self.model),
            short(&self.heads)
        )
    }
}

fn short(h: &str) -> &str {
    &h[..h.len().min(12)]
}

/// Everything a cell's numbers depend on, besides the run's [`Provenance`].
pub struct CellSpec<'a> {
    pub sampling: &'a SamplingConfig,
    pub ts: &'a TokenSwiftConfig,
    /// The prompt length the run asked for (`--prefill-len`; a prompt may be shorter).
    pub prefill: usize,
    pub prompt: &'a [u32],
    pub gen_len: usize,
    pub checkpoints: &'a [usize],
    pub repeats: usize,
}

/// The cell's fingerprint: `CONFIG-PROMPT`, 16 hex digits of a SHA-256 of everything but the
/// prompt's tokens (model, heads, draft tables, sampling, TokenSwift settings, the requested
/// prefill and generation lengths, repetitions, program version, how the two methods were
/// timed), then 8 of the prompt's tokens. A finished cell is
/// reused only when the whole fingerprint matches; summaries keep apart rows whose `CONFIG`
/// parts differ ([`config_part`]).
pub fn cell_fingerprint(p: &Provenance, c: &CellSpec) -> String {
    let ts = c.ts;
    let text = format!(
        "program tokenswift-eval {}\nmodel {}\nheads {}\ndraft-vocab {}\ncorpus-ngrams {}\n\
         sampling {:?}\nprefill {}\ngen-len {}\ncheckpoints {:?}\nrepeats {}\n\
         tree {:?}\nngram-topk {}\nngram-lag {:?}\nkv-budget {}\ndraft {:?}\nstop-at-eos {}\n\
         accept {:?}\nfaults {:?}\n",
        env!("CARGO_PKG_VERSION"),
        p.model,
        p.heads,
        p.draft_vocab,
        p.corpus_ngrams,
        c.sampling,
        c.prefill,
        c.gen_len,
        c.checkpoints,
        c.repeats,
        ts.tree,
        ts.ngram_topk,
        ts.ngram_lag,
        ts.kv_budget,
        ts.draft,
        ts.stop_at_eos,
        ts.accept,
        ts.faults,
    );
    // Cells measured before the weights were selectable all ran on f32 and carry no weights
    // line; keeping it out for f32 keeps their fingerprints.
    let text = if p.weights == "f32" {
        text
    } else {
        format!("{text}weights {}\n", p.weights)
    };
    // Cells timed one method after the other carry no timing line; those timed in alternating
    // chunks (`decoding::paired`) do, so a rerun never reuses the older kind.
    let text = format!(
        "{text}timing paired-{}\n",
        tokenswift_infer::decoding::paired::CHUNK
    );
    let prompt = sha(c.prompt.iter().flat_map(|t| t.to_le_bytes()));
    format!("{}-{}", &sha(text.into_bytes())[..16], &prompt[..8])
}

/// The part of a cell fingerprint that does not depend on the prompt's tokens.
pub fn config_part(fingerprint: &str) -> &str {
    fingerprint.split('-').next().unwrap_or("")
}
