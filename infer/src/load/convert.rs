//! Converts a llama.cpp GGUF checkpoint of a Llama-architecture model (the embedded default model,
//! SmolLM2-135M-Instruct) into a Hugging Face style directory: `config.json`, `model.safetensors`
//! (f32), `tokenizer.json`, `tokenizer_config.json`.
//!
//! Two llama.cpp export conventions are undone here:
//! - Q and K projection rows are permuted for llama.cpp's interleaved RoPE; HF models use
//!   rotate-half RoPE, so the permutation is inverted (left in place, perplexity rises ~10×);
//! - GGUF dims `[ne0, ne1]` are the array shape `(ne1, ne0)` — already the HF `[out, in]` layout.

use std::path::Path;

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

use crate::error::{InferError, Result};
use crate::host::quant::BlockFormat;
use crate::load::gguf::GgmlType;
use crate::load::gguf::{GgufFile, GgufValue};
use crate::load::weights::{
    BLOCKS_FILE, BlockTensor, write_block_safetensors, write_f32_safetensors,
};

/// Inverts llama.cpp's Q/K row permutation: `w.reshape(n_head, out/n_head/2, 2, in)
/// .swap_axes(1, 2).reshape(out, in)`.
pub fn unpermute_qk(w: &[f32], out: usize, inp: usize, n_head: usize) -> Vec<f32> {
    unpermute_rows(w, out, inp, n_head)
}

/// [`unpermute_qk`] over rows of any element type (rows of GGUF blocks: `inp` = bytes per row).
pub fn unpermute_rows<T: Copy + Default>(w: &[T], out: usize, inp: usize, n_head: usize) -> Vec<T> {
    let half = out / n_head / 2;
    let mut res = vec![T::default(); w.len()];
    for h in 0..n_head {
        for i in 0..half {
            for two in 0..2 {
                // source row: (h, i, two) in [n_head, half, 2]; destination: (h, two, i) in [n_head, 2, half]
                let src = (h * half + i) * 2 + two;
                let dst = (h * 2 + two) * half + i;
                res[dst * inp..(dst + 1) * inp].copy_from_slice(&w[src * inp..(src + 1) * inp]);
            }
        }
    }
    res
}

/// llama.cpp's export permutation of Q/K rows (the inverse of [`unpermute_qk`]):
/// `w.reshape(n_head, 2, out/n_head/2, in).swap_axes(1, 2).reshape(out, in)`. Kept for tests that
/// show what a checkpoint left permuted does.
pub fn permute_qk(w: &[f32], out: usize, inp: usize, n_head: usize) -> Vec<f32> {
    let half = out / n_head / 2;
    let mut res = vec![0f32; w.len()];
    for h in 0..n_head {
        for two in 0..2 {
            for i in 0..half {
                let src = (h * 2 + two) * half + i;
                let dst = (h * half + i) * 2 + two;
                res[dst * inp..(dst + 1) * inp].copy_from_slice(&w[src * inp..(src + 1) * inp]);
            }
        }
    }
    res
}

fn gguf_err(g: &GgufFile, reason: impl Into<String>) -> InferError {
    InferError::Gguf {
        path: g.path().to_path_buf(),
        reason: reason.into(),
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).map_err(|e| InferError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| InferError::io(path, e))
}

