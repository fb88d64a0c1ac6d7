//! TokenSwift's draft heads ("interrelated linear layers", DESIGN §1): `K` chained residual layers
//! on the base model's last hidden state `h0` (before the final norm),
//!
//! ```text
//! h_{i+1}      = h_i + W_i · RMSNorm_in_i(h_i)
//! logits_{i+1} = lm_head(RMSNorm_post_i(h_{i+1}))     (the base's frozen lm_head)
//! ```
//!
//! so one base forward pass gives `K + 1` distributions (base → t+1, head i → t+2+i). Tensor
//! names follow the published checkpoints: `model.medusa_layers.{i}.linear.weight`,
//! `.input_layernorm.weight`, `.post_layernorm.weight`. A burn `Module`, so the training crate can
//! put it on an autodiff device while the base stays frozen.

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::{DType, Device, Tensor, TensorData};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{InferError, Result};
use crate::load::weights::{Checkpoint, write_f32_safetensors};
use crate::model::Model;

/// The JSON manifest saved beside a heads file (`heads.safetensors` → `heads.json`): which base
/// the heads were trained on, how, and how well they did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HeadsManifest {
    /// The base model as the user named it (alias, directory or hub id).
    pub base_model: String,
    /// [`base_fingerprint`] of the base: heads only load on the base they were trained on.
    pub base_fingerprint: String,
    pub hidden_size: usize,
    pub vocab_size: usize,
    /// Number of heads `K`.
    pub num_heads: usize,
    /// The training recipe (flags as given, data, steps done).
    #[serde(default)]
    pub recipe: serde_json::Value,
    /// Final metrics (per-head loss and accuracy).
    #[serde(default)]
    pub metrics: serde_json::Value,
    /// Token ids seen in the training corpus, most frequent first: the draft vocabulary is a
    /// prefix of this list (`--draft-vocab`). Empty for heads saved without it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_ranking: Vec<u32>,
}

/// Token ids of `documents` ranked by frequency, most frequent first (ties: lower id first), at
/// most `limit` of them.
pub fn rank_tokens<'a>(
    documents: impl IntoIterator<Item = &'a [u32]>,
    vocab: usize,
    limit: usize,
) -> Vec<u32> {
    let mut counts = vec![0u64; vocab];
    for doc in documents {
        for &t in doc {
            if let Some(c) = counts.get_mut(t as usize) {
                *c += 1;
            }
        }
    }
    let mut ids: Vec<u32> = (0..vocab as u32)
        .filter(|&t| counts[t as usize] > 0)
        .collect();
    ids.sort_by(|&a, &b| counts[b as usize].cmp(&counts[a as usize]).then(a.cmp(&b)));
    ids.truncate(limit);
    ids
}

/// The manifest path of a heads file: the same name with a `.json` extension.
pub fn manifest_path(heads_file: &Path) -> std::path::PathBuf {
    heads_file.with_extension("json")
}

