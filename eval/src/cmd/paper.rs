//! `tokenswift-eval paper`: one of the paper's tables, laid out as the paper lays it out, ours
//! beside the paper's figures. The paper's settings are pinned; every setting that differs from
//! them (a flag, `--scale`, `--prefills`) is named in the table's caption.

use std::collections::BTreeSet;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use tokenswift_cli::Ui;
use tokenswift_eval::report::{mean_std, paper as figures};
use tokenswift_eval::runner::{Setting, run_grid};
use tokenswift_eval::table::{Measurement, ResultsTable};
use tokenswift_infer::decoding::session::TokenSwiftConfig;
use tokenswift_infer::sampling::SamplingConfig;

use super::sweep::{Param, apply, sampler_settings, sweep_settings};
use super::{RunArgs, base_setting, load};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Table {
    /// Table 1: α and speedup (×) per generation length (rows) and prefill length (columns;
    /// the paper's 2048, 4096 and 8192).
    #[value(name = "1")]
    One,
    /// Table 2: α, ×, T_AR, T_TokenSwift and Δ_T (minutes) per generation length, prefill 4096.
    #[value(name = "2")]
    Two,
    /// The sampler table: Distinct-1..4, their average and × for top-p, η- and min-p sampling,
    /// each with the contextual penalty and without.
    Samplers,
    /// Penalty-window sweep (Distinct-n and ×).
    Penalty,
    /// N-gram reuse on (k = 20) and off (k = 0).
    Ngram,
}

/// The paper's tables run with its settings: the sampler (min-p 0.1, temperature 1, penalty 1.2
/// over 1024 tokens), k = 20, prefill 4096 (Table 1: 2048/4096/8192) and 20K–100K tokens. Tables 1
/// and 2 each have two rows of ours: the paper's configuration (tree 1,3,3,3, separate draft
/// pass, n-grams one window behind) and this project's (the planner). `--gen-len` and
/// `--prefill-len` are not used: the table sets them.
#[derive(Debug, Args)]
pub struct PaperArgs {
    #[command(flatten)]
    pub run: RunArgs,
    #[arg(long, value_enum)]
    pub table: Table,
    /// Multiply the paper's lengths (prefill and generation) by this, e.g. 0.06 on a CPU; the
    /// caption says so.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Prefill lengths, used as given (not scaled); default: the paper's, scaled.
    #[arg(long, value_delimiter = ',')]
    pub prefills: Vec<usize>,
}

/// The experiment name of Tables 1 and 2: they share cells, so rendering one after the other
/// with the same lengths and prefills measures nothing twice.
const SPEEDUP: &str = "paper-speedup";
const PAPER_CONFIG: &str = "TokenSwift, paper configuration";
const OUR_CONFIG: &str = "TokenSwift, this project's configuration";

