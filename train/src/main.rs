//! `train-heads`: trains TokenSwift's draft heads on a frozen base model.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use tokenswift_cli::{DeviceArg, ModelArgs, Ui, WeightsArg, peak_rss_mib};
use tokenswift_datasets::{CorpusSource, tokenize, training_sequences};
use tokenswift_infer::draft::heads::{
    DraftHeads, HeadsManifest, base_fingerprint, load_heads, manifest_path, rank_tokens,
};

/// Most tokens kept in a heads manifest's ranking (the draft vocabulary is a prefix of it).
const RANKING_LIMIT: usize = 32768;
use tokenswift_infer::decoding::ngram::ContextTable;
use tokenswift_infer::model::Model;
use tokenswift_train::evaluate::evaluate_heads;
use tokenswift_train::objective::HeadStats;
use tokenswift_train::trainer::{Trainer, prepare_out_dir};
use tokenswift_train::{Recipe, Schedule};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Preset {
    /// `paper` on a GPU, `cpu` on the CPU.
    Auto,
    /// DESIGN §1: seq 8192, lr 5e-3, wd 0.1, warm-up 50, cosine, 200 steps, batch 3 × accumulation 10.
    Paper,
    /// The default model on a 2-core CPU: seq 512, batch 1 × accumulation 4, 200 steps, warm-up
    /// 20 (same optimizer and schedule), about 35 minutes.
    Cpu,
}

/// Train TokenSwift's K interrelated draft layers on a frozen base model (only the heads learn).
///
/// Head i at position p learns the token at p+2+i; the loss is the sum of the heads' mean
/// cross-entropies. Progress, per-head loss/accuracy, tokens/s and lr are shown while it runs and
/// appended to OUT/train-log.jsonl. A checkpoint (heads, AdamW state, run state) is written every
/// --checkpoint-every steps, atomically; `--resume` continues the same run from the last one.
/// At the end OUT/heads.safetensors and OUT/heads.json (base fingerprint, recipe, held-out
/// accuracy) are written.
#[derive(Debug, Parser)]
#[command(name = "train-heads", version)]
struct Cli {
    /// Base model: a local directory, an alias (smollm2-135m, qwen2.5-7b, ...) or `org/name`.
    #[arg(long, env = "TOKENSWIFT_MODEL", default_value = "smollm2-135m")]
    base: String,
    /// Compute device.
    #[arg(long, env = "TOKENSWIFT_DEVICE", value_enum, default_value = "auto")]
    device: DeviceArg,
    /// Weights of the frozen base on the CPU fast path: `auto` keeps the checkpoint's own format
    /// (the default model's GGUF blocks give exactly the f32 values); q8_0/q4_1/q4_0 quantise at
    /// load (the heads then learn that quantised model). The heads train in f32 either way.
    #[arg(long, env = "TOKENSWIFT_WEIGHTS", value_enum, default_value = "auto")]
    weights: WeightsArg,
    /// Corpus: `austen` (offline, Jane Austen's six novels; `persuasion` is held out), a
    /// directory of .txt files, a text file, or a .jsonl file with a `text` field.
    #[arg(long, default_value = "austen")]
    data: String,
    /// Recipe preset; the flags below override its values.
    #[arg(long, value_enum, default_value = "auto")]
    preset: Preset,
    #[arg(long)]
    steps: Option<usize>,
    /// Tokens per training sequence.
    #[arg(long)]
    seq_len: Option<usize>,
    /// Sequences per micro-batch.
    #[arg(long)]
    batch: Option<usize>,
    /// Micro-batches per optimizer step.
    #[arg(long)]
    grad_accum: Option<usize>,
    /// Peak learning rate (AdamW).
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f64>,
    #[arg(long, allow_negative_numbers = true)]
    weight_decay: Option<f64>,
    /// Linear warm-up steps.
    #[arg(long)]
    warmup: Option<usize>,
    #[arg(long, value_enum)]
    schedule: Option<Schedule>,
    /// Number of draft heads K.
    #[arg(long)]
    heads: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Skip documents shorter than this many tokens (paper: 8192).
    #[arg(long)]
    min_doc_tokens: Option<usize>,
    /// Rows per cross-entropy chunk (bounds the logits memory: K × rows × vocab floats).
    #[arg(long)]
    chunk_rows: Option<usize>,
    /// Save a checkpoint every N steps.
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Output directory.
    #[arg(long, default_value = "runs/heads")]
    out: PathBuf,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Only measure held-out accuracy of untrained heads and of --eval-heads; no training.
    #[arg(long)]
    eval_only: bool,
    /// Heads to evaluate with --eval-only (a heads file, or a base checkpoint with heads inside).
    #[arg(long)]
    eval_heads: Option<PathBuf>,
    /// Held-out sequences (of 512 tokens) used for accuracy.
    #[arg(long, default_value_t = 8)]
    eval_sequences: usize,
    /// Recompute the corpus-derived draft data of this existing heads file from --data's
    /// training documents: the token ranking (the draft vocabulary, `tokenswift --draft-vocab`)
    /// in its manifest, and the corpus n-gram table beside it (`.ngrams`, `tokenswift
    /// --corpus-ngrams`); no training. For heads saved before they carried them.
    #[arg(long, value_name = "HEADS")]
    update_ranking: Option<PathBuf>,
    /// Data-parallel training over several GPUs is not available yet; only 1 is accepted.
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// No progress bars or notes on stderr.
    #[arg(long, env = "TOKENSWIFT_QUIET", value_parser = clap::builder::BoolishValueParser::new())]
    quiet: bool,
}

