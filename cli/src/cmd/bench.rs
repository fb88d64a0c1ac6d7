//! `tokenswift bench`: the cost curve of forward passes (q new tokens over a context), prefill and
//! decode speed — and, with `--transformers`, the same figures from PyTorch `transformers` on the
//! same weights and thread count, measured in the same run.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use tokenswift_infer::decoding::ar::generate_ar;
use tokenswift_infer::model::{AttentionMask, LogitRows, Model};
use tokenswift_infer::sampling::SamplingConfig;
use tokenswift_infer::tensor::to_host_f32;

use tokenswift_cli::{ModelArgs, Ui};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Context lengths (cached tokens) to measure at.
    #[arg(long, value_delimiter = ',', default_value = "512,4096")]
    pub contexts: Vec<usize>,
    /// Numbers of new tokens per forward pass.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64")]
    pub q: Vec<usize>,
    /// Repetitions per measurement (the median is reported).
    #[arg(long, default_value_t = 7)]
    pub reps: usize,
    /// Tokens generated for the decode-speed measurement (the rate needs at least 2: the first
    /// comes from the prefill).
    #[arg(long, default_value_t = 32)]
    pub decode_tokens: usize,
    /// Also run scripts/bench_transformers.py with this Python (which must have torch and
    /// transformers) on the same checkpoint and thread count.
    #[arg(long)]
    pub transformers: Option<PathBuf>,
    /// Also run scripts/bench_llamacpp.py with this Python (which must have the PyPI package
    /// llama-cpp-python) on the same GGUF file, contexts and thread count, and print our decode
    /// speed over llama.cpp's.
    #[arg(long)]
    pub llamacpp: Option<PathBuf>,
    /// The GGUF file for `--llamacpp` (default: the default model's own file, Q4_1 with a Q8_0
    /// embedding; any other model needs its GGUF here).
    #[arg(long, requires = "llamacpp")]
    pub gguf: Option<PathBuf>,
    /// Also measure the forward pass through plain burn ops (the path GPUs take) on the same
    /// device, in this run, with the ratio to the CPU fast path.
    #[arg(long)]
    pub compare_burn_ops: bool,
    /// Also time a partial-KV-cache re-selection with this budget at each context (scores,
    /// choice, gather) beside one forward pass, and the write of a step's 4 accepted tokens; with
    /// `--kernels burn`, also the one-copy-per-layer-head-slot reference in the same run. 0 = skip.
    #[arg(long, default_value_t = 0)]
    pub partial_budget: usize,
}

/// Per context: per q, the median time and the median of the per-repetition ratios to q = 1.
type Table = Vec<(usize, Vec<(usize, Duration, f64)>)>;

/// What a timed pass computes after the layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logits {
    /// `lm_head` for every new row (what `--compare-burn-ops` and older tables measured).
    AllRows,
    /// `lm_head` for the first row only, as verification computes it (the rows its walk reaches,
    /// usually one or two).
    FirstRow,
}

