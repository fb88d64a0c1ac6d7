//! `tokenswift-eval`: speedup / acceptance / Distinct-n measurements, sweeps, the paper's tables
//! and the committed reports of the default model.

use clap::{Parser, Subcommand};
use tokenswift_cli::Ui;

mod cmd;

use cmd::RunArgs;
use cmd::ceiling::{CeilingArgs, ceiling};
use cmd::distinct::{DistinctArgs, distinct};
use cmd::heads::{HeadsArgs, heads};
use cmd::merge::{MergeArgs, merge};
use cmd::paper::{PaperArgs, paper_table};
use cmd::reports::{ReportsArgs, reports};
use cmd::speedup::speedup;
use cmd::sweep::{SweepArgs, sweep};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Measure TokenSwift against autoregressive decoding: speedup, acceptance rate α, Distinct-n.
///
/// Every finished cell is appended at once to OUT/results.csv, so an interrupted run loses
/// nothing. Each cell is keyed by a fingerprint of everything that produced it (program version,
/// model and heads weights, sampling, prefill, lengths, TokenSwift settings): a rerun with the same
/// OUT skips a cell only when all of that is equal, and runs it anew beside the old one otherwise.
/// OUT/summary.md and the charts in OUT/charts/ (PNG + SVG) are rewritten after every cell.
///
/// Progress: a bar on a terminal; otherwise (Slurm, nohup) a log line per finished cell and every
/// TOKENSWIFT_LOG_EVERY seconds (default 60) within one. A grid splits over jobs with
/// `--shard I/N` and joins with `merge OUT`.
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
    /// Join the tables of a grid run in shards (`--shard I/N`) into OUT/results.csv and write its
    /// summary and charts. Safe to repeat as more shards finish.
    Merge(MergeArgs),
    /// Regenerate the committed reports of the default model (speedup, its ceiling, penalty-window and n-gram
    /// sweeps, sampler comparison) under reports/smollm2-135m/.
    Reports(ReportsArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let ui = Ui {
        quiet: cli.quiet,
        log_every: 0.0,
    };
    let r = tokenswift_infer::host::on_pool(|| match cli.command {
        Command::Speedup(a) => speedup(a, &ui),
        Command::Distinct(a) => distinct(a, &ui),
        Command::Sweep(a) => sweep(a, &ui),
        Command::Paper(a) => paper_table(a, &ui),
        Command::Heads(a) => heads(a, &ui),
        Command::Reports(a) => reports(a, &ui),
        Command::Ceiling(a) => ceiling(a, &ui),
        Command::Merge(a) => merge(a, &ui),
    });
    tokenswift_cli::exit_code(r)
}
