//! `tokenswift-eval paper`: the grid of one of the paper's tables beside the paper's figures.

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use tokenswift_cli::Ui;
use tokenswift_eval::report::{mean_std, paper as figures};
use tokenswift_eval::runner::{Setting, run_grid};
use tokenswift_eval::table::ResultsTable;

use super::sweep::{Param, sampler_settings, sweep_settings};
use super::{RunArgs, base_setting, load};
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Table {
    /// Speedup and α at 20K..100K tokens.
    #[value(name = "1")]
    One,
    /// Distinct-n with and without the contextual penalty, per sampler.
    #[value(name = "2")]
    Two,
    /// Penalty-window sweep.
    Penalty,
    /// N-gram reuse on (k = 20) and off (k = 0).
    Ngram,
}

#[derive(Debug, Args)]
pub struct PaperArgs {
    #[command(flatten)]
    pub run: RunArgs,
    #[arg(long, value_enum)]
    pub table: Table,
    /// Multiply the paper's lengths (prefill 4096, 20K..100K tokens) by this, e.g. 0.05 on a CPU.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
}

pub fn paper_table(a: PaperArgs, ui: &Ui) -> Result<()> {
    if !(a.scale > 0.0 && a.scale <= 1.0) {
        bail!("--scale must be in (0, 1] (got {})", a.scale);
    }
    let mut run = a.run.clone();
    run.prefill_len = ((4096.0 * a.scale) as usize).max(16);
    let lengths: Vec<usize> = figures::LENGTHS
        .iter()
        .map(|&l| ((l as f64 * a.scale) as usize).max(1))
        .collect();
    let mut md = String::new();
    match a.table {
        Table::One => {
            run.gen_len = *lengths.last().unwrap();
            let bench = load(&run, ui)?;
            let s = base_setting(&run, bench.prompts[0].len())?;
            run_grid(
                &bench,
                "paper-table-1",
                &[s],
                run.gen_len,
                &lengths,
                &run.out,
                "Paper Table 1",
                ui,
            )?;
            if sharded(&run, ui) {
                return Ok(());
            }
            let rows = ResultsTable::new(&run.out)?.read()?;
            md.push_str(&format!(
                "# Table 1 (speedup ×; lengths scaled by {})\n\n| model | {} | α |\n|---|---|---|---|---|---|---|\n",
                a.scale,
                lengths.iter().map(|l| format!("{l}")).collect::<Vec<_>>().join(" | ")
            ));
            for (name, sp, alpha) in figures::TABLE1 {
                md.push_str(&format!(
                    "| {name} (paper, A100, 20K–100K) | {} | {alpha:.2} |\n",
                    sp.iter()
                        .map(|v| format!("{v:.2}"))
                        .collect::<Vec<_>>()
                        .join(" | ")
                ));
            }
            let ours: Vec<String> = lengths
                .iter()
                .map(|&l| {
                    let v: Vec<f64> = rows
                        .iter()
                        .filter(|r| r.checkpoint == l as i64)
                        .map(|r| r.speedup)
                        .collect();
                    let (m, s) = mean_std(&v);
                    format!("{m:.2} ± {s:.2}")
                })
                .collect();
            let alpha = mean_std(
                &rows
                    .iter()
                    .filter(|r| r.checkpoint == run.gen_len as i64)
                    .map(|r| r.alpha)
                    .collect::<Vec<_>>(),
            )
            .0;
            md.push_str(&format!(
                "| {} (ours) | {} | {alpha:.2} |\n",
                run.model.model,
                ours.join(" | ")
            ));
        }
        Table::Two | Table::Penalty | Table::Ngram => {
            run.gen_len = lengths[0];
            let bench = load(&run, ui)?;
            let p = bench.prompts[0].len();
            let (exp, settings): (&str, Vec<Setting>) = match a.table {
                Table::Two => {
                    let v = sampler_settings(&run, p)?;
                    ("paper-table-2", v)
                }
                Table::Penalty => (
                    "paper-penalty",
                    sweep_settings(
                        &run,
                        p,
                        Param::PenaltyWindow,
                        &["0", "256", "512", "1024", "2048"].map(String::from),
                    )?,
                ),
                _ => (
                    "paper-ngram",
                    sweep_settings(&run, p, Param::NgramTopk, &["20", "0"].map(String::from))?,
                ),
            };
            run_grid(
                &bench,
                exp,
                &settings,
                run.gen_len,
                &[run.gen_len],
                &run.out,
                "Paper ablation",
                ui,
            )?;
            if sharded(&run, ui) {
                return Ok(());
            }
            let rows = ResultsTable::new(&run.out)?.read()?;
            md.push_str(&format!("# {exp} (generation {} tokens)\n\n| setting | ours: Distinct-1..4 (avg) | ours: speedup, α | paper |\n|---|---|---|---|\n", run.gen_len));
            for s in &settings {
                let rs: Vec<_> = rows
                    .iter()
                    .filter(|r| r.setting == s.name && r.experiment == exp)
                    .collect();
                let d: Vec<f64> = (0..4)
                    .map(|i| mean_std(&rs.iter().map(|r| r.distinct[i]).collect::<Vec<_>>()).0)
                    .collect();
                let avg = d.iter().sum::<f64>() / 4.0;
                let sp = mean_std(&rs.iter().map(|r| r.speedup).collect::<Vec<_>>()).0;
                let al = mean_std(&rs.iter().map(|r| r.alpha).collect::<Vec<_>>()).0;
                let theirs = paper_figure(exp, &s.name);
                md.push_str(&format!(
                    "| {} | {:.3} / {:.3} / {:.3} / {:.3} ({avg:.3}) | {sp:.2}×, α {al:.2} | {theirs} |\n",
                    s.name, d[0], d[1], d[2], d[3]
                ));
            }
        }
    }
    let path = run.out.join("paper-table.md");
    std::fs::write(&path, &md).with_context(|| format!("cannot write {}", path.display()))?;
    println!("{md}");
    Ok(())
}

/// A shard writes cells only; the table is rendered by the same command without `--shard` after
/// `merge`, which then reuses every cell.
fn sharded(run: &RunArgs, ui: &Ui) -> bool {
    if let Some(shard) = run.shard {
        ui.note(&format!(
            "shard {shard} done; after every shard and `tokenswift-eval merge {}`, the same command without --shard reuses the cells and writes the table",
            run.out.display()
        ));
    }
    run.shard.is_some()
}

pub fn paper_figure(exp: &str, setting: &str) -> String {
    match exp {
        "paper-table-2" => {
            let (sampler, on) = setting.split_once(", penalty ").unwrap_or((setting, ""));
            figures::PENALTY_AVG
                .iter()
                .find(|p| p.0 == sampler)
                .map(|p| {
                    format!(
                        "avg Distinct {:.2} (Llama3.1-8B, 100K)",
                        if on == "off" { p.2 } else { p.1 }
                    )
                })
                .unwrap_or_default()
        }
        "paper-ngram" => figures::NGRAM
            .iter()
            .find(|n| setting == format!("ngram-topk={}", n.0))
            .map(|n| format!("α ≈ {:.2}, ≈ {:.2}× (Llama3.1-8B, 100K)", n.1, n.2))
            .unwrap_or_default(),
        "paper-penalty" if setting == "penalty-window=1024" => {
            let d = figures::PENALTY_MIN_P[0].1;
            format!(
                "Distinct {:.2}/{:.2}/{:.2}/{:.2} (window 1024, Llama3.1-8B)",
                d[0], d[1], d[2], d[3]
            )
        }
        _ => String::new(),
    }
}
