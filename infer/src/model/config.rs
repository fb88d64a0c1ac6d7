//! Model configuration in two layers: [`HfConfig`] mirrors a Hugging Face `config.json`, and
//! [`ModelConfig`] is the validated form the model is built from.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{InferError, Result};

/// The subset of a Hugging Face `config.json` that Llama and Qwen2 models need.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct HfConfig {
    pub model_type: Option<String>,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<serde_json::Value>,
    pub rope_parameters: Option<serde_json::Value>,
    pub attention_bias: Option<bool>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    pub hidden_act: Option<String>,
    pub bos_token_id: Option<serde_json::Value>,
    pub eos_token_id: Option<serde_json::Value>,
}

fn default_eps() -> f64 {
    1e-6
}

/// The model family, which decides the projection biases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Architecture {
    /// Llama 2, Llama 3.x, SmolLM2: no q/k/v bias.
    Llama,
    /// Qwen2 / Qwen2.5: bias on q, k and v.
    Qwen2,
}

/// Rotary position embedding frequency scaling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Position interpolation: every frequency divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1's piecewise scaling of low/medium/high frequencies.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
    /// YaRN: ramped interpolation between extrapolated and interpolated frequencies, plus an
    /// attention temperature folded into cos/sin.
    Yarn {
        factor: f64,
        original_max_position_embeddings: usize,
        beta_fast: f64,
        beta_slow: f64,
        attention_factor: f64,
        truncate: bool,
    },
}

/// Validated model configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Model family.
    pub architecture: Architecture,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_layers: usize,
    /// Number of query heads.
    pub num_heads: usize,
    /// Number of key/value heads (equal to `num_heads` for MHA, fewer for GQA).
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Vocabulary size (rows of the embedding and of `lm_head`).
    pub vocab_size: usize,
    /// Longest sequence (prompt + generation + one verify block) the positions may reach.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE frequency scaling.
    pub rope_scaling: RopeScaling,
    /// Whether q/k/v projections carry a bias.
    pub attention_bias: bool,
    /// Whether `lm_head` shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// End-of-sequence token ids.
    pub eos_token_ids: Vec<u32>,
}

fn ids(v: &Option<serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|x| vec![x as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64())
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    }
}

impl ModelConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| InferError::io(path, e))?;
        Self::from_json(path, &text)
    }

    /// Parses and validates the text of a `config.json`; `path` only names it in errors.
    pub fn from_json(path: &Path, text: &str) -> Result<Self> {
        let err = |reason: String| InferError::Config {
            path: path.to_path_buf(),
            reason,
        };
        let raw: serde_json::Value =
            serde_json::from_str(text).map_err(|e| err(format!("not valid JSON ({e})")))?;
        let model_type = raw
            .get("model_type")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let architecture = match model_type.as_str() {
            "llama" | "mistral" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            _ => {
                return Err(InferError::UnsupportedArchitecture {
                    path: path.to_path_buf(),
                    found: model_type,
                });
            }
        };
        let hf: HfConfig = serde_json::from_value(raw).map_err(|e| err(e.to_string()))?;
        hf.validate(path, architecture)
    }

    /// A tiny random-weight Llama used by unit tests (GQA, 2 layers, vocab 64).
    pub fn tiny() -> Self {
        Self {
            architecture: Architecture::Llama,
            hidden_size: 32,
            intermediate_size: 64,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 8,
            vocab_size: 64,
            max_position_embeddings: 512,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: RopeScaling::None,
            attention_bias: false,
            tie_word_embeddings: true,
            eos_token_ids: vec![1],
        }
    }

    /// Number of query heads sharing one key/value head.
    pub fn group_size(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }
}