pub fn paper_table(a: PaperArgs, ui: &Ui) -> Result<()> {
    if !(a.scale > 0.0 && a.scale <= 1.0) {
        bail!("--scale must be in (0, 1] (got {})", a.scale);
    }
    if a.prefills.contains(&0) {
        bail!("--prefills must be at least 1 token each");
    }
    let scaled = |l: usize| ((l as f64 * a.scale) as usize).max(1);
    let lengths: Vec<usize> = figures::LENGTHS.iter().map(|&l| scaled(l)).collect();
    let paper_prefills: Vec<usize> = match a.table {
        Table::One => figures::TABLE1_PREFILLS.to_vec(),
        _ => vec![figures::TABLE2_PREFILL],
    };
    let prefills: Vec<usize> = if a.prefills.is_empty() {
        paper_prefills.iter().map(|&p| scaled(p).max(16)).collect()
    } else {
        a.prefills.clone()
    };
    let mut caption = Caption::new(&a, &lengths, &prefills, &paper_prefills);
    let md = match a.table {
        Table::One | Table::Two => {
            let Some(rows) = speedup_cells(&a.run, &prefills, &lengths, ui)? else {
                return Ok(());
            };
            let model = model_name(&a.run);
            if a.table == Table::One {
                table_one(&rows, &model, &prefills, &lengths, &caption.text())
            } else {
                table_two(&rows, &model, prefills[0], &lengths, &caption.text())
            }
        }
        Table::Samplers | Table::Penalty | Table::Ngram => {
            let mut run = a.run.clone();
            run.gen_len = lengths[0];
            run.prefill_len = prefills[0];
            caption.note(&format!(
                "{} tokens generated per cell (the paper: 100K)",
                run.gen_len
            ));
            let bench = load(&run, ui)?;
            let p = bench.prompts[0].len();
            let (exp, settings): (&str, Vec<Setting>) = match a.table {
                Table::Samplers => ("paper-samplers", sampler_settings(&run, p)?),
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
            let keys = run_grid(
                &bench,
                exp,
                &settings,
                run.gen_len,
                &[run.gen_len],
                &run.out,
                "The paper's ablations",
                ui,
            )?;
            if sharded(&run, ui) {
                return Ok(());
            }
            let rows = rows_of(&run, &keys)?;
            if a.table == Table::Samplers {
                samplers_table(&rows, &caption.text())
            } else {
                ablation_table(exp, &settings, &rows, &caption.text())
            }
        }
    };
    let name = match a.table {
        Table::One => "paper-table-1.md",
        Table::Two => "paper-table-2.md",
        Table::Samplers => "paper-samplers.md",
        Table::Penalty => "paper-penalty.md",
        Table::Ngram => "paper-ngram.md",
    };
    let path = a.run.out.join(name);
    std::fs::write(&path, &md).with_context(|| format!("cannot write {}", path.display()))?;
    println!("{md}");
    ui.note(&format!("written to {}", path.display()));
    Ok(())
}

/// Runs the cells of Tables 1 and 2 (per prefill: the paper's configuration and ours, each to the
/// longest length with the others as checkpoints) and returns their rows (`None` in a shard).
fn speedup_cells(
    run: &RunArgs,
    prefills: &[usize],
    lengths: &[usize],
    ui: &Ui,
) -> Result<Option<Vec<Measurement>>> {
    let mut keys = Vec::new();
    for &prefill in prefills {
        let mut run = run.clone();
        run.prefill_len = prefill;
        run.gen_len = *lengths.last().expect("five lengths");
        let bench = load(&run, ui)?;
        let p = bench.prompts[0].len();
        let mut paper = base_setting(&run, p)?;
        apply(Param::Config, "paper", &mut paper)?;
        paper.name = format!("{PAPER_CONFIG}, prefill {prefill}");
        let mut ours = base_setting(&run, p)?;
        ours.name = format!("{OUR_CONFIG}, prefill {prefill}");
        keys.extend(run_grid(
            &bench,
            SPEEDUP,
            &[paper, ours],
            run.gen_len,
            lengths,
            &run.out,
            "The paper's speedup tables",
            ui,
        )?);
    }
    if sharded(run, ui) {
        return Ok(None);
    }
    Ok(Some(rows_of(run, &keys)?))
}

/// The rows of these cells (the run directory may hold others: other models, older runs).
fn rows_of(run: &RunArgs, keys: &[String]) -> Result<Vec<Measurement>> {
    let keys: BTreeSet<&String> = keys.iter().collect();
    Ok(ResultsTable::new(&run.out)?
        .read()?
        .into_iter()
        .filter(|r| keys.contains(&r.cell_key()))
        .collect())
}

fn model_name(run: &RunArgs) -> String {
    run.model.model.clone()
}

/// What the caption says: the settings, and each one that differs from the paper's.
struct Caption {
    settings: String,
    differences: Vec<String>,
}

impl Caption {
    fn new(a: &PaperArgs, lengths: &[usize], prefills: &[usize], paper_prefills: &[usize]) -> Self {
        let run = &a.run;
        let list = |v: &[usize]| {
            v.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut differences = Vec::new();
        if a.scale != 1.0 {
            differences.push(format!(
                "lengths scaled by {} ({}; the paper: 20K–100K)",
                a.scale,
                list(lengths)
            ));
        }
        if prefills != paper_prefills {
            differences.push(format!(
                "prefill {} (the paper: {})",
                list(prefills),
                list(paper_prefills)
            ));
        }
        differences.extend(sampling_differences(&run.sampling.config()));
        let ts = run
            .tokenswift
            .config(prefills[0], lengths[lengths.len() - 1], false)
            .unwrap_or_default();
        if ts.ngram_topk != TokenSwiftConfig::paper().ngram_topk {
            differences.push(format!("k = {} (the paper: 20)", ts.ngram_topk));
        }
        differences.push(format!(
            "prompts: {} × `{}` (the paper: PG-19 test set)",
            run.num_prompts, run.prompts
        ));
        differences.push(
            "hardware: the machine that ran this (the paper: one A100); Medusa* and TriForce* rows not run"
                .into(),
        );
        let settings = format!(
            "Model `{}`; prefill {}; generation {} tokens; {} repetition(s) per cell, AR and TokenSwift in alternating chunks of 64 tokens, each timed on its own steps; sampler as in the paper unless listed below.",
            run.model.model,
            list(prefills),
            list(lengths),
            run.repeats.max(1),
        );
        Caption {
            settings,
            differences,
        }
    }

    fn note(&mut self, s: &str) {
        self.differences.push(s.to_string());
    }

    fn text(&self) -> String {
        let mut t = format!("{}\n\nDiffers from the paper:\n", self.settings);
        for d in &self.differences {
            t.push_str(&format!("- {d}\n"));
        }
        t
    }
}

/// Each sampling value that differs from the paper's (the seed aside).
fn sampling_differences(s: &SamplingConfig) -> Vec<String> {
    let p = SamplingConfig::default();
    let mut v = Vec::new();
    let mut diff = |name: &str, ours: String, theirs: String| {
        if ours != theirs {
            v.push(format!("{name} {ours} (the paper: {theirs})"));
        }
    };
    diff(
        "temperature",
        s.temperature.to_string(),
        p.temperature.to_string(),
    );
    diff("top-k", s.top_k.to_string(), p.top_k.to_string());
    diff("top-p", s.top_p.to_string(), p.top_p.to_string());
    diff("min-p", s.min_p.to_string(), p.min_p.to_string());
    diff(
        "min tokens to keep",
        s.min_tokens_to_keep.to_string(),
        p.min_tokens_to_keep.to_string(),
    );
    diff("eta", s.eta.to_string(), p.eta.to_string());
    diff("penalty", s.penalty.to_string(), p.penalty.to_string());
    diff(
        "penalty window",
        s.penalty_window.to_string(),
        p.penalty_window.to_string(),
    );
    v
}

/// `mean ± std` over prompts (just the mean for one prompt), or `–` without rows.
fn figure(v: &[f64], digits: usize) -> String {
    if v.is_empty() {
        return "–".into();
    }
    let (m, s) = mean_std(v);
    if v.len() > 1 {
        format!("{m:.digits$} ± {s:.digits$}")
    } else {
        format!("{m:.digits$}")
    }
}

/// The rows of one configuration and prefill at one checkpoint.
fn at<'a>(
    rows: &'a [Measurement],
    config: &str,
    prefill: usize,
    length: usize,
) -> impl Iterator<Item = &'a Measurement> {
    let name = format!("{config}, prefill {prefill}");
    rows.iter()
        .filter(move |r| r.setting == name && r.checkpoint == length as i64)
}

