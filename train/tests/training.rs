//! Training on a tiny random base model: the objective's offsets, that gradients reach only the
//! heads, checkpoint/resume equal to an uninterrupted run, and the run-mismatch errors.

use std::path::PathBuf;

use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{DType, Device, Tensor, TensorData};
use tokenswift_infer::draft::heads::{DraftHeads, load_heads};
use tokenswift_infer::model::Model;
use tokenswift_train::objective::{HeadStats, sequence_pass, valid_rows};
use tokenswift_train::trainer::{Parallel, Trainer, base_hidden, train_device};
use tokenswift_train::{Recipe, Schedule};

fn tiny() -> Model {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../infer/tests/goldens/tiny-llama-mha");
    Model::load(&dir, &Device::flex(), DType::F32).unwrap()
}

fn sequences(n: usize, len: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = tokenswift_infer::sampling::SamplerRng::new(seed);
    (0..n)
        .map(|_| (0..len).map(|_| (rng.next_u64() % 64) as u32).collect())
        .collect()
}

fn recipe() -> Recipe {
    Recipe {
        steps: 4,
        seq_len: 24,
        batch: 2,
        grad_accum: 2,
        lr: 1e-2,
        weight_decay: 0.1,
        warmup: 1,
        schedule: Schedule::Cosine,
        heads: 3,
        seed: 7,
        min_doc_tokens: 0,
        chunk_rows: 5,
        checkpoint_every: 2,
        train_vocab: 0,
    }
}

