//! Running a grid of cells into a run directory: skip cells already in the table, append each
//! finished cell at once, refresh the summary and charts after every cell.

use std::path::Path;

use tokenswift_cli::Ui;
use tokenswift_infer::decoding::session::TokenSwiftConfig;
use tokenswift_infer::draft::heads::DraftHeads;
use tokenswift_infer::load::tokenizer::TextTokenizer;
use tokenswift_infer::model::Model;
use tokenswift_infer::sampling::SamplingConfig;

use crate::error::{EvalError, Result};
use crate::measure::{Cell, run_cell};
use crate::provenance::{CellSpec, Provenance, cell_fingerprint};
use crate::report::{charts, separate_by_fingerprint, summary_markdown};
use crate::table::{ResultsTable, cell_key};

/// A loaded model with its heads and prompts.
pub struct Bench {
    pub model: Model,
    /// Decodes outputs for the run directory (`None`: tokens only).
    pub tokenizer: Option<TextTokenizer>,
    pub heads: DraftHeads,
    pub prompts: Vec<Vec<u32>>,
    /// The prompt length asked for (`--prefill-len`); part of every cell's fingerprint.
    pub prefill_len: usize,
    /// The heads' draft vocabulary (`--draft-vocab`; `None`: the whole vocabulary), used by
    /// every TokenSwift cell.
    pub draft_vocab: Option<Vec<u32>>,
    /// The heads' corpus n-gram table (`--corpus-ngrams`), used by every `auto` cell.
    pub corpus_ngrams: Option<std::sync::Arc<tokenswift_infer::decoding::ngram::ContextTable>>,
    /// Repetitions of every cell, the order of the two methods flipped each time.
    pub repeats: usize,
    /// Model, heads, draft vocabulary and corpus table, fingerprinted
    /// ([`Provenance::of`] on the fields above).
    pub provenance: Provenance,
}

/// One setting of a run: name, sampling, TokenSwift config.
pub struct Setting {
    pub name: String,
    pub sampling: SamplingConfig,
    pub ts: TokenSwiftConfig,
}

/// Runs every (setting × prompt) cell not yet in the table, refreshing summary and charts.
#[allow(clippy::too_many_arguments)]
pub fn run_grid(
    bench: &Bench,
    experiment: &str,
    settings: &[Setting],
    gen_len: usize,
    cps: &[usize],
    out: &Path,
    title: &str,
    ui: &Ui,
) -> Result<()> {
    let table = ResultsTable::new(out)?;
    let done = table.finished_cells()?;
    let outputs = out.join("outputs");
    std::fs::create_dir_all(&outputs).map_err(|e| EvalError::io(&outputs, e))?;
    for s in settings {
        for (i, prompt) in bench.prompts.iter().enumerate() {
            let fingerprint = cell_fingerprint(
                &bench.provenance,
                &CellSpec {
                    sampling: &s.sampling,
                    ts: &s.ts,
                    prefill: bench.prefill_len,
                    prompt,
                    gen_len,
                    checkpoints: cps,
                    repeats: bench.repeats,
                },
            );
            let key = cell_key(experiment, &s.name, i as i64, gen_len as i64, &fingerprint);
            if done.contains(&key) {
                ui.note(&format!(
                    "skipping finished cell {key} (same model, heads, prompt and settings)"
                ));
                continue;
            }
            let bar = ui.bar(
                gen_len as u64,
                &format!("{experiment} {} prompt {i}", s.name),
            );
            let cell = Cell {
                experiment,
                setting: s.name.clone(),
                prompt_index: i,
                prompt,
                gen_len,
                checkpoints: cps.to_vec(),
                sampling: s.sampling.clone(),
                ts: TokenSwiftConfig {
                    draft_vocab: bench.draft_vocab.clone(),
                    corpus_ngrams: bench.corpus_ngrams.clone(),
                    ..s.ts.clone()
                },
                ar_first: i % 2 == 0,
                repeats: bench.repeats,
            };
            let r = run_cell(&bench.model, &bench.heads, &cell, &mut |m, n| {
                bar.set_message(format!("{experiment} {} prompt {i}: {m}", s.name));
                bar.set_position(n as u64);
            })?;
            bar.finish_and_clear();
            let rows: Vec<_> = r
                .rows
                .into_iter()
                .map(|m| crate::table::Measurement {
                    fingerprint: fingerprint.clone(),
                    source: bench.provenance.label(),
                    ..m
                })
                .collect();
            let last = rows.last().expect("a checkpoint");
            ui.note(&format!(
                "{key}: AR {:.1} ms/token, TokenSwift {:.1} ms/token, speedup {:.2}×, α {:.3}, {:.2} tokens/step, Distinct-4 {:.3}{}",
                last.ar_ms_per_token,
                last.ts_ms_per_token,
                last.speedup,
                last.alpha,
                last.tokens_per_step,
                last.distinct[3],
                if last.identical == 1 { ", output = AR" } else { "" }
            ));
            let text = bench
                .tokenizer
                .as_ref()
                .and_then(|t| t.decode(&r.ts_tokens).ok())
                .unwrap_or_default();
            let file = outputs.join(format!(
                "{}.json",
                key.replace(['|', '=', ',', ' ', '/'], "_")
            ));
            std::fs::write(
                &file,
                serde_json::json!({"key": key, "tokens": r.ts_tokens, "text": text}).to_string(),
            )
            .map_err(|e| EvalError::io(&file, e))?;
            table.append(&rows)?;
            refresh(out, title)?;
        }
    }
    refresh(out, title)?;
    table.write_parquet()?;
    Ok(())
}

pub fn refresh(out: &Path, title: &str) -> Result<()> {
    let mut rows = ResultsTable::new(out)?.read()?;
    let mixed = separate_by_fingerprint(&mut rows);
    let mut md = summary_markdown(&rows, title);
    if let Some(warning) = mixed {
        let at = md.find("\n\n").map_or(0, |i| i + 2);
        md.insert_str(at, &format!("> **{warning}**\n\n"));
    }
    let path = out.join("summary.md");
    std::fs::write(&path, md).map_err(|e| EvalError::io(&path, e))?;
    charts(&rows, &out.join("charts"))?;
    Ok(())
}
