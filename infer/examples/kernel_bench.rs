//! Throughput of the packed skinny-matmul kernel on the default model's shapes.
//! `cargo run --release --example kernel_bench`
use std::time::Instant;
use tokenswift_infer::host::kernels::{PackedMatrix, matmul_packed};

fn main() {
    for &(n, k) in &[(1536usize, 576usize), (576, 1536), (49152, 576)] {
        let w: Vec<f32> = (0..n * k).map(|i| (i % 13) as f32 * 0.01).collect();
        let p = PackedMatrix::pack(&w, n, k);
        for &m in &[1usize, 2, 4, 6, 8, 12, 16, 24, 64] {
            let x: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
            let mut y = vec![0f32; m * n];
            let reps = (2_000_000_000 / (2 * m * n * k)).clamp(3, 200);
            matmul_packed(&x, m, &p, &mut y);
            let t = Instant::now();
            for _ in 0..reps {
                matmul_packed(&x, m, &p, &mut y);
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            println!(
                "n={n:6} k={k:5} m={m:3}: {:8.3} ms  {:6.1} GFLOP/s  {:5.1} GB/s weights",
                s * 1e3,
                2.0 * (m * n * k) as f64 / s / 1e9,
                (n * k * 4) as f64 / s / 1e9
            );
        }
    }
}