fn table_one(
    rows: &[Measurement],
    model: &str,
    prefills: &[usize],
    lengths: &[usize],
    caption: &str,
) -> String {
    let mut md = format!(
        "# Table 1: α and speedup × per generation length and prefill length\n\n{caption}\n## Ours: `{model}`\n\n| Method | Gen. Len. |"
    );
    let header = |md: &mut String, prefills: &[usize]| {
        for p in prefills {
            md.push_str(&format!(" Prefill {p}: α | × (> 1) |"));
        }
        md.push_str(&format!(
            "\n|---|---|{}\n",
            "---|---|".repeat(prefills.len())
        ));
    };
    header(&mut md, prefills);
    for &l in lengths {
        for config in [PAPER_CONFIG, OUR_CONFIG] {
            md.push_str(&format!("| {config} | {l} |"));
            for &p in prefills {
                let alpha: Vec<f64> = at(rows, config, p, l).map(|r| r.alpha).collect();
                let sp: Vec<f64> = at(rows, config, p, l).map(|r| r.speedup).collect();
                md.push_str(&format!(" {} | {} |", figure(&alpha, 2), figure(&sp, 2)));
            }
            md.push('\n');
        }
    }
    md.push_str("\n## The paper (one A100; TokenSwift rows)\n\n| Method | Gen. Len. |");
    header(&mut md, &figures::TABLE1_PREFILLS);
    for (i, &l) in figures::LENGTHS.iter().enumerate() {
        for (name, cells) in figures::TABLE1 {
            md.push_str(&format!("| TokenSwift, {name} | {}K |", l / 1000));
            for ((a, sa), (x, sx)) in cells[i] {
                md.push_str(&format!(" {a:.2} ± {sa:.2} | {x:.2} ± {sx:.2} |"));
            }
            md.push('\n');
        }
    }
    md
}

