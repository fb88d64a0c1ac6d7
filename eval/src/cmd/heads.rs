//! `tokenswift-eval heads`: per-head top-k accuracy on held-out text.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use tokenswift_cli::{ModelArgs, Ui};
use tokenswift_infer::draft::heads::DraftHeads;

#[derive(Debug, Args)]
pub struct HeadsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Heads to evaluate (default: the committed heads of the default model).
    #[arg(long)]
    pub heads: Option<PathBuf>,
    /// Held-out sequences of 512 tokens.
    #[arg(long, default_value_t = 8)]
    pub sequences: usize,
}

pub fn heads(a: HeadsArgs, ui: &Ui) -> Result<()> {
    use tokenswift_datasets::{CorpusSource, HELD_OUT_NOVEL, tokenize};
    use tokenswift_train::evaluate::evaluate_heads;
    let (dir, model, tokenizer) = a.model.load(ui)?;
    let trained =
        tokenswift_infer::draft::resolve::resolve_heads(&model, &dir, a.heads.as_deref())?;
    let docs = tokenize(
        &CorpusSource::Austen.documents(&|m| ui.note(m))?,
        &tokenizer,
    )?;
    let book = docs
        .iter()
        .find(|d| d.name == HELD_OUT_NOVEL)
        .context("the held-out novel is missing")?;
    let seqs: Vec<Vec<u32>> = book
        .tokens
        .chunks_exact(512)
        .take(a.sequences)
        .map(|c| c.to_vec())
        .collect();
    println!("| heads | head | top-1 | top-2 | top-3 | CE |\n|---|---|---|---|---|---|");
    for (label, h) in [
        (
            "untrained",
            DraftHeads::init_for(&model, trained.len(), model.device()),
        ),
        ("trained", trained),
    ] {
        let bar = ui.bar(seqs.len() as u64, label);
        let stats = evaluate_heads(&model, &h, &seqs, 256, &mut |i| bar.set_position(i as u64))?;
        bar.finish_and_clear();
        for (i, s) in stats.iter().enumerate() {
            println!(
                "| {label} | head {} (t+{}) | {:.3} | {:.3} | {:.3} | {:.3} |",
                i + 1,
                i + 2,
                s.accuracy(1),
                s.accuracy(2),
                s.accuracy(3),
                s.loss()
            );
        }
    }
    Ok(())
}
