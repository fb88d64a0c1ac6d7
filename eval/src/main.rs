//! `tokenswift-eval`: speedup / acceptance / Distinct-n measurements, sweeps, the paper's tables
//! and the committed reports of the default model.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokenswift_eval::distinct::{distinct_1_to_4, words};
use tokenswift_eval::measure::{checkpoints, load_prompts};
use tokenswift_eval::report::{mean_std, paper};
use tokenswift_eval::runner::{Bench, Setting, run_grid};
use tokenswift_eval::table::ResultsTable;
use tokenswift_infer::cli_support::{ModelArgs, SamplingArgs, TokenSwiftArgs, Ui};
use tokenswift_infer::decoding::planner::{NgramLag, TreeChoice};
use tokenswift_infer::heads::DraftHeads;
use tokenswift_infer::tokenizer::TextTokenizer;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Measure TokenSwift against autoregressive decoding: speedup, acceptance rate α, Distinct-n.
///
/// Every finished cell is appended at once to OUT/results.csv, so an interrupted run loses
/// nothing and a rerun with the same OUT skips finished cells. OUT/summary.md and the charts in
/// OUT/charts/ (PNG + SVG) are rewritten after every cell.
#[derive(Debug, Parser)]
#[command(name = "tokenswift-eval", version)]
struct Cli {
    /// No progress bars or notes on stderr.
    #[arg(long, global = true, env = "TOKENSWIFT_QUIET", value_parser = clap::builder::BoolishValueParser::new())]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// AR vs TokenSwift on the same prompts: latency per token at checkpoints, speedup, α,
    /// tokens per step, minutes saved; mean ± std over prompts.
    Speedup(RunArgs),
    /// Distinct-1..4 of a run directory's outputs or of a text file.
    Distinct(DistinctArgs),
    /// One run per value of a parameter (speed–diversity trade-off).
    Sweep(SweepArgs),
    /// The grid of one of the paper's tables, ours beside the paper's figures.
    Paper(PaperArgs),
    /// Per-head top-k accuracy on held-out text (untrained heads vs the given ones).
    Heads(HeadsArgs),
    /// The speedup ceiling on this machine: TokenSwift with a perfect drafter (each node's true
    /// top-k, free drafts), from an AR run's token ranks and the measured cost of verify passes.
    Ceiling(CeilingArgs),
    /// Regenerate the committed reports of the default model (speedup, its ceiling, penalty-window and n-gram
    /// sweeps, sampler comparison) under reports/smollm2-135m/.
    Reports(ReportsArgs),
}

#[derive(Debug, Clone, Args)]
struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    tokenswift: TokenSwiftArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Prompts: `austen` (windows of the held-out novel), a text file, a directory of .txt or a
    /// .jsonl file.
    #[arg(long, default_value = "austen")]
    prompts: String,
    #[arg(long, default_value_t = 1)]
    num_prompts: usize,
    /// Prompt tokens (the paper: 4096).
    #[arg(long, default_value_t = 2048)]
    prefill_len: usize,
    /// Tokens to generate.
    #[arg(long, default_value_t = 4096)]
    gen_len: usize,
    /// Latency checkpoints: every gen-len/N tokens.
    #[arg(long, default_value_t = 5)]
    checkpoints: usize,
    /// Extra checkpoints (token counts), comma-separated.
    #[arg(long, value_delimiter = ',')]
    at: Vec<usize>,
    /// Run directory.
    #[arg(long, default_value = "reports/run")]
    out: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Unit {
    Tokens,
    Words,
}

