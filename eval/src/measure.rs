//! One measurement cell: AR and TokenSwift on the same prompt, sampling and seed, with the
//! per-token latency of each read at checkpoints.
//!
//! This machine drifts by 10–40 % (up to 3×) within minutes, so the timing is built to be fair:
//! both methods are warmed up untimed first; then they run in alternating chunks of 64 tokens
//! in one process ([`generate_paired`]), each timed on its own steps only (setup and prefill are
//! excluded alike), so a slow spell slows both; a cell may be repeated, the latencies summed over
//! repetitions.

use tokenswift_datasets::{CorpusSource, HELD_OUT_NOVEL, tokenize};
use tokenswift_infer::decoding::ar::generate_ar;
use tokenswift_infer::decoding::paired::{Method, generate_paired};
use tokenswift_infer::decoding::session::{TokenSwiftConfig, generate_tokenswift};
use tokenswift_infer::draft::heads::DraftHeads;
use tokenswift_infer::load::tokenizer::TextTokenizer;
use tokenswift_infer::model::Model;
use tokenswift_infer::sampling::SamplingConfig;

use crate::distinct::distinct_1_to_4;
use crate::error::{EvalError, Result};
use crate::table::Measurement;

/// What to measure.
pub struct Cell<'a> {
    pub experiment: &'a str,
    pub setting: String,
    pub prompt_index: usize,
    pub prompt: &'a [u32],
    pub gen_len: usize,
    /// Token counts at which latencies are read (the last one is `gen_len`).
    pub checkpoints: Vec<usize>,
    pub sampling: SamplingConfig,
    pub ts: TokenSwiftConfig,
    /// Repetitions (at least 1).
    pub repeats: usize,
}

/// A finished cell.
pub struct CellOutcome {
    pub rows: Vec<Measurement>,
    pub ts_tokens: Vec<u32>,
    pub ar_tokens: Vec<u32>,
}

fn stopped_early(method: &str, reached: usize, of: usize) -> EvalError {
    EvalError::Usage(format!(
        "the {method} run stopped early ({reached} of {of} checkpoints reached)"
    ))
}

/// Evenly spaced checkpoints: every `gen_len / count` tokens, plus any `extra` within range.
pub fn checkpoints(gen_len: usize, count: usize, extra: &[usize]) -> Vec<usize> {
    let count = count.max(1);
    let mut v: Vec<usize> = (1..=count)
        .map(|i| gen_len * i / count)
        .filter(|&c| c > 0)
        .collect();
    v.extend(extra.iter().copied().filter(|&c| c > 0 && c <= gen_len));
    v.sort_unstable();
    v.dedup();
    v
}

/// Tokens a cell produces in all, over both methods and every repetition (the length of its
/// progress bar).
pub fn cell_work(cell: &Cell) -> usize {
    cell.gen_len * 2 * cell.repeats.max(1)
}

