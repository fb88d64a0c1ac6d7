//! Throughput of the packed skinny-matmul kernels over a whole model's worth of the default
//! model's matrices (30 layers of q/k/v, o, gate/up, down, plus the tied lm_head), so the weights
//! stream from memory as in decoding: f32, and GGUF blocks (Q4_1 layers and a Q8_0 lm_head, as the
//! shipped file; the same multiplied by 8-bit inputs in integers, `--activations q8`; Q8_0
//! throughout), side by side in one run.
//! `cargo run --release -p tokenswift-infer --example kernel_bench`
use std::time::Instant;
use tokenswift_infer::host::kernels::PackedMatrix;
use tokenswift_infer::host::quant::{BlockFormat, QBLOCK, QuantMatrix};
use tokenswift_infer::host::weight::Weight;

/// (rows, cols) of one layer's matrices, as the fast path stacks them.
const LAYER: [(usize, usize); 4] = [(960, 576), (576, 576), (3072, 576), (576, 1536)];
const LAYERS: usize = 30;
const LM_HEAD: (usize, usize) = (49152, 576);

fn quant(format: BlockFormat, n: usize, k: usize, seed: u32) -> Weight {
    let bb = format.block_bytes();
    let mut state = seed.wrapping_mul(2654435761).max(1);
    let rows: Vec<Vec<u8>> = (0..n)
        .map(|_| {
            let mut row = vec![0u8; k / QBLOCK * bb];
            for blk in row.chunks_exact_mut(bb) {
                for b in blk.iter_mut() {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    *b = state as u8;
                }
                blk[0..2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
                if format == BlockFormat::Q4_1 {
                    blk[2..4].copy_from_slice(&half::f16::from_f32(-0.05).to_le_bytes());
                }
            }
            row
        })
        .collect();
    let refs: Vec<&[u8]> = rows.iter().map(Vec::as_slice).collect();
    Weight::Quant(QuantMatrix::from_rows(format, &refs, k).expect("valid blocks"))
}

fn int8(mut w: Weight) -> Weight {
    w.use_int8_products();
    w
}

fn f32w(n: usize, k: usize) -> Weight {
    let w: Vec<f32> = (0..n * k).map(|i| (i % 13) as f32 * 0.01 - 0.06).collect();
    Weight::F32(PackedMatrix::pack(&w, n, k))
}

fn model(layer: &dyn Fn(usize, usize, u32) -> Weight, head: Weight) -> Vec<Weight> {
    let mut ws = Vec::new();
    for l in 0..LAYERS {
        for (i, &(n, k)) in LAYER.iter().enumerate() {
            ws.push(layer(n, k, (l * 4 + i) as u32 + 1));
        }
    }
    ws.push(head);
    ws
}

fn bytes(ws: &[Weight]) -> usize {
    ws.iter()
        .map(|w| match w {
            Weight::F32(_) => w.rows() * w.cols() * 4,
            Weight::Quant(q) => q.bytes(),
            Weight::Int(q) => q.bytes(),
        })
        .sum()
}

/// Seconds for one pass over every matrix with `m` rows (median of `reps`).
fn pass(ws: &[Weight], m: usize, reps: usize) -> f64 {
    let mut xs: Vec<Vec<f32>> = Vec::new();
    let mut ys: Vec<Vec<f32>> = Vec::new();
    for w in ws {
        xs.push((0..m * w.cols()).map(|i| (i % 7) as f32 * 0.1).collect());
        ys.push(vec![0f32; m * w.rows()]);
    }
    let mut times = Vec::new();
    for _ in 0..reps + 1 {
        let t = Instant::now();
        for ((w, x), y) in ws.iter().zip(&xs).zip(ys.iter_mut()) {
            w.matmul(x, m, y);
        }
        times.push(t.elapsed().as_secs_f64());
    }
    times.remove(0);
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    // IN_POOL=1: run on a rayon worker, as the binaries do (DESIGN §6.4).
    if std::env::var("IN_POOL").as_deref() == Ok("1") {
        tokenswift_infer::host::on_pool(bench);
    } else {
        bench();
    }
}

fn bench() {
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9);
    let sets: Vec<(&str, Vec<Weight>)> = vec![
        (
            "f32",
            model(&|n, k, _| f32w(n, k), f32w(LM_HEAD.0, LM_HEAD.1)),
        ),
        (
            "q4_1 + q8_0 head",
            model(
                &|n, k, s| quant(BlockFormat::Q4_1, n, k, s),
                quant(BlockFormat::Q8_0, LM_HEAD.0, LM_HEAD.1, 999),
            ),
        ),
        (
            "q4_1+q8_0, int8",
            model(
                &|n, k, s| int8(quant(BlockFormat::Q4_1, n, k, s)),
                int8(quant(BlockFormat::Q8_0, LM_HEAD.0, LM_HEAD.1, 999)),
            ),
        ),
        (
            "q8_0",
            model(
                &|n, k, s| quant(BlockFormat::Q8_0, n, k, s),
                quant(BlockFormat::Q8_0, LM_HEAD.0, LM_HEAD.1, 999),
            ),
        ),
    ];
    println!(
        "one pass over a model's matrices ({LAYERS} layers + lm_head), {} threads, median of {reps}",
        rayon::current_num_threads()
    );
    // ROWS=1,4 limits the row counts (e.g. for a profiler).
    let ms: Vec<usize> = std::env::var("ROWS")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 4, 8, 12, 16, 24, 64]);
    print!("{:18} {:>8}", "weights", "MB");
    for &m in &ms {
        print!(" {:>9}", format!("m={m} ms"));
    }
    println!("   q16/q1");
    for (name, ws) in &sets {
        print!("{name:18} {:8.1}", bytes(ws) as f64 / 1e6);
        let mut first = 0.0;
        let mut last = 0.0;
        for &m in &ms {
            let s = pass(ws, m, reps);
            if m == 1 {
                first = s;
            }
            if m == 16 {
                last = s;
            }
            print!(" {:9.2}", s * 1e3);
        }
        println!("   {:.2}", last / first);
    }
}
