//! `tokenswift-eval reports`: regenerates the committed reports of the default model.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser};
use tokenswift_cli::Ui;
use tokenswift_eval::measure::checkpoints;
use tokenswift_eval::runner::run_grid;

use super::ceiling::{RealRun, ceiling_report};
use super::sweep::{Param, sampler_settings, sweep_settings};
use super::{RunArgs, base_setting, load, write_text};

#[derive(Debug, Args)]
pub struct ReportsArgs {
    /// Output directory.
    #[arg(long, default_value = "reports/smollm2-135m")]
    pub out: PathBuf,
    /// Tokens generated in the speedup runs (4096 is also read as a checkpoint).
    #[arg(long, default_value_t = 6000)]
    pub gen_len: usize,
    /// Tokens generated in the sweeps.
    #[arg(long, default_value_t = 1024)]
    pub sweep_gen_len: usize,
    /// Tokens generated for the speedup ceiling (`ceiling.md`).
    #[arg(long, default_value_t = 2048)]
    pub ceiling_gen_len: usize,
    /// Only the speedup runs and the ceiling; keep the sweeps as they are.
    #[arg(long)]
    pub skip_sweeps: bool,
    /// Repetitions of every cell (each runs AR and TokenSwift in alternating chunks).
    #[arg(long, default_value_t = 2)]
    pub repeats: usize,
}

pub fn reports(a: ReportsArgs, ui: &Ui) -> Result<()> {
    /// The defaults of every run flag (environment variables included).
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        run: RunArgs,
    }
    let base = Defaults::try_parse_from(["reports"])
        .context("invalid TOKENSWIFT_* environment settings")?
        .run;
    let mut base = base;
    base.repeats = a.repeats;
    let mut speed = base.clone();
    speed.gen_len = a.gen_len;
    speed.prefill_len = 2048;
    speed.out = a.out.join("speedup");
    let bench = load(&speed, ui)?;
    let p = bench.prompts[0].len();
    // The project's configuration (the planner chooses every step) with the paper's sampler and
    // greedy. The paper's configuration is several times slower than AR on a CPU; it is compared
    // with the default in the shorter configuration sweep below.
    let mut settings = vec![base_setting(&speed, p)?];
    settings[0].name = "paper sampler, default configuration".into();
    let mut greedy = base_setting(&speed, p)?;
    greedy.sampling.temperature = 0.0;
    greedy.name = "greedy, default configuration".into();
    settings.push(greedy);
    let cps = checkpoints(a.gen_len, 5, &[4096]);
    run_grid(
        &bench,
        "speedup",
        &settings,
        a.gen_len,
        &cps,
        &speed.out,
        "SmolLM2-135M on a 2-core CPU: TokenSwift vs AR",
        ui,
    )?;
    // What a perfect drafter could reach here, with the same sampler and prompt.
    let md = ceiling_report(
        &bench.model,
        &bench.prompts[0],
        a.ceiling_gen_len,
        &speed.sampling.config(),
        5,
        Some(RealRun {
            heads: &bench.heads,
            cfg: tokenswift_infer::decoding::session::TokenSwiftConfig {
                draft_vocab: bench.draft_vocab.clone(),
                corpus_ngrams: bench.corpus_ngrams.clone(),
                ..settings[0].ts.clone()
            },
        }),
        ui,
    )?;
    write_text(&a.out.join("ceiling.md"), &md)?;
    if a.skip_sweeps {
        ui.note(&format!("reports written under {}", a.out.display()));
        return Ok(());
    }

    // Sweeps on shorter generations, same prompts source.
    let mut sw = base.clone();
    sw.gen_len = a.sweep_gen_len;
    sw.prefill_len = 1024;
    let bench = load(&sw, ui)?;
    let p = bench.prompts[0].len();
    let one = [sw.gen_len];
    let runs: [(&str, Param, Vec<&str>); 3] = [
        (
            "penalty-window",
            Param::PenaltyWindow,
            vec!["0", "256", "512", "1024", "2048"],
        ),
        ("ngram-lag", Param::NgramLag, vec!["paper", "0", "auto"]),
        ("config", Param::Config, vec!["default", "paper"]),
    ];
    for (dir, param, values) in runs {
        let values: Vec<String> = values.into_iter().map(String::from).collect();
        let settings = sweep_settings(&sw, p, param, &values)?;
        let out = a.out.join(format!("sweep-{dir}"));
        run_grid(
            &bench,
            &format!("sweep-{dir}"),
            &settings,
            sw.gen_len,
            &one,
            &out,
            &format!("Sweep of {dir}"),
            ui,
        )?;
    }
    let samplers = sampler_settings(&sw, p)?;
    run_grid(
        &bench,
        "samplers",
        &samplers,
        sw.gen_len,
        &one,
        &a.out.join("samplers"),
        "Samplers with and without the contextual penalty",
        ui,
    )?;
    ui.note(&format!("reports written under {}", a.out.display()));
    Ok(())
}
