//! The decoder-only transformer shared by Llama (2, 3.1, YaRN, SmolLM2) and Qwen2/2.5:
//! RMSNorm, rotary attention with GQA/MHA and optional q/k/v bias, SwiGLU MLP, tied or separate
//! `lm_head`. The forward pass takes explicit positions and an arbitrary attention mask over
//! [cached + new] tokens, and returns the last hidden state before the final norm (the draft heads
//! read it) together with logits.
//!
//! Weight names follow the Hugging Face keys; the mapping lives in [`Model::load`] alone.

use std::path::Path;

use burn::tensor::activation::{silu, softmax};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use crate::error::{InferError, Result};
use crate::host::kernels::PackedMatrix;
use crate::host::layer::{self as host, CpuDims, CpuLayer};
use crate::host::quant::{BlockFormat, QBLOCK, QuantMatrix, quantize_rows};
use crate::host::weight::Weight;
use crate::load::weights::Blocks;
use crate::load::weights::Checkpoint;
use crate::model::cache::KvCache;
use crate::model::config::ModelConfig;
use crate::model::rope::{Rope, apply_rope};

/// A linear map with an HF `[out, in]` weight, used through a strided transpose (no copy).
#[derive(Clone)]
pub struct Linear {
    pub weight: Tensor<2>,
    pub bias: Option<Tensor<1>>,
}

/// Whether `device` is burn's flex CPU device (where the CPU fast path can be used).
pub fn is_flex(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    {
        *device == Device::flex()
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        false
    }
}

impl Linear {
    /// # Shapes
    /// `x: [rows, in]` → `[rows, out]`
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let y = x.matmul(self.weight.clone().transpose());
        match &self.bias {
            Some(b) => y + b.clone().unsqueeze_dim(0),
            None => y,
        }
    }
}

/// Root-mean-square layer norm.
#[derive(Clone)]
pub struct RmsNorm {
    pub weight: Tensor<1>,
    pub eps: f64,
}

impl RmsNorm {
    /// # Shapes
    /// `x: [rows, hidden]` → `[rows, hidden]`
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let inv = x
            .clone()
            .square()
            .mean_dim(1)
            .add_scalar(self.eps)
            .sqrt()
            .recip();
        x * inv * self.weight.clone().unsqueeze_dim(0)
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
}

struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

struct Block {
    input_norm: RmsNorm,
    attention: Attention,
    post_norm: RmsNorm,
    mlp: Mlp,
}

/// Which tokens attend to which, over `[cached + new]` positions.
#[derive(Debug, Clone)]
pub enum AttentionMask {
    /// Every new token sees the whole cache and the new tokens up to itself.
    Causal,
    /// Every new token sees the whole cache; among the `q` new tokens, row `i` sees column `j`
    /// where `allowed[i * q + j]` (a tree mask: each node sees its ancestors and itself).
    Tree(Vec<bool>),
}

/// Which rows get logits (the `lm_head` product is the single largest matmul of a step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitRows {
    All,
    Last,
    None,
}

/// What a forward pass returns beyond the hidden state ([`Model::forward_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outputs {
    pub logits: LogitRows,
    /// Each layer's queries of the last row (after RoPE, `heads × head_dim`): the "current
    /// query" a partial KV cache ranks positions by.
    pub last_queries: bool,
}

/// Result of one forward pass.
pub struct ForwardOutput {
    /// Last-layer hidden state before the final norm, `[q, hidden]`.
    pub hidden: Tensor<2>,
    /// Logits `[rows, vocab]` for the requested rows (`None` when not asked).
    pub logits: Option<Tensor<2>>,
    /// Per layer, the last row's queries (when asked).
    pub last_queries: Option<Vec<Vec<f32>>>,
}

/// The base model.
pub struct Model {
    config: ModelConfig,
    embed: Tensor<2>,
    layers: Layers,
    norm: RmsNorm,
    lm_head: Option<Tensor<2>>,
    rope: Rope,
    device: Device,
    dtype: DType,
}

/// The decoder layers, on one of the two execution paths.
enum Layers {
    /// burn tensor ops (GPUs, and flex when asked): the burn-ops path.
    Burn(Vec<Block>),
    /// Packed host copies of the weights: the CPU fast path ([`crate::host`]).
    Host(Box<HostModel>),
}

