//! `tokenswift generate`: stream a continuation of a prompt to stdout, with TokenSwift (default)
//! or autoregressive decoding; statistics go to stderr.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use tokenswift_cli::{TokenSwiftArgs, peak_rss_mib};
use tokenswift_infer::decoding::ar::{GenerationStats, generate_ar};
use tokenswift_infer::decoding::paired::{CHUNK, Method as Which, PairedOutcome, generate_paired};
use tokenswift_infer::decoding::session::{TokenSwiftConfig, TokenSwiftStats, generate_tokenswift};
use tokenswift_infer::draft::heads::DraftHeads;
use tokenswift_infer::load::tokenizer::{TextStream, TextTokenizer, chatml_prompt};
use tokenswift_infer::model::Model;
use tokenswift_infer::sampling::SamplingConfig;

use tokenswift_cli::{ModelArgs, SamplingArgs, Ui, read_prompt};

/// Decoding method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Method {
    /// Draft heads + n-grams + tree verification, lossless (the paper's method).
    Tokenswift,
    /// One token per forward pass (the baseline).
    Ar,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt text.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Read the prompt from this file.
    #[arg(long)]
    pub prompt_file: Option<PathBuf>,
    /// Use only the first N prompt tokens (the paper prefills 4096).
    #[arg(long)]
    pub prefill_len: Option<usize>,
    /// Number of tokens to generate.
    #[arg(long, alias = "gen-len", default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Decoding method.
    #[arg(long, value_enum, default_value = "tokenswift")]
    pub method: Method,
    /// Also run AR on the same prompt and sampling and print the speedup (and whether the two
    /// outputs are identical). The two run in alternating chunks of 64 tokens, each timed on its
    /// own steps, so a machine that speeds up or slows down meanwhile affects both alike.
    #[arg(long)]
    pub compare_ar: bool,
    /// Wrap the prompt in the model's ChatML chat template.
    #[arg(long)]
    pub chat: bool,
    /// Stop at the end-of-sequence token (ignored by default, as in the paper's ultra-long runs).
    #[arg(long)]
    pub stop_at_eos: bool,
    /// Show accepted draft tokens in colour on stdout.
    #[arg(long)]
    pub color: bool,
    /// When stderr is not a terminal (Slurm, nohup), a plain progress line every this many
    /// seconds (0: none).
    #[arg(long, env = "TOKENSWIFT_LOG_EVERY", default_value_t = 60.0,
          value_parser = tokenswift_cli::parse_log_every)]
    pub log_every: f64,
    #[command(flatten)]
    pub tokenswift: TokenSwiftArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// Which code ran the forward pass (`--kernels`, `--weights`), for the stats lines.
fn forward_path(model: &Model) -> String {
    if model.uses_cpu_kernels() {
        format!("host kernels, {} weights", model.weights_format())
    } else {
        "burn ops".to_string()
    }
}

/// `model`: name the forward path first (not after TokenSwift's stats, which already did).
fn print_ar_stats(stats: &GenerationStats, model: Option<&Model>) {
    if let Some(model) = model {
        eprintln!("forward pass: {}", forward_path(model));
    }
    eprintln!(
        "AR: prompt {} tokens, prefill {:.2} s ({:.0} tok/s); generated {} tokens in {:.2} s ({:.2} tok/s, {:.1} ms/token){}",
        stats.prompt_tokens,
        stats.prefill_time.as_secs_f64(),
        stats.prefill_tokens_per_second(),
        stats.generated_tokens,
        stats.decode_time.as_secs_f64(),
        stats.decode_tokens_per_second(),
        1000.0 / stats.decode_tokens_per_second(),
        if stats.stopped_at_eos {
            ", stopped at EOS"
        } else {
            ""
        }
    );
}

fn print_ts_stats(s: &TokenSwiftStats, model: &Model) {
    eprintln!("forward pass: {}", forward_path(model));
    let d = s.decode_time.as_secs_f64().max(1e-9);
    eprintln!(
        "TokenSwift: prompt {} tokens, prefill {:.2} s; generated {} tokens in {:.2} s ({:.2} tok/s, {:.1} ms/token){}\n  acceptance α {:.3} ({} of {} drafted), {:.2} tokens/step over {} steps ({} plain AR steps, {} with heads, {} with the separate pass), n-gram share of accepted {:.1} %, {:.1} nodes verified/step, draft vocabulary {} tokens\n  time: draft {:.0} %, verify {:.0} %, accept+update {:.0} %; partial-cache selections {}; peak memory {:.0} MiB",
        s.prompt_tokens,
        s.prefill_time.as_secs_f64(),
        s.generated_tokens,
        d,
        s.decode_tokens_per_second(),
        1000.0 / s.decode_tokens_per_second(),
        if s.stopped_at_eos {
            ", stopped at EOS"
        } else {
            ""
        },
        s.acceptance_rate(),
        s.accepted,
        s.proposed,
        s.tokens_per_step(),
        s.steps,
        s.ar_steps,
        s.heads_steps,
        s.separate_steps,
        100.0 * s.ngram_share(),
        s.verified_nodes as f64 / s.steps.max(1) as f64,
        s.draft_vocab,
        100.0 * s.draft_time.as_secs_f64() / d,
        100.0 * s.verify_time.as_secs_f64() / d,
        100.0 * s.update_time.as_secs_f64() / d,
        s.partial_selections,
        peak_rss_mib(),
    );
}

