//! A model larger than its f32 form could afford loads at about its quantised size.
//!
//! A synthetic 1B-parameter Llama-shaped checkpoint in bf16 (2.0 GB on disk, 4.1 GB as f32) is
//! loaded with `--weights q8_0` semantics ([`WeightsChoice::Quantise`]): each matrix is read,
//! quantised and its file pages handed back, so the peak resident memory of the load stays below
//! the bf16 file's own size. Control: the same checkpoint loaded as f32 peaks above the f32 size
//! (so the measurement does see the weights). Ignored by default (it writes 2 GB and takes about a
//! minute): `cargo test --release -p tokenswift-infer --test memory -- --ignored --nocapture`.
//! Linux only (it reads and resets the peak in /proc/self).

use std::path::Path;

use burn::tensor::{DType, Device};
use tokenswift_infer::host::quant::BlockFormat;
use tokenswift_infer::load::synthetic::LlamaShape;
use tokenswift_infer::model::{AttentionMask, LoadOptions, LogitRows, Model, WeightsChoice};
use tokenswift_infer::tensor::to_host_f32;

/// Writes the 1B checkpoint (see [`LlamaShape::write_bf16`]). Returns the number of parameters.
fn write_checkpoint(dir: &Path) -> usize {
    LlamaShape::ONE_B.write_bf16(dir).unwrap()
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