impl HfConfig {
    fn validate(self, path: &Path, architecture: Architecture) -> Result<ModelConfig> {
        let err = |reason: String| InferError::Config {
            path: path.to_path_buf(),
            reason,
        };
        let num_kv_heads = self.num_key_value_heads.unwrap_or(self.num_attention_heads);
        if self.num_attention_heads == 0
            || num_kv_heads == 0
            || !self.num_attention_heads.is_multiple_of(num_kv_heads)
        {
            return Err(err(format!(
                "num_attention_heads ({}) must be a positive multiple of num_key_value_heads ({num_kv_heads})",
                self.num_attention_heads
            )));
        }
        let head_dim = self
            .head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1));
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(err(format!(
                "head_dim {head_dim} must be even and positive"
            )));
        }
        // Bounds far above any real model, so that no size computed from them overflows and
        // nothing is allocated from a value the checkpoint cannot back.
        for (name, v, max) in [
            ("hidden_size", self.hidden_size, 1 << 20),
            ("intermediate_size", self.intermediate_size, 1 << 22),
            ("num_hidden_layers", self.num_hidden_layers, 1 << 12),
            ("num_attention_heads", self.num_attention_heads, 1 << 12),
            ("head_dim", head_dim, 1 << 12),
            ("vocab_size", self.vocab_size, 1 << 24),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                1 << 26,
            ),
        ] {
            if v == 0 {
                return Err(err(format!("{name} must be positive")));
            }
            if v > max {
                return Err(err(format!("{name} {v} is beyond the supported {max}")));
            }
        }
        if let Some(act) = &self.hidden_act
            && act != "silu"
        {
            return Err(err(format!(
                "hidden_act `{act}` is not supported (only silu)"
            )));
        }
        // transformers >= 5 writes `rope_parameters` (with `rope_theta` inside) instead of
        // `rope_theta` + `rope_scaling`; both layouts are read.
        let rope_theta = self
            .rope_parameters
            .as_ref()
            .and_then(|p| p.get("rope_theta"))
            .and_then(|t| t.as_f64())
            .or(self.rope_theta)
            .unwrap_or(10000.0);
        let scaling = self.rope_scaling.as_ref().or(self.rope_parameters.as_ref());
        let rope_scaling =
            parse_rope_scaling(scaling, self.max_position_embeddings).map_err(err)?;
        Ok(ModelConfig {
            architecture,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            num_kv_heads,
            head_dim,
            vocab_size: self.vocab_size,
            max_position_embeddings: self.max_position_embeddings,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta,
            rope_scaling,
            attention_bias: self
                .attention_bias
                .unwrap_or(architecture == Architecture::Qwen2),
            tie_word_embeddings: self.tie_word_embeddings,
            eos_token_ids: ids(&self.eos_token_id),
        })
    }
}

fn parse_rope_scaling(
    v: Option<&serde_json::Value>,
    max_pos: usize,
) -> std::result::Result<RopeScaling, String> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(RopeScaling::None);
    };
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(|t| t.as_str())
        .unwrap_or("default");
    let f = |key: &str| v.get(key).and_then(|x| x.as_f64());
    let need = |key: &str| f(key).ok_or_else(|| format!("rope_scaling `{kind}` needs `{key}`"));
    Ok(match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: need("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: need("factor")?,
            low_freq_factor: need("low_freq_factor")?,
            high_freq_factor: need("high_freq_factor")?,
            original_max_position_embeddings: need("original_max_position_embeddings")? as usize,
        },
        "yarn" => {
            let original = f("original_max_position_embeddings")
                .map(|o| o as usize)
                .unwrap_or(max_pos);
            // As transformers: a missing factor is the ratio of the context lengths.
            let factor = f("factor").unwrap_or(max_pos as f64 / original as f64);
            let mscale = |scale: f64, m: f64| {
                if scale <= 1.0 {
                    1.0
                } else {
                    0.1 * m * scale.ln() + 1.0
                }
            };
            let attention_factor = match (f("attention_factor"), f("mscale"), f("mscale_all_dim")) {
                (Some(a), _, _) => a,
                (None, Some(m), Some(ma)) if m != 0.0 && ma != 0.0 => {
                    mscale(factor, m) / mscale(factor, ma)
                }
                _ => mscale(factor, 1.0),
            };
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: original,
                beta_fast: f("beta_fast").unwrap_or(32.0),
                beta_slow: f("beta_slow").unwrap_or(1.0),
                attention_factor,
                truncate: v.get("truncate").and_then(|t| t.as_bool()).unwrap_or(true),
            }
        }
        other => {
            return Err(format!(
                "rope_scaling type `{other}` is not supported (default, linear, llama3, yarn)"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_model_type_names_the_supported_ones() {
        let e = ModelConfig::from_json(Path::new("c.json"), r#"{"model_type":"gpt_neox"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("gpt_neox") && e.contains("llama") && e.contains("qwen2"),
            "{e}"
        );
    }

    #[test]
    fn malformed_json_is_one_sentence() {
        let e = ModelConfig::from_json(Path::new("c.json"), "{")
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.json") && e.contains("not valid JSON"), "{e}");
    }

    #[test]
    fn qwen2_gets_bias_and_llama3_scaling_parses() {
        let j = r#"{"model_type":"qwen2","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
            "num_attention_heads":4,"num_key_value_heads":2,"vocab_size":100,"max_position_embeddings":256}"#;
        let c = ModelConfig::from_json(Path::new("c.json"), j).unwrap();
        assert!(c.attention_bias);
        assert_eq!(c.head_dim, 16);
        let j = r#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
            "num_attention_heads":4,"vocab_size":100,"max_position_embeddings":256,
            "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
            "original_max_position_embeddings":64}}"#;
        let c = ModelConfig::from_json(Path::new("c.json"), j).unwrap();
        assert!(matches!(c.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
        assert_eq!(c.num_kv_heads, 4);
    }
}