/// Host copies of the weights for the CPU fast path ([`crate::host`]).
struct HostModel {
    dims: CpuDims,
    layers: Vec<CpuLayer>,
    embed: Vec<f32>,
    norm: Vec<f32>,
    lm_head: Weight,
}

/// Which weights the CPU fast path multiplies by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightsChoice {
    /// f32 for every matrix (the checkpoint's values, converted).
    #[default]
    F32,
    /// Each matrix as stored: a GGUF-sourced checkpoint's quantised matrices as their own blocks
    /// (`model.blocks.safetensors`), a bf16 checkpoint's matrices as bf16, both widened in the
    /// kernel to exactly the f32 values, so every logit equals the f32 path's; f32 otherwise.
    Auto,
    /// Every matrix quantised at load from its f32 values (ggml's reference rounding), whatever
    /// the checkpoint stores: smaller and faster, numerically not the checkpoint's model. AR and
    /// TokenSwift multiply by the same blocks, so TokenSwift stays lossless against AR.
    Quantise(BlockFormat),
}

/// How [`Model::load_with`] loads a checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Use the CPU fast path (packed weights for the linear layers and `lm_head`) when the
    /// device allows it (flex, f32). Without it every operation is a burn op, as on a GPU.
    pub cpu_kernels: bool,
    /// Tensors of the checkpoint that belong to something else stored with the model (draft
    /// heads in the published layout), left to their own loader instead of being reported as
    /// unused.
    pub foreign: fn(&str) -> bool,
    /// The CPU fast path's weights.
    pub weights: WeightsChoice,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            cpu_kernels: true,
            foreign: |_| false,
            weights: WeightsChoice::default(),
        }
    }
}