/// Median forward time for every (context, q). Every repetition runs every q once, in order, so
/// the ratio to q = 1 is taken within a repetition (this machine drifts by 10–40 % between runs).
fn forward_table(model: &Model, args: &BenchArgs, ui: &Ui, logits: Logits) -> Result<Table> {
    let cfg = model.config();
    let max_q = *args.q.iter().max().unwrap();
    let mut table = Vec::new();
    for &ctx in &args.contexts {
        if ctx + max_q > cfg.max_position_embeddings {
            bail!(
                "context {ctx} + {max_q} exceeds the model's context of {}",
                cfg.max_position_embeddings
            );
        }
        let mut cache = model.new_cache(ctx + max_q.max(1));
        let pb = ui.spinner(format!("filling a {ctx}-token context"));
        let prompt = filler(ctx, cfg.vocab_size);
        tokenswift_infer::model::prompt::prefill(model, &prompt, &mut cache, &mut |_| {})?;
        pb.finish_and_clear();
        let mut times = vec![Vec::new(); args.q.len()];
        let mut one = Vec::new();
        let mut rows = Vec::new();
        for rep in 0..args.reps + 1 {
            for (j, &q) in std::iter::once(&1).chain(&args.q).enumerate() {
                let toks = filler(q, cfg.vocab_size);
                let pos: Vec<usize> = (ctx..ctx + q).collect();
                let t = Instant::now();
                match logits {
                    Logits::AllRows => {
                        let out = model.forward(
                            &toks,
                            &pos,
                            &AttentionMask::Causal,
                            &mut cache,
                            LogitRows::All,
                        )?;
                        let _ = to_host_f32(out.logits.unwrap());
                    }
                    Logits::FirstRow => {
                        let out = model.forward(
                            &toks,
                            &pos,
                            &AttentionMask::Causal,
                            &mut cache,
                            LogitRows::None,
                        )?;
                        model.logits_of_rows_vec(&out.hidden, &[0], &mut rows);
                    }
                }
                let d = t.elapsed();
                cache.rollback_to(ctx)?;
                if rep == 0 {
                    continue; // warm-up
                }
                if j == 0 {
                    one.push(d);
                } else {
                    times[j - 1].push(d);
                }
            }
        }
        let row = args
            .q
            .iter()
            .zip(times)
            .map(|(&q, t)| {
                let mut ratios: Vec<f64> =
                    t.iter().zip(&one).map(|(a, b)| ms(*a) / ms(*b)).collect();
                ratios.sort_by(f64::total_cmp);
                (q, median(t), ratios[ratios.len() / 2])
            })
            .collect();
        table.push((ctx, row));
    }
    Ok(table)
}

/// Prints a forward-time table: each cell is the median time and, in brackets, the median ratio
/// to q = 1 of the same repetitions; with `baseline`, also this / baseline.
fn print_table(qs: &[usize], table: &Table, baseline: Option<&Table>) {
    print!("| context |");
    for q in qs {
        print!(" q={q} |");
    }
    println!();
    print!("|---|");
    for _ in qs {
        print!("---|");
    }
    println!();
    for (i, (ctx, row)) in table.iter().enumerate() {
        print!("| {ctx} |");
        for (j, (_, d, ratio)) in row.iter().enumerate() {
            match baseline {
                Some(b) => print!(
                    " {:.1} ({:.2}× fast path) |",
                    ms(*d),
                    ms(*d) / ms(b[i].1[j].1)
                ),
                None => print!(" {:.1} ({:.2}) |", ms(*d), ratio),
            }
        }
        println!();
    }
}

/// Median time of projecting 4 normalised rows through `lm_head` (or the subset `ids` of it).
fn draft_projection(model: &Model, ids: Option<&[u32]>, reps: usize) -> Result<Duration> {
    use burn::tensor::{Tensor, TensorData};
    let h = model.config().hidden_size;
    let x: Vec<f32> = (0..4 * h)
        .map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0)
        .collect();
    let subset = ids
        .map(|ids| tokenswift_infer::draft::vocab::LmHeadSubset::new(model, ids))
        .transpose()?;
    let mut times = Vec::with_capacity(reps + 1);
    for _ in 0..=reps {
        let rows = Tensor::<2>::from_data(TensorData::new(x.clone(), [4, h]), model.device());
        let t = Instant::now();
        let out = match &subset {
            Some(s) => s.project(rows),
            None => model.lm_head_rows(rows),
        };
        times.push(t.elapsed());
        std::hint::black_box(out);
    }
    times.remove(0);
    Ok(median(times))
}