#[derive(Debug, Args)]
struct DistinctArgs {
    /// A run directory (its outputs/*.json) or a text file.
    #[arg(long)]
    input: PathBuf,
    /// Tokens (run directories; text files need --model's tokenizer) or whitespace-split words.
    #[arg(long, value_enum, default_value = "tokens")]
    unit: Unit,
    /// The tokenizer's model (for text files with --unit tokens).
    #[arg(long, default_value = "smollm2-135m")]
    model: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Param {
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
struct SweepArgs {
    #[command(flatten)]
    run: RunArgs,
    /// The parameter to sweep.
    #[arg(long, value_enum)]
    param: Param,
    /// Its values, comma-separated (sampler: min-p, top-p, eta; tree: `auto` or arities joined
    /// with `-`, e.g. 1-3-3-3; ngram-lag: paper, auto or a number; config: default, paper).
    #[arg(long, value_delimiter = ',', required = true)]
    values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Table {
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
struct PaperArgs {
    #[command(flatten)]
    run: RunArgs,
    #[arg(long, value_enum)]
    table: Table,
    /// Multiply the paper's lengths (prefill 4096, 20K..100K tokens) by this, e.g. 0.05 on a CPU.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
}

#[derive(Debug, Args)]
struct HeadsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Heads to evaluate (default: the committed heads of the default model).
    #[arg(long)]
    heads: Option<PathBuf>,
    /// Held-out sequences of 512 tokens.
    #[arg(long, default_value_t = 8)]
    sequences: usize,
}

#[derive(Debug, Args)]
struct CeilingArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// The real TokenSwift run reported beside the ceiling.
    #[command(flatten)]
    tokenswift: TokenSwiftArgs,
    /// Prompt source, as for `speedup` (the first prompt is used).
    #[arg(long, default_value = "austen")]
    prompts: String,
    #[arg(long, default_value_t = 2048)]
    prefill_len: usize,
    /// Tokens generated autoregressively (their ranks are replayed).
    #[arg(long, default_value_t = 2048)]
    gen_len: usize,
    /// Repetitions per pass-cost measurement (the median is used).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Also write the table to this Markdown file.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ReportsArgs {
    /// Output directory.
    #[arg(long, default_value = "reports/smollm2-135m")]
    out: PathBuf,
    /// Tokens generated in the speedup runs (4096 is also read as a checkpoint).
    #[arg(long, default_value_t = 6000)]
    gen_len: usize,
    /// Tokens generated in the sweeps.
    #[arg(long, default_value_t = 1024)]
    sweep_gen_len: usize,
    /// Tokens generated for the speedup ceiling (`ceiling.md`).
    #[arg(long, default_value_t = 2048)]
    ceiling_gen_len: usize,
    /// Only the speedup runs and the ceiling; keep the sweeps as they are.
    #[arg(long)]
    skip_sweeps: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let ui = Ui { quiet: cli.quiet };
    let r = match cli.command {
        Command::Speedup(a) => speedup(a, &ui),
        Command::Distinct(a) => distinct(a, &ui),
        Command::Sweep(a) => sweep(a, &ui),
        Command::Paper(a) => paper_table(a, &ui),
        Command::Heads(a) => heads(a, &ui),
        Command::Reports(a) => reports(a, &ui),
        Command::Ceiling(a) => ceiling(a, &ui),
    };
    tokenswift_infer::cli_support::exit_code(r)
}

fn load(run: &RunArgs, ui: &Ui) -> Result<Bench> {
    let sampling = run.sampling.config();
    sampling.validate(usize::MAX)?;
    if run.gen_len == 0 {
        bail!("--gen-len must be at least 1");
    }
    let (dir, model, tokenizer) = run.model.load(ui)?;
    let heads = run
        .tokenswift
        .load_heads(&model, &dir)
        .context("cannot load the draft heads")?;
    let draft_vocab = run.tokenswift.draft_vocab(&model, &dir)?;
    let corpus_ngrams = run.tokenswift.corpus_ngrams(&model, &dir)?;
    let prompts = load_prompts(
        &run.prompts,
        &tokenizer,
        run.prefill_len,
        run.num_prompts,
        &|m| ui.note(m),
    )?;
    for p in &prompts {
        tokenswift_infer::generate::check_context(&model, p.len(), run.gen_len)?;
    }
    Ok(Bench {
        model,
        tokenizer: Some(tokenizer),
        heads,
        draft_vocab,
        corpus_ngrams,
        prompts,
    })
}

fn base_setting(run: &RunArgs, prompt_len: usize) -> Result<Setting> {
    Ok(Setting {
        name: "default".into(),
        sampling: run.sampling.config(),
        ts: run.tokenswift.config(prompt_len, run.gen_len, false)?,
    })
}

fn speedup(a: RunArgs, ui: &Ui) -> Result<()> {
    let bench = load(&a, ui)?;
    let s = base_setting(&a, bench.prompts[0].len())?;
    let cps = checkpoints(a.gen_len, a.checkpoints, &a.at);
    run_grid(
        &bench,
        "speedup",
        &[s],
        a.gen_len,
        &cps,
        &a.out,
        "TokenSwift vs AR",
        ui,
    )?;
    println!("{}", std::fs::read_to_string(a.out.join("summary.md"))?);
    Ok(())
}

fn apply(param: Param, value: &str, s: &mut Setting) -> Result<()> {
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
fn sampler_settings(run: &RunArgs, prompt_len: usize) -> Result<Vec<Setting>> {
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

fn param_name(p: Param) -> &'static str {
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

fn sweep_settings(
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

fn sweep(a: SweepArgs, ui: &Ui) -> Result<()> {
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
    println!("{}", std::fs::read_to_string(a.run.out.join("summary.md"))?);
    Ok(())
}

fn paper_table(a: PaperArgs, ui: &Ui) -> Result<()> {
    if !(a.scale > 0.0 && a.scale <= 1.0) {
        bail!("--scale must be in (0, 1] (got {})", a.scale);
    }
    let mut run = a.run.clone();
    run.prefill_len = ((4096.0 * a.scale) as usize).max(16);
    let lengths: Vec<usize> = paper::LENGTHS
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
            let rows = ResultsTable::new(&run.out)?.read()?;
            md.push_str(&format!(
                "# Table 1 (speedup ×; lengths scaled by {})\n\n| model | {} | α |\n|---|---|---|---|---|---|---|\n",
                a.scale,
                lengths.iter().map(|l| format!("{l}")).collect::<Vec<_>>().join(" | ")
            ));
            for (name, sp, alpha) in paper::TABLE1 {
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

fn paper_figure(exp: &str, setting: &str) -> String {
    match exp {
        "paper-table-2" => {
            let (sampler, on) = setting.split_once(", penalty ").unwrap_or((setting, ""));
            paper::PENALTY_AVG
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
        "paper-ngram" => paper::NGRAM
            .iter()
            .find(|n| setting == format!("ngram-topk={}", n.0))
            .map(|n| format!("α ≈ {:.2}, ≈ {:.2}× (Llama3.1-8B, 100K)", n.1, n.2))
            .unwrap_or_default(),
        "paper-penalty" if setting == "penalty-window=1024" => {
            let d = paper::PENALTY_MIN_P[0].1;
            format!(
                "Distinct {:.2}/{:.2}/{:.2}/{:.2} (window 1024, Llama3.1-8B)",
                d[0], d[1], d[2], d[3]
            )
        }
        _ => String::new(),
    }
}

fn distinct(a: DistinctArgs, ui: &Ui) -> Result<()> {
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
                let dir = tokenswift_infer::hub::resolve_model(&a.model, &|m| ui.note(m))?;
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

fn heads(a: HeadsArgs, ui: &Ui) -> Result<()> {
    use tokenswift_datasets::{CorpusSource, HELD_OUT_NOVEL, tokenize};
    use tokenswift_train::evaluate::evaluate_heads;
    let (dir, model, tokenizer) = a.model.load(ui)?;
    let ts = TokenSwiftArgs {
        heads: a.heads.clone(),
        tree: TreeChoice::Auto,
        ngram_topk: 20,
        ngram_lag: NgramLag::Auto,
        kv_budget: None,
        draft: tokenswift_infer::cli_support::DraftArg::Separate,
        draft_vocab: 0,
        corpus_ngrams: "none".into(),
    };
    let trained = ts.load_heads(&model, &dir)?;
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

fn ceiling(a: CeilingArgs, ui: &Ui) -> Result<()> {
    if a.gen_len == 0 || a.reps == 0 {
        bail!("--gen-len and --reps must be at least 1");
    }
    let sampling = a.sampling.config();
    let (_dir, model, tokenizer) = a.model.load(ui)?;
    sampling.validate(model.config().vocab_size)?;
    let prompt = load_prompts(&a.prompts, &tokenizer, a.prefill_len, 1, &|m| ui.note(m))?.remove(0);
    let mut cfg = a.tokenswift.config(prompt.len(), a.gen_len, false)?;
    let heads = a
        .tokenswift
        .load_heads(&model, &_dir)
        .context("cannot load the draft heads")?;
    cfg.draft_vocab = a.tokenswift.draft_vocab(&model, &_dir)?;
    cfg.corpus_ngrams = a.tokenswift.corpus_ngrams(&model, &_dir)?;
    let real = RealRun { heads: &heads, cfg };
    let md = ceiling_report(
        &model,
        &prompt,
        a.gen_len,
        &sampling,
        a.reps,
        Some(real),
        ui,
    )?;
    print!("{md}");
    if let Some(out) = &a.out {
        write_text(out, &md)?;
    }
    Ok(())
}

fn write_text(out: &std::path::Path, text: &str) -> Result<()> {
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))
}

/// The ceiling table (Markdown) for `gen_len` tokens sampled after `prompt`.
/// The real TokenSwift configuration run beside the ceiling.
struct RealRun<'a> {
    heads: &'a tokenswift_infer::heads::DraftHeads,
    cfg: tokenswift_infer::decoding::session::TokenSwiftConfig,
}

fn ceiling_report(
    model: &tokenswift_infer::model::Model,
    prompt: &[u32],
    gen_len: usize,
    sampling: &tokenswift_infer::sampling::SamplingConfig,
    reps: usize,
    real: Option<RealRun<'_>>,
    ui: &Ui,
) -> Result<String> {
    use tokenswift_eval::ceiling::{
        best_schedule, ceiling, ngram_options, pass_cost, perfect_options, ranks,
    };
    tokenswift_infer::generate::check_context(model, prompt.len(), gen_len)?;
    let bar = ui.bar(gen_len as u64, "AR run");
    let mut n = 0u64;
    let (output, ar_stats) = tokenswift_infer::generate::generate_ar(
        model,
        prompt,
        gen_len,
        sampling,
        false,
        &mut |_| {
            n += 1;
            bar.set_position(n);
            Ok(())
        },
    )?;
    bar.finish_and_clear();
    let spinner = ui.spinner("ranking the output's tokens in their distributions".to_string());
    let r = ranks(model, prompt, &output, sampling)?;
    spinner.finish_and_clear();
    let context = prompt.len() + gen_len / 2;
    let qs = [1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 24, 32, 41];
    let spinner = ui.spinner(format!(
        "timing verify passes over a {context}-token context"
    ));
    let costs = pass_cost(model, context, &qs, reps.max(9))?;
    spinner.finish_and_clear();
    let trees: Vec<Vec<usize>> = [
        &[1][..],
        &[1, 1],
        &[1, 1, 1],
        &[1, 1, 1, 1],
        &[2],
        &[2, 1],
        &[2, 2],
        &[2, 2, 2],
        &[3],
        &[3, 2],
        &[3, 3],
        &[3, 3, 3],
        &[4, 2],
        &[1, 3, 3, 3],
    ]
    .iter()
    .map(|t| t.to_vec())
    .collect();
    let rows = ceiling(&r, &trees, &qs, &costs);
    let share = |k: usize| r.iter().filter(|&&x| x < k).count() as f64 / r.len() as f64;
    let mut md = format!(
        "# Speedup ceiling: a perfect drafter (each node's true top-k, free drafts)\n\n\
         {} tokens after a {}-token prompt; sampling {:?}.\n\n\
         Rank of the sampled token in its distribution: top-1 {:.3}, top-2 {:.3}, top-3 {:.3}, top-4 {:.3}.\n\n\
         Verify-pass cost over a {context}-token context (median of {}, logits of the first row): {}.\n\n\
         ## The same shape every step\n\n\
         | tree | nodes | tokens/step | verify cost / AR pass | ceiling speedup |\n|---|---|---|---|---|\n",
        output.len(),
        prompt.len(),
        sampling,
        share(1),
        share(2),
        share(3),
        share(4),
        reps,
        qs.iter()
            .zip(&costs)
            .map(|(q, c)| format!("q={q} {:.1} ms", c.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(", "),
    );
    for row in &rows {
        md.push_str(&format!(
            "| {:?} | {} | {:.2} | {:.2} | {:.2}× |\n",
            row.arity, row.nodes, row.tokens_per_step, row.cost_ratio, row.speedup
        ));
    }
    if let Some(best) = rows.iter().max_by(|a, b| a.speedup.total_cmp(&b.speedup)) {
        md.push_str(&format!(
            "\nBest fixed shape: {:?} at {:.2}×.\n",
            best.arity, best.speedup
        ));
    }

    // Per-step choices with the outcomes known (dynamic programming over the run).
    let one = costs[0].as_secs_f64();
    let cost = |q: usize| {
        let i = qs.iter().position(|&x| x >= q).unwrap_or(qs.len() - 1);
        if qs[i] == q || i == 0 {
            costs[i].as_secs_f64() / one
        } else {
            let (q0, q1) = (qs[i - 1] as f64, qs[i] as f64);
            let (c0, c1) = (costs[i - 1].as_secs_f64(), costs[i].as_secs_f64());
            (c0 + (c1 - c0) * (q as f64 - q0) / (q1 - q0)) / one
        }
    };
    // Tokens after the first (drawn from the prefill in both methods).
    let m = output.len().saturating_sub(1);
    let mut chains: Vec<Vec<usize>> = (1..=16).map(|l| vec![1; l]).collect();
    chains.extend(trees.iter().cloned());
    let perfect = perfect_options(&r[1..], &chains);
    let (pc, ps) = best_schedule(m, &|i| perfect[i].clone(), &cost);
    md.push_str(&format!(
        "\n## Shape chosen per step, outcomes known\n\n\
         A planner that knew every outcome and chose each step's shape (none, a chain of 1–16 \
         tokens, or a tree above), with the verify costs above.\n\n\
         | drafts | tokens/step | ceiling speedup |\n|---|---|---|\n\
         | perfect (each node's true top-k) | {:.2} | {:.2}× |\n",
        m as f64 / ps.max(1) as f64,
        m as f64 / pc
    ));
    let window = sampling.penalty_window;
    let mut sources = vec![("n-gram lookup, lag 0".to_string(), vec![0usize])];
    if window > 0 {
        sources.push((
            format!("n-gram lookup, lag {window} (the paper's)"),
            vec![window],
        ));
        sources.push((
            "n-gram lookup, both (`--ngram-lag auto`)".into(),
            vec![0, window],
        ));
    }
    let corpus = real.as_ref().and_then(|r| r.cfg.corpus_ngrams.clone());
    let mut sources: Vec<(String, Vec<usize>, Option<&_>)> =
        sources.into_iter().map(|(n, l)| (n, l, None)).collect();
    if let Some(c) = &corpus {
        sources.push((
            "n-gram lookup, both lags + the corpus table (the default)".into(),
            if window > 0 { vec![0, window] } else { vec![0] },
            Some(c.as_ref()),
        ));
    }
    for (name, lags, table) in sources {
        let opts = ngram_options(prompt, &output[1..], &lags, table, 16, 4);
        let (c, st) = best_schedule(m, &|i| opts[i].clone(), &cost);
        md.push_str(&format!(
            "| {name} | {:.2} | {:.2}× |\n",
            m as f64 / st.max(1) as f64,
            m as f64 / c
        ));
    }
    if let Some(real) = real {
        let bar = ui.bar(gen_len as u64, "TokenSwift run");
        let (ts_out, st) = tokenswift_infer::decoding::session::generate_tokenswift(
            model,
            real.heads,
            prompt,
            gen_len,
            sampling,
            &real.cfg,
            &mut |s| {
                bar.inc(s.tokens.len() as u64);
                Ok(())
            },
        )?;
        bar.finish_and_clear();
        let speed = ar_stats.decode_time.as_secs_f64() / st.decode_time.as_secs_f64().max(1e-9);
        md.push_str(&format!(
            "\nThe real planner (`--tree {:?} --draft {:?}`, n-gram lag {:?}, heads and n-grams as \
             measured): **{:.2} tokens/step, {:.2}× measured** against this run's AR ({} steps, {} of \
             them plain AR steps; output {} AR's).\n",
            real.cfg.tree,
            real.cfg.draft,
            real.cfg.ngram_lag,
            st.tokens_per_step(),
            speed,
            st.steps,
            st.ar_steps,
            if ts_out == output { "identical to" } else { "DIFFERENT from" }
        ));
    }
    Ok(md)
}

fn reports(a: ReportsArgs, ui: &Ui) -> Result<()> {
    /// The defaults of every run flag (environment variables included).
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        run: RunArgs,
    }
    let base = Defaults::try_parse_from(["reports"])
        .context("invalid TOKENSWIFT_* environment settings")?
        .run;
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
