//! Data-parallel workers: burn-train's multi-device train step runs the heads' forward and
//! backward passes, one replica per device, each on its share of the step's sequences.
//!
//! The frozen base is the feature extractor of the batching step: the main thread runs it (the
//! CPU fast path on flex) and hands each worker the last hidden states of its sequences, so only
//! the heads are a trained module ([`HeadsStep`], burn-train's `TrainStep`). Each worker returns
//! the gradients of `scale × loss` over its sequences; they are summed on the main device with
//! burn's `GradientsAccumulator`, exactly as burn-train's own multi-device epoch does. Every
//! sequence carries the scale `1 / sequences per step`, so W workers × b sequences give the
//! gradient of one worker × W·b sequences, up to the order of float additions.
//!
//! Why not burn-train's `Learner` loop itself: it checkpoints and resumes at epoch boundaries,
//! while a run of 200 optimizer steps over 8K-token sequences needs step checkpoints whose
//! resume is exact (same sequences, same optimizer state, same bits). The hand-written loop in
//! [`crate::trainer`] keeps that, and nothing else.

use std::sync::Arc;

use burn::data::dataloader::{DataLoaderIterator, Progress};
use burn::data::dataset::DatasetError;
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Tensor};
use burn::train::train::MultiDevicesTrainStep;
use burn::train::{InferenceStep, ItemLazy, TrainOutput, TrainStep};
use tokenswift_infer::draft::heads::DraftHeads;

use crate::error::{Result, TrainError};
use crate::objective::{HeadStats, sequence_pass};

/// One sequence as a worker receives it: the base's last hidden states `[len, hidden]` (f32, no
/// gradient) and its tokens (the targets).
pub struct SequenceFeatures {
    pub hidden: Tensor<2>,
    pub tokens: Vec<u32>,
}

/// A worker's share of one round.
pub struct WorkerInput {
    pub sequences: Vec<SequenceFeatures>,
    /// The base's `lm_head`, `[vocab, hidden]` f32, a constant (with `remap`, the training
    /// vocabulary's rows only).
    pub lm_head: Tensor<2>,
    /// Token id → `lm_head` row, when the softmax runs over a training vocabulary.
    pub remap: Option<Arc<Vec<u32>>>,
    pub chunk_rows: usize,
    /// Loss scale of each sequence (`1 / sequences per optimizer step`).
    pub scale: f64,
}

/// What a worker measured on its share.
#[derive(Debug, Clone, Default)]
pub struct WorkerOutput {
    pub stats: Vec<HeadStats>,
    pub tokens: usize,
}

impl ItemLazy for WorkerOutput {
    fn sync(self) -> std::result::Result<Self, burn::tensor::ExecutionError> {
        Ok(self)
    }
}

/// The trained module: the draft heads, as burn-train's `TrainStep`.
#[derive(Module, Debug)]
pub struct HeadsStep {
    pub heads: DraftHeads,
}

fn run_share(
    heads: &DraftHeads,
    item: WorkerInput,
    train: bool,
) -> (WorkerOutput, GradientsParams) {
    let device = heads.layers[0].linear.val().device();
    let lm = item.lm_head.to_device(&device);
    let mut acc = GradientsAccumulator::<DraftHeads>::new();
    let mut out = WorkerOutput {
        stats: vec![HeadStats::default(); heads.len()],
        tokens: 0,
    };
    for seq in item.sequences {
        let h = seq.hidden.to_device(&device);
        let s = sequence_pass(
            heads,
            h,
            &lm,
            &seq.tokens,
            item.remap.as_deref().map(Vec::as_slice),
            item.chunk_rows,
            item.scale,
            train.then_some(&mut acc),
        );
        for (a, b) in out.stats.iter_mut().zip(&s) {
            a.add(b);
        }
        out.tokens += seq.tokens.len();
    }
    (out, acc.grads())
}

impl TrainStep for HeadsStep {
    type Input = WorkerInput;
    type Output = WorkerOutput;

    fn step(&self, item: WorkerInput) -> TrainOutput<WorkerOutput> {
        let (out, grads) = run_share(&self.heads, item, true);
        TrainOutput { grads, item: out }
    }
}

impl InferenceStep for HeadsStep {
    type Input = WorkerInput;
    type Output = WorkerOutput;

    fn step(&self, item: WorkerInput) -> WorkerOutput {
        run_share(&self.heads, item, false).0
    }
}

/// A data loader of at most one item: a worker's share of one round.
struct OneShare(Option<WorkerInput>);

impl Iterator for OneShare {
    type Item = std::result::Result<WorkerInput, DatasetError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.0.take().map(Ok)
    }
}

impl DataLoaderIterator<WorkerInput> for OneShare {
    fn progress(&self) -> Progress {
        Progress::new(usize::from(self.0.is_none()), 1, None)
    }
}

/// The data-parallel workers of this process, one per device.
pub struct Workers {
    step: MultiDevicesTrainStep<HeadsStep>,
    devices: Vec<Device>,
}

impl Workers {
    /// One worker per entry of `devices` (autodiff devices; an entry may repeat: two workers on
    /// the one flex device).
    pub fn new(devices: Vec<Device>) -> Self {
        assert!(!devices.is_empty(), "at least one worker");
        Self {
            step: MultiDevicesTrainStep::new(&devices),
            devices,
        }
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Runs one round: `shares[w]` (if any) on worker `w`, all workers at once. Their gradients
    /// are added into `acc` on the heads' device; returns what each worker measured.
    pub fn round(
        &self,
        heads: &DraftHeads,
        shares: Vec<Option<WorkerInput>>,
        acc: &mut GradientsAccumulator<DraftHeads>,
    ) -> Result<Vec<WorkerOutput>> {
        debug_assert_eq!(shares.len(), self.devices.len());
        let main = heads.layers[0].linear.val().device();
        let mut loaders: Vec<Box<dyn DataLoaderIterator<WorkerInput>>> = shares
            .into_iter()
            .map(|s| Box::new(OneShare(s)) as Box<dyn DataLoaderIterator<WorkerInput>>)
            .collect();
        let model = HeadsStep {
            heads: heads.clone(),
        };
        let (outputs, _) = self
            .step
            .step(loaders.as_mut_slice(), &model)
            .map_err(|e| TrainError::Worker(e.to_string()))?;
        let mut measured = Vec::with_capacity(outputs.len());
        for o in outputs {
            let grads = o.output.grads.to_device(&main, heads);
            acc.accumulate(heads, grads);
            measured.push(o.output.item);
        }
        Ok(measured)
    }
}
