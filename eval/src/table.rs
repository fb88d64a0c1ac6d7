//! The results table of a run directory: one row per (cell, checkpoint), appended to
//! `results.csv` (through polars) as soon as a cell finishes, so an interrupted sweep loses
//! nothing and a rerun skips finished cells. `results.parquet` is written from it at the end.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::error::{EvalError, Result};

/// One measurement: a cell (experiment × setting × prompt × length) at one checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub experiment: String,
    /// The swept parameter and its value, e.g. `penalty-window=1024` (or `default`).
    pub setting: String,
    pub prompt: i64,
    pub prefill_len: i64,
    pub gen_len: i64,
    /// Tokens generated when the latencies were read.
    pub checkpoint: i64,
    pub ar_ms_per_token: f64,
    pub ts_ms_per_token: f64,
    pub speedup: f64,
    pub minutes_saved: f64,
    /// Acceptance rate α and mean tokens per step over the whole cell.
    pub alpha: f64,
    pub tokens_per_step: f64,
    pub ngram_share: f64,
    /// Distinct-1..4 of the TokenSwift output (token ids), whole cell.
    pub distinct: [f64; 4],
    /// The tree of the last step.
    pub tree: String,
    /// 1 when TokenSwift's output equals AR's token for token.
    pub identical: i64,
    /// Everything that produced the cell, hashed ([`crate::provenance::cell_fingerprint`]); a
    /// rerun reuses the cell only when it matches. Empty in tables written before it existed.
    pub fingerprint: String,
    /// Which model and heads produced the cell ([`crate::provenance::Provenance::label`]).
    pub source: String,
}

impl Measurement {
    /// The key of the cell this row belongs to.
    pub fn cell_key(&self) -> String {
        cell_key(
            &self.experiment,
            &self.setting,
            self.prompt,
            self.gen_len,
            &self.fingerprint,
        )
    }
}

/// A cell's identity: where it sits in the grid and the fingerprint of what produced it.
pub fn cell_key(
    experiment: &str,
    setting: &str,
    prompt: i64,
    gen_len: i64,
    fingerprint: &str,
) -> String {
    format!("{experiment}|{setting}|{prompt}|{gen_len}|{fingerprint}")
}

/// The columns of `results.csv`, in order.
const COLUMNS: &[&str] = &[
    "experiment",
    "setting",
    "prompt",
    "prefill_len",
    "gen_len",
    "checkpoint",
    "ar_ms_per_token",
    "ts_ms_per_token",
    "speedup",
    "minutes_saved",
    "alpha",
    "tokens_per_step",
    "ngram_share",
    "distinct1",
    "distinct2",
    "distinct3",
    "distinct4",
    "tree",
    "identical",
    "fingerprint",
    "source",
];

fn frame(rows: &[Measurement]) -> PolarsResult<DataFrame> {
    let s = |f: fn(&Measurement) -> String| rows.iter().map(f).collect::<Vec<String>>();
    let i = |f: fn(&Measurement) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
    let x = |f: fn(&Measurement) -> f64| rows.iter().map(f).collect::<Vec<f64>>();
    DataFrame::new_infer_height(vec![
        Column::new("experiment".into(), s(|m| m.experiment.clone())),
        Column::new("setting".into(), s(|m| m.setting.clone())),
        Column::new("prompt".into(), i(|m| m.prompt)),
        Column::new("prefill_len".into(), i(|m| m.prefill_len)),
        Column::new("gen_len".into(), i(|m| m.gen_len)),
        Column::new("checkpoint".into(), i(|m| m.checkpoint)),
        Column::new("ar_ms_per_token".into(), x(|m| m.ar_ms_per_token)),
        Column::new("ts_ms_per_token".into(), x(|m| m.ts_ms_per_token)),
        Column::new("speedup".into(), x(|m| m.speedup)),
        Column::new("minutes_saved".into(), x(|m| m.minutes_saved)),
        Column::new("alpha".into(), x(|m| m.alpha)),
        Column::new("tokens_per_step".into(), x(|m| m.tokens_per_step)),
        Column::new("ngram_share".into(), x(|m| m.ngram_share)),
        Column::new("distinct1".into(), x(|m| m.distinct[0])),
        Column::new("distinct2".into(), x(|m| m.distinct[1])),
        Column::new("distinct3".into(), x(|m| m.distinct[2])),
        Column::new("distinct4".into(), x(|m| m.distinct[3])),
        Column::new("tree".into(), s(|m| m.tree.clone())),
        Column::new("identical".into(), i(|m| m.identical)),
        Column::new("fingerprint".into(), s(|m| m.fingerprint.clone())),
        Column::new("source".into(), s(|m| m.source.clone())),
    ])
}