impl Model {
    /// Loads the checkpoint in `dir` (`config.json` + safetensors) onto `device` as `dtype`.
    /// Every tensor the model needs must be present with the right shape, and no tensor may be
    /// left unused (rotary buffers excepted).
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        Self::load_with(dir, device, dtype, LoadOptions::default())
    }

    /// As [`Model::load`], with [`LoadOptions`].
    pub fn load_with(dir: &Path, device: &Device, dtype: DType, opts: LoadOptions) -> Result<Self> {
        let cpu_kernels = opts.cpu_kernels;
        if !dir.is_dir() {
            return Err(InferError::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
            ));
        }
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let mut ckpt = Checkpoint::open(dir)?;
        let blocks = match opts.weights {
            WeightsChoice::Auto => Blocks::open(dir)?,
            WeightsChoice::F32 | WeightsChoice::Quantise(_) => None,
        };
        let source = HostWeights {
            keep_bf16: opts.weights == WeightsChoice::Auto,
            blocks: blocks.as_ref(),
            quantise: match opts.weights {
                WeightsChoice::Quantise(f) => Some(f),
                _ => None,
            },
        };
        let model = Self::from_checkpoint(config, &mut ckpt, device, dtype, cpu_kernels, source)?;
        let tied = model.config.tie_word_embeddings;
        let unused = ckpt.unused(|n| {
            (opts.foreign)(n)
                || n.ends_with("rotary_emb.inv_freq")
                || (tied && n == "lm_head.weight")
        });
        if !unused.is_empty() {
            return Err(InferError::UnusedTensors {
                dir: dir.to_path_buf(),
                names: unused.join(", "),
            });
        }
        Ok(model)
    }

    /// Builds the model from an open checkpoint (the one place where HF names are mapped).
    pub fn from_checkpoint(
        config: ModelConfig,
        ckpt: &mut Checkpoint,
        device: &Device,
        dtype: DType,
        cpu_kernels: bool,
        quant: HostWeights,
    ) -> Result<Self> {
        let c = &config;
        let (h, hd) = (c.hidden_size, c.head_dim);
        let q_out = c.num_heads * hd;
        let kv_out = c.num_kv_heads * hd;
        let use_cpu = cpu_kernels && is_flex(device) && dtype == DType::F32;
        let linear = |ckpt: &mut Checkpoint,
                      name: &str,
                      out: usize,
                      inp: usize,
                      bias: bool|
         -> Result<Linear> {
            Ok(Linear {
                weight: ckpt.tensor(&format!("{name}.weight"), [out, inp], device, dtype)?,
                bias: if bias {
                    Some(ckpt.tensor(&format!("{name}.bias"), [out], device, dtype)?)
                } else {
                    None
                },
            })
        };
        let mut blocks = Vec::new();
        let mut cpu_layers = Vec::new();
        for i in 0..c.num_layers {
            let p = format!("model.layers.{i}");
            let b = c.attention_bias;
            if use_cpu {
                cpu_layers.push(Self::cpu_layer(c, ckpt, quant, &p)?);
                continue;
            }
            let attention = Attention {
                q: linear(ckpt, &format!("{p}.self_attn.q_proj"), q_out, h, b)?,
                k: linear(ckpt, &format!("{p}.self_attn.k_proj"), kv_out, h, b)?,
                v: linear(ckpt, &format!("{p}.self_attn.v_proj"), kv_out, h, b)?,
                o: linear(ckpt, &format!("{p}.self_attn.o_proj"), h, q_out, false)?,
            };
            let mlp = Mlp {
                gate: linear(
                    ckpt,
                    &format!("{p}.mlp.gate_proj"),
                    c.intermediate_size,
                    h,
                    false,
                )?,
                up: linear(
                    ckpt,
                    &format!("{p}.mlp.up_proj"),
                    c.intermediate_size,
                    h,
                    false,
                )?,
                down: linear(
                    ckpt,
                    &format!("{p}.mlp.down_proj"),
                    h,
                    c.intermediate_size,
                    false,
                )?,
            };
            blocks.push(Block {
                input_norm: RmsNorm {
                    weight: ckpt.tensor(
                        &format!("{p}.input_layernorm.weight"),
                        [h],
                        device,
                        dtype,
                    )?,
                    eps: c.rms_norm_eps,
                },
                attention,
                post_norm: RmsNorm {
                    weight: ckpt.tensor(
                        &format!("{p}.post_attention_layernorm.weight"),
                        [h],
                        device,
                        dtype,
                    )?,
                    eps: c.rms_norm_eps,
                },
                mlp,
            });
        }
        let embed = ckpt.tensor(
            "model.embed_tokens.weight",
            [c.vocab_size, h],
            device,
            dtype,
        )?;
        let norm = RmsNorm {
            weight: ckpt.tensor("model.norm.weight", [h], device, dtype)?,
            eps: c.rms_norm_eps,
        };
        let lm_head = if c.tie_word_embeddings {
            None
        } else {
            Some(ckpt.tensor("lm_head.weight", [c.vocab_size, h], device, dtype)?)
        };
        let layers = if use_cpu {
            let host = |t: &Tensor<2>| {
                t.clone()
                    .into_data()
                    .try_into_vec::<f32>()
                    .expect("f32 weights")
            };
            let embed_host = host(&embed);
            let head_name = if c.tie_word_embeddings {
                "model.embed_tokens.weight"
            } else {
                "lm_head.weight"
            };
            let lm = match quant_weight(quant.blocks, &[(head_name.to_string(), c.vocab_size)], h)?
            {
                Some(w) => w,
                None => {
                    let bf16 = if quant.keep_bf16 && h.is_multiple_of(QBLOCK) {
                        ckpt.read_bf16_bytes(head_name, &[c.vocab_size, h])?
                    } else {
                        None
                    };
                    match bf16 {
                        Some(bytes) => {
                            let rows: Vec<&[u8]> = bytes.chunks_exact(h * 2).collect();
                            QuantMatrix::from_rows(BlockFormat::Bf16, &rows, h)
                                .map(Weight::Quant)
                                .map_err(|m| InferError::setting("weights", m))?
                        }
                        None => {
                            let head = lm_head.as_ref().map(host);
                            let values = head.as_ref().unwrap_or(&embed_host);
                            pack_or_quantise(values, c.vocab_size, h, quant.quantise)?
                        }
                    }
                }
            };
            Layers::Host(Box::new(HostModel {
                dims: CpuDims {
                    hidden: h,
                    heads: c.num_heads,
                    kv_heads: c.num_kv_heads,
                    head_dim: hd,
                    ffn: c.intermediate_size,
                    eps: c.rms_norm_eps as f32,
                },
                layers: cpu_layers,
                embed: embed_host,
                norm: norm
                    .weight
                    .clone()
                    .into_data()
                    .try_into_vec::<f32>()
                    .expect("f32 weights"),
                lm_head: lm,
            }))
        } else {
            Layers::Burn(blocks)
        };
        Ok(Self {
            layers,
            rope: Rope::new(c),
            config,
            embed,
            norm,
            lm_head,
            device: device.clone(),
            dtype,
        })
    }

    /// Packs one layer's weights for the CPU fast path (q/k/v and gate/up stacked), from the
    /// blocks file where it holds them.
    fn cpu_layer(
        c: &ModelConfig,
        ckpt: &mut Checkpoint,
        blocks: HostWeights,
        p: &str,
    ) -> Result<CpuLayer> {
        let (h, hd) = (c.hidden_size, c.head_dim);
        let ffn = c.intermediate_size;
        let name = |n: &str| format!("{p}.{n}");
        let qkv = host_weight(
            ckpt,
            blocks,
            &[
                (name("self_attn.q_proj.weight"), c.num_heads * hd),
                (name("self_attn.k_proj.weight"), c.num_kv_heads * hd),
                (name("self_attn.v_proj.weight"), c.num_kv_heads * hd),
            ],
            h,
        )?;
        let o = host_weight(
            ckpt,
            blocks,
            &[(name("self_attn.o_proj.weight"), h)],
            c.num_heads * hd,
        )?;
        let gate_up = host_weight(
            ckpt,
            blocks,
            &[
                (name("mlp.gate_proj.weight"), ffn),
                (name("mlp.up_proj.weight"), ffn),
            ],
            h,
        )?;
        let down = host_weight(ckpt, blocks, &[(name("mlp.down_proj.weight"), h)], ffn)?;
        let mut read = |n: &str, shape: &[usize]| ckpt.read_f32(&name(n), shape);
        let qkv_bias = if c.attention_bias {
            let mut b = read("self_attn.q_proj.bias", &[c.num_heads * hd])?;
            b.extend(read("self_attn.k_proj.bias", &[c.num_kv_heads * hd])?);
            b.extend(read("self_attn.v_proj.bias", &[c.num_kv_heads * hd])?);
            Some(b)
        } else {
            None
        };
        Ok(CpuLayer {
            input_norm: read("input_layernorm.weight", &[h])?,
            qkv,
            qkv_bias,
            o,
            post_norm: read("post_attention_layernorm.weight", &[h])?,
            gate_up,
            down,
        })
    }

    /// The formats of the matrices the CPU fast path multiplies by, most used first (`f32`,
    /// `q4_1+q8_0`, …); `burn` when the model runs on burn ops.
    pub fn weights_format(&self) -> String {
        let Layers::Host(host) = &self.layers else {
            return "burn".to_string();
        };
        let mut counts: Vec<(&'static str, usize)> = Vec::new();
        let mut add = |w: &Weight| {
            let n = w.rows() * w.cols();
            match counts.iter_mut().find(|(f, _)| *f == w.format_name()) {
                Some((_, c)) => *c += n,
                None => counts.push((w.format_name(), n)),
            }
        };
        for l in &host.layers {
            for w in [&l.qkv, &l.o, &l.gate_up, &l.down] {
                add(w);
            }
        }
        add(&host.lm_head);
        counts.sort_by_key(|c| std::cmp::Reverse(c.1));
        counts.iter().map(|(f, _)| *f).collect::<Vec<_>>().join("+")
    }

    /// Switches the CPU fast path's block-quantised matrices (Q4_0, Q4_1, Q8_0) to integer
    /// products with 8-bit-quantised inputs (`--activations q8`, DESIGN §6.5): faster, lossy
    /// against the checkpoint's values, still batch-invariant (verify equals AR bit for bit).
    /// Returns how many matrices switched (f32 and bf16 ones stay exact). An error on the burn
    /// path, which has no such products.
    pub fn use_int8_products(&mut self) -> Result<usize> {
        let Layers::Host(host) = &mut self.layers else {
            return Err(InferError::setting(
                "activations",
                "q8 applies to the CPU fast path (--kernels host on flex) only",
            ));
        };
        let mut switched = 0;
        let mut switch = |w: &mut Weight| switched += usize::from(w.use_int8_products());
        for l in &mut host.layers {
            for w in [&mut l.qkv, &mut l.o, &mut l.gate_up, &mut l.down] {
                switch(w);
            }
        }
        switch(&mut host.lm_head);
        Ok(switched)
    }

    /// Whether this model runs on the CPU fast path.
    pub fn uses_cpu_kernels(&self) -> bool {
        matches!(self.layers, Layers::Host(_))
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// A cache for this model with room for `capacity` positions.
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        KvCache::new(
            &self.config,
            capacity,
            &self.device,
            self.dtype,
            matches!(self.layers, Layers::Host(_)),
        )
    }

    /// The `lm_head` weight `[vocab, hidden]` (the embedding when tied).
    pub fn lm_head_weight(&self) -> &Tensor<2> {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// The embedding matrix `[vocab, hidden]`.
    pub fn embedding_weight(&self) -> &Tensor<2> {
        &self.embed
    }

    /// The final norm applied before `lm_head`.
    pub fn final_norm(&self) -> &RmsNorm {
        &self.norm
    }

    /// `lm_head(norm(hidden))`.
    ///
    /// # Shapes
    /// `hidden: [rows, hidden]` → `[rows, vocab]`
    pub fn logits(&self, hidden: Tensor<2>) -> Tensor<2> {
        match &self.layers {
            Layers::Host(cpu) => {
                let [rows, _] = hidden.dims();
                let x = hidden
                    .into_data()
                    .try_into_vec::<f32>()
                    .expect("f32 activations");
                let l = host::logits(&x, rows, &cpu.norm, cpu.dims.eps, &cpu.lm_head);
                Tensor::from_data(
                    TensorData::new(l, [rows, self.config.vocab_size]),
                    &self.device,
                )
            }
            Layers::Burn(_) => self
                .norm
                .forward(hidden)
                .matmul(self.lm_head_weight().clone().transpose()),
        }
    }

    /// `lm_head(norm(hidden[rows]))` for the chosen rows of a forward pass's hidden state, into
    /// `out` (`rows.len() × vocab` f32 on the host, so a buffer kept across steps is reused).
    /// Verification computes logits only for the trie nodes its walk reaches; the rows equal, bit
    /// for bit, those `LogitRows::All` would give (the kernel's accumulation order does not
    /// depend on the number of rows).
    ///
    /// # Panics
    /// If `out` does not hold `rows.len() × vocab` values (a caller bug, not user input).
    pub fn logits_of_rows(&self, hidden: &Tensor<2>, rows: &[usize], out: &mut [f32]) {
        let vocab = self.config.vocab_size;
        assert_eq!(
            out.len(),
            rows.len() * vocab,
            "one vocabulary-wide row per index"
        );
        if rows.is_empty() {
            return;
        }
        match &self.layers {
            Layers::Host(cpu) => {
                let h = cpu.dims.hidden;
                let all = hidden
                    .clone()
                    .into_data()
                    .try_into_vec::<f32>()
                    .expect("f32 activations");
                let mut picked = Vec::with_capacity(rows.len() * h);
                let mut normed = vec![0f32; rows.len() * h];
                for &r in rows {
                    picked.extend_from_slice(&all[r * h..(r + 1) * h]);
                }
                host::rms_norm_rows(&picked, &cpu.norm, cpu.dims.eps, &mut normed);
                cpu.lm_head.matmul(&normed, rows.len(), out);
            }
            Layers::Burn(_) => {
                let idx: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
                let idx =
                    Tensor::<1, Int>::from_data(TensorData::new(idx, [rows.len()]), &self.device);
                let l = crate::tensor::to_host_f32(self.logits(hidden.clone().select(0, idx)));
                out.copy_from_slice(&l);
            }
        }
    }

    /// As [`Model::logits_of_rows`] into a vector resized to fit.
    pub fn logits_of_rows_vec(&self, hidden: &Tensor<2>, rows: &[usize], out: &mut Vec<f32>) {
        out.resize(rows.len() * self.config.vocab_size, 0.0);
        self.logits_of_rows(hidden, rows, out);
    }

    /// `lm_head` alone on rows that are already normalised (the base's final norm, or a draft
    /// head's post norm), on the host as `[rows, vocab]` f32. Batching the base row and the heads'
    /// rows into one call reads the (bandwidth-bound) `lm_head` once per draft instead of K + 1
    /// times.
    pub fn lm_head_rows(&self, normed: Tensor<2>) -> Vec<f32> {
        match &self.layers {
            Layers::Host(cpu) => {
                let [rows, _] = normed.dims();
                let x = normed
                    .into_data()
                    .try_into_vec::<f32>()
                    .expect("f32 activations");
                let mut out = vec![0f32; rows * cpu.lm_head.rows()];
                cpu.lm_head.matmul(&x, rows, &mut out);
                out
            }
            Layers::Burn(_) => crate::tensor::to_host_f32(
                normed
                    .cast(self.dtype)
                    .matmul(self.lm_head_weight().clone().transpose()),
            ),
        }
    }

    /// Runs `tokens` at `positions` through the model, appending their keys/values to `cache`.
    ///
    /// # Shapes
    /// returns `hidden: [q, hidden]`, `logits: [q | 1, vocab]`
    pub fn forward(
        &self,
        tokens: &[u32],
        positions: &[usize],
        mask: &AttentionMask,
        cache: &mut KvCache,
        rows: LogitRows,
    ) -> Result<ForwardOutput> {
        let outputs = Outputs {
            logits: rows,
            last_queries: false,
        };
        self.forward_with(tokens, positions, mask, cache, outputs)
    }

    /// As [`Model::forward`], with the outputs chosen by `outputs`.
    pub fn forward_with(
        &self,
        tokens: &[u32],
        positions: &[usize],
        mask: &AttentionMask,
        cache: &mut KvCache,
        outputs: Outputs,
    ) -> Result<ForwardOutput> {
        let rows = outputs.logits;
        let q = tokens.len();
        if q == 0 || positions.len() != q {
            return Err(InferError::Context(format!(
                "a forward pass needs one position per token (got {q} tokens, {} positions)",
                positions.len()
            )));
        }
        if let Some(&p) = positions.iter().max()
            && p >= self.config.max_position_embeddings
        {
            return Err(InferError::Context(format!(
                "position {p} is beyond the model's context of {} tokens",
                self.config.max_position_embeddings
            )));
        }
        if let Some(&t) = tokens
            .iter()
            .find(|&&t| t as usize >= self.config.vocab_size)
        {
            return Err(InferError::Context(format!(
                "token id {t} is outside the vocabulary of {} tokens",
                self.config.vocab_size
            )));
        }
        cache.ensure_room(q)?;
        let total = cache.len() + q;
        let bias_host = self.mask_bias(mask, q)?;
        if cache.is_host() != matches!(self.layers, Layers::Host(_)) {
            return Err(InferError::Cache(
                "this KV cache was made for another model; create it with Model::new_cache".into(),
            ));
        }
        let blocks = match &self.layers {
            Layers::Host(cpu) => {
                let bias = bias_host.as_deref();
                return Ok(crate::host::busy_pool(|| {
                    self.forward_host(cpu, tokens, positions, bias, cache, outputs)
                }));
            }
            Layers::Burn(blocks) => blocks,
        };
        let bias = bias_host.map(|b| {
            // The burn path adds a dense `[q, total]` bias: zeros over the cache, then the block.
            let block = Tensor::<2>::from_data(TensorData::new(b, [q, q]), &self.device);
            let t = if total > q {
                Tensor::cat(
                    vec![Tensor::<2>::zeros([q, total - q], &self.device), block],
                    1,
                )
            } else {
                block
            };
            if self.dtype == DType::F32 {
                t
            } else {
                t.cast(self.dtype)
            }
        });
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [q]), &self.device);
        let mut x = self.embed.clone().select(0, ids);
        let (mut cos, mut sin) = self.rope.cos_sin(positions, &self.device);
        if self.dtype != DType::F32 {
            cos = cos.cast(self.dtype);
            sin = sin.cast(self.dtype);
        }
        let mut queries = outputs.last_queries.then(Vec::new);
        for (layer, block) in blocks.iter().enumerate() {
            let a = self.attention(
                layer,
                block,
                block.input_norm.forward(x.clone()),
                (&cos, &sin),
                bias.as_ref(),
                cache,
                queries.as_mut(),
            );
            x = x + a;
            let m = &block.mlp;
            let hn = block.post_norm.forward(x.clone());
            let act = silu(m.gate.forward(hn.clone())) * m.up.forward(hn);
            x = x + m.down.forward(act);
        }
        cache.commit(q);
        let logits = match rows {
            LogitRows::All => Some(self.logits(x.clone())),
            LogitRows::Last => Some(self.logits(x.clone().narrow(0, q - 1, 1))),
            LogitRows::None => None,
        };
        Ok(ForwardOutput {
            hidden: x,
            logits,
            last_queries: queries,
        })
    }

    /// The forward pass on the CPU fast path: every layer on host memory.
    fn forward_host(
        &self,
        cpu: &HostModel,
        tokens: &[u32],
        positions: &[usize],
        bias: Option<&[f32]>,
        cache: &mut KvCache,
        outputs: Outputs,
    ) -> ForwardOutput {
        let rows = outputs.logits;
        let (q, h) = (tokens.len(), cpu.dims.hidden);
        let mut x = Vec::with_capacity(q * h);
        for &t in tokens {
            x.extend_from_slice(&cpu.embed[t as usize * h..(t as usize + 1) * h]);
        }
        let (cos, sin) = self.rope.cos_sin_values(positions);
        let start = cache.len();
        let kv = cache.host_mut();
        let mut queries = outputs
            .last_queries
            .then(|| vec![Vec::new(); cpu.layers.len()]);
        for (i, layer) in cpu.layers.iter().enumerate() {
            let query = queries.as_mut().map(|q| &mut q[i]);
            host::layer_forward(
                cpu.dims,
                layer,
                i,
                &mut x,
                (q, start),
                (&cos, &sin),
                bias,
                kv,
                query,
            );
        }
        cache.commit(q);
        let vocab = self.config.vocab_size;
        let (norm, eps) = (&cpu.norm, cpu.dims.eps);
        let logits = match rows {
            LogitRows::All => Some((host::logits(&x, q, norm, eps, &cpu.lm_head), q)),
            LogitRows::Last => Some((
                host::logits(&x[(q - 1) * h..], 1, norm, eps, &cpu.lm_head),
                1,
            )),
            LogitRows::None => None,
        }
        .map(|(l, r)| Tensor::from_data(TensorData::new(l, [r, vocab]), &self.device));
        ForwardOutput {
            hidden: Tensor::from_data(TensorData::new(x, [q, h]), &self.device),
            logits,
            last_queries: queries,
        }
    }

    /// Additive bias over the new tokens only, `[q, q]` (0 or -inf): every mask here lets every
    /// new token see the whole cache, so the bias of the cached columns is zero and never built
    /// (a dense `[q, cached + q]` bias would cost a long cache's worth of memory traffic per
    /// pass). `None` when every new token sees every position.
    fn mask_bias(&self, mask: &AttentionMask, q: usize) -> Result<Option<Vec<f32>>> {
        let allowed: Vec<bool> = match mask {
            AttentionMask::Causal if q == 1 => return Ok(None),
            AttentionMask::Causal => (0..q).flat_map(|i| (0..q).map(move |j| j <= i)).collect(),
            AttentionMask::Tree(t) => {
                if t.len() != q * q {
                    return Err(InferError::Context(format!(
                        "a tree mask for {q} tokens needs {} entries, got {}",
                        q * q,
                        t.len()
                    )));
                }
                // Nothing masked (a lone root: a plain AR step) is no bias at all, the pass AR
                // runs, with no bias row to add.
                if t.iter().all(|&a| a) {
                    return Ok(None);
                }
                t.clone()
            }
        };
        Ok(Some(
            allowed
                .iter()
                .map(|&a| if a { 0.0 } else { f32::NEG_INFINITY })
                .collect(),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        layer: usize,
        block: &Block,
        x: Tensor<2>,
        (cos, sin): (&Tensor<2>, &Tensor<2>),
        bias: Option<&Tensor<2>>,
        cache: &mut KvCache,
        queries: Option<&mut Vec<Vec<f32>>>,
    ) -> Tensor<2> {
        let c = &self.config;
        let [q, _] = x.dims();
        let (nh, nkv, hd, group) = (c.num_heads, c.num_kv_heads, c.head_dim, c.group_size());
        let att = &block.attention;
        let heads = |t: Tensor<2>, n: usize| t.reshape([q, n, hd]).swap_dims(0, 1);
        let qh = apply_rope(heads(att.q.forward(x.clone()), nh), cos, sin);
        let kh = apply_rope(heads(att.k.forward(x.clone()), nkv), cos, sin);
        let vh = heads(att.v.forward(x), nkv);
        if let Some(queries) = queries {
            let last = qh.clone().narrow(1, q - 1, 1);
            queries.push(crate::tensor::to_host_f32(last.reshape([1, nh * hd])));
        }
        let (keys, values) = cache.write_and_view(layer, kh.unsqueeze(), vh.unsqueeze());
        let total = keys.dims()[2];
        // Query heads h = kv * group + g share key/value head kv. The cache views keep their
        // leading layer axis (of size 1): reshaping a strided view could copy it.
        let qg = qh.reshape([1, nkv, group * q, hd]);
        let scores = qg
            .matmul(keys.swap_dims(2, 3))
            .mul_scalar(1.0 / (hd as f64).sqrt());
        let scores = match bias {
            Some(b) => (scores.reshape([nkv, group, q, total]) + b.clone().unsqueeze::<4>())
                .reshape([1, nkv, group * q, total]),
            None => scores,
        };
        let probs = softmax(scores, 3);
        let out = probs.matmul(values); // [1, nkv, group*q, hd]
        let out = out
            .reshape([nh, q, hd])
            .swap_dims(0, 1)
            .reshape([q, nh * hd]);
        att.o.forward(out)
    }
}

/// The matrices `parts` (`(name, rows)`, stacked in order, each `cols` wide) as GGUF blocks, when
/// the blocks file holds every one of them in one format; `None` otherwise.
fn quant_weight(
    blocks: Option<&Blocks>,
    parts: &[(String, usize)],
    cols: usize,
) -> Result<Option<Weight>> {
    let Some(b) = blocks else {
        return Ok(None);
    };
    let mut rows: Vec<&[u8]> = Vec::new();
    let mut format = None;
    for (name, n) in parts {
        match b.matrix(name, *n, cols)? {
            Some((f, r)) if format.is_none_or(|g| g == f) => {
                format = Some(f);
                rows.extend(r);
            }
            _ => return Ok(None),
        }
    }
    let Some(format) = format else {
        return Ok(None);
    };
    let m =
        QuantMatrix::from_rows(format, &rows, cols).map_err(|reason| InferError::Safetensors {
            path: b.path().to_path_buf(),
            reason,
        })?;
    Ok(Some(Weight::Quant(m)))
}

/// [`quant_weight`], else the f32 matrices from the checkpoint, packed. The checkpoint's f32
/// copies count as used either way.
fn host_weight(
    ckpt: &mut Checkpoint,
    source: HostWeights,
    parts: &[(String, usize)],
    cols: usize,
) -> Result<Weight> {
    if let Some(w) = quant_weight(source.blocks, parts, cols)? {
        for (name, n) in parts {
            ckpt.check_shape(name, &[*n, cols])?;
        }
        return Ok(w);
    }
    if source.keep_bf16 && cols.is_multiple_of(QBLOCK) {
        // bf16 as stored, when every part is bf16 (else the f32 route below reads them all).
        let mut raw = Vec::new();
        for (name, n) in parts {
            match ckpt.read_bf16_bytes(name, &[*n, cols])? {
                Some(bytes) => raw.push(bytes),
                None => break,
            }
        }
        if raw.len() == parts.len() {
            let rows: Vec<&[u8]> = raw.iter().flat_map(|b| b.chunks_exact(cols * 2)).collect();
            return QuantMatrix::from_rows(BlockFormat::Bf16, &rows, cols)
                .map(Weight::Quant)
                .map_err(|m| InferError::setting("weights", m));
        }
    }
    let mut v = Vec::new();
    for (name, n) in parts {
        v.extend(ckpt.read_f32(name, &[*n, cols])?);
    }
    let total = parts.iter().map(|p| p.1).sum();
    pack_or_quantise(&v, total, cols, source.quantise)
}

/// Where the CPU fast path's matrices come from: the checkpoint's blocks file where it holds a
/// matrix, else its f32 values, packed or (`quantise`) quantised at load.
#[derive(Clone, Copy)]
pub struct HostWeights<'a> {
    /// Keep a bf16 checkpoint's matrices as bf16 (`--weights auto`).
    pub keep_bf16: bool,
    pub blocks: Option<&'a Blocks>,
    pub quantise: Option<BlockFormat>,
}

/// A row-major `[n, k]` f32 matrix packed, or quantised to `quantise` (an error when `k` is not
/// a multiple of the block size).
fn pack_or_quantise(
    w: &[f32],
    n: usize,
    k: usize,
    quantise: Option<BlockFormat>,
) -> Result<Weight> {
    let Some(format) = quantise else {
        return Ok(Weight::F32(PackedMatrix::pack(w, n, k)));
    };
    if !k.is_multiple_of(QBLOCK) {
        return Err(InferError::setting(
            "weights",
            format!(
                "{} needs matrices whose rows are a multiple of {QBLOCK} values; this model has rows of {k}",
                format.name()
            ),
        ));
    }
    let rows = quantize_rows(format, w, n, k);
    let refs: Vec<&[u8]> = rows.iter().map(Vec::as_slice).collect();
    QuantMatrix::from_rows(format, &refs, k)
        .map(Weight::Quant)
        .map_err(|m| InferError::setting("weights", m))
}