fn table_two(
    rows: &[Measurement],
    model: &str,
    prefill: usize,
    lengths: &[usize],
    caption: &str,
) -> String {
    let group_header = |groups: &[&str]| {
        let mut h = "| Gen. Len. |".to_string();
        for g in groups {
            h.push_str(&format!(
                " {g}: α | × (> 1) | T_AR (min) | T_TokenSwift (min) | Δ_T (min) |"
            ));
        }
        h.push_str(&format!("\n|---|{}\n", "---|".repeat(5 * groups.len())));
        h
    };
    let mut md = format!(
        "# Table 2: α, speedup × and generation time per generation length\n\n{caption}\n## Ours: `{model}`, prefill {prefill}\n\n{}",
        group_header(&[PAPER_CONFIG, OUR_CONFIG])
    );
    for &l in lengths {
        md.push_str(&format!("| {l} |"));
        for config in [PAPER_CONFIG, OUR_CONFIG] {
            let rs: Vec<&Measurement> = at(rows, config, prefill, l).collect();
            let minutes = |ms: f64| ms * l as f64 / 60_000.0;
            let alpha: Vec<f64> = rs.iter().map(|r| r.alpha).collect();
            let sp: Vec<f64> = rs.iter().map(|r| r.speedup).collect();
            let t_ar: Vec<f64> = rs.iter().map(|r| minutes(r.ar_ms_per_token)).collect();
            let t_ts: Vec<f64> = rs.iter().map(|r| minutes(r.ts_ms_per_token)).collect();
            let dt: Vec<f64> = rs
                .iter()
                .map(|r| minutes(r.ts_ms_per_token - r.ar_ms_per_token))
                .collect();
            md.push_str(&format!(
                " {} | {} | {} | {} | {} |",
                figure(&alpha, 2),
                figure(&sp, 2),
                figure(&t_ar, 2),
                figure(&t_ts, 2),
                figure(&dt, 2)
            ));
        }
        md.push('\n');
    }
    let names: Vec<&str> = figures::TABLE2.iter().map(|m| m.0).collect();
    md.push_str(&format!(
        "\n## The paper (one A100, prefill {})\n\n{}",
        figures::TABLE2_PREFILL,
        group_header(&names)
    ));
    for (i, &l) in figures::LENGTHS.iter().enumerate() {
        md.push_str(&format!("| {}K |", l / 1000));
        for (_, r) in figures::TABLE2 {
            let ((a, sa), (x, sx), t_ar, t_ts) = r[i];
            md.push_str(&format!(
                " {a:.2} ± {sa:.2} | {x:.2} ± {sx:.2} | {t_ar:.2} | {t_ts:.2} | {:.2} |",
                t_ts - t_ar
            ));
        }
        md.push('\n');
    }
    md
}

