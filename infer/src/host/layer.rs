//! One decoder layer of the CPU fast path (DESIGN §6) on host memory, with the packed
//! skinny-matmul kernel ([`super::kernels`]) for every product — projections (q/k/v fused,
//! gate/up fused), attention scores and attention output — and a host KV cache kept in the kernel's
//! panel layout, so that attention over a long cache is a multi-threaded matmul with no repacking.
//!
//! Why: on a 2-core CPU, burn's per-op overhead and single-threaded few-row matmuls made verifying
//! 16 tokens cost ~2× one token and attention over 4096 cached tokens run at one thread's
//! bandwidth. The burn-ops path ([`crate::model`]) stays for GPUs and is tested against this one.

use super::kernels::matmul_panels;
use super::kv::HostKv;
use super::weight::Weight;

/// One decoder layer's weights, packed.
pub struct CpuLayer {
    pub input_norm: Vec<f32>,
    /// q, k, v projections stacked: `[(heads + 2·kv_heads)·head_dim, hidden]`.
    pub qkv: Weight,
    pub qkv_bias: Option<Vec<f32>>,
    pub o: Weight,
    pub post_norm: Vec<f32>,
    /// gate and up projections stacked: `[2·ffn, hidden]`.
    pub gate_up: Weight,
    pub down: Weight,
}

/// Dimensions the CPU path needs.
#[derive(Debug, Clone, Copy)]
pub struct CpuDims {
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub eps: f32,
}

/// Resizes `v` to `n` values (contents unspecified) and returns it.
fn buf(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    v.resize(n, 0.0);
    &mut v[..n]
}

/// e^x, branch-free so loops over it vectorise: ln 2 range reduction and a degree-6 polynomial
/// (relative error below 4e-7); exactly 0 below -87 (masked entries are -inf).
#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Comparisons rather than `clamp`/`max`, whose NaN rules keep loops from vectorising (no NaN
    // reaches here); the values are the same.
    let lo = if x > -87.0 { x } else { -87.0 };
    let xc = if lo < 88.0 { lo } else { 88.0 };
    let n = (xc * std::f32::consts::LOG2_E + 0.5).floor();
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // SAFETY: n = floor(xc·log2 e + 0.5) with xc in [-87, 88] lies in [-125, 127].
    let ni: i32 = unsafe { n.to_int_unchecked() };
    let scale = f32::from_bits(((ni + 127) as u32) << 23);
    if x < -87.0 { 0.0 } else { p * scale }
}

macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                fn v4($($arg: $ty),*) { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                fn v3($($arg: $ty),*) { body($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the features enabled for `v4` (checked here).
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: as above, for `v3`.
                    return unsafe { v3($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

multiversion! {
    /// RMSNorm of each `hidden`-wide row of `x` into `out`.
    fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
        let h = weight.len();
        for (row, dst) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
            let ss: f32 = row.iter().map(|v| v * v).sum();
            let inv = 1.0 / (ss / h as f32 + eps).sqrt();
            for ((d, &v), &w) in dst.iter_mut().zip(row).zip(weight) {
                *d = v * inv * w;
            }
        }
    }
}

multiversion! {
    /// `row = softmax(row·scale + bias_row)`, where `bias_row` covers the last `bias.len()`
    /// columns (the new tokens) and is zero before them.
    ///
    /// The sum runs in 16 lanes, so every pass vectorises (an ordered f32 reduction would not),
    /// and the lane of a term is its rank among the row's *visible* columns, not its column. A
    /// trie node's visible columns are the cache and then its ancestors and itself in order, so
    /// rank = logical position: the node's row sums the same terms in the same lanes and order as
    /// the one-token pass of autoregressive decoding at that position, and a verified token's
    /// distribution is bit-identical to the autoregressive one (masked terms are exact zeros in
    /// the value product too). That is what makes sampled TokenSwift output equal AR's byte for
    /// byte at any length, rather than only in distribution.
    pub fn softmax_row(row: &mut [f32], scale: f32, bias: Option<&[f32]>) {
        const L: usize = 16;
        row.iter_mut().for_each(|v| *v *= scale);
        let tail = row.len() - bias.map_or(0, <[f32]>::len);
        if let Some(b) = bias {
            row[tail..].iter_mut().zip(b).for_each(|(v, &bb)| *v += bb);
        }
        let mut lanes = [f32::NEG_INFINITY; L];
        let (chunks, rest) = row.as_chunks::<L>();
        for c in chunks {
            for l in 0..L {
                lanes[l] = if c[l] > lanes[l] { c[l] } else { lanes[l] };
            }
        }
        let mut max = f32::NEG_INFINITY;
        for &v in lanes.iter().chain(rest) {
            if v > max {
                max = v;
            }
        }
        // e^(x - max), summed as it is computed: whole chunks of the cache part lane by lane,
        // the rest of the cache part by column (= rank), then the visible new columns by rank.
        let mut sums = [0f32; L];
        let (chunks, rest) = row[..tail].as_chunks_mut::<L>();
        for c in chunks {
            for l in 0..L {
                c[l] = exp_approx(c[l] - max);
                sums[l] += c[l];
            }
        }
        let mut rank = tail - rest.len();
        for v in rest {
            *v = exp_approx(*v - max);
            sums[rank % L] += *v;
            rank += 1;
        }
        if let Some(b) = bias {
            for (v, &bb) in row[tail..].iter_mut().zip(b) {
                *v = exp_approx(*v - max);
                if bb == 0.0 {
                    sums[rank % L] += *v;
                    rank += 1;
                }
            }
        }
        let mut sum = 0f32;
        for s in sums {
            sum += s;
        }
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// Softmax of every `total`-wide row of `scores`, in parallel; row `r` uses row `r % q` of the
/// `[q, q]` bias over the last `q` columns (query rows of one KV head are ordered (group member,
/// query)).
fn softmax_rows(scores: &mut [f32], total: usize, scale: f32, bias: Option<&[f32]>, q: usize) {
    use rayon::prelude::*;
    let row = |(r, row): (usize, &mut [f32])| {
        softmax_row(row, scale, bias.map(|b| &b[(r % q) * q..][..q]));
    };
    // A few short rows take less time than handing them to the thread pool: one token's 3 rows
    // at a 2000-token context (6000 scores) ran 0.33 → 0.44 ms per pass in parallel, two tokens'
    // (12000) 0.65 → 0.46 ms (timed per segment of `layer_forward`, DESIGN §6.1).
    if scores.len() < 1 << 13 {
        scores.chunks_mut(total).enumerate().for_each(row);
    } else {
        scores.par_chunks_mut(total).enumerate().for_each(row);
    }
}

multiversion! {
    /// `out[i, j] = silu(gu[i, j]) · gu[i, ffn + j]` for rows of `2·ffn`.
    fn swiglu(gu: &[f32], ffn: usize, out: &mut [f32]) {
        for (row, dst) in gu.chunks_exact(2 * ffn).zip(out.chunks_exact_mut(ffn)) {
            let (g, u) = row.split_at(ffn);
            for ((d, &gv), &uv) in dst.iter_mut().zip(g).zip(u) {
                *d = gv / (1.0 + exp_approx(-gv)) * uv;
            }
        }
    }
}

/// Rotate-half RoPE in place on rows `[q, heads·head_dim]` with `cos`/`sin` `[q, head_dim]`.
fn rope_rows(x: &mut [f32], row_len: usize, heads: usize, hd: usize, cos: &[f32], sin: &[f32]) {
    let half = hd / 2;
    for (i, row) in x.chunks_exact_mut(row_len).enumerate() {
        let (c, s) = (&cos[i * hd..][..hd], &sin[i * hd..][..hd]);
        for h in 0..heads {
            let v = &mut row[h * hd..(h + 1) * hd];
            for d in 0..half {
                let (a, b) = (v[d], v[d + half]);
                v[d] = a * c[d] - b * s[d];
                v[d + half] = b * c[d + half] + a * s[d + half];
            }
        }
    }
}

/// Runs one decoder layer on `x` (`[q, hidden]`, updated in place). New keys/values go to
/// positions `start..start+q` of `kv`; `bias` is `[q, q]` over the new tokens (the cache is
/// always visible) or `None` (all visible). With `last_query`, the last row's queries (after
/// RoPE, `heads × head_dim`) are stored there.
#[allow(clippy::too_many_arguments)]
pub fn layer_forward(
    d: CpuDims,
    layer: &CpuLayer,
    index: usize,
    x: &mut [f32],
    (q, start): (usize, usize),
    (cos, sin): (&[f32], &[f32]),
    bias: Option<&[f32]>,
    kv: &mut HostKv,
    last_query: Option<&mut Vec<f32>>,
) {
    let (h, hd, nh, nkv) = (d.hidden, d.head_dim, d.heads, d.kv_heads);
    let group = nh / nkv;
    let total = start + q;
    let mut sc = std::mem::take(&mut kv.scratch);
    let normed = buf(&mut sc.normed, q * h);
    rms_norm(x, &layer.input_norm, d.eps, normed);
    let width = (nh + 2 * nkv) * hd;
    let qkv = buf(&mut sc.qkv, q * width);
    layer.qkv.matmul(normed, q, qkv);
    if let Some(b) = &layer.qkv_bias {
        qkv.chunks_exact_mut(width)
            .for_each(|row| row.iter_mut().zip(b).for_each(|(v, bb)| *v += bb));
    }
    // RoPE on the q and k parts of every row (they are contiguous: q heads, then k heads).
    rope_rows(qkv, width, nh + nkv, hd, cos, sin);
    if let Some(cap) = last_query {
        cap.clear();
        cap.extend_from_slice(&qkv[(q - 1) * width..][..nh * hd]);
    }
    for i in 0..q {
        let row = &qkv[i * width..(i + 1) * width];
        for kvh in 0..nkv {
            let k = &row[(nh + kvh) * hd..][..hd];
            let v = &row[(nh + nkv + kvh) * hd..][..hd];
            kv.write(index, kvh, start + i, k, v);
        }
    }
    let rows = group * q;
    let attn = buf(&mut sc.attn, q * nh * hd);
    let qh = buf(&mut sc.qh, rows * hd);
    let scores = buf(&mut sc.scores, rows * total);
    let oh = buf(&mut sc.oh, rows * hd);
    let scale = 1.0 / (hd as f32).sqrt();
    for kvh in 0..nkv {
        for g in 0..group {
            for i in 0..q {
                let head = kvh * group + g;
                qh[(g * q + i) * hd..][..hd].copy_from_slice(&qkv[i * width + head * hd..][..hd]);
            }
        }
        matmul_panels(qh, rows, &kv.key_panels(index, kvh, total), scores);
        softmax_rows(scores, total, scale, bias, q);
        matmul_panels(scores, rows, &kv.value_panels(index, kvh, total), oh);
        for g in 0..group {
            for i in 0..q {
                let head = kvh * group + g;
                attn[(i * nh + head) * hd..][..hd].copy_from_slice(&oh[(g * q + i) * hd..][..hd]);
            }
        }
    }
    let o = buf(&mut sc.o, q * h);
    layer.o.matmul(attn, q, o);
    x.iter_mut().zip(o.iter()).for_each(|(a, b)| *a += b);
    rms_norm(x, &layer.post_norm, d.eps, normed);
    let gu = buf(&mut sc.gu, q * 2 * d.ffn);
    layer.gate_up.matmul(normed, q, gu);
    let act = buf(&mut sc.act, q * d.ffn);
    swiglu(gu, d.ffn, act);
    layer.down.matmul(act, q, o);
    x.iter_mut().zip(o.iter()).for_each(|(a, b)| *a += b);
    kv.scratch = sc;
}

/// RMSNorm of each row of `x` into `out` (the final norm before `lm_head`).
pub fn rms_norm_rows(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    rms_norm(x, weight, eps, out)
}

/// Final norm and `lm_head` for `rows` rows of `x`.
pub fn logits(x: &[f32], rows: usize, norm: &[f32], eps: f32, lm_head: &Weight) -> Vec<f32> {
    let mut normed = vec![0f32; x.len()];
    rms_norm(x, norm, eps, &mut normed);
    let mut out = vec![0f32; rows * lm_head.rows()];
    lm_head.matmul(&normed, rows, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_approx_is_within_4e7_relative() {
        for i in -8700..=880 {
            let x = i as f32 * 0.01;
            let (a, b) = (exp_approx(x), x.exp());
            assert!((a - b).abs() <= 4e-7 * b, "x={x}: {a} vs {b}");
        }
        assert_eq!(exp_approx(f32::NEG_INFINITY), 0.0);
    }
}
