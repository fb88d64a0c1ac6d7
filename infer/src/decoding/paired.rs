//! TokenSwift and AR on the same prompt, sampling and seed, run in alternating chunks in one
//! process, each timed on its own steps only (DESIGN §7).
//!
//! Why: on a shared machine the speed drifts by 10–40 % (and up to 3×) within minutes, so two
//! generations timed one after the other compare two different machines; a 5 % speedup is
//! invisible under that noise. Alternating chunks of [`CHUNK`] tokens puts both methods on the
//! same machine, minute by minute: a slow spell slows both. A chunk is long enough (≈ a second)
//! that what a switch costs — the other method's KV cache evicted from the last-level cache, a
//! cold first pass — is paid once per chunk by each method alike, under 1 % of a chunk.

use std::time::{Duration, Instant};

use crate::draft::heads::DraftHeads;
use crate::error::Result;
use crate::model::Model;
use crate::sampling::SamplingConfig;

use super::ar::{ArSession, GenerationStats};
use super::session::{Session, TokenSwiftConfig, TokenSwiftStats};

/// Tokens each method generates before the other takes its turn.
pub const CHUNK: usize = 64;

/// Which method a [`PairedProgress`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Ar,
    TokenSwift,
}

/// Reported after every step of either method.
pub struct PairedProgress<'a> {
    pub method: Method,
    /// Tokens emitted by this step (for TokenSwift, the first `accepted` came from the draft).
    pub tokens: &'a [u32],
    pub accepted: usize,
    /// Tokens this method has generated so far.
    pub generated: usize,
    /// This method's decode time so far (its own steps only).
    pub elapsed: Duration,
    /// TokenSwift's statistics so far (TokenSwift steps only).
    pub stats: Option<&'a TokenSwiftStats>,
}

/// Both generations; each `decode_time` is the sum of its own steps.
pub struct PairedOutcome {
    pub ts_tokens: Vec<u32>,
    pub ts_stats: TokenSwiftStats,
    pub ar_tokens: Vec<u32>,
    pub ar_stats: GenerationStats,
}

/// Generates up to `max_new` tokens with TokenSwift and with AR, in alternating chunks of
/// [`CHUNK`] tokens (the order flipped every chunk). Both prefill first (timed in their stats,
/// not in the decode times).
pub fn generate_paired(
    model: &Model,
    heads: &DraftHeads,
    prompt: &[u32],
    max_new: usize,
    sampling: &SamplingConfig,
    cfg: &TokenSwiftConfig,
    on_progress: &mut dyn FnMut(PairedProgress<'_>) -> Result<()>,
) -> Result<PairedOutcome> {
    let mut ts = Session::new(model, heads, prompt, max_new, sampling, cfg)?;
    let mut ar = ArSession::new(model, prompt, max_new, sampling, cfg.stop_at_eos)?;
    let (mut ts_time, mut ar_time) = (Duration::ZERO, Duration::ZERO);
    // Both drew their first token when created (from the prefill's logits, untimed alike).
    on_progress(PairedProgress {
        method: Method::TokenSwift,
        tokens: &[ts.first_token()],
        accepted: 0,
        generated: 1,
        elapsed: ts_time,
        stats: Some(ts.stats()),
    })?;
    on_progress(PairedProgress {
        method: Method::Ar,
        tokens: &ar.generated()[..1],
        accepted: 0,
        generated: 1,
        elapsed: ar_time,
        stats: None,
    })?;
    // Chunk k: both methods advance to k·CHUNK tokens (TokenSwift may pass it by part of a
    // step), TokenSwift first in odd chunks and AR first in even ones, so neither always follows
    // the other (whatever a switch costs, each pays it alike).
    let mut k = 0;
    while !(ts.is_done() && ar.is_done()) {
        k += 1;
        let target = k * CHUNK;
        for ts_turn in [k % 2 == 1, k % 2 == 0] {
            if ts_turn {
                while !ts.is_done() && ts.generated().len() < target {
                    let t = Instant::now();
                    let (tokens, accepted) = ts.step()?;
                    ts_time += t.elapsed();
                    on_progress(PairedProgress {
                        method: Method::TokenSwift,
                        tokens: &tokens,
                        accepted,
                        generated: ts.generated().len(),
                        elapsed: ts_time,
                        stats: Some(ts.stats()),
                    })?;
                }
            } else {
                while !ar.is_done() && ar.generated().len() < target {
                    let t = Instant::now();
                    let token = ar.step()?;
                    ar_time += t.elapsed();
                    if let Some(token) = token {
                        on_progress(PairedProgress {
                            method: Method::Ar,
                            tokens: &[token],
                            accepted: 0,
                            generated: ar.generated().len(),
                            elapsed: ar_time,
                            stats: None,
                        })?;
                    }
                }
            }
        }
    }
    let (ts_tokens, mut ts_stats) = ts.finish();
    ts_stats.decode_time = ts_time;
    let (ar_tokens, ar_stats) = ar.finish(ar_time);
    Ok(PairedOutcome {
        ts_tokens,
        ts_stats,
        ar_tokens,
        ar_stats,
    })
}
