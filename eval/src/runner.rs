//! Running a grid of cells into a run directory: skip cells already in the table, append each
//! finished cell at once, refresh the summary and charts after every cell. A grid may be split
//! over jobs ([`Shard`]): each job writes its own table, and [`merge`] joins them.

use std::cell::Cell as Counter;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use tokenswift_cli::{Ui, clock};
use tokenswift_infer::decoding::session::TokenSwiftConfig;
use tokenswift_infer::draft::heads::DraftHeads;
use tokenswift_infer::load::tokenizer::TextTokenizer;
use tokenswift_infer::model::Model;
use tokenswift_infer::sampling::SamplingConfig;

use crate::error::{EvalError, Result};
use crate::measure::{Cell, cell_work, run_cell};
use crate::provenance::{CellSpec, Provenance, cell_fingerprint};
use crate::report::{charts, separate_by_fingerprint, summary_markdown};
use crate::table::{Measurement, ResultsTable, cell_key};

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
    /// Repetitions of every cell (each runs the two methods in alternating chunks).
    pub repeats: usize,
    /// Model, heads, draft vocabulary and corpus table, fingerprinted
    /// ([`Provenance::of`] on the fields above).
    pub provenance: Provenance,
    /// Run only this slice of the grid (`--shard I/N`); `None`: all of it.
    pub shard: Option<Shard>,
    /// Cells met so far by this process, across every grid it ran: the i-th belongs to shard
    /// `i mod N`. Same command line, same order, so the slices are deterministic and disjoint.
    pub cells_met: Counter<usize>,
}

/// One of N deterministic slices of a grid (`--shard I/N`, I from 1): the cells a process
/// meets, in order, are dealt round-robin, so every slice gets within one cell of 1/N of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1-based.
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Whether the `i`-th cell met (from 0) is this slice's.
    pub fn owns(&self, i: usize) -> bool {
        i % self.count == self.index - 1
    }

    /// The table this slice writes in a run directory.
    pub fn file_name(&self) -> String {
        format!("results.shard-{}-of-{}.csv", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = EvalError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            EvalError::Usage(format!(
                "a shard is written I/N with 1 <= I <= N, e.g. 2/8 (got {s:?})"
            ))
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<usize>().map_err(|_| bad())?,
            n.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Progress over a grid: cells done of those to run, an ETA from the finished cells' wall time,
/// and, when stderr is not a terminal (Slurm, nohup), a log line every `every` within a cell.
struct GridProgress<'a> {
    ui: &'a Ui,
    total: usize,
    done: usize,
    started: Instant,
    cell_started: Instant,
    /// Wall time of the finished cells, in seconds.
    finished_secs: f64,
    last_line: Instant,
    every: Duration,
    log: bool,
}

impl<'a> GridProgress<'a> {
    fn new(ui: &'a Ui, total: usize) -> Self {
        let every = std::env::var("TOKENSWIFT_LOG_EVERY")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| *s > 0.0)
            .map_or(Duration::from_secs(60), Duration::from_secs_f64);
        let now = Instant::now();
        GridProgress {
            ui,
            total,
            done: 0,
            started: now,
            cell_started: now,
            finished_secs: 0.0,
            last_line: now,
            every,
            log: !ui.quiet && !std::io::stderr().is_terminal(),
        }
    }

    fn start_cell(&mut self) {
        self.cell_started = Instant::now();
        self.last_line = self.cell_started;
    }

    /// Time left for the grid, `fraction` of the current cell being done: the finished cells'
    /// mean wall time for each cell left; before any finished, the current cell's rate.
    fn eta(&self, fraction: f64) -> Option<Duration> {
        let left = (self.total - self.done) as f64 - fraction;
        let per_cell = if self.done > 0 {
            self.finished_secs / self.done as f64
        } else if fraction >= 0.02 {
            self.cell_started.elapsed().as_secs_f64() / fraction
        } else {
            return None;
        };
        Some(Duration::from_secs_f64((left * per_cell).max(0.0)))
    }

    fn eta_text(&self, fraction: f64) -> String {
        match self.eta(fraction) {
            Some(d) => format!("grid eta {}", clock(d)),
            None => "grid eta after the first cell".into(),
        }
    }

    /// `cell i/N` for messages (1-based, counting the cell under way).
    fn position(&self) -> String {
        format!("cell {}/{}", self.done + 1, self.total)
    }

    /// Within a cell: a log line every `every` when stderr is not a terminal.
    fn tick(&mut self, what: &str, pos: usize, len: usize) {
        if !self.log || self.last_line.elapsed() < self.every {
            return;
        }
        self.last_line = Instant::now();
        let fraction = pos as f64 / len.max(1) as f64;
        self.ui.note(&format!(
            "[{}] {} {what}: {pos}/{len} tokens, {}",
            clock(self.started.elapsed()),
            self.position(),
            self.eta_text(fraction)
        ));
    }

    fn finish_cell(&mut self) -> String {
        self.done += 1;
        self.finished_secs += self.cell_started.elapsed().as_secs_f64();
        let after = if self.done == self.total {
            "the grid is done".to_string()
        } else {
            self.eta_text(0.0)
        };
        format!(
            "[{}] cell {}/{} done in {}, {after}",
            clock(self.started.elapsed()),
            self.done,
            self.total,
            clock(self.cell_started.elapsed()),
        )
    }
}

