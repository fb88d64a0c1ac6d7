//! Autoregressive decoding: chunked prefill, then one token per forward pass through the shared
//! model, cache and sampler (the baseline TokenSwift is measured against).

use std::time::{Duration, Instant};

use crate::error::Result;
use crate::model::cache::KvCache;
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
    /// Decode forward passes per second (one per token after the first, which comes from the
    /// prefill's logits); `None` when no pass ran.
    pub fn decode_passes_per_second(&self) -> Option<f64> {
        (self.forward_passes > 0)
            .then(|| self.forward_passes as f64 / self.decode_time.as_secs_f64().max(1e-9))
    }
}

/// An autoregressive generation in progress: prefill and the first draw in [`ArSession::new`]
/// (as [`super::session::Session::new`] does), then one forward pass and one draw per
/// [`ArSession::step`].
pub struct ArSession<'a> {
    model: &'a Model,
    sampling: SamplingConfig,
    cache: KvCache,
    rng: SamplerRng,
    /// Prompt and generated tokens.
    history: Vec<u32>,
    /// The logits row of the next draw (reused every step).
    logits: Vec<f32>,
    max_new: usize,
    stop_at_eos: bool,
    stats: GenerationStats,
    done: bool,
}

impl<'a> ArSession<'a> {
    /// Prefills `prompt` (timed in the stats) and draws the first token (if `max_new > 0`;
    /// available as [`ArSession::generated`]).
    pub fn new(
        model: &'a Model,
        prompt: &[u32],
        max_new: usize,
        sampling: &SamplingConfig,
        stop_at_eos: bool,
    ) -> Result<Self> {
        sampling.validate(model.config().vocab_size)?;
        check_context(model, prompt.len(), max_new)?;
        let mut cache = model.new_cache(prompt.len() + max_new);
        let t0 = Instant::now();
        let logits = prefill(model, prompt, &mut cache, &mut |_| {})?;
        let mut history = Vec::with_capacity(prompt.len() + max_new);
        history.extend_from_slice(prompt);
        let mut session = Self {
            model,
            sampling: sampling.clone(),
            cache,
            rng: SamplerRng::new(sampling.seed),
            history,
            logits,
            max_new,
            stop_at_eos,
            stats: GenerationStats {
                prompt_tokens: prompt.len(),
                prefill_time: t0.elapsed(),
                ..Default::default()
            },
            done: max_new == 0,
        };
        if !session.done {
            session.draw_next();
        }
        Ok(session)
    }

    /// Draws the next token from the current logits and appends it.
    fn draw_next(&mut self) -> u32 {
        let sampling = &self.sampling;
        let window = penalty_window_tokens(&self.history, &[], sampling.penalty_window);
        let token = draw(sampling, &mut self.rng, &mut self.logits, &window);
        self.history.push(token);
        let generated = self.history.len() - self.stats.prompt_tokens;
        self.stats.generated_tokens = generated;
        if self.stop_at_eos && self.model.config().eos_token_ids.contains(&token) {
            self.stats.stopped_at_eos = true;
            self.done = true;
        }
        if generated == self.max_new {
            self.done = true;
        }
        token
    }

    /// Runs the forward pass of the last token, then draws the next one. `None` once finished.
    pub fn step(&mut self) -> Result<Option<u32>> {
        if self.done {
            return Ok(None);
        }
        let last = *self.history.last().expect("the first token was drawn");
        let pos = self.cache.len();
        let out = self.model.forward(
            &[last],
            &[pos],
            &AttentionMask::Causal,
            &mut self.cache,
            LogitRows::None,
        )?;
        self.stats.forward_passes += 1;
        // The logits row into the same buffer every step (as TokenSwift's verify does).
        self.model
            .logits_of_rows_vec(&out.hidden, &[0], &mut self.logits);
        Ok(Some(self.draw_next()))
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The generated tokens so far.
    pub fn generated(&self) -> &[u32] {
        &self.history[self.stats.prompt_tokens..]
    }

    /// The statistics so far (`decode_time` is the caller's: see [`generate_ar`]).
    pub fn stats(&self) -> &GenerationStats {
        &self.stats
    }

    /// Ends the session: the generated tokens and the statistics, with `decode_time` as given.
    pub fn finish(mut self, decode_time: Duration) -> (Vec<u32>, GenerationStats) {
        self.stats.decode_time = decode_time;
        let generated = self.history.split_off(self.stats.prompt_tokens);
        (generated, self.stats)
    }
}

/// Generates up to `max_new` tokens after `prompt` autoregressively; `on_token` receives each token
/// as it is produced. The decode time runs from after the first draw (as TokenSwift's does).
pub fn generate_ar(
    model: &Model,
    prompt: &[u32],
    max_new: usize,
    sampling: &SamplingConfig,
    stop_at_eos: bool,
    on_token: &mut dyn FnMut(u32) -> Result<()>,
) -> Result<(Vec<u32>, GenerationStats)> {
    let mut session = ArSession::new(model, prompt, max_new, sampling, stop_at_eos)?;
    let t1 = Instant::now();
    if let Some(&first) = session.generated().first() {
        on_token(first)?;
    }
    while let Some(token) = session.step()? {
        on_token(token)?;
    }
    Ok(session.finish(t1.elapsed()))
}