fn recipe(cli: &Cli, on_gpu: bool) -> Recipe {
    let mut r = match cli.preset {
        Preset::Paper => Recipe::paper(),
        Preset::Cpu => Recipe::cpu(),
        Preset::Auto if on_gpu => Recipe::paper(),
        Preset::Auto => Recipe::cpu(),
    };
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = cli.$f { r.$f = v; } )* };
    }
    set!(
        steps,
        seq_len,
        batch,
        grad_accum,
        lr,
        weight_decay,
        warmup,
        schedule,
        heads,
        seed,
        min_doc_tokens,
        chunk_rows,
        checkpoint_every
    );
    r
}

fn stats_table(label: &str, stats: &[HeadStats]) -> String {
    let mut s = String::new();
    for (i, h) in stats.iter().enumerate() {
        s.push_str(&format!(
            "| {label} | head {} (t+{}) | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            i + 1,
            i + 2,
            h.accuracy(1),
            h.accuracy(2),
            h.accuracy(3),
            h.loss()
        ));
    }
    s
}

fn stats_json(stats: &[HeadStats]) -> serde_json::Value {
    serde_json::json!(
        stats
            .iter()
            .map(|h| serde_json::json!({
                "top1": h.accuracy(1), "top2": h.accuracy(2), "top3": h.accuracy(3),
                "loss": h.loss(), "rows": h.rows
            }))
            .collect::<Vec<_>>()
    )
}

fn held_out_sequences(
    source: &CorpusSource,
    docs: &[tokenswift_datasets::TokenizedDocument],
    n: usize,
) -> Vec<Vec<u32>> {
    let held = source.held_out();
    let doc = match held {
        Some(name) => docs.iter().find(|d| d.name == name),
        None => docs.last(),
    };
    doc.map(|d| {
        d.tokens
            .chunks_exact(512)
            .take(n)
            .map(|c| c.to_vec())
            .collect()
    })
    .unwrap_or_default()
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tokenswift_cli::exit_code(run(cli))
}