/// Writes the HF checkpoint for `gguf` into `out_dir` (created if needed). Files are written under
/// temporary names and renamed, `config.json` last, so an interrupted conversion is never mistaken
/// for a finished one.
pub fn convert_gguf_to_hf(gguf: &GgufFile, out_dir: &Path) -> Result<()> {
    let arch = gguf
        .meta("general.architecture")?
        .as_str()
        .unwrap_or_default()
        .to_string();
    if arch != "llama" {
        return Err(gguf_err(
            gguf,
            format!(
                "architecture `{arch}` cannot be converted; only `llama` GGUF files are supported"
            ),
        ));
    }
    std::fs::create_dir_all(out_dir).map_err(|e| InferError::io(out_dir, e))?;
    let k = |s: &str| format!("llama.{s}");
    let hidden = gguf.meta_u64(&k("embedding_length"))? as usize;
    let n_layers = gguf.meta_u64(&k("block_count"))? as usize;
    let n_head = gguf.meta_u64(&k("attention.head_count"))? as usize;
    let n_kv = gguf.meta_u64(&k("attention.head_count_kv"))? as usize;
    let ffn = gguf.meta_u64(&k("feed_forward_length"))? as usize;
    let ctx = gguf.meta_u64(&k("context_length"))? as usize;
    let theta = gguf.meta_f64(&k("rope.freq_base")).unwrap_or(10000.0);
    let eps = gguf.meta_f64(&k("attention.layer_norm_rms_epsilon"))?;
    if n_head == 0 || n_kv == 0 || !hidden.is_multiple_of(n_head) || !n_head.is_multiple_of(n_kv) {
        return Err(gguf_err(
            gguf,
            format!("inconsistent head counts: hidden {hidden}, heads {n_head}, kv heads {n_kv}"),
        ));
    }
    let head_dim = hidden / n_head;

    // Tokenizer first: the vocabulary size comes from it.
    let tokens: Vec<String> = gguf
        .meta("tokenizer.ggml.tokens")?
        .as_array()
        .ok_or_else(|| gguf_err(gguf, "tokenizer.ggml.tokens is not an array"))?
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect::<Option<_>>()
        .ok_or_else(|| gguf_err(gguf, "tokenizer.ggml.tokens holds a non-string"))?;
    let vocab_size = tokens.len();
    let bos = gguf.meta_u64("tokenizer.ggml.bos_token_id").ok();
    let eos = gguf.meta_u64("tokenizer.ggml.eos_token_id").ok();
    let tokenizer = build_tokenizer(gguf, &tokens)?;
    let tok_json = tokenizer
        .to_string(true)
        .map_err(|e| gguf_err(gguf, format!("cannot serialise the tokenizer: {e}")))?;
    write_atomic(&out_dir.join("tokenizer.json"), tok_json.as_bytes())?;
    let name_of = |id: Option<u64>| id.and_then(|i| tokens.get(i as usize)).cloned();
    let chat_template = gguf
        .metadata
        .get("tokenizer.chat_template")
        .and_then(GgufValue::as_str)
        .map(str::to_string);
    let tok_cfg = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": name_of(bos),
        "eos_token": name_of(eos),
        "unk_token": tokens.first(),
        "pad_token": name_of(eos),
        "add_bos_token": false,
        "add_eos_token": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": ctx,
        "chat_template": chat_template,
    });
    write_atomic(
        &out_dir.join("tokenizer_config.json"),
        serde_json::to_string_pretty(&tok_cfg).unwrap().as_bytes(),
    )?;

    // Weights: f32 for every reader, and the quantised matrices once more as their own GGUF
    // blocks (`model.blocks.safetensors`) for the CPU fast path, which reads them at their size.
    let mut named: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut blocks: Vec<BlockTensor> = Vec::new();
    let mut take =
        |gguf_name: &str, hf_name: String, unpermute_heads: Option<usize>| -> Result<()> {
            let info = gguf
                .tensor(gguf_name)
                .ok_or_else(|| gguf_err(gguf, format!("tensor `{gguf_name}` is missing")))?;
            let shape = info.shape();
            let mut data = gguf.dequantize(info);
            if let Some(h) = unpermute_heads {
                if shape.len() != 2 || shape[0] % (2 * h) != 0 {
                    return Err(gguf_err(
                        gguf,
                        format!("tensor `{gguf_name}` has shape {shape:?}, not [heads*dim, in]"),
                    ));
                }
                data = unpermute_qk(&data, shape[0], shape[1], h);
            }
            let format = match info.ggml_type {
                GgmlType::Q4_0 => Some(BlockFormat::Q4_0),
                GgmlType::Q4_1 => Some(BlockFormat::Q4_1),
                GgmlType::Q8_0 => Some(BlockFormat::Q8_0),
                _ => None,
            };
            if let Some(format) = format.filter(|_| shape.len() == 2) {
                let raw = gguf.raw(info);
                let row_bytes = raw.len() / shape[0];
                let bytes = match unpermute_heads {
                    Some(h) => unpermute_rows(raw, shape[0], row_bytes, h),
                    None => raw.to_vec(),
                };
                blocks.push(BlockTensor {
                    name: hf_name.clone(),
                    format,
                    rows: shape[0],
                    cols: shape[1],
                    bytes,
                });
            }
            named.push((hf_name, shape, data));
            Ok(())
        };
    take(
        "token_embd.weight",
        "model.embed_tokens.weight".into(),
        None,
    )?;
    for i in 0..n_layers {
        let p = format!("model.layers.{i}");
        let b = format!("blk.{i}");
        take(
            &format!("{b}.attn_norm.weight"),
            format!("{p}.input_layernorm.weight"),
            None,
        )?;
        take(
            &format!("{b}.attn_q.weight"),
            format!("{p}.self_attn.q_proj.weight"),
            Some(n_head),
        )?;
        take(
            &format!("{b}.attn_k.weight"),
            format!("{p}.self_attn.k_proj.weight"),
            Some(n_kv),
        )?;
        take(
            &format!("{b}.attn_v.weight"),
            format!("{p}.self_attn.v_proj.weight"),
            None,
        )?;
        take(
            &format!("{b}.attn_output.weight"),
            format!("{p}.self_attn.o_proj.weight"),
            None,
        )?;
        take(
            &format!("{b}.ffn_norm.weight"),
            format!("{p}.post_attention_layernorm.weight"),
            None,
        )?;
        take(
            &format!("{b}.ffn_gate.weight"),
            format!("{p}.mlp.gate_proj.weight"),
            None,
        )?;
        take(
            &format!("{b}.ffn_up.weight"),
            format!("{p}.mlp.up_proj.weight"),
            None,
        )?;
        take(
            &format!("{b}.ffn_down.weight"),
            format!("{p}.mlp.down_proj.weight"),
            None,
        )?;
    }
    take("output_norm.weight", "model.norm.weight".into(), None)?;
    let tied = gguf.tensor("output.weight").is_none();
    if !tied {
        take("output.weight", "lm_head.weight".into(), None)?;
    }
    let embd_rows = named[0].1[0];
    if embd_rows != vocab_size {
        return Err(gguf_err(
            gguf,
            format!("token_embd has {embd_rows} rows but the vocabulary has {vocab_size} tokens"),
        ));
    }
    write_f32_safetensors(&out_dir.join("model.safetensors"), &named)?;
    write_block_safetensors(&out_dir.join(BLOCKS_FILE), &blocks)?;

    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": ffn,
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": ctx,
        "rms_norm_eps": eps,
        "rope_theta": theta,
        "rope_scaling": null,
        "attention_bias": false,
        "mlp_bias": false,
        "tie_word_embeddings": tied,
        "vocab_size": vocab_size,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "torch_dtype": "float32",
    });
    write_atomic(
        &out_dir.join("config.json"),
        serde_json::to_string_pretty(&config).unwrap().as_bytes(),
    )
}