impl HeadsManifest {
    pub fn load(path: &Path) -> Result<Self> {
        let data = std::fs::read_to_string(path).map_err(|e| InferError::io(path, e))?;
        serde_json::from_str(&data).map_err(|e| InferError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Writes the manifest atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.partial");
        let text = serde_json::to_string_pretty(self).expect("manifest serialises");
        std::fs::write(&tmp, text).map_err(|e| InferError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| InferError::io(path, e))
    }
}

/// A fingerprint of a base model: its shape-defining config plus a SHA-256 over 256 evenly spaced
/// rows of the embedding and of `lm_head` (enough to tell two checkpoints apart without hashing
/// gigabytes).
pub fn base_fingerprint(model: &Model) -> String {
    let c = model.config();
    let mut h = Sha256::new();
    h.update(
        format!(
            "{:?}/{}/{}/{}/{}/{}/{}/{}/{}",
            c.architecture,
            c.hidden_size,
            c.intermediate_size,
            c.num_layers,
            c.num_heads,
            c.num_kv_heads,
            c.head_dim,
            c.vocab_size,
            c.tie_word_embeddings
        )
        .as_bytes(),
    );
    let rows = 256.min(c.vocab_size);
    let idx: Vec<i64> = (0..rows)
        .map(|i| (i * c.vocab_size / rows) as i64)
        .collect();
    let device = model.device();
    for w in [model.embedding_weight(), model.lm_head_weight()] {
        let sel = w.clone().select(
            0,
            Tensor::<1, burn::tensor::Int>::from_data(TensorData::new(idx.clone(), [rows]), device),
        );
        let v = crate::tensor::to_host_f32(sel);
        for x in v {
            h.update(x.to_le_bytes());
        }
    }
    format!("{:x}", h.finalize())
}

/// Tensor names of draft heads stored inside a base checkpoint (the published TokenSwift layout).
pub fn is_head_tensor(name: &str) -> bool {
    name.starts_with("model.medusa_layers.")
}

/// Loads a base model whose checkpoint may also hold draft heads (the published layout): the
/// heads' tensors are left to [`load_heads`] rather than reported as unused.
pub fn load_base(dir: &Path, device: &Device, dtype: DType) -> Result<Model> {
    load_base_with(dir, device, dtype, crate::model::WeightsChoice::default())
}

/// As [`load_base`], with the CPU fast path's weights chosen.
pub fn load_base_with(
    dir: &Path,
    device: &Device,
    dtype: DType,
    weights: crate::model::WeightsChoice,
) -> Result<Model> {
    load_base_on(dir, device, dtype, weights, true)
}

/// As [`load_base_with`]; `cpu_kernels: false` runs every operation as a burn op even on flex
/// (exactly the code a GPU runs).
pub fn load_base_on(
    dir: &Path,
    device: &Device,
    dtype: DType,
    weights: crate::model::WeightsChoice,
    cpu_kernels: bool,
) -> Result<Model> {
    Model::load_with(
        dir,
        device,
        dtype,
        crate::model::LoadOptions {
            foreign: is_head_tensor,
            weights,
            cpu_kernels,
        },
    )
}

/// Loads draft heads for `model` from a heads file (its manifest, when present, must name this
/// base) or from a base checkpoint directory in the published layout (heads inside).
pub fn load_heads(path: &Path, model: &Model) -> Result<DraftHeads> {
    let c = model.config();
    let mut ckpt = if path.is_dir() {
        Checkpoint::open(path)?
    } else {
        Checkpoint::open_file(path)?
    };
    if path.is_file() {
        let mpath = manifest_path(path);
        if mpath.exists() {
            let m = HeadsManifest::load(&mpath)?;
            let fp = base_fingerprint(model);
            if m.base_fingerprint != fp || m.hidden_size != c.hidden_size {
                return Err(InferError::Context(format!(
                    "heads {} were trained on base `{}` (fingerprint {}), not on this model (fingerprint {})",
                    path.display(),
                    m.base_model,
                    &m.base_fingerprint[..m.base_fingerprint.len().min(12)],
                    &fp[..12]
                )));
            }
        }
    }
    let k = DraftHeads::count_in(&ckpt);
    if k == 0 {
        return Err(InferError::Context(format!(
            "{} holds no draft heads (no tensor model.medusa_layers.0.linear.weight)",
            path.display()
        )));
    }
    DraftHeads::from_checkpoint(&mut ckpt, k, c.hidden_size, c.rms_norm_eps, model.device())
}

/// One draft layer.
#[derive(Module, Debug)]
pub struct DraftLayer {
    /// `[hidden, hidden]`, HF `[out, in]` layout.
    pub linear: Param<Tensor<2>>,
    pub input_norm: Param<Tensor<1>>,
    pub post_norm: Param<Tensor<1>>,
}

/// The `K` chained draft layers.
#[derive(Module, Debug)]
pub struct DraftHeads {
    pub layers: Vec<DraftLayer>,
    /// RMSNorm epsilon (the base model's).
    pub eps: f64,
}

/// Tensor names of head `i`, in the order (linear, input norm, post norm).
pub fn head_tensor_names(i: usize) -> [String; 3] {
    let p = format!("model.medusa_layers.{i}");
    [
        format!("{p}.linear.weight"),
        format!("{p}.input_layernorm.weight"),
        format!("{p}.post_layernorm.weight"),
    ]
}

fn rms_norm(x: Tensor<2>, weight: &Tensor<1>, eps: f64) -> Tensor<2> {
    let inv = x
        .clone()
        .square()
        .mean_dim(1)
        .add_scalar(eps)
        .sqrt()
        .recip();
    x * inv * weight.clone().unsqueeze_dim(0)
}

impl DraftHeads {
    /// Untrained heads: zero linear maps (each head starts as the identity on the residual
    /// stream) and unit norms.
    pub fn init(k: usize, hidden: usize, eps: f64, device: &Device) -> Self {
        let layers = (0..k)
            .map(|_| DraftLayer {
                linear: Param::from_tensor(Tensor::zeros([hidden, hidden], device)),
                input_norm: Param::from_tensor(Tensor::ones([hidden], device)),
                post_norm: Param::from_tensor(Tensor::ones([hidden], device)),
            })
            .collect();
        Self { layers, eps }
    }

