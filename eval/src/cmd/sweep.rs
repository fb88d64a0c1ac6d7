//! `tokenswift-eval sweep`: one run per value of a parameter.

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use tokenswift_cli::Ui;
use tokenswift_eval::measure::checkpoints;
use tokenswift_eval::runner::{Setting, run_grid};
use tokenswift_infer::decoding::planner::{NgramLag, TreeChoice};

use super::{RunArgs, base_setting, load};
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Param {
    PenaltyWindow,
    Penalty,
    NgramTopk,
    /// How far behind the output the n-gram tables are fed: paper, auto or a number of tokens.
    NgramLag,
    /// `default` (the planner chooses everything) or `paper` (tree 1,3,3,3, separate draft pass,
    /// k = 20 chains, n-grams one penalty window behind).
    Config,
    Tree,
    KvBudget,
    Sampler,
    Temperature,
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// The parameter to sweep.
    #[arg(long, value_enum)]
    pub param: Param,
    /// Its values, comma-separated (sampler: min-p, top-p, eta; tree: `auto` or arities joined
    /// with `-`, e.g. 1-3-3-3; ngram-lag: paper, auto or a number; config: default, paper).
    #[arg(long, value_delimiter = ',', required = true)]
    pub values: Vec<String>,
}

pub fn apply(param: Param, value: &str, s: &mut Setting) -> Result<()> {
    let num = || {
        value
            .parse::<f64>()
            .with_context(|| format!("`{value}` is not a number"))
    };
    match param {
        Param::PenaltyWindow => s.sampling.penalty_window = num()? as usize,
        Param::Penalty => s.sampling.penalty = num()? as f32,
        Param::Temperature => s.sampling.temperature = num()? as f32,
        Param::NgramTopk => s.ts.ngram_topk = num()? as usize,
        Param::NgramLag => s.ts.ngram_lag = NgramLag::parse(value).map_err(anyhow::Error::msg)?,
        Param::Config => {
            use tokenswift_infer::decoding::session::TokenSwiftConfig;
            let preset = match value {
                "default" => TokenSwiftConfig::default(),
                "paper" => TokenSwiftConfig::paper(),
                v => bail!("unknown configuration `{v}` (default, paper)"),
            };
            s.ts.tree = preset.tree;
            s.ts.draft = preset.draft;
            s.ts.ngram_lag = preset.ngram_lag;
            s.ts.ngram_topk = preset.ngram_topk;
        }
        Param::KvBudget => {
            let b = num()? as usize;
            if b <= 16 {
                bail!("kv-budget {b} must be larger than the 16 attention sinks");
            }
            s.ts.kv_budget = b;
        }
        Param::Tree => {
            s.ts.tree = TreeChoice::parse(&value.replace('-', ",")).map_err(anyhow::Error::msg)?
        }
        Param::Sampler => {
            s.sampling.min_p = 0.0;
            s.sampling.top_p = 1.0;
            s.sampling.eta = 0.0;
            match value {
                "min-p" => s.sampling.min_p = 0.1,
                "top-p" => s.sampling.top_p = 0.9,
                "eta" => s.sampling.eta = 0.0009,
                v => bail!("unknown sampler `{v}` (min-p, top-p, eta)"),
            }
        }
    }
    s.sampling.validate(usize::MAX)?;
    Ok(())
}

/// min-p, top-p and eta, each with the paper's penalty (1.2) and without.
pub fn sampler_settings(run: &RunArgs, prompt_len: usize) -> Result<Vec<Setting>> {
    let mut v = Vec::new();
    for sampler in ["min-p", "top-p", "eta"] {
        for penalty in [true, false] {
            let mut s = base_setting(run, prompt_len)?;
            apply(Param::Sampler, sampler, &mut s)?;
            if !penalty {
                s.sampling.penalty = 1.0;
            }
            s.name = format!("{sampler}, penalty {}", if penalty { "1.2" } else { "off" });
            v.push(s);
        }
    }
    Ok(v)
}

pub fn param_name(p: Param) -> &'static str {
    match p {
        Param::PenaltyWindow => "penalty-window",
        Param::Penalty => "penalty",
        Param::NgramTopk => "ngram-topk",
        Param::NgramLag => "ngram-lag",
        Param::Config => "config",
        Param::Tree => "tree",
        Param::KvBudget => "kv-budget",
        Param::Sampler => "sampler",
        Param::Temperature => "temperature",
    }
}

pub fn sweep_settings(
    run: &RunArgs,
    prompt_len: usize,
    param: Param,
    values: &[String],
) -> Result<Vec<Setting>> {
    values
        .iter()
        .map(|v| {
            let mut s = base_setting(run, prompt_len)?;
            apply(param, v, &mut s)?;
            s.name = format!("{}={v}", param_name(param));
            Ok(s)
        })
        .collect()
}

pub fn sweep(a: SweepArgs, ui: &Ui) -> Result<()> {
    // Values are checked before anything is loaded.
    sweep_settings(&a.run, 1, a.param, &a.values)?;
    let bench = load(&a.run, ui)?;
    let settings = sweep_settings(&a.run, bench.prompts[0].len(), a.param, &a.values)?;
    let cps = checkpoints(a.run.gen_len, a.run.checkpoints, &a.run.at);
    let exp = format!("sweep-{}", param_name(a.param));
    run_grid(
        &bench,
        &exp,
        &settings,
        a.run.gen_len,
        &cps,
        &a.run.out,
        "Sweep",
        ui,
    )?;
    if a.run.shard.is_none() {
        println!("{}", std::fs::read_to_string(a.run.out.join("summary.md"))?);
    }
    Ok(())
}