fn run(cli: Cli) -> Result<()> {
    let ui = Ui { quiet: cli.quiet };
    if cli.devices != 1 {
        bail!(
            "--devices {}: multi-device data parallel training is not available in this version; train on one device",
            cli.devices
        );
    }
    let source = CorpusSource::parse(&cli.data)?;
    let margs = ModelArgs {
        model: cli.base.clone(),
        device: cli.device,
        weights: cli.weights,
    };
    let (_dir, model, tokenizer) = margs.load(&ui)?;
    let on_gpu = !model.uses_cpu_kernels() && !tokenswift_infer::model::is_flex(model.device());
    let recipe = recipe(&cli, on_gpu);
    recipe.validate().map_err(anyhow::Error::msg)?;
    let ctx = model.config().max_position_embeddings;
    if recipe.seq_len > ctx {
        bail!(
            "--seq-len {} exceeds the model's context of {ctx} tokens",
            recipe.seq_len
        );
    }
    if !cli.eval_only && cli.update_ranking.is_none() {
        // Fail on an unwritable output directory before any expensive work.
        prepare_out_dir(&cli.out)?;
    }

    let spinner = ui.spinner(format!("reading and tokenising corpus `{}`", cli.data));
    let docs = source.documents(&|m| ui.note(m))?;
    let tokenized = tokenize(&docs, &tokenizer)?;
    spinner.finish_and_clear();
    let held_name = source.held_out();
    let eval_seqs = held_out_sequences(&source, &tokenized, cli.eval_sequences);

    if cli.eval_only {
        return eval_only(&cli, &model, &eval_seqs, recipe.chunk_rows, &ui);
    }

    let train_docs: Vec<_> = tokenized
        .iter()
        .filter(|d| Some(d.name.as_str()) != held_name)
        .cloned()
        .collect();
    let ranking = rank_tokens(
        train_docs.iter().map(|d| d.tokens.as_slice()),
        model.config().vocab_size,
        RANKING_LIMIT,
    );
    // The corpus n-gram table (a free draft source of `tokenswift --tree auto`): contexts seen at
    // least twice in the training documents.
    let corpus_ngrams = {
        let mut t = ContextTable::new();
        for d in &train_docs {
            t.add_document(&d.tokens);
        }
        t.prune(2, 0.0);
        t.to_bytes(model.config().vocab_size, &base_fingerprint(&model))
    };
    let write_ngrams = |heads: &std::path::Path| -> Result<()> {
        let path = heads.with_extension("ngrams");
        let tmp = heads.with_extension("ngrams.partial");
        std::fs::write(&tmp, &corpus_ngrams)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .with_context(|| format!("cannot write {}", path.display()))?;
        ui.note(&format!(
            "wrote the corpus n-gram table ({} KiB) to {}",
            corpus_ngrams.len() / 1024,
            path.display()
        ));
        Ok(())
    };
    if let Some(heads) = &cli.update_ranking {
        let mpath = manifest_path(heads);
        let mut m = HeadsManifest::load(&mpath)
            .with_context(|| format!("{} has no readable manifest", heads.display()))?;
        if m.base_fingerprint != base_fingerprint(&model) {
            bail!(
                "{} were trained on base `{}`, not on --base {}",
                heads.display(),
                m.base_model,
                cli.base
            );
        }
        m.token_ranking = ranking;
        m.save(&mpath)?;
        write_ngrams(heads)?;
        ui.note(&format!(
            "wrote a ranking of {} tokens into {}",
            m.token_ranking.len(),
            mpath.display()
        ));
        return Ok(());
    }
    let sequences = training_sequences(&train_docs, recipe.seq_len, recipe.min_doc_tokens)?;
    ui.note(&format!(
        "corpus `{}`: {} documents for training ({} tokens), {} sequences of {} tokens; held out: {}",
        cli.data,
        train_docs.len(),
        train_docs.iter().map(|d| d.tokens.len()).sum::<usize>(),
        sequences.len(),
        recipe.seq_len,
        held_name.unwrap_or("none")
    ));
    let mut trainer = Trainer::new(
        &model,
        &cli.base,
        &cli.data,
        recipe.clone(),
        sequences,
        &cli.out,
        cli.resume,
    )?;
    if cli.resume {
        ui.note(&format!("resuming at step {}", trainer.step));
    }
    let log_path = cli.out.join("train-log.jsonl");
    if cli.resume && log_path.exists() {
        // Steps done after the last checkpoint are redone: drop their log lines.
        let kept: String = std::fs::read_to_string(&log_path)
            .with_context(|| format!("cannot read {}", log_path.display()))?
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v["step"].as_u64())
                    .is_some_and(|s| (s as usize) < trainer.step)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&log_path, kept)
            .with_context(|| format!("cannot write {}", log_path.display()))?;
    }
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let bar = ui.bar(recipe.steps as u64, "training");
    bar.set_position(trainer.step as u64);
    let peak0 = peak_rss_mib();
    while trainer.step < recipe.steps {
        let entry = trainer.train_step()?;
        writeln!(log, "{}", serde_json::to_string(&entry)?)
            .and_then(|_| log.flush())
            .with_context(|| format!("cannot write {}", log_path.display()))?;
        let losses: Vec<String> = entry.loss.iter().map(|l| format!("{l:.2}")).collect();
        let acc: Vec<String> = entry
            .accuracy
            .iter()
            .map(|a| format!("{:.2}", a[0]))
            .collect();
        bar.set_message(format!(
            "loss [{}] top1 [{}] {:.0} tok/s lr {:.1e}",
            losses.join(" "),
            acc.join(" "),
            entry.tokens_per_second,
            entry.lr
        ));
        bar.set_position(trainer.step as u64);
        if trainer.step.is_multiple_of(recipe.checkpoint_every) || trainer.step == recipe.steps {
            trainer.save_checkpoint()?;
        }
    }
    bar.finish_and_clear();
    let peak = peak_rss_mib();

    let heads = trainer.heads_for_eval();
    let eval_bar = ui.bar(eval_seqs.len() as u64, "held-out accuracy");
    let stats = evaluate_heads(&model, &heads, &eval_seqs, recipe.chunk_rows, &mut |i| {
        eval_bar.set_position(i as u64)
    })?;
    eval_bar.finish_and_clear();
    let last = trainer.history.last().cloned();
    let metrics = serde_json::json!({
        "held_out": { "document": held_name, "tokens": eval_seqs.iter().map(Vec::len).sum::<usize>(), "heads": stats_json(&stats) },
        "last_step": last,
        "peak_rss_mib": peak,
        "peak_rss_mib_before_training": peak0,
    });
    let path = trainer.export(metrics, ranking)?;
    write_ngrams(&path)?;
    println!("| heads | head | top-1 | top-2 | top-3 | CE |\n|---|---|---|---|---|---|");
    print!("{}", stats_table("trained", &stats));
    ui.note(&format!(
        "wrote {} and {} (peak memory {:.0} MiB)",
        path.display(),
        manifest_path(&path).display(),
        peak
    ));
    Ok(())
}

fn eval_only(
    cli: &Cli,
    model: &Model,
    seqs: &[Vec<u32>],
    chunk_rows: usize,
    ui: &Ui,
) -> Result<()> {
    if seqs.is_empty() {
        bail!("the held-out document has fewer than 512 tokens; nothing to evaluate");
    }
    let mut rows = vec![(
        "untrained".to_string(),
        DraftHeads::init_for(model, 3, model.device()),
    )];
    if let Some(p) = &cli.eval_heads {
        rows.push((p.display().to_string(), load_heads(p, model)?));
        if p.is_file() && manifest_path(p).exists() {
            let m = HeadsManifest::load(&manifest_path(p))?;
            ui.note(&format!("heads trained on `{}`", m.base_model));
        }
    }
    println!("| heads | head | top-1 | top-2 | top-3 | CE |\n|---|---|---|---|---|---|");
    for (label, heads) in &rows {
        let bar = ui.bar(seqs.len() as u64, label);
        let stats = evaluate_heads(model, heads, seqs, chunk_rows, &mut |i| {
            bar.set_position(i as u64)
        })?;
        bar.finish_and_clear();
        print!("{}", stats_table(label, &stats));
    }
    Ok(())
}
