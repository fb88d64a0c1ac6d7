//! `tokenswift-eval merge`: joins the shard tables of a run directory.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use tokenswift_cli::Ui;
use tokenswift_eval::runner::merge as merge_dir;

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The run directory the shards wrote into (their shared `--out`).
    pub out: PathBuf,
    /// Title of the summary (default: the one the shards recorded).
    #[arg(long)]
    pub title: Option<String>,
}

pub fn merge(a: MergeArgs, ui: &Ui) -> Result<()> {
    let (merged, total) = merge_dir(&a.out, a.title.as_deref())?;
    ui.note(&format!(
        "{merged} cell(s) merged into {}; it now holds {total}; summary.md, charts/ and results.parquet rewritten",
        a.out.join("results.csv").display()
    ));
    Ok(())
}
