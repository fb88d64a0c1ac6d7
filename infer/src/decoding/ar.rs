//! Autoregressive decoding: chunked prefill, then one token per forward pass through the shared
//! model, cache and sampler (the baseline TokenSwift is measured against).

use std::time::{Duration, Instant};

use crate::error::Result;
use crate::model::prompt::{check_context, prefill};
use crate::model::{AttentionMask, LogitRows, Model};
use crate::sampling::{SamplerRng, SamplingConfig, draw, penalty_window_tokens};

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
