//! Running a prompt through the model: the context check and the chunked causal forward shared by
//! autoregressive prefill, TokenSwift's prefill and the training's frozen base pass.

use crate::error::{InferError, Result};
use crate::tensor::to_host_f32;

use super::cache::KvCache;
use super::transformer::{AttentionMask, ForwardOutput, LogitRows, Model};

/// Prefill is run in chunks of this many tokens, bounding the attention-score temporaries.
pub const PREFILL_CHUNK: usize = 512;

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
    Ok(to_host_f32(last.expect("a non-empty prompt yields logits")))
}
