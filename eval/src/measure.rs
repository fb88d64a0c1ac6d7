//! One measurement cell: AR and TokenSwift on the same prompt, sampling and seed, one after the
//! other (the order alternates between prompts so slow drift of the machine hits both), with the
//! per-token latency of each read at checkpoints.

use std::time::Instant;

use tokenswift_datasets::{CorpusSource, HELD_OUT_NOVEL, tokenize};
use tokenswift_infer::decoding::ar::generate_ar;
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
    /// Run AR before TokenSwift (alternate this between prompts).
    pub ar_first: bool,
}

/// A finished cell.
pub struct CellOutcome {
    pub rows: Vec<Measurement>,
    pub ts_tokens: Vec<u32>,
    pub ar_tokens: Vec<u32>,
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

/// Runs one cell; `progress(method, tokens_so_far)` is called as tokens are produced.
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
    let mut ar_times = Vec::new();
    let mut ts_times = Vec::new();
    let mut ar_out = None;
    let mut ts_out = None;
    for turn in 0..2 {
        let ar_turn = (turn == 0) == cell.ar_first;
        if ar_turn {
            let t0 = Instant::now();
            let mut count = 0;
            let (tokens, stats) = generate_ar(
                model,
                cell.prompt,
                cell.gen_len,
                &cell.sampling,
                false,
                &mut |_| {
                    count += 1;
                    if cps.contains(&count) {
                        ar_times.push(t0.elapsed());
                    }
                    progress("AR", count);
                    Ok(())
                },
            )?;
            let prefill = stats.prefill_time;
            ar_out = Some((tokens, prefill));
        } else {
            let t0 = Instant::now();
            let mut count = 0;
            let mut next = 0;
            let (tokens, stats) = generate_tokenswift(
                model,
                heads,
                cell.prompt,
                cell.gen_len,
                &cell.sampling,
                &cell.ts,
                &mut |step| {
                    count += step.tokens.len();
                    while next < cps.len() && cps[next] <= count {
                        ts_times.push(t0.elapsed());
                        next += 1;
                    }
                    progress("TokenSwift", count);
                    Ok(())
                },
            )?;
            ts_out = Some((tokens, stats));
        }
    }
    let (ar_tokens, ar_prefill) = ar_out.expect("AR ran");
    let (ts_tokens, stats) = ts_out.expect("TokenSwift ran");
    if ar_times.len() != cps.len() || ts_times.len() != cps.len() {
        return Err(EvalError::Usage(format!(
            "a run stopped early ({} AR and {} TokenSwift checkpoints of {})",
            ar_times.len(),
            ts_times.len(),
            cps.len()
        )));
    }
    let distinct = distinct_1_to_4(&ts_tokens);
    let identical = i64::from(ts_tokens == ar_tokens);
    let rows = cps
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let ar_ms = (ar_times[i].saturating_sub(ar_prefill)).as_secs_f64() * 1000.0 / c as f64;
            let ts_ms =
                (ts_times[i].saturating_sub(stats.prefill_time)).as_secs_f64() * 1000.0 / c as f64;
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
                alpha: stats.acceptance_rate(),
                tokens_per_step: stats.tokens_per_step(),
                ngram_share: stats.ngram_share(),
                distinct,
                tree: format!(
                    "{:?}: {:.0}% AR steps, {:.0}% heads, {:.0}% separate",
                    cell.ts.tree,
                    100.0 * stats.ar_steps as f64 / stats.steps.max(1) as f64,
                    100.0 * stats.heads_steps as f64 / stats.steps.max(1) as f64,
                    100.0 * stats.separate_steps as f64 / stats.steps.max(1) as f64
                ),
                identical,
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
