//! A model larger than its f32 form could afford loads at about its quantised size.
//!
//! A synthetic 1B-parameter Llama-shaped checkpoint in bf16 (2.0 GB on disk, 4.1 GB as f32) is
//! loaded with `--weights q8_0` semantics ([`WeightsChoice::Quantise`]): each matrix is read,
//! quantised and its file pages handed back, so the peak resident memory of the load stays below
//! the bf16 file's own size. Control: the same checkpoint loaded as f32 peaks above the f32 size
//! (so the measurement does see the weights). Ignored by default (it writes 2 GB and takes about a
//! minute): `cargo test --release -p tokenswift-infer --test memory -- --ignored --nocapture`.
//! Linux only (it reads and resets the peak in /proc/self).

use std::io::Write;
use std::path::Path;

use burn::tensor::{DType, Device};
use tokenswift_infer::host::quant::BlockFormat;
use tokenswift_infer::model::{AttentionMask, LoadOptions, LogitRows, Model, WeightsChoice};
use tokenswift_infer::tensor::to_host_f32;

const HIDDEN: usize = 2048;
const LAYERS: usize = 16;
const HEADS: usize = 16;
const KV_HEADS: usize = 4;
const HEAD_DIM: usize = 128;
const FFN: usize = 8192;
const VOCAB: usize = 32000;

fn tensors() -> Vec<(String, Vec<usize>)> {
    let mut t = vec![("model.embed_tokens.weight".to_string(), vec![VOCAB, HIDDEN])];
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        for (n, shape) in [
            ("self_attn.q_proj.weight", vec![HEADS * HEAD_DIM, HIDDEN]),
            ("self_attn.k_proj.weight", vec![KV_HEADS * HEAD_DIM, HIDDEN]),
            ("self_attn.v_proj.weight", vec![KV_HEADS * HEAD_DIM, HIDDEN]),
            ("self_attn.o_proj.weight", vec![HIDDEN, HEADS * HEAD_DIM]),
            ("mlp.gate_proj.weight", vec![FFN, HIDDEN]),
            ("mlp.up_proj.weight", vec![FFN, HIDDEN]),
            ("mlp.down_proj.weight", vec![HIDDEN, FFN]),
            ("input_layernorm.weight", vec![HIDDEN]),
            ("post_attention_layernorm.weight", vec![HIDDEN]),
        ] {
            t.push((format!("{p}.{n}"), shape));
        }
    }
    t.push(("model.norm.weight".to_string(), vec![HIDDEN]));
    t
}

/// Writes the checkpoint in streamed chunks (the writer never holds a tensor): bf16 values of
/// magnitude 2⁻⁹…2⁻⁵ with random signs, norms at 1. Returns the number of parameters.
fn write_checkpoint(dir: &Path) -> usize {
    let ts = tensors();
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in &ts {
        let bytes = shape.iter().product::<usize>() * 2;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut h = serde_json::Value::Object(header).to_string().into_bytes();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let f = std::fs::File::create(dir.join("model.safetensors")).unwrap();
    let mut w = std::io::BufWriter::with_capacity(1 << 22, f);
    w.write_all(&(h.len() as u64).to_le_bytes()).unwrap();
    w.write_all(&h).unwrap();
    let mut state = 0x2545f4914f6cdd1du64;
    let mut chunk = Vec::with_capacity(1 << 20);
    let mut params = 0;
    for (name, shape) in &ts {
        let n: usize = shape.iter().product();
        params += n;
        let norm = name.ends_with("norm.weight");
        let mut left = n;
        while left > 0 {
            let now = left.min(1 << 19);
            chunk.clear();
            for _ in 0..now {
                let bits: u16 = if norm {
                    0x3f80 // 1.0
                } else {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let sign = ((state >> 63) as u16) << 15;
                    let exp = 118 + ((state >> 40) % 5) as u16;
                    sign | (exp << 7) | ((state >> 20) as u16 & 0x7f)
                };
                chunk.extend_from_slice(&bits.to_le_bytes());
            }
            w.write_all(&chunk).unwrap();
            left -= now;
        }
    }
    w.flush().unwrap();
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "vocab_size": VOCAB,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": true,
        "eos_token_id": 2,
        "bos_token_id": 1,
        "torch_dtype": "bfloat16",
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    params
}

fn status_kib(field: &str) -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Peak resident memory (bytes) while loading `dir` with `weights`, the current resident memory
/// before the load subtracted; and the loaded model.
fn peak_load(dir: &Path, weights: WeightsChoice) -> (usize, Model) {
    // Resets VmHWM to the current resident size (Linux ≥ 4.0).
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = status_kib("VmRSS:");
    let opts = LoadOptions {
        weights,
        ..Default::default()
    };
    let model = Model::load_with(dir, &Device::flex(), DType::F32, opts).unwrap();
    let peak = status_kib("VmHWM:");
    ((peak - before) * 1024, model)
}

#[test]
#[ignore = "writes a 2 GB checkpoint; run with --ignored"]
fn a_bf16_checkpoint_loads_as_q8_0_below_its_file_size() {
    let tmp = tempfile::tempdir().unwrap();
    let params = write_checkpoint(tmp.path());
    let file = std::fs::metadata(tmp.path().join("model.safetensors"))
        .unwrap()
        .len() as usize;
    let f32_bytes = params * 4;
    let gb = |b: usize| b as f64 / 1e9;

    let (peak_q8, model) = peak_load(tmp.path(), WeightsChoice::Quantise(BlockFormat::Q8_0));
    assert_eq!(model.weights_format(), "q8_0");
    // It runs: one pass over a few tokens gives finite logits.
    let mut cache = model.new_cache(8);
    let out = model
        .forward(
            &[1, 5, 9, 200],
            &[0, 1, 2, 3],
            &AttentionMask::Causal,
            &mut cache,
            LogitRows::Last,
        )
        .unwrap();
    assert!(
        to_host_f32(out.logits.unwrap())
            .iter()
            .all(|v| v.is_finite())
    );
    drop((cache, model));

    let (peak_f32, model) = peak_load(tmp.path(), WeightsChoice::F32);
    assert_eq!(model.weights_format(), "f32");
    drop(model);
    println!(
        "{:.2}B parameters: bf16 file {:.2} GB, f32 {:.2} GB; peak resident while loading: q8_0 {:.2} GB, f32 {:.2} GB",
        params as f64 / 1e9,
        gb(file),
        gb(f32_bytes),
        gb(peak_q8),
        gb(peak_f32)
    );
    assert!(
        peak_q8 < file,
        "loading as q8_0 peaked at {:.2} GB, above the {:.2} GB bf16 file",
        gb(peak_q8),
        gb(file)
    );
    assert!(
        peak_f32 > f32_bytes,
        "control: loading as f32 peaked at {:.2} GB, below the {:.2} GB of f32 weights",
        gb(peak_f32),
        gb(f32_bytes)
    );
}
