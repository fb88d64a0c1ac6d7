//! Cost of a decoding step's KV-cache operations on the burn path (what a GPU runs) at two model
//! shapes that hold the same data (layers × KV heads = 64, same context): 4 layers × 16 KV heads
//! and 64 layers × 1. The compaction of an accepted tree path (`KvCache::keep`) and the write of
//! a step's accepted tokens into the partial cache (`KvCache::copy_positions`) move the same bytes
//! in both, so any difference is the number of ops, which grows with the layers when the cache is
//! one tensor per layer.
//! `cargo run --release --example cache_ops [CTX] [REPS]`
use std::time::Instant;

use burn::tensor::{DType, Device};
use tokenswift_infer::model::{KvCache, ModelConfig};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|x| x.parse().expect("CTX and REPS are numbers"))
        .collect();
    let (ctx, reps) = (
        a.first().copied().unwrap_or(2048),
        a.get(1).copied().unwrap_or(50),
    );
    let device = Device::flex();
    println!("burn path on flex, {ctx} cached positions, head_dim 128, f32; median of {reps}, ms");
    println!(
        "| layers × KV heads | keep (compaction of 3 of 8 tree nodes) | copy 4 accepted positions |"
    );
    println!("|---|---|---|");
    for (layers, kv_heads) in [(4usize, 16usize), (64, 1)] {
        let config = ModelConfig {
            num_layers: layers,
            num_heads: 2 * kv_heads,
            num_kv_heads: kv_heads,
            head_dim: 128,
            ..ModelConfig::tiny()
        };
        let mut full = KvCache::new(&config, ctx + 16, &device, DType::F32, false);
        let mut partial = KvCache::new(&config, 256, &device, DType::F32, false);
        partial.set_len(200).unwrap();
        let (mut keep, mut copy) = (Vec::new(), Vec::new());
        for rep in 0..=reps {
            full.set_len(ctx + 8).unwrap();
            let t = Instant::now();
            full.keep(ctx, &[ctx, ctx + 2, ctx + 5]).unwrap();
            // Reading one value back waits for the queued ops (a GPU runs them asynchronously).
            let _ = full.keys(0).narrow(1, ctx, 1).into_data();
            let k = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            partial
                .copy_positions(&full, &[ctx + 2, ctx + 1, ctx, ctx - 1], 100)
                .unwrap();
            let _ = partial.keys(0).narrow(1, 0, 1).into_data();
            let c = t.elapsed().as_secs_f64() * 1e3;
            if rep > 0 {
                keep.push(k);
                copy.push(c);
            }
        }
        println!(
            "| {layers} × {kv_heads} | {:.3} | {:.3} |",
            median(keep),
            median(copy)
        );
    }
}