/// One setting of a run: name, sampling, TokenSwift config.
pub struct Setting {
    pub name: String,
    pub sampling: SamplingConfig,
    pub ts: TokenSwiftConfig,
}

/// Runs every (setting × prompt) cell not yet in the table, refreshing summary and charts.
/// Returns the keys of the whole grid (every shard's cells too), so a caller can pick its rows
/// out of a directory that holds others.
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
) -> Result<Vec<String>> {
    let table = match bench.shard {
        Some(shard) => ResultsTable::named(out, &shard.file_name())?,
        None => ResultsTable::new(out)?,
    };
    // Cells finished into this directory: the merged table and every shard's table; a shard reads
    // only the merged table and its own (the others may be mid-write, and hold none of its cells).
    let done = match bench.shard {
        Some(_) => {
            let mut done = ResultsTable::new(out)?.finished_cells()?;
            done.extend(table.finished_cells()?);
            done
        }
        None => ResultsTable::finished_in_dir(out)?,
    };
    let outputs = out.join("outputs");
    std::fs::create_dir_all(&outputs).map_err(|e| EvalError::io(&outputs, e))?;
    if bench.shard.is_some() {
        // For `merge`, which has no title of its own.
        let path = out.join("title.txt");
        std::fs::write(&path, title).map_err(|e| EvalError::io(&path, e))?;
    }
    // The grid in the order it runs: (setting, prompt index, fingerprint, key), this slice only.
    let mut cells = Vec::new();
    let mut grid = Vec::new();
    for s in settings {
        for (i, prompt) in bench.prompts.iter().enumerate() {
            let met = bench.cells_met.get();
            bench.cells_met.set(met + 1);
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
            grid.push(key.clone());
            if bench.shard.is_some_and(|sh| !sh.owns(met)) {
                continue;
            }
            if done.contains(&key) {
                ui.note(&format!(
                    "skipping finished cell {key} (same model, heads, prompt and settings)"
                ));
                continue;
            }
            cells.push((s, i, fingerprint, key));
        }
    }
    let mut progress = GridProgress::new(ui, cells.len());
    if !cells.is_empty() {
        ui.note(&format!(
            "{experiment}: {} cell(s) to run{}",
            cells.len(),
            bench
                .shard
                .map(|sh| format!(" in shard {sh}"))
                .unwrap_or_default()
        ));
    }
    for (s, i, fingerprint, key) in cells {
        let prompt = &bench.prompts[i];
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
            repeats: bench.repeats,
        };
        let work = cell_work(&cell);
        let name = format!("{experiment} {} prompt {i}", s.name);
        let bar = ui.bar(work as u64, &format!("{} {name}", progress.position()));
        progress.start_cell();
        let r = run_cell(&bench.model, &bench.heads, &cell, &mut |m, n| {
            bar.set_message(format!("{} {name}: {m}", progress.position()));
            bar.set_position(n as u64);
            progress.tick(&format!("{name}: {m}"), n, work);
        })?;
        bar.finish_and_clear();
        let rows: Vec<_> = r
            .rows
            .into_iter()
            .map(|m| Measurement {
                fingerprint: fingerprint.clone(),
                source: bench.provenance.label(),
                ..m
            })
            .collect();
        let last = rows.last().expect("a checkpoint");
        let line = progress.finish_cell();
        ui.note(&format!(
            "{line}. {key}: AR {:.1} ms/token, TokenSwift {:.1} ms/token, speedup {:.2}×, α {:.3}, {:.2} tokens/step, Distinct-4 {:.3}{}",
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
        if bench.shard.is_none() {
            refresh(out, title)?;
        }
    }
    match bench.shard {
        Some(shard) => ui.note(&format!(
            "shard {shard} of {experiment} finished; once every shard has, `tokenswift-eval merge {}` writes the tables and charts",
            out.display()
        )),
        None => {
            refresh(out, title)?;
            table.write_parquet()?;
        }
    }
    Ok(grid)
}

/// Joins the shard tables of a run directory into `results.csv` (a cell recorded twice keeps its
/// first rows), then writes the summary, charts and `results.parquet`. The shard tables are kept,
/// so merging again after more shards finish is safe. Returns (cells merged, cells in all).
pub fn merge(out: &Path, title: Option<&str>) -> Result<(usize, usize)> {
    let shards = ResultsTable::shard_tables(out)?;
    if shards.is_empty() && !out.join("results.csv").exists() {
        return Err(EvalError::Usage(format!(
            "{} holds no results.csv and no results.shard-*.csv to merge",
            out.display()
        )));
    }
    let main = ResultsTable::new(out)?;
    let mut rows = main.read()?;
    let mut seen: std::collections::BTreeSet<String> =
        rows.iter().map(Measurement::cell_key).collect();
    let mut merged = 0;
    for shard in &shards {
        let mut by_cell: std::collections::BTreeMap<String, Vec<Measurement>> = Default::default();
        for r in shard.read()? {
            by_cell.entry(r.cell_key()).or_default().push(r);
        }
        for (key, cell) in by_cell {
            if seen.insert(key) {
                merged += 1;
                rows.extend(cell);
            }
        }
    }
    main.replace(&rows)?;
    let title = match title {
        Some(t) => t.to_string(),
        None => std::fs::read_to_string(out.join("title.txt"))
            .map(|t| t.trim().to_string())
            .unwrap_or_else(|_| "tokenswift-eval results".into()),
    };
    refresh(out, &title)?;
    main.write_parquet()?;
    Ok((merged, seen.len()))
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