fn samplers_table(rows: &[Measurement], caption: &str) -> String {
    let header = "| | Distinct-1 | Distinct-2 | Distinct-3 | Distinct-4 | AVG. | × |\n|---|---|---|---|---|---|---|\n";
    let mut md = format!(
        "# The sampler table: Distinct-n and speedup, with and without the contextual penalty\n\n{caption}\n## Ours\n\n{header}"
    );
    // The paper's order and names.
    let samplers = [
        ("top-p", "top-p"),
        ("eta", "η-sampling"),
        ("min-p", "min-p"),
    ];
    for (ours, shown) in samplers {
        for penalty in [true, false] {
            let name = format!("{ours}, penalty {}", if penalty { "1.2" } else { "off" });
            let rs: Vec<&Measurement> = rows.iter().filter(|r| r.setting == name).collect();
            let d: Vec<f64> = (0..4)
                .map(|i| mean_std(&rs.iter().map(|r| r.distinct[i]).collect::<Vec<_>>()).0)
                .collect();
            let sp: Vec<f64> = rs.iter().map(|r| r.speedup).collect();
            md.push_str(&format!(
                "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |\n",
                if penalty { shown } else { "w/o. penalty" },
                d[0],
                d[1],
                d[2],
                d[3],
                d.iter().sum::<f64>() / 4.0,
                figure(&sp, 2)
            ));
        }
    }
    md.push_str(&format!(
        "\n## The paper (LLaMA3.1-8b, 100K tokens)\n\n{header}"
    ));
    for (sampler, penalty, d, avg, x) in figures::SAMPLERS {
        let shown = if !penalty {
            "w/o. penalty"
        } else if sampler == "eta" {
            "η-sampling"
        } else {
            sampler
        };
        md.push_str(&format!(
            "| {shown} | {:.2} | {:.2} | {:.2} | {:.2} | {avg:.2} | {x:.2} |\n",
            d[0], d[1], d[2], d[3]
        ));
    }
    md
}

