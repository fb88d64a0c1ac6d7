//! `tokenswift-eval distinct`: Distinct-1..4 of a run directory's outputs or of a text file.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use tokenswift_cli::Ui;
use tokenswift_eval::distinct::{distinct_1_to_4, words};
use tokenswift_infer::load::tokenizer::TextTokenizer;
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Unit {
    Tokens,
    Words,
}

#[derive(Debug, Args)]
pub struct DistinctArgs {
    /// A run directory (its outputs/*.json) or a text file.
    #[arg(long)]
    pub input: PathBuf,
    /// Tokens (run directories; text files need --model's tokenizer) or whitespace-split words.
    #[arg(long, value_enum, default_value = "tokens")]
    pub unit: Unit,
    /// The tokenizer's model (for text files with --unit tokens).
    #[arg(long, default_value = "smollm2-135m")]
    pub model: String,
}

pub fn distinct(a: DistinctArgs, ui: &Ui) -> Result<()> {
    let mut rows: Vec<(String, [f64; 4])> = Vec::new();
    if a.input.is_dir() {
        let outputs = a.input.join("outputs");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&outputs)
            .with_context(|| {
                format!(
                    "{} has no outputs/ directory (not a run directory)",
                    a.input.display()
                )
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("json"))
            .collect();
        files.sort();
        for f in files {
            let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&f)?)
                .with_context(|| format!("{} is not a run output", f.display()))?;
            let key = v["key"].as_str().unwrap_or_default().to_string();
            let d = match a.unit {
                Unit::Tokens => {
                    let t: Vec<u64> = v["tokens"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
                        .unwrap_or_default();
                    distinct_1_to_4(&t)
                }
                Unit::Words => distinct_1_to_4(&words(v["text"].as_str().unwrap_or_default())),
            };
            rows.push((key, d));
        }
    } else {
        let text = std::fs::read_to_string(&a.input)
            .with_context(|| format!("cannot read {}", a.input.display()))?;
        let d = match a.unit {
            Unit::Words => distinct_1_to_4(&words(&text)),
            Unit::Tokens => {
                let dir = tokenswift_cli::hub::resolve_model(&a.model, &|m| ui.note(m))?;
                let tok = TextTokenizer::load(&dir)?;
                distinct_1_to_4(&tok.encode(&text)?)
            }
        };
        rows.push((a.input.display().to_string(), d));
    }
    if rows.is_empty() {
        bail!("{} holds no outputs", a.input.display());
    }
    println!(
        "| output | Distinct-1 | Distinct-2 | Distinct-3 | Distinct-4 |\n|---|---|---|---|---|"
    );
    for (k, d) in rows {
        println!(
            "| {k} | {:.3} | {:.3} | {:.3} | {:.3} |",
            d[0], d[1], d[2], d[3]
        );
    }
    Ok(())
}
