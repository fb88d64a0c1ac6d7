//! Time of one draw with the paper's sampler (min-p 0.1, at least 20 kept, penalty 1.2 over
//! 1024) from a vocabulary-wide row, median of 2000: the per-token cost that AR and every
//! TokenSwift node pay on top of the forward pass.
//! `cargo run --release -p tokenswift-infer --example draw_bench`
use tokenswift_infer::sampling::{SamplerRng, SamplingConfig, draw, penalty_window_tokens};
fn main() {
    let mut rng = SamplerRng::new(3);
    // Logits like a small LM's: a few high, a long Gaussian-ish tail.
    let base: Vec<f32> = (0..49152)
        .map(|i| {
            let u = rng.uniform() as f32;
            let v = rng.uniform() as f32;
            let g = (-2.0 * u.max(1e-9).ln()).sqrt() * (std::f32::consts::TAU * v).cos();
            g * 2.5 + if i % 997 == 0 { 8.0 } else { 0.0 }
        })
        .collect();
    let hist: Vec<u32> = (0..3000).map(|i| (i * 7919 % 49152) as u32).collect();
    // GREEDY=1: temperature 0 with the same penalty (`--temperature 0`).
    let cfg = if std::env::var("GREEDY").as_deref() == Ok("1") {
        SamplingConfig {
            temperature: 0.0,
            ..SamplingConfig::default()
        }
    } else {
        SamplingConfig::default()
    };
    let mut row = base.clone();
    let mut times = Vec::new();
    let mut acc = 0u64;
    for _ in 0..2000 {
        row.copy_from_slice(&base);
        let t = std::time::Instant::now();
        let w = penalty_window_tokens(&hist, &[], cfg.penalty_window);
        acc += u64::from(draw(&cfg, &mut rng, &mut row, &w));
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "draw (paper sampler, 49152 logits): median {:.1} µs ({acc})",
        times[1000] * 1e6
    );
}
