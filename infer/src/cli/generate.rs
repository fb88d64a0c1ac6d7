//! `tokenswift generate`: stream a continuation of a prompt to stdout.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use tokenswift_infer::generate::generate_ar;
use tokenswift_infer::tokenizer::{TextStream, chatml_prompt};

use super::common::{ModelArgs, SamplingArgs, Ui, read_prompt};

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
    /// Wrap the prompt in the model's ChatML chat template.
    #[arg(long)]
    pub chat: bool,
    /// Stop at the end-of-sequence token (ignored by default, as in the paper's ultra-long runs).
    #[arg(long)]
    pub stop_at_eos: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

pub fn run(args: GenerateArgs, ui: Ui) -> Result<()> {
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
    let (_dir, model, tokenizer) = args.model.load(&ui)?;
    sampling.validate(model.config().vocab_size)?;
    let mut ids = tokenizer.encode(&text)?;
    if let Some(n) = args.prefill_len {
        if n == 0 {
            bail!("--prefill-len must be at least 1");
        }
        ids.truncate(n);
    }
    let bar = ui.bar(args.max_new_tokens as u64, "generating");
    let mut stream = TextStream::new();
    let mut out = std::io::stdout().lock();
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
    eprintln!(
        "prompt {} tokens, prefill {:.2} s ({:.0} tok/s); generated {} tokens in {:.2} s ({:.2} tok/s, {:.1} ms/token){}",
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
    Ok(())
}