pub fn run(args: GenerateArgs, ui: Ui) -> Result<()> {
    let ui = Ui {
        log_every: args.log_every,
        ..ui
    };
    let text = read_prompt(&args.prompt, &args.prompt_file)?;
    let text = if args.chat {
        chatml_prompt(&text)
    } else {
        text
    };
    if args.max_new_tokens == 0 {
        bail!("--max-new-tokens must be at least 1");
    }
    let sampling = args.sampling.config();
    // Ranges first (before anything is loaded); token ids once the vocabulary is known.
    sampling.validate(usize::MAX)?;
    if args.compare_ar && args.method == Method::Ar {
        bail!("--compare-ar compares TokenSwift with AR; drop it with --method ar");
    }
    let (dir, model, tokenizer) = args.model.load(&ui)?;
    sampling.validate(model.config().vocab_size)?;
    let mut ids = tokenizer.encode(&text)?;
    if let Some(n) = args.prefill_len {
        if n == 0 {
            bail!("--prefill-len must be at least 1");
        }
        ids.truncate(n);
    }
    let mut out = std::io::stdout().lock();
    match args.method {
        Method::Ar => {
            let bar = ui.logged_bar(args.max_new_tokens as u64, "generating (AR)");
            let mut stream = TextStream::new();
            let (_, stats) = generate_ar(
                &model,
                &ids,
                args.max_new_tokens,
                &sampling,
                args.stop_at_eos,
                &mut |t| {
                    let piece = stream.push(&tokenizer, t)?;
                    if !piece.is_empty() {
                        bar.suspend(|| {
                            let _ = out.write_all(piece.as_bytes());
                            let _ = out.flush();
                        });
                    }
                    bar.inc(1);
                    Ok(())
                },
            )?;
            bar.finish_and_clear();
            let _ = writeln!(out);
            print_ar_stats(&stats, Some(&model));
        }
        Method::Tokenswift => {
            // Settings and lengths first: they need no heads.
            let cfg = args
                .tokenswift
                .config(ids.len(), args.max_new_tokens, args.stop_at_eos)?;
            tokenswift_infer::model::prompt::check_context(&model, ids.len(), args.max_new_tokens)?;
            let draft = args.tokenswift.draft(&model, &dir)?;
            let cfg = draft.apply(cfg);
            let heads = &draft.heads;
            if !args.compare_ar {
                let (_, stats) = stream_tokenswift(
                    &model,
                    heads,
                    &tokenizer,
                    &ids,
                    args.max_new_tokens,
                    &sampling,
                    &cfg,
                    args.color,
                    &ui,
                    &mut out,
                )?;
                let _ = writeln!(out);
                print_ts_stats(&stats, &model);
                return Ok(());
            }
            // Untimed warm-up of both methods (thread pool, allocator, caches), so the timed
            // runs that follow start from the same state.
            let n = args.max_new_tokens.min(16);
            let quiet = Ui { quiet: true, ..ui };
            stream_tokenswift(
                &model,
                heads,
                &tokenizer,
                &ids,
                n,
                &sampling,
                &cfg,
                false,
                &quiet,
                &mut std::io::sink(),
            )?;
            generate_ar(
                &model,
                &ids,
                n,
                &sampling,
                args.stop_at_eos,
                &mut |_| Ok(()),
            )?;
            let r = stream_paired(
                &model, heads, &tokenizer, &ids, &sampling, &cfg, &args, &ui, &mut out,
            )?;
            let _ = writeln!(out);
            print_ts_stats(&r.ts_stats, &model);
            print_ar_stats(&r.ar_stats, None);
            let (stats, ar) = (&r.ts_stats, &r.ar_stats);
            let ts_ms =
                stats.decode_time.as_secs_f64() * 1000.0 / stats.generated_tokens.max(1) as f64;
            let ar_ms = ar.decode_time.as_secs_f64() * 1000.0 / ar.generated_tokens.max(1) as f64;
            let speedup = if ts_ms > 0.0 && ar_ms > 0.0 {
                format!("{:.2}×", ar_ms / ts_ms)
            } else {
                // One token: both drew it from the prefill's logits; no decode step to time.
                "n/a".to_string()
            };
            eprintln!(
                "speedup vs AR: {speedup} ({:.1} → {:.1} ms/token; the two ran in alternating chunks of {CHUNK} tokens, each timed on its own steps), α {:.3}; outputs {}",
                ar_ms,
                ts_ms,
                stats.acceptance_rate(),
                if r.ar_tokens == r.ts_tokens {
                    "identical token for token".to_string()
                } else {
                    let first = r
                        .ar_tokens
                        .iter()
                        .zip(&r.ts_tokens)
                        .position(|(a, b)| a != b);
                    format!(
                        "differ from token {} on (floating-point ties between the batched verify pass and the one-token pass)",
                        first.unwrap_or(r.ar_tokens.len().min(r.ts_tokens.len()))
                    )
                }
            );
        }
    }
    Ok(())
}

