//! Autoregressive decoding: chunked prefill, then one token per forward pass through the shared
//! model, cache and sampler (the baseline TokenSwift is measured against).

use std::time::{Duration, Instant};

use burn::tensor::{DType, Tensor};

use crate::cache::KvCache;
use crate::error::{InferError, Result};
use crate::model::{AttentionMask, ForwardOutput, LogitRows, Model};
use crate::sampling::{SamplerRng, SamplingConfig, draw, penalty_window_tokens};

/// Prefill is run in chunks of this many tokens, bounding the attention-score temporaries.
pub const PREFILL_CHUNK: usize = 512;

/// Timings and counts of one generation.
#[derive(Debug, Clone, Default)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_time: Duration,
    pub decode_time: Duration,
    /// Number of base-model forward passes during decoding.
    pub forward_passes: usize,
    /// Whether generation stopped on an end-of-sequence token.
    pub stopped_at_eos: bool,
}

impl GenerationStats {
    pub fn prefill_tokens_per_second(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_time.as_secs_f64().max(1e-9)
    }
    pub fn decode_tokens_per_second(&self) -> f64 {
        self.generated_tokens as f64 / self.decode_time.as_secs_f64().max(1e-9)
    }
}

/// Copies a `[rows, vocab]` logits tensor to the host as f32.
pub fn logits_to_vec(logits: Tensor<2>) -> Vec<f32> {
    let logits = if logits.dtype() == DType::F32 {
        logits
    } else {
        logits.cast(DType::F32)
    };
    logits
        .into_data()
        .try_into_vec::<f32>()
        .expect("f32 logits convert to f32")
}

/// Checks that a prompt plus `extra` positions fits the model's context.
pub fn check_context(model: &Model, prompt_len: usize, extra: usize) -> Result<()> {
    let ctx = model.config().max_position_embeddings;
    if prompt_len == 0 {
        return Err(InferError::Context("the prompt is empty".into()));
    }
    if prompt_len + extra > ctx {
        return Err(InferError::Context(format!(
            "the prompt ({prompt_len} tokens) plus {extra} tokens to generate exceeds the model's context of {ctx} tokens"
        )));
    }
    Ok(())
}

/// Runs `tokens` through the model causally in chunks of [`PREFILL_CHUNK`], appending them to
/// `cache`, and hands every chunk's output to `each` (prefill, TokenSwift's prefill and the
/// training's frozen base pass all go through here).
pub fn forward_chunks(
    model: &Model,
    tokens: &[u32],
    cache: &mut KvCache,
    rows: LogitRows,
    each: &mut dyn FnMut(ForwardOutput, usize) -> Result<()>,
) -> Result<()> {
    for chunk in tokens.chunks(PREFILL_CHUNK) {
        let start = cache.len();
        let positions: Vec<usize> = (start..start + chunk.len()).collect();
        let out = model.forward(chunk, &positions, &AttentionMask::Causal, cache, rows)?;
        each(out, cache.len())?;
    }
    Ok(())
}

/// Runs `tokens` through the model in chunks, appending them to `cache`; returns the logits of the
/// last token.
pub fn prefill(
    model: &Model,
    tokens: &[u32],
    cache: &mut KvCache,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<f32>> {
    let mut last = None;
    forward_chunks(model, tokens, cache, LogitRows::Last, &mut |out, len| {
        last = out.logits;
        progress(len);
        Ok(())
    })?;
    Ok(logits_to_vec(
        last.expect("a non-empty prompt yields logits"),
    ))
}

/// Generates up to `max_new` tokens after `prompt` autoregressively; `on_token` receives each token
/// as it is produced.
pub fn generate_ar(
    model: &Model,
    prompt: &[u32],
    max_new: usize,
    sampling: &SamplingConfig,
    stop_at_eos: bool,
    on_token: &mut dyn FnMut(u32) -> Result<()>,
) -> Result<(Vec<u32>, GenerationStats)> {
    sampling.validate(model.config().vocab_size)?;
    check_context(model, prompt.len(), max_new)?;
    let mut cache = model.new_cache(prompt.len() + max_new);
    let mut stats = GenerationStats {
        prompt_tokens: prompt.len(),
        ..Default::default()
    };
    let t0 = Instant::now();
    let mut logits = prefill(model, prompt, &mut cache, &mut |_| {})?;
    stats.prefill_time = t0.elapsed();
    let mut rng = SamplerRng::new(sampling.seed);
    let mut history: Vec<u32> = prompt.to_vec();
    let mut generated = Vec::with_capacity(max_new);
    let t1 = Instant::now();
    let eos = &model.config().eos_token_ids;
    for step in 0..max_new {
        let window = penalty_window_tokens(&history, &[], sampling.penalty_window);
        let token = draw(sampling, &mut rng, &mut logits, &window);
        history.push(token);
        generated.push(token);
        on_token(token)?;
        if stop_at_eos && eos.contains(&token) {
            stats.stopped_at_eos = true;
            break;
        }
        if step + 1 == max_new {
            break;
        }
        let pos = cache.len();
        let out = model.forward(
            &[token],
            &[pos],
            &AttentionMask::Causal,
            &mut cache,
            LogitRows::None,
        )?;
        stats.forward_passes += 1;
        // The logits row into the same buffer every step (as TokenSwift's verify does).
        model.logits_of_rows_vec(&out.hidden, &[0], &mut logits);
    }
    stats.decode_time = t1.elapsed();
    stats.generated_tokens = generated.len();
    Ok((generated, stats))
}