fn ablation_table(exp: &str, settings: &[Setting], rows: &[Measurement], caption: &str) -> String {
    let mut md = format!(
        "# {exp}\n\n{caption}\n| setting | ours: Distinct-1..4 (avg) | ours: speedup, α | paper |\n|---|---|---|---|\n"
    );
    for s in settings {
        let rs: Vec<_> = rows.iter().filter(|r| r.setting == s.name).collect();
        let d: Vec<f64> = (0..4)
            .map(|i| mean_std(&rs.iter().map(|r| r.distinct[i]).collect::<Vec<_>>()).0)
            .collect();
        let avg = d.iter().sum::<f64>() / 4.0;
        let sp = mean_std(&rs.iter().map(|r| r.speedup).collect::<Vec<_>>()).0;
        let al = mean_std(&rs.iter().map(|r| r.alpha).collect::<Vec<_>>()).0;
        md.push_str(&format!(
            "| {} | {:.3} / {:.3} / {:.3} / {:.3} ({avg:.3}) | {sp:.2}×, α {al:.2} | {} |\n",
            s.name,
            d[0],
            d[1],
            d[2],
            d[3],
            paper_figure(exp, &s.name)
        ));
    }
    md
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
        "paper-ngram" => figures::NGRAM
            .iter()
            .find(|n| setting == format!("ngram-topk={}", n.0))
            .map(|n| format!("α ≈ {:.2}, ≈ {:.2}× (LLaMA3.1-8b, 100K)", n.1, n.2))
            .unwrap_or_default(),
        "paper-penalty" if setting == "penalty-window=1024" => {
            let (_, _, d, avg, x) = figures::SAMPLERS[4];
            format!(
                "Distinct {:.2}/{:.2}/{:.2}/{:.2} ({avg:.2}), {x:.2}× (window 1024, LLaMA3.1-8b)",
                d[0], d[1], d[2], d[3]
            )
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn row(config: &str, prefill: usize, checkpoint: usize, prompt: i64, x: f64) -> Measurement {
        Measurement {
            experiment: SPEEDUP.into(),
            setting: format!("{config}, prefill {prefill}"),
            prompt,
            prefill_len: prefill as i64,
            gen_len: 200,
            checkpoint: checkpoint as i64,
            ar_ms_per_token: 30.0,
            ts_ms_per_token: 30.0 / x,
            speedup: x,
            minutes_saved: 0.0,
            alpha: x / 10.0,
            tokens_per_step: 1.0,
            ngram_share: 0.0,
            distinct: [0.5; 4],
            tree: String::new(),
            identical: 1,
            fingerprint: "f".into(),
            source: String::new(),
        }
    }

    /// Table 1: a row per (length, configuration), a column pair (α, ×) per prefill, each figure
    /// under its own prefill; then the paper's TokenSwift rows in the same layout.
    #[test]
    fn table_one_has_the_papers_layout() {
        let rows = vec![
            row(PAPER_CONFIG, 64, 100, 0, 0.5),
            row(PAPER_CONFIG, 128, 100, 0, 0.3),
            row(OUR_CONFIG, 64, 100, 0, 1.5),
            row(OUR_CONFIG, 64, 100, 1, 1.7),
            row(OUR_CONFIG, 128, 100, 0, 1.3),
        ];
        let md = table_one(&rows, "m", &[64, 128], &[100], "caption\n");
        let lines: Vec<&str> = md.lines().collect();
        let head = lines.iter().find(|l| l.starts_with("| Method")).unwrap();
        assert_eq!(
            *head,
            "| Method | Gen. Len. | Prefill 64: α | × (> 1) | Prefill 128: α | × (> 1) |"
        );
        let ours = lines
            .iter()
            .find(|l| l.starts_with(&format!("| {OUR_CONFIG} | 100 |")))
            .unwrap();
        // Prompts 0 and 1 at prefill 64: mean ± sample std; one prompt at 128: the mean alone.
        assert_eq!(
            *ours,
            format!("| {OUR_CONFIG} | 100 | 0.16 ± 0.01 | 1.60 ± 0.14 | 0.13 | 1.30 |")
        );
        let paper = lines
            .iter()
            .find(|l| l.starts_with(&format!("| {PAPER_CONFIG} | 100 |")))
            .unwrap();
        assert_eq!(
            *paper,
            format!("| {PAPER_CONFIG} | 100 | 0.05 | 0.50 | 0.03 | 0.30 |")
        );
        // The paper's figures: 2 models × 5 lengths, 3 prefills each.
        assert!(md.contains("| TokenSwift, LLaMA3.1-8b (GQA) | 100K | 0.79 ± 0.03 | 3.13 ± 0.07 | 0.84 ± 0.05 | 3.27 ± 0.19 | 0.90 ± 0.06 | 3.38 ± 0.10 |"), "{md}");
        let theirs = md.split("## The paper").nth(1).unwrap();
        assert_eq!(theirs.matches("| TokenSwift, ").count(), 10);
    }

    /// Table 2: α, ×, T_AR, T_TokenSwift, Δ_T in minutes per length, one column group per
    /// configuration; Δ_T = T_TokenSwift − T_AR (negative when faster), as in the paper.
    #[test]
    fn table_two_has_the_papers_layout() {
        let rows = vec![
            row(PAPER_CONFIG, 64, 2000, 0, 0.5),
            row(OUR_CONFIG, 64, 2000, 0, 2.0),
        ];
        let md = table_two(&rows, "m", 64, &[2000], "caption\n");
        let line = md.lines().find(|l| l.starts_with("| 2000 |")).unwrap();
        // AR 30 ms/token × 2000 tokens = 1 minute; ×0.5 → 2 minutes; ×2 → half a minute.
        assert_eq!(
            line,
            "| 2000 | 0.05 | 0.50 | 1.00 | 2.00 | 1.00 | 0.20 | 2.00 | 1.00 | 0.50 | -0.50 |"
        );
        assert!(md.contains("| 100K | 0.89 ± 0.07 | 3.13 ± 0.07 | 187.80 | 60.00 | -127.80 |"));
    }

    /// The caption names every setting that differs from the paper's, and none that does not.
    #[test]
    fn the_caption_lists_each_override() {
        #[derive(Parser)]
        struct P {
            #[command(flatten)]
            a: PaperArgs,
        }
        let paper = |args: &[&str]| {
            P::try_parse_from([&["paper", "--table", "2"][..], args].concat())
                .unwrap()
                .a
        };
        let a = paper(&[]);
        let c = Caption::new(&a, &[20_000], &[4096], &[4096]).text();
        assert!(
            !c.contains("scaled")
                && !c.contains("temperature")
                && !c.contains("prefill 4096 (the paper"),
            "{c}"
        );
        let a = paper(&["--temperature", "0", "--scale", "0.06", "--ngram-topk", "5"]);
        let c = Caption::new(&a, &[1200], &[2048], &[4096]).text();
        for needle in [
            "temperature 0 (the paper: 1)",
            "lengths scaled by 0.06",
            "prefill 2048 (the paper: 4096)",
            "k = 5 (the paper: 20)",
        ] {
            assert!(c.contains(needle), "{needle}: {c}");
        }
    }
}
