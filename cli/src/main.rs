//! `tokenswift`: long-text generation with TokenSwift and an autoregressive baseline.

use clap::{Parser, Subcommand};

mod cmd;

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
    Generate(cmd::generate::GenerateArgs),
    /// Fetch and convert the embedded default model (SmolLM2-135M-Instruct) into the cache.
    Fetch(cmd::fetch::FetchArgs),
    /// Measure forward-pass costs, prefill and decode speed.
    Bench(cmd::bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let ui = tokenswift_cli::Ui {
        quiet: cli.quiet,
        log_every: 0.0,
    };
    let result = tokenswift_infer::host::on_pool(|| match cli.command {
        Command::Generate(a) => cmd::generate::run(a, ui),
        Command::Fetch(a) => cmd::fetch::run(a, ui),
        Command::Bench(a) => cmd::bench::run(a, ui),
    });
    tokenswift_cli::exit_code(result)
}