    /// Untrained heads for `model`: zero linear maps, unit input norms, and post norms copied
    /// from the base's final norm, so each untrained head starts out predicting the base's own
    /// next-token distribution (a far better starting point than unit post norms, whose logits
    /// skip the final norm's scale).
    pub fn init_for(model: &Model, k: usize, device: &Device) -> Self {
        let c = model.config();
        let mut heads = Self::init(k, c.hidden_size, c.rms_norm_eps, device);
        let post =
            crate::tensor::to_host_f32(model.final_norm().weight.clone().unsqueeze_dim::<2>(0));
        for l in &mut heads.layers {
            l.post_norm = Param::from_tensor(Tensor::from_data(
                TensorData::new(post.clone(), [c.hidden_size]),
                device,
            ));
        }
        heads
    }

    /// A SHA-256 over every weight of the heads (and their epsilon), so results can say which
    /// heads produced them whatever file they came from.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.eps.to_le_bytes());
        for l in &self.layers {
            let linear = crate::tensor::to_host_f32(l.linear.val());
            let norms = [l.input_norm.val(), l.post_norm.val()].map(crate::tensor::to_host_f32);
            for x in linear.iter().chain(&norms[0]).chain(&norms[1]) {
                h.update(x.to_le_bytes());
            }
        }
        format!("{:x}", h.finalize())
    }

