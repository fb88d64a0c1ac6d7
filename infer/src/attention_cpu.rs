//! Multi-threaded attention over a host-resident KV cache (the flex CPU path).
//!
//! Why: with burn's ops the q·Kᵀ and p·V products of decoding are 3-row matmuls that run on one
//! thread, so attention over a 4096-token cache read K and V at single-thread bandwidth. Here the
//! work is split over (KV head, block of cached positions): every cached key and value row is read
//! once per call whatever the number of queries, scores for all queries sharing a KV head are
//! computed together, and partial outputs are reduced at the end.

use rayon::prelude::*;

/// Positions per task.
const BLOCK: usize = 256;

/// Shapes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    /// New (query) tokens.
    pub q: usize,
    /// Cached + new positions attended over.
    pub total: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Row stride of a KV head in the cache (its capacity).
    pub capacity: usize,
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent partial sums so the loop vectorises without reassociation.
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}

/// `out[i, h·hd..] = softmax(q_i·Kᵀ·scale + bias_i) · V` for every query row `i` and head `h`.
///
/// - `queries`: `[q, num_heads·head_dim]` (RoPE applied)
/// - `keys`, `values`: `[num_kv_heads][capacity][head_dim]`, positions `0..total` filled
/// - `bias`: `None` (every query sees every position) or `[q, total]` additive (0 / -inf)
/// - `out`: `[q, num_heads·head_dim]`
pub fn attention(
    s: AttentionShape,
    queries: &[f32],
    keys: &[f32],
    values: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let (q, total, hd) = (s.q, s.total, s.head_dim);
    let group = s.num_heads / s.num_kv_heads;
    let rows = group * q; // query rows per KV head, ordered (g, i)
    let scale = 1.0 / (hd as f32).sqrt();
    let blocks = total.div_ceil(BLOCK);
    // Scores [kv][rows][total].
    let mut scores = vec![0f32; s.num_kv_heads * rows * total];
    let q_row = |h: usize, r: usize| {
        let (g, i) = (r / q, r % q);
        let head = h * group + g;
        &queries[i * s.num_heads * hd + head * hd..][..hd]
    };
    // Pass 1: scores, tasks over (kv head, position block); each task owns columns of its block.
    {
        let ptr = SharedMut(scores.as_mut_ptr());
        (0..s.num_kv_heads * blocks).into_par_iter().for_each(|t| {
            let (h, b) = (t / blocks, t % blocks);
            let (j0, j1) = (b * BLOCK, ((b + 1) * BLOCK).min(total));
            let kh = &keys[h * s.capacity * hd..];
            for j in j0..j1 {
                let k = &kh[j * hd..(j + 1) * hd];
                for r in 0..rows {
                    let i = r % q;
                    let mut v = dot(q_row(h, r), k) * scale;
                    if let Some(bias) = bias {
                        v += bias[i * total + j];
                    }
                    // SAFETY: (h, r, j) is written by exactly one task (the owner of block b).
                    unsafe { *ptr.at((h * rows + r) * total + j) = v };
                }
            }
        });
    }
    // Pass 2: softmax per row.
    scores.par_chunks_mut(total).for_each(|row| {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|v| *v *= inv);
    });
    // Pass 3: partial p·V per (kv head, block), then reduce over blocks.
    let partials: Vec<Vec<f32>> = (0..s.num_kv_heads * blocks)
        .into_par_iter()
        .map(|t| {
            let (h, b) = (t / blocks, t % blocks);
            let (j0, j1) = (b * BLOCK, ((b + 1) * BLOCK).min(total));
            let vh = &values[h * s.capacity * hd..];
            let mut acc = vec![0f32; rows * hd];
            for j in j0..j1 {
                let v = &vh[j * hd..(j + 1) * hd];
                for r in 0..rows {
                    let p = scores[(h * rows + r) * total + j];
                    let a = &mut acc[r * hd..(r + 1) * hd];
                    for (x, &y) in a.iter_mut().zip(v) {
                        *x += p * y;
                    }
                }
            }
            acc
        })
        .collect();
    out.fill(0.0);
    for (t, part) in partials.iter().enumerate() {
        let h = t / blocks;
        for r in 0..rows {
            let (g, i) = (r / q, r % q);
            let head = h * group + g;
            let dst = &mut out[i * s.num_heads * hd + head * hd..][..hd];
            for (x, &y) in dst.iter_mut().zip(&part[r * hd..(r + 1) * hd]) {
                *x += y;
            }
        }
    }
}

struct SharedMut(*mut f32);
// SAFETY: used only for disjoint writes from parallel tasks.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}
impl SharedMut {
    /// # Safety
    /// `i` is in bounds and no other task writes it.
    unsafe fn at(&self, i: usize) -> *mut f32 {
        unsafe { self.0.add(i) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_naive_implementation_with_gqa_and_a_mask() {
        let s = AttentionShape {
            q: 3,
            total: 600,
            num_heads: 6,
            num_kv_heads: 2,
            head_dim: 8,
            capacity: 640,
        };
        let f = |i: usize, m: usize| ((i * m % 101) as f32 - 50.0) / 50.0;
        let queries: Vec<f32> = (0..s.q * s.num_heads * s.head_dim)
            .map(|i| f(i, 7))
            .collect();
        let keys: Vec<f32> = (0..s.num_kv_heads * s.capacity * s.head_dim)
            .map(|i| f(i, 13))
            .collect();
        let values: Vec<f32> = (0..s.num_kv_heads * s.capacity * s.head_dim)
            .map(|i| f(i, 17))
            .collect();
        let bias: Vec<f32> = (0..s.q * s.total)
            .map(|x| {
                if (x % s.total) % 5 == 3 {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let mut out = vec![0f32; s.q * s.num_heads * s.head_dim];
        attention(s, &queries, &keys, &values, Some(&bias), &mut out);
        let group = s.num_heads / s.num_kv_heads;
        for i in 0..s.q {
            for head in 0..s.num_heads {
                let h = head / group;
                let qv = &queries[(i * s.num_heads + head) * s.head_dim..][..s.head_dim];
                let sc: Vec<f64> = (0..s.total)
                    .map(|j| {
                        let k = &keys[(h * s.capacity + j) * s.head_dim..][..s.head_dim];
                        let d: f64 = qv.iter().zip(k).map(|(a, b)| f64::from(a * b)).sum();
                        d / (s.head_dim as f64).sqrt() + f64::from(bias[i * s.total + j])
                    })
                    .collect();
                let m = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = sc.iter().map(|x| (x - m).exp()).sum();
                for d in 0..s.head_dim {
                    let want: f64 = (0..s.total)
                        .map(|j| {
                            (sc[j] - m).exp() / z
                                * f64::from(values[(h * s.capacity + j) * s.head_dim + d])
                        })
                        .sum();
                    let got = out[(i * s.num_heads + head) * s.head_dim + d];
                    assert!(
                        (f64::from(got) - want).abs() < 1e-4,
                        "i={i} head={head} d={d}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
