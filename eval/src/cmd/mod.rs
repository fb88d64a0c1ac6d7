//! The `tokenswift-eval` subcommands, one module each, and what they share: the run flags, loading
//! a bench, the base setting, writing text files.

pub mod ceiling;
pub mod distinct;
pub mod heads;
pub mod merge;
pub mod paper;
pub mod reports;
pub mod speedup;
pub mod sweep;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use tokenswift_cli::{ModelArgs, SamplingArgs, TokenSwiftArgs, Ui};
use tokenswift_eval::measure::load_prompts;
use tokenswift_eval::provenance::Provenance;
use tokenswift_eval::runner::{Bench, Setting, Shard};

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub tokenswift: TokenSwiftArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Prompts: `austen` (windows of the held-out novel), a text file, a directory of .txt or a
    /// .jsonl file.
    #[arg(long, default_value = "austen")]
    pub prompts: String,
    #[arg(long, default_value_t = 1)]
    pub num_prompts: usize,
    /// Prompt tokens (the paper: 4096).
    #[arg(long, default_value_t = 2048)]
    pub prefill_len: usize,
    /// Tokens to generate.
    #[arg(long, default_value_t = 4096)]
    pub gen_len: usize,
    /// Latency checkpoints: every gen-len/N tokens.
    #[arg(long, default_value_t = 5)]
    pub checkpoints: usize,
    /// Extra checkpoints (token counts), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub at: Vec<usize>,
    /// Run directory.
    #[arg(long, default_value = "reports/run")]
    pub out: PathBuf,
    /// Repetitions of every cell, each running AR and TokenSwift in alternating chunks of 64
    /// tokens, each timed on its own steps (this machine drifts; alternating puts both methods
    /// on the same machine). Latencies are summed over them.
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// Run only slice I of N of the grid (e.g. `--shard $((SLURM_ARRAY_TASK_ID+1))/8`), into
    /// OUT/results.shard-I-of-N.csv. Every shard takes the same command line otherwise; the
    /// cells are dealt round-robin, so the slices are disjoint and cover the grid. When all have
    /// finished, `tokenswift-eval merge OUT` writes the tables and charts.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
}

pub fn load(run: &RunArgs, ui: &Ui) -> Result<Bench> {
    let sampling = run.sampling.config();
    sampling.validate(usize::MAX)?;
    if run.gen_len == 0 {
        bail!("--gen-len must be at least 1");
    }
    let (dir, model, tokenizer) = run.model.load(ui)?;
    let draft = run.tokenswift.draft(&model, &dir)?;
    let prompts = load_prompts(
        &run.prompts,
        &tokenizer,
        run.prefill_len,
        run.num_prompts,
        &|m| ui.note(m),
    )?;
    for p in &prompts {
        tokenswift_infer::model::prompt::check_context(&model, p.len(), run.gen_len)?;
    }
    ui.note("fingerprinting the model, heads and draft tables (results are keyed by them)");
    let provenance = Provenance::of(
        &model,
        &draft.heads,
        draft.vocab.as_deref(),
        draft.corpus_ngrams.as_deref(),
    );
    Ok(Bench {
        provenance,
        model,
        tokenizer: Some(tokenizer),
        heads: draft.heads,
        draft_vocab: draft.vocab,
        corpus_ngrams: draft.corpus_ngrams,
        prompts,
        prefill_len: run.prefill_len,
        repeats: run.repeats.max(1),
        shard: run.shard,
        cells_met: Default::default(),
    })
}

pub fn base_setting(run: &RunArgs, prompt_len: usize) -> Result<Setting> {
    Ok(Setting {
        name: "default".into(),
        sampling: run.sampling.config(),
        ts: run.tokenswift.config(prompt_len, run.gen_len, false)?,
    })
}

pub fn write_text(out: &std::path::Path, text: &str) -> Result<()> {
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))
}
