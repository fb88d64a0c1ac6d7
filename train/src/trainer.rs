//! The training loop: the frozen base runs without autodiff (the CPU fast path on flex), its last
//! hidden states are lifted onto the autodiff device as constants, and only the heads are on the
//! autodiff path. AdamW from burn's optimisers; checkpoints (heads, optimizer state, run state)
//! are written into a fresh directory that is renamed into place, so an interrupted run always
//! leaves the last complete checkpoint.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::{Module, ParamId};
use burn::optim::{
    AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer, OptimizerRecord,
};
use burn::tensor::{DType, Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use tokenswift_infer::draft::heads::{DraftHeads, HeadsManifest, base_fingerprint, manifest_path};
use tokenswift_infer::load::weights::Checkpoint;
use tokenswift_infer::model::cache::KvCache;
use tokenswift_infer::model::prompt::forward_chunks;
use tokenswift_infer::model::{LogitRows, Model};

use crate::collective::Group;
use crate::error::{Result, TrainError};
use crate::objective::{HeadStats, Vocabulary};
use crate::parallel::{SequenceFeatures, WorkerInput, Workers};
use crate::recipe::{Recipe, sequence_index};

/// What makes two runs the same run (a checkpoint only resumes the run it came from).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunIdentity {
    pub base_model: String,
    pub base_fingerprint: String,
    pub hidden_size: usize,
    pub vocab_size: usize,
    pub heads: usize,
    pub data: String,
}

/// One optimizer step's log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    pub step: usize,
    pub lr: f64,
    /// Per head: mean CE.
    pub loss: Vec<f64>,
    /// Per head: top-1, top-2, top-3 accuracy.
    pub accuracy: Vec<[f64; 3]>,
    pub tokens_per_second: f64,
    pub seconds: f64,
}

impl StepLog {
    fn from_stats(step: usize, lr: f64, stats: &[HeadStats], tokens: usize, secs: f64) -> Self {
        Self {
            step,
            lr,
            loss: stats.iter().map(HeadStats::loss).collect(),
            accuracy: stats
                .iter()
                .map(|s| [s.accuracy(1), s.accuracy(2), s.accuracy(3)])
                .collect(),
            tokens_per_second: tokens as f64 / secs.max(1e-9),
            seconds: secs,
        }
    }
}

/// The run state saved in every checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    pub identity: RunIdentity,
    pub recipe: Recipe,
    /// Optimizer steps completed.
    pub step: usize,
    /// Parameter ids of the heads (the optimizer state is keyed by them).
    pub param_ids: Vec<u64>,
    pub history: Vec<StepLog>,
}

/// Runs the frozen base over `tokens` (no autodiff, no logits) and returns its last hidden states
/// `[len, hidden]` before the final norm.
pub fn base_hidden(model: &Model, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor<2>> {
    cache.reset();
    let mut parts = Vec::new();
    forward_chunks(model, tokens, cache, LogitRows::None, &mut |out, _| {
        parts.push(out.hidden);
        Ok(())
    })?;
    Ok(Tensor::cat(parts, 0))
}

fn param_ids(heads: &DraftHeads) -> Vec<u64> {
    heads
        .layers
        .iter()
        .flat_map(|l| {
            [
                l.linear.id.val(),
                l.input_norm.id.val(),
                l.post_norm.id.val(),
            ]
        })
        .collect()
}

fn set_param_ids(heads: &mut DraftHeads, ids: &[u64]) -> Result<()> {
    if ids.len() != 3 * heads.len() {
        return Err(TrainError::Checkpoint(format!(
            "the checkpoint lists {} parameter ids for {} heads",
            ids.len(),
            heads.len()
        )));
    }
    for (l, id) in heads.layers.iter_mut().zip(ids.chunks(3)) {
        l.linear.id = ParamId::from(id[0]);
        l.input_norm.id = ParamId::from(id[1]);
        l.post_norm.id = ParamId::from(id[2]);
    }
    Ok(())
}

/// A training run in progress.
pub struct Trainer<'m> {
    model: &'m Model,
    /// The base's `lm_head`, a constant on the autodiff device.
    lm_head: Tensor<2>,
    pub heads: DraftHeads,
    optim: ModuleOptimizer,
    pub recipe: Recipe,
    pub identity: RunIdentity,
    sequences: Vec<Vec<u32>>,
    out_dir: PathBuf,
    pub step: usize,
    pub history: Vec<StepLog>,
    cache: KvCache,
    workers: Workers,
    group: Option<Group>,
    /// The training vocabulary's remap and `lm_head` rows (`recipe.train_vocab > 0`).
    vocab: Option<(Arc<Vec<u32>>, Tensor<2>)>,
}