/// The results table of one run directory.
pub struct ResultsTable {
    path: PathBuf,
}

impl ResultsTable {
    /// `results.csv` of a run directory (created if missing).
    pub fn new(dir: &Path) -> Result<Self> {
        Self::named(dir, "results.csv")
    }

    /// Another table of a run directory, e.g. a shard's `results.shard-1-of-4.csv`.
    pub fn named(dir: &Path, file: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| EvalError::io(dir, e))?;
        Ok(Self {
            path: dir.join(file),
        })
    }

    /// The shard tables of a run directory (`results.shard-*.csv`), in name order.
    pub fn shard_tables(dir: &Path) -> Result<Vec<Self>> {
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| EvalError::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("results.shard-") && n.ends_with(".csv"))
            })
            .collect();
        paths.sort();
        Ok(paths.into_iter().map(|path| Self { path }).collect())
    }

    /// Keys of the cells finished by any job into a run directory: `results.csv` and every
    /// shard's table.
    pub fn finished_in_dir(dir: &Path) -> Result<BTreeSet<String>> {
        let mut done = Self::new(dir)?.finished_cells()?;
        for t in Self::shard_tables(dir)? {
            done.extend(t.finished_cells()?);
        }
        Ok(done)
    }

    /// Rewrites the table with exactly these rows (through a temporary file and a rename, so an
    /// interruption leaves the old table whole).
    pub fn replace(&self, rows: &[Measurement]) -> Result<()> {
        let tmp = self.path.with_extension("csv.partial");
        let mut file = std::fs::File::create(&tmp).map_err(|e| EvalError::io(&tmp, e))?;
        CsvWriter::new(&mut file)
            .include_header(true)
            .finish(&mut frame(rows)?)?;
        file.sync_all().map_err(|e| EvalError::io(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| EvalError::io(&self.path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the rows of one finished cell (header written once) and flushes them to disk. A
    /// table written by an older version (other columns) is first rewritten with today's
    /// columns, its rows kept (with no fingerprint, so none of them is ever reused).
    pub fn append(&self, rows: &[Measurement]) -> Result<()> {
        if self.path.exists() && !self.has_current_header()? {
            self.replace(&self.read()?)?;
        }
        let new = !self.path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| EvalError::io(&self.path, e))?;
        let mut df = frame(rows)?;
        CsvWriter::new(&mut file)
            .include_header(new)
            .finish(&mut df)?;
        file.sync_all().map_err(|e| EvalError::io(&self.path, e))?;
        Ok(())
    }

    fn has_current_header(&self) -> Result<bool> {
        use std::io::BufRead;
        let file = std::fs::File::open(&self.path).map_err(|e| EvalError::io(&self.path, e))?;
        let mut first = String::new();
        std::io::BufReader::new(file)
            .read_line(&mut first)
            .map_err(|e| EvalError::io(&self.path, e))?;
        Ok(first.trim_end() == COLUMNS.join(","))
    }

    /// Every row recorded so far.
    pub fn read(&self) -> Result<Vec<Measurement>> {
        if !self.path.exists() {
            return Ok(Vec::new());
        }
        // Every column read as text, then cast: a fingerprint of digits only stays text.
        let df = CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(Some(0))
            .try_into_reader_with_file_path(Some(self.path.clone()))?
            .finish()?;
        let n = df.height();
        let st = |c: &str| -> Result<Vec<String>> {
            if !df.get_column_names().iter().any(|n| n.as_str() == c) {
                // A column newer than the table (fingerprint, source): empty.
                return Ok(vec![String::new(); n]);
            }
            Ok(df
                .column(c)?
                .cast(&DataType::String)?
                .str()?
                .iter()
                .map(|v| v.unwrap_or("").to_string())
                .collect())
        };
        let it = |c: &str| -> Result<Vec<i64>> {
            Ok(df
                .column(c)?
                .cast(&DataType::Int64)?
                .i64()?
                .iter()
                .map(|v| v.unwrap_or(0))
                .collect())
        };
        let fl = |c: &str| -> Result<Vec<f64>> {
            Ok(df
                .column(c)?
                .cast(&DataType::Float64)?
                .f64()?
                .iter()
                .map(|v| v.unwrap_or(f64::NAN))
                .collect())
        };
        let (experiment, setting, tree) = (st("experiment")?, st("setting")?, st("tree")?);
        let (fingerprint, source) = (st("fingerprint")?, st("source")?);
        let (prompt, prefill, gen_len, checkpoint, identical) = (
            it("prompt")?,
            it("prefill_len")?,
            it("gen_len")?,
            it("checkpoint")?,
            it("identical")?,
        );
        let f: Vec<Vec<f64>> = [
            "ar_ms_per_token",
            "ts_ms_per_token",
            "speedup",
            "minutes_saved",
            "alpha",
            "tokens_per_step",
            "ngram_share",
            "distinct1",
            "distinct2",
            "distinct3",
            "distinct4",
        ]
        .iter()
        .map(|c| fl(c))
        .collect::<Result<_>>()?;
        Ok((0..n)
            .map(|r| Measurement {
                experiment: experiment[r].clone(),
                setting: setting[r].clone(),
                prompt: prompt[r],
                prefill_len: prefill[r],
                gen_len: gen_len[r],
                checkpoint: checkpoint[r],
                ar_ms_per_token: f[0][r],
                ts_ms_per_token: f[1][r],
                speedup: f[2][r],
                minutes_saved: f[3][r],
                alpha: f[4][r],
                tokens_per_step: f[5][r],
                ngram_share: f[6][r],
                distinct: [f[7][r], f[8][r], f[9][r], f[10][r]],
                tree: tree[r].clone(),
                identical: identical[r],
                fingerprint: fingerprint[r].clone(),
                source: source[r].clone(),
            })
            .collect())
    }

    /// Keys of the cells already recorded.
    pub fn finished_cells(&self) -> Result<BTreeSet<String>> {
        Ok(self.read()?.iter().map(Measurement::cell_key).collect())
    }

    /// Writes `results.parquet` beside the CSV.
    pub fn write_parquet(&self) -> Result<PathBuf> {
        let rows = self.read()?;
        let mut df = frame(&rows)?;
        let path = self.path.with_extension("parquet");
        let file = std::fs::File::create(&path).map_err(|e| EvalError::io(&path, e))?;
        ParquetWriter::new(file).finish(&mut df)?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(setting: &str, checkpoint: i64) -> Measurement {
        Measurement {
            experiment: "sweep".into(),
            setting: setting.into(),
            prompt: 0,
            prefill_len: 512,
            gen_len: 1024,
            checkpoint,
            ar_ms_per_token: 40.5,
            ts_ms_per_token: 20.25,
            speedup: 2.0,
            minutes_saved: 0.35,
            alpha: 0.75,
            tokens_per_step: 2.5,
            ngram_share: 0.125,
            distinct: [0.5, 0.75, 0.875, 1.0],
            tree: "[1, 2]".into(),
            identical: 1,
            fingerprint: "0123456789abcdef-01234567".into(),
            source: "model a heads b".into(),
        }
    }

    #[test]
    fn rows_round_trip_and_finished_cells_are_known() {
        let dir = tempfile::tempdir().unwrap();
        let t = ResultsTable::new(dir.path()).unwrap();
        assert!(t.finished_cells().unwrap().is_empty());
        let a = vec![row("penalty-window=0", 512), row("penalty-window=0", 1024)];
        let b = vec![row("penalty-window=1024, k=\"x\"", 1024)];
        t.append(&a).unwrap();
        t.append(&b).unwrap();
        let back = t.read().unwrap();
        assert_eq!(back, [a.clone(), b.clone()].concat());
        let done = t.finished_cells().unwrap();
        assert!(done.contains(&a[0].cell_key()) && done.contains(&b[0].cell_key()));
        assert_eq!(done.len(), 2);
        let pq = t.write_parquet().unwrap();
        assert!(std::fs::metadata(pq).unwrap().len() > 100);
    }
}