fn values(t: Tensor<2>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// Head i at p is scored against token p+2+i, with the per-head mean over its own valid rows:
/// recomputed by hand from the heads' logits.
#[test]
fn loss_uses_the_p_plus_2_plus_i_offsets() {
    let model = tiny();
    let device = Device::flex();
    let heads = DraftHeads::init_for(&model, 3, &device);
    // Make the heads differ from one another.
    let mut heads = heads;
    for (i, l) in heads.layers.iter_mut().enumerate() {
        let w: Vec<f32> = (0..32 * 32)
            .map(|j| ((j * (i + 3)) % 17) as f32 * 0.01 - 0.08)
            .collect();
        l.linear = burn::module::Param::from_tensor(Tensor::from_data(
            TensorData::new(w, [32, 32]),
            &device,
        ));
    }
    let seq = &sequences(1, 19, 3)[0];
    let mut cache = model.new_cache(seq.len());
    let h0 = base_hidden(&model, seq, &mut cache).unwrap();
    // chunk_rows 4 does not divide the 17 rows: chunk boundaries must not matter.
    let stats = sequence_pass(
        &heads,
        h0.clone(),
        model.lm_head_weight(),
        seq,
        None,
        4,
        1.0,
        None,
    );
    let logits = heads.logits(h0, model.lm_head_weight());
    for (i, lg) in logits.into_iter().enumerate() {
        let lg = values(lg);
        let n = valid_rows(seq.len(), i);
        assert_eq!(n, seq.len() - 2 - i);
        let mut want = HeadStats::default();
        for p in 0..n {
            let row = &lg[p * 64..(p + 1) * 64];
            let m = row.iter().cloned().fold(f32::MIN, f32::max);
            let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f32>().ln();
            let t = seq[p + 2 + i] as usize;
            want.loss_sum += (lse - row[t]) as f64;
            let rank = row.iter().filter(|&&v| v > row[t]).count();
            for k in 0..3 {
                if rank <= k {
                    want.top[k] += 1;
                }
            }
            want.rows += 1;
            want.loss_rows += 1;
        }
        assert_eq!(stats[i].rows, want.rows);
        assert_eq!(stats[i].top, want.top, "head {i}");
        assert!(
            (stats[i].loss() - want.loss()).abs() < 1e-4,
            "head {i}: {} vs {}",
            stats[i].loss(),
            want.loss()
        );
    }
}

/// With a training vocabulary, the softmax runs over its rows only: recomputed by hand, targets
/// outside it leave the loss (the mean is over the rows inside) and count as misses.
#[test]
fn a_training_vocabulary_restricts_the_softmax_to_its_rows() {
    use tokenswift_train::objective::Vocabulary;
    let model = tiny();
    let heads = DraftHeads::init_for(&model, 2, &Device::flex());
    let seq = &sequences(1, 30, 8)[0];
    // The 20 tokens 63, 60, 57, ...: some targets are outside.
    let ranking: Vec<u32> = (0..20).map(|i| 63 - 3 * i).collect();
    let vocab = Vocabulary::from_ranking(&ranking, 20, 64);
    let rows = vocab.select_rows(model.lm_head_weight());
    let mut cache = model.new_cache(seq.len());
    let h0 = base_hidden(&model, seq, &mut cache).unwrap();
    let stats = sequence_pass(
        &heads,
        h0.clone(),
        &rows,
        seq,
        Some(&vocab.remap),
        6,
        1.0,
        None,
    );
    let logits = heads.logits(h0, model.lm_head_weight());
    let mut outside_seen = 0;
    for (i, lg) in logits.into_iter().enumerate() {
        let lg = values(lg);
        let n = valid_rows(seq.len(), i);
        let (mut loss, mut inside, mut top1) = (0.0f64, 0usize, 0u64);
        for p in 0..n {
            let full = &lg[p * 64..(p + 1) * 64];
            let sub: Vec<f32> = ranking.iter().map(|&t| full[t as usize]).collect();
            let t = seq[p + 2 + i];
            let Some(r) = ranking.iter().position(|&x| x == t) else {
                outside_seen += 1;
                continue;
            };
            let m = sub.iter().cloned().fold(f32::MIN, f32::max);
            let lse = m + sub.iter().map(|v| (v - m).exp()).sum::<f32>().ln();
            loss += (lse - sub[r]) as f64;
            inside += 1;
            if sub.iter().filter(|&&v| v > sub[r]).count() == 0 {
                top1 += 1;
            }
        }
        assert_eq!(
            stats[i].rows, n as u64,
            "every row is counted in the accuracy"
        );
        assert_eq!(stats[i].top[0], top1, "head {i}");
        assert_eq!(stats[i].loss_rows, inside as u64, "head {i}");
        let got = stats[i].loss_sum / inside as f64;
        let want = loss / inside as f64;
        assert!((got - want).abs() < 1e-4, "head {i}: {got} vs {want}");
    }
    assert!(
        outside_seen > 0,
        "the test must include targets outside the vocabulary"
    );
}

/// The backward pass yields a gradient for every head parameter, the base's hidden states and
/// lm_head are constants (not tracked), and a training step leaves the base model unchanged.
#[test]
fn gradients_reach_the_heads_only() {
    let model = tiny();
    let device = train_device(&model);
    let heads = DraftHeads::init_for(&model, 3, &device);
    let seq = &sequences(1, 20, 4)[0];
    let mut cache = model.new_cache(seq.len());
    let before = values(base_hidden(&model, seq, &mut cache).unwrap());
    let h0 = base_hidden(&model, seq, &mut cache).unwrap().autodiff();
    let lm = model.lm_head_weight().clone().autodiff();
    assert!(!h0.is_tracked() && !lm.is_tracked());
    let mut acc = GradientsAccumulator::<DraftHeads>::new();
    sequence_pass(&heads, h0, &lm, seq, None, 7, 1.0, Some(&mut acc));
    let grads: GradientsParams = acc.grads();
    assert_eq!(grads.len(), 9, "3 heads × (linear, input norm, post norm)");
    for l in &heads.layers {
        let g = grads.get::<2>(l.linear.id).expect("linear gradient");
        let norm: f32 = values(g).iter().map(|v| v * v).sum();
        assert!(norm > 0.0);
    }
    // A real step, then the base is unchanged.
    let mut r = recipe();
    r.steps = 1;
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(
        &model,
        "tiny",
        "synthetic",
        r,
        sequences(4, 24, 5),
        dir.path(),
        false,
        Parallel::single(&Device::flex()),
    )
    .unwrap();
    t.train_step().unwrap();
    let after = values(base_hidden(&model, seq, &mut cache).unwrap());
    assert_eq!(before, after);
}

fn head_values(h: &DraftHeads) -> Vec<Vec<f32>> {
    h.tensors().into_iter().map(|(_, _, v)| v).collect()
}

/// Two steps, a checkpoint, a fresh process-like resume and two more steps give the same heads as
/// four uninterrupted steps (same data order, same AdamW moments).
#[test]
fn resume_continues_the_same_run() {
    let model = tiny();
    let data = sequences(6, 24, 9);
    let straight_dir = tempfile::tempdir().unwrap();
    let mut straight = Trainer::new(
        &model,
        "tiny",
        "synthetic",
        recipe(),
        data.clone(),
        straight_dir.path(),
        false,
        Parallel::single(&Device::flex()),
    )
    .unwrap();
    for _ in 0..4 {
        straight.train_step().unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    {
        let mut first = Trainer::new(
            &model,
            "tiny",
            "synthetic",
            recipe(),
            data.clone(),
            dir.path(),
            false,
            Parallel::single(&Device::flex()),
        )
        .unwrap();
        first.train_step().unwrap();
        first.train_step().unwrap();
        first.save_checkpoint().unwrap();
        // A partial checkpoint directory (an interrupted save) is ignored.
        std::fs::create_dir_all(dir.path().join("checkpoints/step-000003.partial")).unwrap();
        first.train_step().unwrap(); // lost: not checkpointed
    }
    let mut resumed = Trainer::new(
        &model,
        "tiny",
        "synthetic",
        recipe(),
        data,
        dir.path(),
        true,
        Parallel::single(&Device::flex()),
    )
    .unwrap();
    assert_eq!(resumed.step, 2);
    assert_eq!(resumed.history.len(), 2);
    resumed.train_step().unwrap();
    resumed.train_step().unwrap();
    let (a, b) = (head_values(&straight.heads), head_values(&resumed.heads));
    for (x, y) in a.iter().zip(&b) {
        for (u, v) in x.iter().zip(y) {
            assert!((u - v).abs() <= 1e-6, "{u} vs {v}");
        }
    }
    assert_ne!(
        head_values(&straight.heads),
        head_values(&DraftHeads::init_for(&model, 3, &Device::flex()))
    );

    // Export writes heads + manifest, and they load back on this base.
    let path = resumed
        .export(serde_json::json!({}), vec![5, 2, 9])
        .unwrap();
    let loaded = load_heads(&path, &model).unwrap();
    assert_eq!(loaded.len(), 3);
    let manifest = tokenswift_infer::draft::heads::HeadsManifest::load(
        &tokenswift_infer::draft::heads::manifest_path(&path),
    )
    .unwrap();
    assert_eq!(manifest.token_ranking, vec![5, 2, 9]);
}

#[test]
fn resume_from_another_run_is_refused() {
    let model = tiny();
    let data = sequences(4, 24, 1);
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(
        &model,
        "tiny",
        "synthetic",
        recipe(),
        data.clone(),
        dir.path(),
        false,
        Parallel::single(&Device::flex()),
    )
    .unwrap();
    t.train_step().unwrap();
    t.save_checkpoint().unwrap();
    let mut other = recipe();
    other.heads = 2;
    let e = Trainer::new(
        &model,
        "tiny",
        "synthetic",
        other,
        data.clone(),
        dir.path(),
        true,
        Parallel::single(&Device::flex()),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("3 heads") && e.contains("2"), "{e}");
    let mut other = recipe();
    other.seq_len = 20;
    let e = Trainer::new(
        &model,
        "tiny",
        "synthetic",
        other,
        data.clone(),
        dir.path(),
        true,
        Parallel::single(&Device::flex()),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("--seq-len"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    let e = Trainer::new(
        &model,
        "tiny",
        "synthetic",
        recipe(),
        data.clone(),
        empty.path(),
        true,
        Parallel::single(&Device::flex()),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("found no checkpoint"), "{e}");
    // Another base (a different tiny model) is refused by its fingerprint.
    let other_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../infer/tests/goldens/tiny-llama-gqa-llama3");
    let other_model = Model::load(&other_dir, &Device::flex(), DType::F32).unwrap();
    if other_model.config().hidden_size == model.config().hidden_size {
        let e = Trainer::new(
            &other_model,
            "other",
            "synthetic",
            recipe(),
            data.clone(),
            dir.path(),
            true,
            Parallel::single(&Device::flex()),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("from a run on base `tiny`"), "{e}");
    }
    // Heads of this base refuse to load on the other base.
    let path = t.export(serde_json::json!({}), Vec::new()).unwrap();
    let e = load_heads(&path, &other_model).err().unwrap().to_string();
    assert!(
        e.contains("trained on base `tiny`") || e.contains("shape"),
        "{e}"
    );
}

#[test]
fn unwritable_output_and_long_sequences_are_clear_errors() {
    let model = tiny();
    let file = tempfile::NamedTempFile::new().unwrap();
    let out = file.path().join("sub");
    let e = Trainer::new(
        &model,
        "tiny",
        "synthetic",
        recipe(),
        sequences(2, 24, 1),
        &out,
        false,
        Parallel::single(&Device::flex()),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains(&out.display().to_string()), "{e}");
    let mut r = recipe();
    r.seq_len = 1000;
    let dir = tempfile::tempdir().unwrap();
    let e = Trainer::new(
        &model,
        "tiny",
        "synthetic",
        r,
        sequences(2, 24, 1),
        dir.path(),
        false,
        Parallel::single(&Device::flex()),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("exceeds the model's context of 256"), "{e}");
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(u, v)| (u - v).abs()))
        .fold(0.0, f32::max)
}

/// Data parallel through burn-train's multi-device step: two workers (both on the one flex
/// device), each taking 2 of a step's 4 sequences, train the same heads as one worker taking all
/// 4, up to the order of float additions. The negative controls show the comparison can fail:
/// a worker's gradients dropped (one worker seeing only half of each step, batch 2) or another
/// data order are far outside the tolerance.
#[test]
fn two_workers_train_the_heads_of_one_worker_with_the_whole_batch() {
    let model = tiny();
    let data = sequences(8, 24, 11);
    let flex = Device::flex();
    let run = |r: Recipe, parallel: Parallel| {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Trainer::new(
            &model,
            "tiny",
            "synthetic",
            r,
            data.clone(),
            dir.path(),
            false,
            parallel,
        )
        .unwrap();
        for _ in 0..3 {
            t.train_step().unwrap();
        }
        (head_values(&t.heads), t.history.clone())
    };
    let mut r = recipe();
    r.batch = 2;
    r.grad_accum = 2;
    let (one, one_log) = run(r.clone(), Parallel::single(&flex));
    let two_workers = Parallel {
        devices: vec![flex.clone(), flex.clone()],
        group: None,
    };
    let (two, two_log) = run(r.clone(), two_workers);
    let d = max_diff(&one, &two);
    assert!(d <= 1e-5, "two workers differ from one by {d}");
    for (a, b) in one_log.iter().zip(&two_log) {
        assert_eq!(a.accuracy, b.accuracy);
        for (x, y) in a.loss.iter().zip(&b.loss) {
            assert!((x - y).abs() <= 1e-5, "{x} vs {y}");
        }
    }
    assert!(one_log[0].tokens_per_second > 0.0);

    let mut half = r.clone();
    half.batch = 1;
    let (dropped, _) = run(half, Parallel::single(&flex));
    let d = max_diff(&one, &dropped);
    assert!(
        d > 1e-3,
        "half of each step's gradients changed the heads by only {d}"
    );
    let mut reseeded = r.clone();
    reseeded.seed += 1;
    let (other, _) = run(reseeded, Parallel::single(&flex));
    let d = max_diff(&one, &other);
    assert!(d > 1e-3, "another data order changed the heads by only {d}");
}

/// More workers than sequences per step is one sentence, not an idle worker.
#[test]
fn more_workers_than_sequences_is_refused() {
    let model = tiny();
    let flex = Device::flex();
    let mut r = recipe();
    r.batch = 1;
    r.grad_accum = 1;
    let dir = tempfile::tempdir().unwrap();
    let e = Trainer::new(
        &model,
        "tiny",
        "synthetic",
        r,
        sequences(4, 24, 1),
        dir.path(),
        false,
        Parallel {
            devices: vec![flex.clone(), flex],
            group: None,
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("2 data-parallel workers need at least 2 sequences"),
        "{e}"
    );
}