/// Where a run's data-parallel workers are: this process's devices (one worker each; the first
/// is the base model's) and, with several processes, their group.
pub struct Parallel {
    pub devices: Vec<Device>,
    pub group: Option<Group>,
}

impl Parallel {
    /// One worker on `device`, one process.
    pub fn single(device: &Device) -> Self {
        Self {
            devices: vec![device.clone()],
            group: None,
        }
    }

    /// Workers over all processes.
    pub fn total_workers(&self) -> usize {
        self.devices.len() * self.group.as_ref().map_or(1, Group::world)
    }
}

/// The autodiff device the heads train on.
pub fn train_device(model: &Model) -> Device {
    model.device().clone().autodiff()
}

impl<'m> Trainer<'m> {
    /// A fresh run (untrained heads) or, with `resume`, the latest checkpoint in `out_dir` of the
    /// same run.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        model: &'m Model,
        base_model: &str,
        data: &str,
        recipe: Recipe,
        sequences: Vec<Vec<u32>>,
        out_dir: &Path,
        resume: bool,
        parallel: Parallel,
    ) -> Result<Self> {
        recipe.validate().map_err(TrainError::Usage)?;
        let total = parallel.total_workers();
        if recipe.sequences_per_step() < total {
            return Err(TrainError::Usage(format!(
                "{total} data-parallel workers need at least {total} sequences per optimizer step (--batch {} × --grad-accum {} gives {})",
                recipe.batch,
                recipe.grad_accum,
                recipe.sequences_per_step()
            )));
        }
        let c = model.config();
        if recipe.seq_len > c.max_position_embeddings {
            return Err(TrainError::Usage(format!(
                "--seq-len {} exceeds the model's context of {} tokens",
                recipe.seq_len, c.max_position_embeddings
            )));
        }
        if sequences.is_empty() {
            return Err(TrainError::Usage("there are no training sequences".into()));
        }
        prepare_out_dir(out_dir)?;
        let identity = RunIdentity {
            base_model: base_model.to_string(),
            base_fingerprint: base_fingerprint(model),
            hidden_size: c.hidden_size,
            vocab_size: c.vocab_size,
            heads: recipe.heads,
            data: data.to_string(),
        };
        let device = train_device(model);
        // The heads train in f32 whatever the base's dtype (bf16 on CUDA).
        let lm_head = model.lm_head_weight().clone().cast(DType::F32).autodiff();
        let optim = AdamWConfig::new()
            .with_weight_decay(recipe.weight_decay as f32)
            .init();
        let cache = model.new_cache(recipe.seq_len);
        let mut t = Self {
            model,
            lm_head,
            heads: DraftHeads::init_for(model, recipe.heads, &device),
            optim,
            recipe,
            identity,
            sequences,
            out_dir: out_dir.to_path_buf(),
            step: 0,
            history: Vec::new(),
            cache,
            workers: Workers::new(
                parallel
                    .devices
                    .iter()
                    .map(|d| d.clone().autodiff())
                    .collect(),
            ),
            group: parallel.group,
            vocab: None,
        };
        if resume {
            t.resume()?;
        }
        Ok(t)
    }

    fn checkpoints_dir(&self) -> PathBuf {
        self.out_dir.join("checkpoints")
    }

    /// The latest complete checkpoint directory, if any.
    pub fn latest_checkpoint(out_dir: &Path) -> Option<PathBuf> {
        let dir = out_dir.join("checkpoints");
        let mut steps: Vec<PathBuf> = std::fs::read_dir(&dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("step-") && !n.ends_with(".partial"))
                    && p.join("state.json").exists()
            })
            .collect();
        steps.sort();
        steps.pop()
    }

    fn resume(&mut self) -> Result<()> {
        let Some(dir) = Self::latest_checkpoint(&self.out_dir) else {
            return Err(TrainError::Checkpoint(format!(
                "--resume found no checkpoint in {}",
                self.checkpoints_dir().display()
            )));
        };
        let state_path = dir.join("state.json");
        let text =
            std::fs::read_to_string(&state_path).map_err(|e| TrainError::io(&state_path, e))?;
        let state: RunState = serde_json::from_str(&text).map_err(|e| {
            TrainError::Checkpoint(format!(
                "{} is not a valid run state: {e}",
                state_path.display()
            ))
        })?;
        let (a, b) = (&state.identity, &self.identity);
        if a.base_fingerprint != b.base_fingerprint || a.hidden_size != b.hidden_size {
            return Err(TrainError::Checkpoint(format!(
                "the checkpoint in {} is from a run on base `{}`, not on `{}`; use another --out or drop --resume",
                dir.display(),
                a.base_model,
                b.base_model
            )));
        }
        if a.heads != b.heads {
            return Err(TrainError::Checkpoint(format!(
                "the checkpoint in {} trains {} heads, this run {} (--heads); use another --out or drop --resume",
                dir.display(),
                a.heads,
                b.heads
            )));
        }
        if state.recipe.seq_len != self.recipe.seq_len || a.data != b.data {
            return Err(TrainError::Checkpoint(format!(
                "the checkpoint in {} was trained on `{}` with --seq-len {}, this run asks for `{}` with --seq-len {}",
                dir.display(),
                a.data,
                state.recipe.seq_len,
                b.data,
                self.recipe.seq_len
            )));
        }
        if state.recipe.train_vocab != self.recipe.train_vocab {
            return Err(TrainError::Checkpoint(format!(
                "the checkpoint in {} was trained with --train-vocab {}, this run asks for {}",
                dir.display(),
                state.recipe.train_vocab,
                self.recipe.train_vocab
            )));
        }
        let c = self.model.config();
        let mut ckpt = Checkpoint::open_file(&dir.join("heads.safetensors"))?;
        let mut heads = DraftHeads::from_checkpoint(
            &mut ckpt,
            a.heads,
            c.hidden_size,
            c.rms_norm_eps,
            &train_device(self.model),
        )?;
        set_param_ids(&mut heads, &state.param_ids)?;
        let opt_path = dir.join("optimizer.bpk");
        let record = OptimizerRecord::load(&opt_path).map_err(|e| {
            TrainError::Checkpoint(format!("cannot read {}: {e:?}", opt_path.display()))
        })?;
        let optim = std::mem::replace(&mut self.optim, AdamWConfig::new().init());
        self.optim = optim.load_record(record);
        self.heads = heads;
        self.step = state.step;
        self.history = state.history;
        Ok(())
    }

    /// With `recipe.train_vocab > 0`: the softmax runs over the first `train_vocab` tokens of
    /// `ranking` (the corpus's most frequent first, as in the heads manifest), the draft
    /// vocabulary the heads will serve with. Must be called before the first step.
    pub fn set_ranking(&mut self, ranking: &[u32]) {
        if self.recipe.train_vocab == 0 {
            return;
        }
        let v =
            Vocabulary::from_ranking(ranking, self.recipe.train_vocab, self.identity.vocab_size);
        let rows = v.select_rows(&self.lm_head);
        self.vocab = Some((Arc::new(v.remap), rows));
    }

    /// This process writes checkpoints and the heads (rank 0, or the only process).
    pub fn is_writer(&self) -> bool {
        self.group.as_ref().is_none_or(|g| g.rank() == 0)
    }

    /// Runs one optimizer step and returns its log. The step's sequences are dealt round-robin
    /// to the workers of all processes (global worker `w` takes sequences `w`, `w + W`, …); a
    /// round gives each worker one sequence, whose features the base computes here.
    pub fn train_step(&mut self) -> Result<StepLog> {
        let t0 = Instant::now();
        if self.recipe.train_vocab > 0 && self.vocab.is_none() {
            return Err(TrainError::Usage(
                "a training vocabulary was asked for but no token ranking was given".into(),
            ));
        }
        let (remap, lm_head) = match &self.vocab {
            Some((m, rows)) => (Some(m.clone()), rows.clone()),
            None => (None, self.lm_head.clone()),
        };
        let per_step = self.recipe.sequences_per_step();
        let scale = 1.0 / per_step as f64;
        let local = self.workers.len();
        let (rank, world) = self
            .group
            .as_ref()
            .map_or((0, 1), |g| (g.rank(), g.world()));
        let global = local * world;
        let mut acc = GradientsAccumulator::<DraftHeads>::new();
        let mut stats = vec![HeadStats::default(); self.heads.len()];
        let mut tokens = 0;
        for round in 0..per_step.div_ceil(global) {
            let mut shares = Vec::with_capacity(local);
            for w in 0..local {
                let j = round * global + rank * local + w;
                if j >= per_step {
                    shares.push(None);
                    continue;
                }
                let g = self.step * per_step + j;
                let idx = sequence_index(g, self.sequences.len(), self.recipe.seed);
                let seq = &self.sequences[idx];
                let hidden = base_hidden(self.model, seq, &mut self.cache)?
                    .cast(DType::F32)
                    .autodiff();
                shares.push(Some(WorkerInput {
                    sequences: vec![SequenceFeatures {
                        hidden,
                        tokens: seq.clone(),
                    }],
                    lm_head: lm_head.clone(),
                    remap: remap.clone(),
                    chunk_rows: self.recipe.chunk_rows,
                    scale,
                }));
            }
            for out in self.workers.round(&self.heads, shares, &mut acc)? {
                for (a, b) in stats.iter_mut().zip(&out.stats) {
                    a.add(b);
                }
                tokens += out.tokens;
            }
        }
        let mut grads = acc.grads();
        if let Some(group) = self.group.as_mut() {
            grads = reduce_grads(group, &self.heads, grads)?;
            tokens = reduce_stats(group, &mut stats, tokens)?;
        }
        let lr = self.recipe.lr_at(self.step);
        // The optimiser consumes the module and returns the updated one. A clone shares the
        // parameters' storage (a few MB, next to a base forward pass of seconds), so no
        // placeholder module is needed while it runs.
        self.heads = self.optim.step(lr, self.heads.clone(), grads);
        let log = StepLog::from_stats(self.step, lr, &stats, tokens, t0.elapsed().as_secs_f64());
        self.step += 1;
        self.history.push(log.clone());
        Ok(log)
    }

    /// With several processes: checks that every replica holds the same heads (they start from
    /// the same seed and apply the same summed gradients, so they must). Called before each
    /// checkpoint; a divergence is an error, not a silent average of different models.
    pub fn check_replicas(&mut self) -> Result<()> {
        let Some(group) = self.group.as_mut() else {
            return Ok(());
        };
        let sum = heads_checksum(&self.heads)?;
        if !group.all_agree(sum)? {
            return Err(TrainError::Distributed(format!(
                "distributed training: the ranks' heads differ after step {} (different data or software on some node?)",
                self.step
            )));
        }
        Ok(())
    }

    /// Writes a checkpoint for the current step: a `.partial` directory renamed into place, then
    /// older checkpoints removed.
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let root = self.checkpoints_dir();
        std::fs::create_dir_all(&root).map_err(|e| TrainError::io(&root, e))?;
        let name = format!("step-{:06}", self.step);
        let tmp = root.join(format!("{name}.partial"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
        self.heads.save(&tmp.join("heads.safetensors"))?;
        let opt = tmp.join("optimizer.bpk");
        self.optim.to_record().save(&opt).map_err(|e| {
            TrainError::Checkpoint(format!("cannot write {}: {e:?}", opt.display()))
        })?;
        let state = RunState {
            identity: self.identity.clone(),
            recipe: self.recipe.clone(),
            step: self.step,
            param_ids: param_ids(&self.heads),
            history: self.history.clone(),
        };
        let sp = tmp.join("state.json");
        std::fs::write(
            &sp,
            serde_json::to_string_pretty(&state).expect("state serialises"),
        )
        .map_err(|e| TrainError::io(&sp, e))?;
        let dest = root.join(&name);
        if dest.exists() {
            std::fs::remove_dir_all(&dest).map_err(|e| TrainError::io(&dest, e))?;
        }
        std::fs::rename(&tmp, &dest).map_err(|e| TrainError::io(&dest, e))?;
        for e in std::fs::read_dir(&root)
            .map_err(|e| TrainError::io(&root, e))?
            .flatten()
        {
            let p = e.path();
            if p != dest
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("step-") && !n.ends_with(".partial"))
            {
                let _ = std::fs::remove_dir_all(&p);
            }
        }
        Ok(dest)
    }

    /// Writes the final heads (`heads.safetensors`) and their manifest (`heads.json`) to the
    /// output directory.
    /// Writes the heads and their manifest; `token_ranking` is the training corpus's token ids,
    /// most frequent first (the draft vocabulary, see [`HeadsManifest::token_ranking`]).
    pub fn export(&self, metrics: serde_json::Value, token_ranking: Vec<u32>) -> Result<PathBuf> {
        let path = self.out_dir.join("heads.safetensors");
        self.heads.save(&path)?;
        let manifest = HeadsManifest {
            base_model: self.identity.base_model.clone(),
            base_fingerprint: self.identity.base_fingerprint.clone(),
            hidden_size: self.identity.hidden_size,
            vocab_size: self.identity.vocab_size,
            num_heads: self.heads.len(),
            recipe: serde_json::json!({
                "recipe": self.recipe,
                "data": self.identity.data,
                "steps_done": self.step,
            }),
            metrics,
            token_ranking,
        };
        manifest.save(&manifest_path(&path))?;
        Ok(path)
    }

    /// The heads without autodiff (for evaluation).
    pub fn heads_for_eval(&self) -> DraftHeads {
        self.heads.valid()
    }

    /// The frozen base model.
    pub fn model(&self) -> &Model {
        self.model
    }
}

