//! Synthetic Llama-shaped checkpoints: random bf16 weights at a real model's shapes, written as
//! one safetensors file plus `config.json`, for memory and speed measurements without a download
//! (`infer/tests/memory.rs`, `scripts/gpu-check.sh` through the `synthetic_checkpoint` example).
//! The values are noise (magnitudes 2⁻⁹…2⁻⁵, random signs; norms at 1): the text is meaningless,
//! the cost of every pass is a real model's.

use std::io::Write;
use std::path::Path;

/// The shape of a Llama-architecture model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LlamaShape {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub vocab: usize,
    /// `lm_head` shares the embedding.
    pub tied: bool,
    pub max_positions: usize,
}

impl LlamaShape {
    /// Llama-3.1-8B's shapes (the paper's main model).
    pub const LLAMA31_8B: Self = Self {
        hidden: 4096,
        layers: 32,
        heads: 32,
        kv_heads: 8,
        head_dim: 128,
        ffn: 14336,
        vocab: 128256,
        tied: false,
        max_positions: 131072,
    };

    /// A 1B-parameter Llama (2 GB in bf16), for memory tests that must run on a laptop.
    pub const ONE_B: Self = Self {
        hidden: 2048,
        layers: 16,
        heads: 16,
        kv_heads: 4,
        head_dim: 128,
        ffn: 8192,
        vocab: 32000,
        tied: true,
        max_positions: 4096,
    };

    /// Every tensor's name and shape, in file order.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (h, d) = (self.hidden, self.head_dim);
        let mut t = vec![("model.embed_tokens.weight".to_string(), vec![self.vocab, h])];
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            for (n, shape) in [
                ("self_attn.q_proj.weight", vec![self.heads * d, h]),
                ("self_attn.k_proj.weight", vec![self.kv_heads * d, h]),
                ("self_attn.v_proj.weight", vec![self.kv_heads * d, h]),
                ("self_attn.o_proj.weight", vec![h, self.heads * d]),
                ("mlp.gate_proj.weight", vec![self.ffn, h]),
                ("mlp.up_proj.weight", vec![self.ffn, h]),
                ("mlp.down_proj.weight", vec![h, self.ffn]),
                ("input_layernorm.weight", vec![h]),
                ("post_attention_layernorm.weight", vec![h]),
            ] {
                t.push((format!("{p}.{n}"), shape));
            }
        }
        t.push(("model.norm.weight".to_string(), vec![h]));
        if !self.tied {
            t.push(("lm_head.weight".to_string(), vec![self.vocab, h]));
        }
        t
    }

    /// Writes `model.safetensors` (bf16, streamed in chunks: the writer never holds a tensor) and
    /// `config.json` into `dir`. Returns the number of parameters.
    pub fn write_bf16(&self, dir: &Path) -> std::io::Result<usize> {
        let ts = self.tensors();
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
        std::fs::create_dir_all(dir)?;
        let f = std::fs::File::create(dir.join("model.safetensors"))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 22, f);
        w.write_all(&(h.len() as u64).to_le_bytes())?;
        w.write_all(&h)?;
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
                w.write_all(&chunk)?;
                left -= now;
            }
        }
        w.flush()?;
        let config = serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden,
            "intermediate_size": self.ffn,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab,
            "max_position_embeddings": self.max_positions,
            "rms_norm_eps": 1e-5,
            "rope_theta": 500000.0,
            "tie_word_embeddings": self.tied,
            "eos_token_id": 2,
            "bos_token_id": 1,
            "torch_dtype": "bfloat16",
        });
        std::fs::write(dir.join("config.json"), config.to_string())?;
        Ok(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (A synthetic checkpoint loading and running is tested in `tests/tiny_models.rs`.)
    #[test]
    fn the_8b_shape_has_8b_parameters() {
        let params: usize = LlamaShape::LLAMA31_8B
            .tensors()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        assert_eq!(params, 8_030_261_248, "Llama-3.1-8B has 8.03B parameters");
    }
}
