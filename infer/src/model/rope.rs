//! Rotary position embeddings (rotate-half convention, as Hugging Face Llama/Qwen2), with the
//! default, linear, Llama-3.1 and YaRN frequency scalings. cos/sin are computed for the explicit
//! position ids of each forward pass, so tree verification can give nodes depth-based positions.

use burn::tensor::{Device, Tensor, TensorData};

use crate::model::config::{ModelConfig, RopeScaling};

/// Per-frequency inverse wavelengths and the cos/sin multiplier.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    attention_factor: f32,
    head_dim: usize,
}

impl Rope {
    pub fn new(config: &ModelConfig) -> Self {
        let dim = config.head_dim;
        let base = config.rope_theta as f32;
        // As transformers: base ** (arange(0, dim, 2) / dim) in f32.
        let default: Vec<f32> = (0..dim / 2)
            .map(|i| 1.0 / base.powf((2 * i) as f32 / dim as f32))
            .collect();
        let mut attention_factor = 1.0f32;
        let inv_freq = match &config.rope_scaling {
            RopeScaling::None => default,
            RopeScaling::Linear { factor } => default.iter().map(|f| f / *factor as f32).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let (factor, low, high) = (
                    *factor as f32,
                    *low_freq_factor as f32,
                    *high_freq_factor as f32,
                );
                let old = *original_max_position_embeddings as f32;
                let low_wavelen = old / low;
                let high_wavelen = old / high;
                default
                    .iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen > low_wavelen {
                            f / factor
                        } else if wavelen < high_wavelen {
                            f
                        } else {
                            let smooth = (old / wavelen - low) / (high - low);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                beta_fast,
                beta_slow,
                attention_factor: af,
                truncate,
            } => {
                attention_factor = *af as f32;
                let d = dim as f64;
                let b = config.rope_theta;
                let orig = *original_max_position_embeddings as f64;
                let correction = |rot: f64| {
                    (d * (orig / (rot * 2.0 * std::f64::consts::PI)).ln()) / (2.0 * b.ln())
                };
                let (mut low, mut high) = (correction(*beta_fast), correction(*beta_slow));
                if *truncate {
                    low = low.floor();
                    high = high.ceil();
                }
                let low = low.max(0.0) as f32;
                let mut high = high.min(d - 1.0) as f32;
                if low == high {
                    high += 0.001;
                }
                default
                    .iter()
                    .enumerate()
                    .map(|(i, &extrapolation)| {
                        let interpolation = extrapolation / *factor as f32;
                        let ramp = ((i as f32 - low) / (high - low)).clamp(0.0, 1.0);
                        let extrapolation_share = 1.0 - ramp;
                        interpolation * (1.0 - extrapolation_share)
                            + extrapolation * extrapolation_share
                    })
                    .collect()
            }
        };
        Self {
            inv_freq,
            attention_factor,
            head_dim: dim,
        }
    }

    /// cos and sin for `positions`, each `[q, head_dim]` (the half-width table repeated twice).
    pub fn cos_sin(&self, positions: &[usize], device: &Device) -> (Tensor<2>, Tensor<2>) {
        let q = positions.len();
        let (cos, sin) = self.cos_sin_values(positions);
        (
            Tensor::from_data(TensorData::new(cos, [q, self.head_dim]), device),
            Tensor::from_data(TensorData::new(sin, [q, self.head_dim]), device),
        )
    }

    /// The values of [`Rope::cos_sin`] on the host, row-major `[q, head_dim]`.
    pub fn cos_sin_values(&self, positions: &[usize]) -> (Vec<f32>, Vec<f32>) {
        let q = positions.len();
        let mut cos = Vec::with_capacity(q * self.head_dim);
        let mut sin = Vec::with_capacity(q * self.head_dim);
        for &p in positions {
            for _ in 0..2 {
                for &f in &self.inv_freq {
                    let angle = p as f32 * f;
                    cos.push(angle.cos() * self.attention_factor);
                    sin.push(angle.sin() * self.attention_factor);
                }
            }
        }
        (cos, sin)
    }
}

/// Applies RoPE to `x` of shape `[heads, q, head_dim]` with `cos`/`sin` of shape `[q, head_dim]`.
pub fn apply_rope(x: Tensor<3>, cos: &Tensor<2>, sin: &Tensor<2>) -> Tensor<3> {
    let [_, _, d] = x.dims();
    let half = d / 2;
    let rotated = Tensor::cat(
        vec![
            x.clone().narrow(2, half, half).neg(),
            x.clone().narrow(2, 0, half),
        ],
        2,
    );
    x * cos.clone().unsqueeze_dim(0) + rotated * sin.clone().unsqueeze_dim(0)
}
