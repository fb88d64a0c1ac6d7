//! `tokenswift`: long-text generation with TokenSwift and an autoregressive baseline.

use clap::{Parser, Subcommand};

mod cli;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Lossless accelerated ultra-long generation (TokenSwift, ICML 2025) on burn.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// No progress bars or notes on stderr.
    #[arg(long, global = true, env = "TOKENSWIFT_QUIET", value_parser = clap::builder::BoolishValueParser::new())]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate text from a prompt; text goes to stdout, progress and statistics to stderr.
    Generate(cli::generate::GenerateArgs),
    /// Fetch and convert the embedded default model (SmolLM2-135M-Instruct) into the cache.
    Fetch(cli::fetch::FetchArgs),
    /// Measure forward-pass costs, prefill and decode speed.
    Bench(cli::bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let ui = cli::common::Ui { quiet: cli.quiet };
    let result = match cli.command {
        Command::Generate(a) => cli::generate::run(a, ui),
        Command::Fetch(a) => cli::fetch::run(a, ui),
        Command::Bench(a) => cli::bench::run(a, ui),
    };
    tokenswift_infer::cli_support::exit_code(result)
}