fn tensor_values<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| TrainError::Distributed(format!("cannot read a gradient: {e:?}")))
}

/// Sums the gradients of the heads over the processes (rank order, the same bits everywhere).
fn reduce_grads(
    group: &mut Group,
    heads: &DraftHeads,
    mut grads: GradientsParams,
) -> Result<GradientsParams> {
    let mut flat = Vec::new();
    let mut parts: Vec<(ParamId, Vec<usize>, Device)> = Vec::new();
    for l in &heads.layers {
        let missing = || {
            TrainError::Distributed(
                "a head parameter received no gradient in this step".to_string(),
            )
        };
        let g = grads.remove::<2>(l.linear.id).ok_or_else(missing)?;
        parts.push((l.linear.id, g.dims().to_vec(), g.device()));
        flat.extend(tensor_values(g)?);
        for p in [&l.input_norm, &l.post_norm] {
            let g = grads.remove::<1>(p.id).ok_or_else(missing)?;
            parts.push((p.id, g.dims().to_vec(), g.device()));
            flat.extend(tensor_values(g)?);
        }
    }
    group.all_reduce_sum_f32(&mut flat)?;
    let mut out = GradientsParams::new();
    let mut at = 0;
    for (id, dims, device) in parts {
        let n: usize = dims.iter().product();
        let values = flat[at..at + n].to_vec();
        at += n;
        if dims.len() == 2 {
            out.register::<2>(
                id,
                Tensor::from_data(TensorData::new(values, [dims[0], dims[1]]), &device),
            );
        } else {
            out.register::<1>(id, Tensor::from_data(TensorData::new(values, [n]), &device));
        }
    }
    Ok(out)
}