/// Runs TokenSwift and AR in alternating chunks ([`generate_paired`]), streaming TokenSwift's
/// text to `out` (accepted draft tokens in green with `--color`); one bar over both.
#[allow(clippy::too_many_arguments)]
fn stream_paired(
    model: &Model,
    heads: &DraftHeads,
    tokenizer: &TextTokenizer,
    ids: &[u32],
    sampling: &SamplingConfig,
    cfg: &TokenSwiftConfig,
    args: &GenerateArgs,
    ui: &Ui,
    out: &mut dyn Write,
) -> Result<PairedOutcome> {
    let n = args.max_new_tokens;
    let bar = ui.logged_bar(2 * n as u64, "TokenSwift and AR, alternating");
    let mut stream = TextStream::new();
    let mut rates = (0.0, 0.0);
    let r = generate_paired(model, heads, ids, n, sampling, cfg, &mut |p| {
        let rate = p.generated as f64 / p.elapsed.as_secs_f64().max(1e-9);
        if p.method == Which::TokenSwift {
            let text = colored(&mut stream, tokenizer, p.tokens, p.accepted, args.color)?;
            if !text.is_empty() {
                bar.suspend(|| {
                    let _ = out.write_all(text.as_bytes());
                    let _ = out.flush();
                });
            }
            rates.0 = rate;
        } else {
            rates.1 = rate;
        }
        bar.inc(p.tokens.len() as u64);
        bar.set_message(format!(
            "TokenSwift {:.1} tok/s, AR {:.1} tok/s",
            rates.0, rates.1
        ));
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok(r)
}

/// The text of `tokens`, the first `accepted` in green when `color`.
fn colored(
    stream: &mut TextStream,
    tokenizer: &TextTokenizer,
    tokens: &[u32],
    accepted: usize,
    color: bool,
) -> tokenswift_infer::error::Result<String> {
    let mut text = String::new();
    for (i, &t) in tokens.iter().enumerate() {
        let piece = stream.push(tokenizer, t)?;
        if color && i < accepted && !piece.is_empty() {
            text.push_str("\x1b[32m");
            text.push_str(&piece);
            text.push_str("\x1b[0m");
        } else {
            text.push_str(&piece);
        }
    }
    Ok(text)
}

/// Runs TokenSwift, streaming text to `out` (accepted draft tokens in green with `color`).
#[allow(clippy::too_many_arguments)]
pub fn stream_tokenswift(
    model: &Model,
    heads: &DraftHeads,
    tokenizer: &TextTokenizer,
    ids: &[u32],
    n: usize,
    sampling: &SamplingConfig,
    cfg: &TokenSwiftConfig,
    color: bool,
    ui: &Ui,
    out: &mut dyn Write,
) -> Result<(Vec<u32>, TokenSwiftStats)> {
    let bar = ui.logged_bar(n as u64, "generating (TokenSwift)");
    let mut stream = TextStream::new();
    let t0 = std::time::Instant::now();
    let r = generate_tokenswift(model, heads, ids, n, sampling, cfg, &mut |step| {
        let text = colored(&mut stream, tokenizer, step.tokens, step.accepted, color)?;
        if !text.is_empty() {
            bar.suspend(|| {
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            });
        }
        bar.inc(step.tokens.len() as u64);
        let secs = t0.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!(
            "TokenSwift {:.1} tok/s α {:.2}",
            step.stats.generated_tokens as f64 / secs,
            step.stats.acceptance_rate()
        ));
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok(r)
}