    /// Number of heads `K`.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The residual streams `h_1..h_K` and each head's normed output (ready for `lm_head`).
    ///
    /// # Shapes
    /// `h0: [rows, hidden]` → `K × [rows, hidden]`
    pub fn forward(&self, h0: Tensor<2>) -> Vec<Tensor<2>> {
        let mut h = h0;
        let mut out = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let normed = rms_norm(h.clone(), &layer.input_norm.val(), self.eps);
            h = h + normed.matmul(layer.linear.val().transpose());
            out.push(rms_norm(h.clone(), &layer.post_norm.val(), self.eps));
        }
        out
    }

    /// Each head's logits with the base's `lm_head` weight `[vocab, hidden]`.
    ///
    /// # Shapes
    /// `h0: [rows, hidden]` → `K × [rows, vocab]`
    pub fn logits(&self, h0: Tensor<2>, lm_head: &Tensor<2>) -> Vec<Tensor<2>> {
        self.forward(h0)
            .into_iter()
            .map(|x| x.matmul(lm_head.clone().transpose()))
            .collect()
    }

    /// Loads `k` heads of width `hidden` from an open checkpoint (a heads file, or a base
    /// checkpoint in the published layout with the heads inside).
    pub fn from_checkpoint(
        ckpt: &mut Checkpoint,
        k: usize,
        hidden: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self> {
        if k == 0 {
            return Err(InferError::Context(
                "a draft model needs at least one head".into(),
            ));
        }
        let mut layers = Vec::with_capacity(k);
        for i in 0..k {
            let [lin, inp, post] = head_tensor_names(i);
            layers.push(DraftLayer {
                linear: Param::from_tensor(ckpt.tensor(
                    &lin,
                    [hidden, hidden],
                    device,
                    DType::F32,
                )?),
                input_norm: Param::from_tensor(ckpt.tensor(&inp, [hidden], device, DType::F32)?),
                post_norm: Param::from_tensor(ckpt.tensor(&post, [hidden], device, DType::F32)?),
            });
        }
        Ok(Self { layers, eps })
    }

    /// Number of heads stored in a checkpoint (consecutive `model.medusa_layers.{i}` from 0).
    pub fn count_in(ckpt: &Checkpoint) -> usize {
        (0..)
            .take_while(|&i| ckpt.contains(&head_tensor_names(i)[0]))
            .count()
    }

    /// The heads' tensors as `(name, shape, f32 values)`, in the published names.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let host = |t: Tensor<2>| t.into_data();
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let [lin, inp, post] = head_tensor_names(i);
            let w = host(layer.linear.val());
            let shape = w.shape().to_vec();
            out.push((
                lin,
                shape,
                w.convert::<f32>().try_to_vec::<f32>().expect("f32"),
            ));
            for (name, t) in [(inp, layer.input_norm.val()), (post, layer.post_norm.val())] {
                let d: TensorData = t.into_data();
                let shape = d.shape().to_vec();
                out.push((
                    name,
                    shape,
                    d.convert::<f32>().try_to_vec::<f32>().expect("f32"),
                ));
            }
        }
        out
    }

    /// Writes the heads as a safetensors file (published names), atomically: a temporary file
    /// renamed into place, so an interrupted save never leaves a half-written file.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_f32_safetensors(path, &self.tensors())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_rank_by_frequency_then_id() {
        let docs: [&[u32]; 2] = [&[7, 3, 3, 9, 7], &[3, 1, 9, 99]];
        // 3 ×3; 7 and 9 ×2 (7 first: lower id); 1 ×1; 99 is outside a vocabulary of 50.
        assert_eq!(rank_tokens(docs, 50, 10), vec![3, 7, 9, 1]);
        assert_eq!(rank_tokens(docs, 50, 2), vec![3, 7]);
    }

    fn randn(n: usize, seed: u64) -> Vec<f32> {
        let mut r = crate::sampling::SamplerRng::new(seed);
        (0..n).map(|_| (r.uniform() as f32 - 0.5) * 0.4).collect()
    }

    fn host_rms(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
        let inv = 1.0 / (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32 + eps).sqrt();
        x.iter().zip(w).map(|(v, w)| v * inv * w).collect()
    }

    fn heads(k: usize, h: usize, device: &Device) -> DraftHeads {
        let layers = (0..k)
            .map(|i| DraftLayer {
                linear: Param::from_tensor(Tensor::from_data(
                    TensorData::new(randn(h * h, 10 + i as u64), [h, h]),
                    device,
                )),
                input_norm: Param::from_tensor(Tensor::from_data(
                    TensorData::new(
                        randn(h, 20 + i as u64)
                            .iter()
                            .map(|v| 1.0 + v)
                            .collect::<Vec<_>>(),
                        [h],
                    ),
                    device,
                )),
                post_norm: Param::from_tensor(Tensor::from_data(
                    TensorData::new(
                        randn(h, 30 + i as u64)
                            .iter()
                            .map(|v| 1.0 + v)
                            .collect::<Vec<_>>(),
                        [h],
                    ),
                    device,
                )),
            })
            .collect();
        DraftHeads { layers, eps: 1e-5 }
    }

    /// The chained residual formula, computed by hand on the host.
    #[test]
    fn heads_chain_the_residual_stream() {
        let device = Device::flex();
        let (k, h, vocab) = (3, 8, 5);
        let hd = heads(k, h, &device);
        let h0 = randn(h, 1);
        let lm = randn(vocab * h, 2);
        let got: Vec<Vec<f32>> = hd
            .logits(
                Tensor::from_data(TensorData::new(h0.clone(), [1, h]), &device),
                &Tensor::from_data(TensorData::new(lm.clone(), [vocab, h]), &device),
            )
            .into_iter()
            .map(|t| t.into_data().try_to_vec::<f32>().unwrap())
            .collect();
        let tensors = hd.tensors();
        let mut cur = h0;
        for i in 0..k {
            let (w, win, wpost) = (
                &tensors[3 * i].2,
                &tensors[3 * i + 1].2,
                &tensors[3 * i + 2].2,
            );
            let n = host_rms(&cur, win, 1e-5);
            let delta: Vec<f32> = (0..h)
                .map(|o| (0..h).map(|j| w[o * h + j] * n[j]).sum())
                .collect();
            cur = cur.iter().zip(&delta).map(|(a, b)| a + b).collect();
            let p = host_rms(&cur, wpost, 1e-5);
            let want: Vec<f32> = (0..vocab)
                .map(|v| (0..h).map(|j| lm[v * h + j] * p[j]).sum())
                .collect();
            for (a, b) in got[i].iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "head {i}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn untrained_heads_start_as_the_identity() {
        let device = Device::flex();
        let hd = DraftHeads::init(3, 4, 1e-5, &device);
        let h0 = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, -2.0, 3.0, 0.5], [1, 4]),
            &device,
        );
        let outs = hd.forward(h0.clone());
        let expect = rms_norm(h0, &Tensor::ones([4], &device), 1e-5)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        for o in outs {
            assert_eq!(o.into_data().try_to_vec::<f32>().unwrap(), expect);
        }
    }

    #[test]
    fn save_and_load_round_trip_with_published_names() {
        let device = Device::flex();
        let hd = heads(3, 8, &device);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("heads.safetensors");
        hd.save(&file).unwrap();
        let mut ckpt = Checkpoint::open_file(&file).unwrap();
        assert_eq!(DraftHeads::count_in(&ckpt), 3);
        assert!(ckpt.contains("model.medusa_layers.2.post_layernorm.weight"));
        let back = DraftHeads::from_checkpoint(&mut ckpt, 3, 8, 1e-5, &device).unwrap();
        assert_eq!(back.tensors(), hd.tensors());
        let e = DraftHeads::from_checkpoint(&mut ckpt, 3, 16, 1e-5, &device)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model.medusa_layers.0.linear.weight") && e.contains("[16, 16]"),
            "{e}"
        );
    }
}