/// Byte-level BPE from the GGUF vocabulary and merges, with SmolLM2's pre-tokenizer (digits split
/// one by one, then the GPT-2 byte-level regex) and its control tokens as special tokens.
fn build_tokenizer(gguf: &GgufFile, tokens: &[String]) -> Result<Tokenizer> {
    let model_kind = gguf
        .metadata
        .get("tokenizer.ggml.model")
        .and_then(GgufValue::as_str)
        .unwrap_or("");
    if model_kind != "gpt2" {
        return Err(gguf_err(
            gguf,
            format!(
                "tokenizer model `{model_kind}` is not supported (only byte-level BPE, `gpt2`)"
            ),
        ));
    }
    let merges: Vec<(String, String)> = gguf
        .meta("tokenizer.ggml.merges")?
        .as_array()
        .ok_or_else(|| gguf_err(gguf, "tokenizer.ggml.merges is not an array"))?
        .iter()
        .map(|m| {
            m.as_str()
                .and_then(|s| s.split_once(' '))
                .map(|(a, b)| (a.to_string(), b.to_string()))
        })
        .collect::<Option<_>>()
        .ok_or_else(|| gguf_err(gguf, "a merge is not of the form `left right`"))?;
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    if vocab.len() != tokens.len() {
        return Err(gguf_err(gguf, "the vocabulary holds duplicate tokens"));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .unk_token(tokens[0].clone())
        .build()
        .map_err(|e| gguf_err(gguf, format!("cannot build the BPE model: {e}")))?;
    let types: Vec<i64> = gguf
        .metadata
        .get("tokenizer.ggml.token_type")
        .and_then(GgufValue::as_array)
        .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(1.0) as i64).collect())
        .unwrap_or_default();
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer
        .with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
        ]))))
        .with_decoder(Some(ByteLevel::default()))
        .with_post_processor(Some(ByteLevel::new(true, false, true)));
    // Control tokens (type 3) are special: never split, skipped when decoding with skip_special.
    let specials: Vec<AddedToken> = types
        .iter()
        .enumerate()
        .filter(|&(_, &t)| t == 3)
        .map(|(i, _)| AddedToken::from(tokens[i].clone(), true))
        .collect();
    tokenizer.add_special_tokens(&specials);
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        let (out, inp, heads) = (12, 3, 3);
        let w: Vec<f32> = (0..out * inp).map(|x| x as f32).collect();
        assert_eq!(
            unpermute_qk(&permute_qk(&w, out, inp, heads), out, inp, heads),
            w
        );
        // By hand for one head of dim 4: exported rows [0, 2, 1, 3] come back as [0, 1, 2, 3].
        let exported = [0., 2., 1., 3.];
        assert_eq!(unpermute_qk(&exported, 4, 1, 1), vec![0., 1., 2., 3.]);
    }
}