/// Re-selection of the partial cache at each context, beside one forward pass of one token, and
/// the write of a step's 4 accepted tokens; on the device also the per-slot reference (scores from
/// the keys copied to the host, one copy per layer × head × slot: what the burn path did before).
fn partial_table(model: &Model, args: &BenchArgs, ui: &Ui) -> Result<()> {
    use tokenswift_infer::decoding::partial::{SINKS, select_positions};
    use tokenswift_infer::decoding::partial_cache::{PartialKvCache, importance_from_host_keys};
    use tokenswift_infer::model::Outputs;
    let cfg = model.config();
    let budget = args.partial_budget;
    let device_path = !model.uses_cpu_kernels();
    println!(
        "\n## partial KV cache, budget {budget} ({} layers × {} KV heads; median of {} runs, ms)",
        cfg.num_layers, cfg.num_kv_heads, args.reps
    );
    if device_path {
        println!(
            "| context | forward(1) | re-selection | / forward | per-slot reference | / forward | write 4 tokens | per-slot reference |\n|---|---|---|---|---|---|---|---|"
        );
    } else {
        println!(
            "| context | forward(1) | re-selection | / forward | write 4 tokens |\n|---|---|---|---|---|"
        );
    }
    for &ctx in &args.contexts {
        if ctx <= budget + 4 {
            continue;
        }
        let mut full = model.new_cache(ctx + 1);
        let pb = ui.spinner(format!("filling a {ctx}-token context"));
        tokenswift_infer::model::prompt::prefill(
            model,
            &filler(ctx, cfg.vocab_size),
            &mut full,
            &mut |_| {},
        )?;
        pb.finish_and_clear();
        let (mut fwd, mut sel, mut refsel, mut put, mut refput) =
            (vec![], vec![], vec![], vec![], vec![]);
        let mut partial = PartialKvCache::new(model, budget);
        for rep in 0..args.reps + 1 {
            let t = Instant::now();
            let out = model.forward_with(
                &[1],
                &[ctx],
                &AttentionMask::Causal,
                &mut full,
                Outputs {
                    logits: LogitRows::None,
                    last_queries: true,
                },
            )?;
            let _ = to_host_f32(out.hidden);
            let f = t.elapsed();
            full.rollback_to(ctx)?;
            let queries = out.last_queries.expect("queries were asked for");
            let t = Instant::now();
            partial.select(model, &full, &queries)?;
            let s = t.elapsed();
            let t = Instant::now();
            partial.place_recent(&full, ctx - 4..ctx)?;
            let p = t.elapsed();
            let (mut rs, mut rp) = (Duration::ZERO, Duration::ZERO);
            if device_path {
                let t = Instant::now();
                let scores = importance_from_host_keys(model, &full, &queries);
                let mut reference = model.new_cache(budget + 1);
                for (layer, heads) in scores.iter().enumerate() {
                    for (h, sc) in heads.iter().enumerate() {
                        for (slot, &pos) in select_positions(sc, SINKS, budget).iter().enumerate() {
                            reference.copy_position(&full, layer, h, pos, slot)?;
                        }
                    }
                }
                reference.set_len(budget)?;
                let _ = to_host_f32(reference.keys(0));
                rs = t.elapsed();
                let t = Instant::now();
                for layer in 0..cfg.num_layers {
                    for h in 0..cfg.num_kv_heads {
                        for (i, pos) in (ctx - 4..ctx).enumerate() {
                            reference.copy_position(&full, layer, h, pos, budget - 1 - i)?;
                        }
                    }
                }
                let _ = to_host_f32(reference.keys(0));
                rp = t.elapsed();
            }
            if rep == 0 {
                continue; // warm-up
            }
            fwd.push(f);
            sel.push(s);
            put.push(p);
            refsel.push(rs);
            refput.push(rp);
        }
        let (f, s, p) = (median(fwd), median(sel), median(put));
        if device_path {
            let (rs, rp) = (median(refsel), median(refput));
            println!(
                "| {ctx} | {:.1} | {:.1} | {:.2} | {:.1} | {:.2} | {:.2} | {:.2} |",
                ms(f),
                ms(s),
                ms(s) / ms(f),
                ms(rs),
                ms(rs) / ms(f),
                ms(p),
                ms(rp)
            );
        } else {
            println!(
                "| {ctx} | {:.1} | {:.1} | {:.2} | {:.2} |",
                ms(f),
                ms(s),
                ms(s) / ms(f),
                ms(p)
            );
        }
    }
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Deterministic pseudo-text token ids (no tokenizer needed; the cost does not depend on them).
fn filler(n: usize, vocab: usize) -> Vec<u32> {
    // Away from the first and last 50 ids (special tokens) where the vocabulary has room.
    let margin = if vocab > 200 { 50 } else { 0 };
    (0..n)
        .map(|i| ((i * 7919 + 13) % (vocab - 2 * margin) + margin) as u32)
        .collect()
}

pub fn run(args: BenchArgs, ui: Ui) -> Result<()> {
    if args.reps == 0 || args.contexts.is_empty() || args.q.is_empty() {
        bail!("--reps, --contexts and --q must be non-empty and positive");
    }
    let (dir, model, _tok) = args.model.load(&ui)?;
    let cfg = model.config().clone();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "# tokenswift bench — {} on {:?}, weights {}, {} threads",
        dir.display(),
        args.model.device,
        model.weights_format(),
        threads
    );
    // Fail on a missing peer before the long measurements.
    let gguf = match (&args.llamacpp, &args.gguf) {
        (None, _) => None,
        (Some(_), Some(g)) if !g.is_file() => bail!("--gguf {}: no such file", g.display()),
        (Some(_), Some(g)) => Some(g.clone()),
        (Some(_), None) if args.model.model == "smollm2-135m" => {
            Some(tokenswift_infer::load::hub::default_model_gguf(&|m| {
                ui.note(m)
            })?)
        }
        (Some(_), None) => bail!(
            "--llamacpp needs --gguf FILE for `{}` (only the default model's GGUF is known)",
            args.model.model
        ),
    };
    println!(
        "\n## verify pass: q new tokens over a cached context, logits for the first row (what a TokenSwift verify computes); median of {} runs, ms (in brackets: the median ratio to q = 1 within a run)",
        args.reps
    );
    let verify = forward_table(&model, &args, &ui, Logits::FirstRow)?;
    print_table(&args.q, &verify, None);
    println!("\n## forward pass with logits for every row (ms; ratio to q = 1)");
    let fast = forward_table(&model, &args, &ui, Logits::AllRows)?;
    print_table(&args.q, &fast, None);

    println!(
        "\n## prefill and decode (greedy; decode includes sampling and the host copy of logits)"
    );
    println!("| context | prefill tok/s | decode tok/s | ms/token |");
    println!("|---|---|---|---|");
    let greedy = SamplingConfig::greedy();
    let mut decode = Vec::new();
    for &ctx in &args.contexts {
        let prompt = filler(ctx, cfg.vocab_size);
        let pb = ui.spinner(format!("prefill {ctx} + decode {}", args.decode_tokens));
        let (_, stats) = generate_ar(
            &model,
            &prompt,
            args.decode_tokens,
            &greedy,
            false,
            &mut |_| Ok(()),
        )?;
        pb.finish_and_clear();
        let Some(rate) = stats.decode_passes_per_second() else {
            println!(
                "| {ctx} | {:.0} | n/a | n/a |",
                stats.prefill_tokens_per_second()
            );
            continue;
        };
        decode.push((ctx, rate));
        println!(
            "| {ctx} | {:.0} | {rate:.2} | {:.1} |",
            stats.prefill_tokens_per_second(),
            1e3 / rate
        );
    }

    println!(
        "\n## draft projection: 4 rows (base + 3 heads) through lm_head (median of {} runs, ms)",
        args.reps.max(5) * 4
    );
    println!("| draft vocabulary | ms | / whole vocabulary |\n|---|---|---|");
    let full = draft_projection(&model, None, args.reps.max(5) * 4)?;
    println!("| {} (whole) | {:.2} | 1.00 |", cfg.vocab_size, ms(full));
    for n in [16384usize, 8192, 4096] {
        if n >= cfg.vocab_size {
            continue;
        }
        // The cost depends only on the subset's size, not on which tokens it holds.
        let ids: Vec<u32> = (0..n as u32).collect();
        let d = draft_projection(&model, Some(&ids), args.reps.max(5) * 4)?;
        println!("| {n} | {:.2} | {:.2} |", ms(d), ms(d) / ms(full));
    }

    if args.partial_budget > 0 {
        partial_table(&model, &args, &ui)?;
    }

    if args.compare_burn_ops && model.uses_cpu_kernels() {
        let (device, dtype) = args.model.device.choice().resolve()?;
        drop(model);
        let burn = Model::load_with(
            &dir,
            &device,
            dtype,
            tokenswift_infer::model::LoadOptions {
                cpu_kernels: false,
                ..Default::default()
            },
        )?;
        println!(
            "\n## the same through plain burn ops, this run (ms; in brackets: burn ops / fast path)"
        );
        let slow = forward_table(&burn, &args, &ui, Logits::AllRows)?;
        print_table(&args.q, &slow, Some(&fast));
    }

    if let (Some(py), Some(gguf)) = (&args.llamacpp, &gguf) {
        llamacpp(py, gguf, &args, threads, &verify, &decode)?;
    }

    if let Some(py) = &args.transformers {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench_transformers.py");
        println!(
            "\n## transformers (PyTorch CPU, same checkpoint, {threads} threads), measured now"
        );
        let ctxs: Vec<String> = args.contexts.iter().map(|c| c.to_string()).collect();
        let qs: Vec<String> = args.q.iter().map(|c| c.to_string()).collect();
        let status = Command::new(py)
            .arg(&script)
            .arg("--model")
            .arg(&dir)
            .args([
                "--contexts",
                &ctxs.join(","),
                "--q",
                &qs.join(","),
                "--reps",
                &args.reps.to_string(),
            ])
            .args([
                "--decode-tokens",
                &args.decode_tokens.to_string(),
                "--threads",
                &threads.to_string(),
            ])
            .status()
            .with_context(|| format!("cannot run {}", py.display()))?;
        if !status.success() {
            bail!("{} {} failed", py.display(), script.display());
        }
    }
    Ok(())
}