/// Sums the per-head statistics and the token count over the processes.
fn reduce_stats(group: &mut Group, stats: &mut [HeadStats], tokens: usize) -> Result<usize> {
    let mut v = Vec::with_capacity(stats.len() * 6 + 1);
    for s in stats.iter() {
        v.extend([
            s.loss_sum,
            s.top[0] as f64,
            s.top[1] as f64,
            s.top[2] as f64,
            s.rows as f64,
            s.loss_rows as f64,
        ]);
    }
    v.push(tokens as f64);
    group.all_reduce_sum_f64(&mut v)?;
    for (s, c) in stats.iter_mut().zip(v.chunks_exact(6)) {
        s.loss_sum = c[0];
        s.top = [c[1] as u64, c[2] as u64, c[3] as u64];
        s.rows = c[4] as u64;
        s.loss_rows = c[5] as u64;
    }
    Ok(v[v.len() - 1] as usize)
}

/// A checksum of the heads' parameter bits.
fn heads_checksum(heads: &DraftHeads) -> Result<u64> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |values: Vec<f32>| {
        for v in values {
            h = (h ^ u64::from(v.to_bits())).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for l in &heads.layers {
        eat(tensor_values(l.linear.val())?);
        eat(tensor_values(l.input_norm.val())?);
        eat(tensor_values(l.post_norm.val())?);
    }
    Ok(h)
}

/// Creates the output directory and proves it is writable before any work is done.
pub fn prepare_out_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"ok").map_err(|e| TrainError::io(dir, e))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}