/// Runs one cell; `progress(phase, tokens_so_far)` is called as tokens are produced, the count
/// running over both methods and every repetition (up to [`cell_work`]), so a bar over it never
/// restarts.
pub fn run_cell(
    model: &Model,
    heads: &DraftHeads,
    cell: &Cell,
    progress: &mut dyn FnMut(&str, usize),
) -> Result<CellOutcome> {
    let cps = &cell.checkpoints;
    // Untimed warm-up of both methods (thread pool, allocator, caches).
    let warm = cell.gen_len.min(16);
    generate_ar(model, cell.prompt, warm, &cell.sampling, false, &mut |_| {
        Ok(())
    })?;
    generate_tokenswift(
        model,
        heads,
        cell.prompt,
        warm,
        &cell.sampling,
        &cell.ts,
        &mut |_| Ok(()),
    )?;
    // Per checkpoint: the method's own decode seconds and tokens generated, summed over
    // repetitions.
    let mut ar_acc = vec![(0f64, 0usize); cps.len()];
    let mut ts_acc = vec![(0f64, 0usize); cps.len()];
    let mut ar_out: Option<Vec<u32>> = None;
    let mut ts_out = None;
    // α, tokens/step and n-gram share over the tokens up to each checkpoint (first TokenSwift
    // repetition; read at the step that reaches the checkpoint).
    let mut at_cp: Vec<Option<(f64, f64, f64)>> = vec![None; cps.len()];
    let mut same_outputs = true;
    let repeats = cell.repeats.max(1);
    for rep in 0..repeats {
        let before = rep * 2 * cell.gen_len;
        let label = if repeats > 1 {
            format!("TokenSwift and AR {}/{repeats}", rep + 1)
        } else {
            "TokenSwift and AR".to_string()
        };
        let (mut next_ts, mut next_ar, mut done) = (0, 0, (0, 0));
        let r = generate_paired(
            model,
            heads,
            cell.prompt,
            cell.gen_len,
            &cell.sampling,
            &cell.ts,
            &mut |p| {
                let (acc, next) = match p.method {
                    Method::TokenSwift => {
                        done.0 = p.generated;
                        (&mut ts_acc, &mut next_ts)
                    }
                    Method::Ar => {
                        done.1 = p.generated;
                        (&mut ar_acc, &mut next_ar)
                    }
                };
                while *next < cps.len() && cps[*next] <= p.generated {
                    acc[*next].0 += p.elapsed.as_secs_f64();
                    acc[*next].1 += p.generated;
                    if let Some(s) = p.stats {
                        at_cp[*next].get_or_insert((
                            s.acceptance_rate(),
                            s.tokens_per_step(),
                            s.ngram_share(),
                        ));
                    }
                    *next += 1;
                }
                let count = done.0.min(cell.gen_len) + done.1.min(cell.gen_len);
                progress(&label, before + count);
                Ok(())
            },
        )?;
        if next_ts < cps.len() {
            return Err(stopped_early("TokenSwift", next_ts, cps.len()));
        }
        if next_ar < cps.len() {
            return Err(stopped_early("AR", next_ar, cps.len()));
        }
        match &ar_out {
            Some(t) => same_outputs &= *t == r.ar_tokens,
            None => ar_out = Some(r.ar_tokens),
        }
        match &ts_out {
            Some((t, _)) => same_outputs &= *t == r.ts_tokens,
            None => ts_out = Some((r.ts_tokens, r.ts_stats)),
        }
    }
    let ar_tokens = ar_out.expect("AR ran");
    let (ts_tokens, stats) = ts_out.expect("TokenSwift ran");
    let distinct = distinct_1_to_4(&ts_tokens);
    let identical = i64::from(same_outputs && ts_tokens == ar_tokens);
    let rows = cps
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let per_token = |(secs, tokens): (f64, usize)| secs * 1000.0 / tokens.max(1) as f64;
            let (ar_ms, ts_ms) = (per_token(ar_acc[i]), per_token(ts_acc[i]));
            let (alpha, tokens_per_step, ngram_share) = at_cp[i].unwrap_or((
                stats.acceptance_rate(),
                stats.tokens_per_step(),
                stats.ngram_share(),
            ));
            Measurement {
                experiment: cell.experiment.to_string(),
                setting: cell.setting.clone(),
                prompt: cell.prompt_index as i64,
                prefill_len: cell.prompt.len() as i64,
                gen_len: cell.gen_len as i64,
                checkpoint: c as i64,
                ar_ms_per_token: ar_ms,
                ts_ms_per_token: ts_ms,
                speedup: ar_ms / ts_ms.max(1e-9),
                minutes_saved: (ar_ms - ts_ms) * c as f64 / 60_000.0,
                alpha,
                tokens_per_step,
                ngram_share,
                distinct,
                tree: format!(
                    "{:?}: {:.0}% AR steps, {:.0}% heads, {:.0}% separate",
                    cell.ts.tree,
                    100.0 * stats.ar_steps as f64 / stats.steps.max(1) as f64,
                    100.0 * stats.heads_steps as f64 / stats.steps.max(1) as f64,
                    100.0 * stats.separate_steps as f64 / stats.steps.max(1) as f64
                ),
                identical,
                fingerprint: String::new(),
                source: String::new(),
            }
        })
        .collect();
    Ok(CellOutcome {
        rows,
        ts_tokens,
        ar_tokens,
    })
}

/// Prompts of `prefill_len` tokens: from the held-out novel of the offline corpus (`austen`,
/// windows spread over the book), or from local documents (a file, a directory of .txt, JSONL),
/// one per document.
pub fn load_prompts(
    spec: &str,
    tokenizer: &TextTokenizer,
    prefill_len: usize,
    count: usize,
    progress: &dyn Fn(&str),
) -> Result<Vec<Vec<u32>>> {
    if prefill_len == 0 || count == 0 {
        return Err(EvalError::Usage(
            "--prefill-len and --num-prompts must be at least 1".into(),
        ));
    }
    let source = CorpusSource::parse(spec)?;
    let docs = tokenize(&source.documents(progress)?, tokenizer)?;
    if source == CorpusSource::Austen {
        let book = docs
            .iter()
            .find(|d| d.name == HELD_OUT_NOVEL)
            .ok_or_else(|| EvalError::Usage("the held-out novel is missing".into()))?;
        if book.tokens.len() < prefill_len * count {
            return Err(EvalError::Usage(format!(
                "the held-out novel has {} tokens, fewer than {count} prompts of {prefill_len}",
                book.tokens.len()
            )));
        }
        let stride = book.tokens.len() / count;
        return Ok((0..count)
            .map(|i| book.tokens[i * stride..i * stride + prefill_len].to_vec())
            .collect());
    }
    let docs: Vec<_> = docs.into_iter().filter(|d| !d.tokens.is_empty()).collect();
    if docs.is_empty() {
        return Err(EvalError::Usage(format!(
            "`{spec}` holds no text to prompt with"
        )));
    }
    Ok((0..count)
        .map(|i| {
            let d = &docs[i % docs.len()].tokens;
            d[..d.len().min(prefill_len)].to_vec()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_every_fifth_plus_extras() {
        assert_eq!(
            checkpoints(6000, 5, &[4096]),
            vec![1200, 2400, 3600, 4096, 4800, 6000]
        );
        assert_eq!(checkpoints(10, 3, &[20]), vec![3, 6, 10]);
    }
}
