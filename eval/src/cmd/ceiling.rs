//! `tokenswift-eval ceiling`: the speedup ceiling on this machine and its Markdown report.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use tokenswift_cli::{ModelArgs, SamplingArgs, TokenSwiftArgs, Ui};
use tokenswift_eval::measure::load_prompts;

use super::write_text;
#[derive(Debug, Args)]
pub struct CeilingArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// The real TokenSwift run reported beside the ceiling.
    #[command(flatten)]
    pub tokenswift: TokenSwiftArgs,
    /// Prompt source, as for `speedup` (the first prompt is used).
    #[arg(long, default_value = "austen")]
    pub prompts: String,
    #[arg(long, default_value_t = 2048)]
    pub prefill_len: usize,
    /// Tokens generated autoregressively (their ranks are replayed).
    #[arg(long, default_value_t = 2048)]
    pub gen_len: usize,
    /// Repetitions per pass-cost measurement (the median is used).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Also write the table to this Markdown file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn ceiling(a: CeilingArgs, ui: &Ui) -> Result<()> {
    if a.gen_len == 0 || a.reps == 0 {
        bail!("--gen-len and --reps must be at least 1");
    }
    let sampling = a.sampling.config();
    let (_dir, model, tokenizer) = a.model.load(ui)?;
    sampling.validate(model.config().vocab_size)?;
    let prompt = load_prompts(&a.prompts, &tokenizer, a.prefill_len, 1, &|m| ui.note(m))?.remove(0);
    let draft = a.tokenswift.draft(&model, &_dir)?;
    let cfg = draft.apply(a.tokenswift.config(prompt.len(), a.gen_len, false)?);
    let real = RealRun {
        heads: &draft.heads,
        cfg,
    };
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

/// The ceiling table (Markdown) for `gen_len` tokens sampled after `prompt`.
/// The real TokenSwift configuration run beside the ceiling.
pub struct RealRun<'a> {
    pub heads: &'a tokenswift_infer::draft::heads::DraftHeads,
    pub cfg: tokenswift_infer::decoding::session::TokenSwiftConfig,
}

pub fn ceiling_report(
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
    tokenswift_infer::model::prompt::check_context(model, prompt.len(), gen_len)?;
    // The AR output the replay ranks: with the real configuration, the AR side of its paired
    // run (timed against TokenSwift in alternating chunks, DESIGN §7), so AR generates once.
    let (output, measured) = match real {
        Some(real) => {
            let bar = ui.bar(2 * gen_len as u64, "TokenSwift and AR, alternating");
            let r = tokenswift_infer::decoding::paired::generate_paired(
                model,
                real.heads,
                prompt,
                gen_len,
                sampling,
                &real.cfg,
                &mut |p| {
                    bar.inc(p.tokens.len() as u64);
                    Ok(())
                },
            )?;
            bar.finish_and_clear();
            (
                r.ar_tokens,
                Some((real, r.ts_tokens, r.ts_stats, r.ar_stats)),
            )
        }
        None => {
            let bar = ui.bar(gen_len as u64, "AR run");
            let mut n = 0u64;
            let (output, _) = tokenswift_infer::decoding::ar::generate_ar(
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
            (output, None)
        }
    };
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
    let corpus = measured
        .as_ref()
        .and_then(|(r, ..)| r.cfg.corpus_ngrams.clone());
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
    if let Some((real, ts_out, st, ar_stats)) = measured {
        let speed = ar_stats.decode_time.as_secs_f64() / st.decode_time.as_secs_f64().max(1e-9);
        md.push_str(&format!(
            "\nThe real planner (`--tree {:?} --draft {:?}`, n-gram lag {:?}, heads and n-grams as \
             measured): **{:.2} tokens/step, {:.2}× measured** against AR run alongside it in \
             alternating chunks ({} steps, {} of them plain AR steps; output {} AR's).\n",
            real.cfg.tree,
            real.cfg.draft,
            real.cfg.ngram_lag,
            st.tokens_per_step(),
            speed,
            st.steps,
            st.ar_steps,
            if ts_out == output {
                "identical to"
            } else {
                "DIFFERENT from"
            }
        ));
    }
    Ok(md)
}
