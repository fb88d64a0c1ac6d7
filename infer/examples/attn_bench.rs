//! Attention pieces for one KV head of one layer at context T: scores (m × 64 · Kᵀ), softmax of
//! m rows, values (m × T · V), for m = 3q query rows (GQA group 3). Interleaved, median of reps.
use std::time::Instant;
use tokenswift_infer::host::kernels::{PackedMatrix, matmul_panels};
use tokenswift_infer::host::layer::softmax_row;
fn main() {
    rayon::ThreadPoolBuilder::new()
        .build()
        .unwrap()
        .install(run);
}
fn run() {
    let t: usize = std::env::args().nth(1).map_or(2000, |s| s.parse().unwrap());
    let hd = 64;
    let keys: Vec<f32> = (0..t * hd)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
        .collect();
    let vals = keys.clone();
    let k = PackedMatrix::pack(&keys, t, hd); // n = t positions, depth 64
    // V as [64 outputs, t depth]
    let mut vt = vec![0f32; hd * t];
    for p in 0..t {
        for d in 0..hd {
            vt[d * t + p] = vals[p * hd + d];
        }
    }
    let v = PackedMatrix::pack(&vt, hd, t);
    let reps = 400;
    for q in [1usize, 2, 3, 4, 6] {
        let m = 3 * q;
        let x: Vec<f32> = (0..m * hd).map(|i| (i % 13) as f32 * 0.01).collect();
        let mut s = vec![0f32; m * t];
        let mut o = vec![0f32; m * hd];
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..reps {
            let t0 = Instant::now();
            matmul_panels(&x, m, &k.panels(), &mut s);
            let t1 = Instant::now();
            for row in s.chunks_mut(t) {
                softmax_row(row, 0.125, None);
            }
            let t2 = Instant::now();
            matmul_panels(&s, m, &v.panels(), &mut o);
            let t3 = Instant::now();
            a.push((t1 - t0).as_secs_f64());
            b.push((t2 - t1).as_secs_f64());
            c.push((t3 - t2).as_secs_f64());
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            1e6 * v[v.len() / 2]
        };
        let (sa, sb, sc) = (med(&mut a), med(&mut b), med(&mut c));
        println!(
            "q={q} (m={m}) T={t}: scores {sa:.1} µs, softmax {sb:.1} µs, values {sc:.1} µs; ×90 (layers·kv heads) = {:.2} ms",
            (sa + sb + sc) * 90.0 / 1e3
        );
    }
}