/// Runs scripts/bench_llamacpp.py and prints its tables, then ours over its.
fn llamacpp(
    py: &std::path::Path,
    gguf: &std::path::Path,
    args: &BenchArgs,
    threads: usize,
    verify: &Table,
    decode: &[(usize, f64)],
) -> Result<()> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench_llamacpp.py");
    println!(
        "\n## llama.cpp (llama-cpp-python, {} , {threads} threads, flash attention off), measured now",
        gguf.display()
    );
    let ctxs: Vec<String> = args.contexts.iter().map(|c| c.to_string()).collect();
    let qs: Vec<String> = args.q.iter().map(|c| c.to_string()).collect();
    let out = Command::new(py)
        .arg(&script)
        .arg("--gguf")
        .arg(gguf)
        .args(["--contexts", &ctxs.join(","), "--q", &qs.join(",")])
        .args(["--reps", &args.reps.to_string()])
        .args(["--decode-tokens", &args.decode_tokens.to_string()])
        .args(["--threads", &threads.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", py.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut summary = None;
    for line in text.lines() {
        match line.strip_prefix("JSON ") {
            Some(j) => summary = Some(j.to_string()),
            None => println!("{line}"),
        }
    }
    if !out.status.success() {
        bail!(
            "{} {} failed ({})",
            py.display(),
            script.display(),
            out.status
        );
    }
    let summary: serde_json::Value =
        serde_json::from_str(&summary.context("bench_llamacpp.py printed no JSON summary")?)
            .context("bench_llamacpp.py printed a malformed JSON summary")?;
    println!("\n## this project / llama.cpp, same run (above 1: we are faster)");
    println!(
        "| context | decode tok/s, ours | llama.cpp | ours / llama.cpp | verify q=16 / q=1, ours | llama.cpp |"
    );
    println!("|---|---|---|---|---|---|");
    for &(ctx, ours) in decode {
        let key = ctx.to_string();
        let theirs = summary["decode_tps"][&key].as_f64().unwrap_or(f64::NAN);
        let fwd = &summary["forward_ms"][&key];
        let their_ratio =
            fwd["16"].as_f64().unwrap_or(f64::NAN) / fwd["1"].as_f64().unwrap_or(f64::NAN);
        let our_ratio = verify
            .iter()
            .find(|(c, _)| *c == ctx)
            .and_then(|(_, row)| row.iter().find(|(q, _, _)| *q == 16))
            .map_or(f64::NAN, |(_, _, r)| *r);
        println!(
            "| {ctx} | {ours:.2} | {theirs:.2} | {:.2}× | {our_ratio:.2} | {their_ratio:.2} |",
            ours / theirs
        );
    }
    Ok(())
}
