//! Integer weight products (W4A8 / W8A8), `--activations q8`: each input row is quantised to 8
//! bits per block of 32 values (`x ≈ dₓ · qₓ`, dₓ = amax/127, round to nearest even) and
//! multiplied by the weights' own 4- or 8-bit quants in 32-bit integers, four products per
//! instruction lane with AVX-512 VNNI (`vpdpbusd`), as llama.cpp's CPU backend does (DESIGN §6.5).
//!
//! Why: on the Q4_1 checkpoint the f32 kernel ([`super::quant`]) is bound by its multiply-adds,
//! not by memory: every extra verified row costs one f32 FMA per weight plus its share of the
//! dequantisation, so a 4-row verify costs ~1.6 one-row passes. An integer dot product does 64
//! multiply-adds per instruction instead of 16, so a few rows cost little more than one.
//!
//! Numerics: lossy against the checkpoint's f32 values (the inputs are rounded to 8 bits), so the
//! text differs from `--activations f32`. Lossless where it matters: every output is a fixed
//! sequence of operations on its own row (the row's quantisation, exact integer sums, then per
//! block `acc = fma(Σ, d_w·dₓ, acc)` (+ `fma(m_w, dₓ·Σqₓ, acc)` for Q4_1), blocks in order),
//! whatever the number of rows, the tiling or the instruction set; so a verify pass's logits equal
//! AR's bit for bit and TokenSwift stays lossless against AR in this mode too.
//!
//! Layout: the weights' scales as [`QuantMatrix`]'s; the quants per panel of 16 outputs and block
//! of 32 depths as groups of 16 lanes × 4 bytes (`vpdpbusd`'s unsigned operand): Q4 groups hold
//! depths 8g..8g+4 in the low nibbles and 8g+4..8g+8 in the high ones; Q8 groups hold depths
//! 4g..4g+4 offset by +128 (so unsigned; the offset is taken back as 128·Σqₓ).

use std::cell::RefCell;

use super::kernels::{OutPtr, PANEL, par_panel_ranges_aligned};
use super::quant::{BlockFormat, QBLOCK, QuantMatrix};

/// Bytes of one group (16 lanes × 4 bytes).
const GROUP: usize = PANEL * 4;
/// Rows per register tile at most.
const ROWS: usize = 8;

const F_Q8_0: u8 = 0;
const F_Q4_0: u8 = 1;
const F_Q4_1: u8 = 2;

/// Groups per block: Q4 packs 8 depths per lane and group, Q8 four.
const fn groups(f: u8) -> usize {
    if f == F_Q8_0 { 8 } else { 4 }
}

/// What is subtracted per unit of Σqₓ from a block's integer sum: Q4_0's zero point 8, Q8_0's
/// storage offset 128; Q4_1 has none (its minimum is a float term).
const fn offset(f: u8) -> i32 {
    match f {
        F_Q8_0 => 128,
        F_Q4_0 => 8,
        _ => 0,
    }
}

/// Input rows quantised per block of [`QBLOCK`]: `x ≈ d · q`.
#[derive(Debug, Default)]
pub struct QuantisedRows {
    /// `[m][k]`.
    q: Vec<i8>,
    /// `[m][k/32]`: the scale dₓ.
    d: Vec<f32>,
    /// `[m][k/32]`: Σqₓ over the block.
    s: Vec<i32>,
    k: usize,
}

impl QuantisedRows {
    /// Quantises `m` rows of `k` values (`k` a multiple of [`QBLOCK`]), reusing the buffers.
    pub fn quantise(&mut self, x: &[f32], m: usize, k: usize) {
        self.quantise_with(x, m, k, int8_is_fast());
    }

    /// [`Self::quantise`], with the vector code only where `vnni` (which the CPU must have).
    fn quantise_with(&mut self, x: &[f32], m: usize, k: usize, vnni: bool) {
        assert!(
            k.is_multiple_of(QBLOCK) && x.len() == m * k,
            "{} values are not {m} rows of {k} (a multiple of {QBLOCK})",
            x.len()
        );
        let nb = m * k / QBLOCK;
        self.k = k;
        self.q.resize(m * k, 0);
        self.d.resize(nb, 0.0);
        self.s.resize(nb, 0);
        for (b, (xs, qs)) in x
            .chunks_exact(QBLOCK)
            .zip(self.q.chunks_exact_mut(QBLOCK))
            .enumerate()
        {
            #[cfg(target_arch = "x86_64")]
            let (d, sum) = if vnni {
                // SAFETY: the caller only sets `vnni` where the CPU has the features.
                unsafe { vnni::quantise_block(xs, qs) }
            } else {
                quantise_block(xs, qs)
            };
            #[cfg(not(target_arch = "x86_64"))]
            let (d, sum) = quantise_block(xs, qs);
            self.d[b] = d;
            self.s[b] = sum;
        }
    }

    /// Row `r`, block `b`: (dₓ, Σqₓ, dₓ·Σqₓ — Q4_1's minimum term).
    #[inline(always)]
    fn block(&self, r: usize, b: usize) -> (f32, i32, f32) {
        let i = r * (self.k / QBLOCK) + b;
        (self.d[i], self.s[i], self.d[i] * self.s[i] as f32)
    }
}

/// One block of inputs: dₓ = amax/127, qₓ = round-half-even(x / dₓ) (by the reciprocal), and
/// Σqₓ. The definition [`vnni::quantise_block`] equals.
fn quantise_block(xs: &[f32], qs: &mut [i8]) -> (f32, i32) {
    let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(xs) {
        let r = ((v * id).round_ties_even() as i32).clamp(-127, 127);
        *q = r as i8;
        sum += r;
    }
    (d, sum)
}

/// A `[n, k]` weight of Q4_0, Q4_1 or Q8_0 blocks laid out for integer products.
#[derive(Debug, Clone)]
pub struct IntMatrix {
    format: BlockFormat,
    /// As [`QuantMatrix`]'s: `[panels][k/32][scales][PANEL]`.
    scales: Vec<f32>,
    /// `[panels][k/32][groups][PANEL][4]`.
    quants: Vec<u8>,
    n: usize,
    k: usize,
}

impl IntMatrix {
    /// The same blocks re-laid for integer products; `None` for bf16 matrices (no integer
    /// quants to multiply).
    pub fn from_quant(w: &QuantMatrix) -> Option<Self> {
        let f = match w.format() {
            BlockFormat::Q8_0 => F_Q8_0,
            BlockFormat::Q4_0 => F_Q4_0,
            BlockFormat::Q4_1 => F_Q4_1,
            BlockFormat::Bf16 => return None,
        };
        let (n, k) = (w.rows(), w.cols());
        let nb = k / QBLOCK;
        let panels = n.div_ceil(PANEL);
        let g = groups(f);
        let mut quants = vec![0u8; panels * nb * g * GROUP];
        for p in 0..panels {
            for b in 0..nb {
                let out = &mut quants[(p * nb + b) * g * GROUP..][..g * GROUP];
                for j in 0..PANEL {
                    for gi in 0..g {
                        for byte in 0..4 {
                            out[gi * GROUP + j * 4 + byte] = if f == F_Q8_0 {
                                (w.quant(p, b, j, 4 * gi + byte) + 128) as u8
                            } else {
                                let lo = w.quant(p, b, j, 8 * gi + byte) as u8;
                                let hi = w.quant(p, b, j, 8 * gi + 4 + byte) as u8;
                                lo | (hi << 4)
                            };
                        }
                    }
                }
            }
        }
        Some(Self {
            format: w.format(),
            scales: w.raw_scales().to_vec(),
            quants,
            n,
            k,
        })
    }

    pub fn rows(&self) -> usize {
        self.n
    }

    pub fn cols(&self) -> usize {
        self.k
    }

    pub fn format(&self) -> BlockFormat {
        self.format
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.scales.len() * 4 + self.quants.len()
    }

    fn format_id(&self) -> u8 {
        match self.format {
            BlockFormat::Q8_0 => F_Q8_0,
            BlockFormat::Q4_0 => F_Q4_0,
            _ => F_Q4_1,
        }
    }

    /// The stored (unsigned) quant of lane `j`, depth `d` of block `b` of panel `p`.
    #[inline(always)]
    fn stored(&self, f: u8, p: usize, b: usize, j: usize, d: usize) -> i32 {
        let nb = self.k / QBLOCK;
        let base = (p * nb + b) * groups(f) * GROUP;
        if f == F_Q8_0 {
            i32::from(self.quants[base + (d / 4) * GROUP + j * 4 + d % 4])
        } else {
            let byte = self.quants[base + (d / 8) * GROUP + j * 4 + d % 4];
            i32::from(if d % 8 < 4 { byte & 0x0f } else { byte >> 4 })
        }
    }
}

/// Panel `p` of row `r` into `out[..cols]`, one output at a time: the definition the vector
/// kernel must equal bit for bit.
fn panel_portable(xq: &QuantisedRows, r: usize, w: &IntMatrix, p: usize, out: &mut [f32]) {
    let f = w.format_id();
    let nb = w.k / QBLOCK;
    let sc = if f == F_Q4_1 { 2 } else { 1 };
    let x = &xq.q[r * w.k..][..w.k];
    for (j, o) in out.iter_mut().enumerate() {
        let mut acc = 0f32;
        for b in 0..nb {
            let (dx, s, ds) = xq.block(r, b);
            let mut sum = 0i32;
            for d in 0..QBLOCK {
                sum += w.stored(f, p, b, j, d) * i32::from(x[b * QBLOCK + d]);
            }
            sum -= offset(f) * s;
            let scales = &w.scales[(p * nb + b) * sc * PANEL..];
            acc = (sum as f32).mul_add(scales[j] * dx, acc);
            if f == F_Q4_1 {
                acc = scales[PANEL + j].mul_add(ds, acc);
            }
        }
        *o = acc;
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::super::kernels::{prefetch, store_tile_avx512};
    use super::{
        F_Q4_1, F_Q8_0, GROUP, IntMatrix, OutPtr, PANEL, QBLOCK, QuantisedRows, ROWS, groups,
        offset,
    };

    /// [`super::quantise_block`] with vectors: the same reciprocal, product and
    /// round-half-even (the default MXCSR mode of `cvtps2dq`), so the same quants.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn quantise_block(xs: &[f32], qs: &mut [i8]) -> (f32, i32) {
        assert!(xs.len() == QBLOCK && qs.len() == QBLOCK, "one block");
        // SAFETY: two vectors of 16 within the asserted lengths.
        let (a, b) = unsafe {
            (
                _mm512_loadu_ps(xs.as_ptr()),
                _mm512_loadu_ps(xs.as_ptr().add(16)),
            )
        };
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
        let d = amax / 127.0;
        let id = _mm512_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
        let (lo, hi) = (_mm512_set1_epi32(-127), _mm512_set1_epi32(127));
        let round = |v: __m512| {
            _mm512_min_epi32(
                _mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v, id)), lo),
                hi,
            )
        };
        let (qa, qb) = (round(a), round(b));
        // SAFETY: 16 bytes each, within the asserted length.
        unsafe {
            _mm_storeu_si128(qs.as_mut_ptr() as *mut __m128i, _mm512_cvtepi32_epi8(qa));
            _mm_storeu_si128(
                qs.as_mut_ptr().add(16) as *mut __m128i,
                _mm512_cvtepi32_epi8(qb),
            );
        }
        (d, _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb)))
    }

    /// How many blocks ahead of its loads a tile asks for a panel's quants and scales.
    const PREFETCH_BLOCKS: usize = 2;

    /// Rows `row0..row0 + R` by panels `p0..p0 + C`: per block, the integer sums of all R·C
    /// (row, panel) pairs in registers, then each output's float update in block order.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    fn tile<const R: usize, const C: usize, const F: u8>(
        xq: &QuantisedRows,
        w: &IntMatrix,
        p0: usize,
        row0: usize,
        y: &OutPtr,
    ) {
        let (k, nb, g) = (w.k, w.k / QBLOCK, groups(F));
        let sc = if F == F_Q4_1 { 2 } else { 1 };
        assert!(xq.q.len() >= (row0 + R) * k, "input rows out of bounds");
        assert!(
            w.quants.len() >= (p0 + C) * nb * g * GROUP
                && w.scales.len() >= (p0 + C) * nb * sc * PANEL,
            "panel out of bounds"
        );
        let xr: [*const i8; R] = std::array::from_fn(|r| xq.q[(row0 + r) * k..].as_ptr());
        let low = _mm512_set1_epi8(0x0f);
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        for b in 0..nb {
            let base: [*const u8; C] =
                std::array::from_fn(|c| w.quants[((p0 + c) * nb + b) * g * GROUP..].as_ptr());
            // Each panel's blocks are one stream of quants and one of scales: ask for the lines
            // [`PREFETCH_BLOCKS`] blocks ahead (a prefetch never faults, past the end or not; a
            // forward pass at a 2000-token context −4 % at q = 1, −5 % at 2–4, −7 % at 8;
            // DESIGN §6.5).
            for (c, bc) in base.iter().enumerate() {
                prefetch(bc.wrapping_add(PREFETCH_BLOCKS * g * GROUP), g * GROUP);
                let scales = w
                    .scales
                    .as_ptr()
                    .wrapping_add(((p0 + c) * nb + b + PREFETCH_BLOCKS) * sc * PANEL);
                prefetch(scales, sc * PANEL * 4);
            }
            // Four input quants as one lane's signed operand.
            // SAFETY: at + 4 <= k within row r (asserted above).
            let x4 = |r: usize, at: usize| unsafe {
                _mm512_set1_epi32(std::ptr::read_unaligned(
                    xr[r].add(b * QBLOCK + at) as *const i32
                ))
            };
            let mut sums = [[_mm512_setzero_si512(); C]; R];
            for gi in 0..g {
                // SAFETY: within the panels' quants (asserted above).
                let v: [__m512i; C] = std::array::from_fn(|c| unsafe {
                    _mm512_loadu_si512(base[c].add(gi * GROUP) as *const __m512i)
                });
                if F == F_Q8_0 {
                    for (r, row) in sums.iter_mut().enumerate() {
                        let xv = x4(r, 4 * gi);
                        for (s, &vc) in row.iter_mut().zip(&v) {
                            *s = _mm512_dpbusd_epi32(*s, vc, xv);
                        }
                    }
                } else {
                    let lo: [__m512i; C] = std::array::from_fn(|c| _mm512_and_si512(v[c], low));
                    let hi: [__m512i; C] = std::array::from_fn(|c| {
                        _mm512_and_si512(_mm512_srli_epi16::<4>(v[c]), low)
                    });
                    for (r, row) in sums.iter_mut().enumerate() {
                        let (xl, xh) = (x4(r, 8 * gi), x4(r, 8 * gi + 4));
                        for (c, s) in row.iter_mut().enumerate() {
                            *s = _mm512_dpbusd_epi32(*s, lo[c], xl);
                            *s = _mm512_dpbusd_epi32(*s, hi[c], xh);
                        }
                    }
                }
            }
            // SAFETY: within the panels' scales (asserted above).
            let dw: [__m512; C] = std::array::from_fn(|c| unsafe {
                _mm512_loadu_ps(w.scales.as_ptr().add(((p0 + c) * nb + b) * sc * PANEL))
            });
            let mw: [__m512; C] = std::array::from_fn(|c| {
                if F == F_Q4_1 {
                    unsafe {
                        _mm512_loadu_ps(
                            w.scales
                                .as_ptr()
                                .add(((p0 + c) * nb + b) * sc * PANEL + PANEL),
                        )
                    }
                } else {
                    _mm512_setzero_ps()
                }
            });
            for r in 0..R {
                let (dx, s, ds) = xq.block(row0 + r, b);
                let (dx, off, ds) = (
                    _mm512_set1_ps(dx),
                    _mm512_set1_epi32(offset(F) * s),
                    _mm512_set1_ps(ds),
                );
                for c in 0..C {
                    let sum = if offset(F) != 0 {
                        _mm512_sub_epi32(sums[r][c], off)
                    } else {
                        sums[r][c]
                    };
                    acc[r][c] = _mm512_fmadd_ps(
                        _mm512_cvtepi32_ps(sum),
                        _mm512_mul_ps(dw[c], dx),
                        acc[r][c],
                    );
                    if F == F_Q4_1 {
                        acc[r][c] = _mm512_fmadd_ps(mw[c], ds, acc[r][c]);
                    }
                }
            }
        }
        // SAFETY: rows row0..row0 + R < m and these panels' columns belong to this task.
        unsafe { store_tile_avx512(&acc, y, w.n, p0, row0) }
    }

    /// Panels `p0..p1` of all `m` rows: panel groups outside (a group's quants stay in L1 while
    /// every row tile passes over them), balanced tiles of at most [`ROWS`] rows inside.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    fn task_format<const F: u8>(
        xq: &QuantisedRows,
        m: usize,
        w: &IntMatrix,
        (p0, p1): (usize, usize),
        y: &OutPtr,
    ) {
        let tile_rows = m.div_ceil(m.div_ceil(ROWS));
        // Panels per tile: R·C sums + R·C accumulators + 2·C weight vectors within 32 registers.
        let wide = match tile_rows {
            1 | 2 => 4,
            3 => 3,
            4 => 2,
            _ => 1,
        };
        let mut p = p0;
        while p < p1 {
            let c = if p1 - p >= wide { wide } else { 1 };
            let mut row0 = 0;
            while row0 < m {
                let rows = tile_rows.min(m - row0);
                match (rows, c) {
                    (1, 4) => tile::<1, 4, F>(xq, w, p, row0, y),
                    (2, 4) => tile::<2, 4, F>(xq, w, p, row0, y),
                    (3, 3) => tile::<3, 3, F>(xq, w, p, row0, y),
                    (4, 2) => tile::<4, 2, F>(xq, w, p, row0, y),
                    (1, 1) => tile::<1, 1, F>(xq, w, p, row0, y),
                    (2, 1) => tile::<2, 1, F>(xq, w, p, row0, y),
                    (3, 1) => tile::<3, 1, F>(xq, w, p, row0, y),
                    (4, 1) => tile::<4, 1, F>(xq, w, p, row0, y),
                    (5, 1) => tile::<5, 1, F>(xq, w, p, row0, y),
                    (6, 1) => tile::<6, 1, F>(xq, w, p, row0, y),
                    (7, 1) => tile::<7, 1, F>(xq, w, p, row0, y),
                    (8, 1) => tile::<8, 1, F>(xq, w, p, row0, y),
                    _ => unreachable!("no {rows}-row tile over {c} panels"),
                }
                row0 += rows;
            }
            p += c;
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn task(
        xq: &QuantisedRows,
        m: usize,
        w: &IntMatrix,
        panels: (usize, usize),
        y: &OutPtr,
    ) {
        match w.format_id() {
            F_Q8_0 => task_format::<F_Q8_0>(xq, m, w, panels, y),
            super::F_Q4_0 => task_format::<{ super::F_Q4_0 }>(xq, m, w, panels, y),
            _ => task_format::<F_Q4_1>(xq, m, w, panels, y),
        }
    }
}

/// Whether integer products run the VNNI kernel: the CPU has AVX-512 VNNI and
/// `TOKENSWIFT_PORTABLE_TILE` is unset (else the portable loop: same values, much slower).
pub fn int8_is_fast() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static VNNI: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
            std::env::var_os("TOKENSWIFT_PORTABLE_TILE").is_none()
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
        });
        *VNNI
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

fn run(xq: &QuantisedRows, m: usize, w: &IntMatrix, y: &mut [f32], vnni: bool) {
    // Four panels per task so that one-row tiles run four panels wide.
    par_panel_ranges_aligned(m * w.k, y, m, (w.n, w.k), 4, |p0, p1, out| {
        #[cfg(target_arch = "x86_64")]
        if vnni {
            // SAFETY: `vnni` is only set where the CPU has the enabled features.
            return unsafe { vnni::task(xq, m, w, (p0, p1), out) };
        }
        let _ = vnni;
        let mut panel = [0f32; PANEL];
        for p in p0..p1 {
            let col0 = p * PANEL;
            let cols = PANEL.min(w.n - col0);
            for r in 0..m {
                panel_portable(xq, r, w, p, &mut panel[..cols]);
                // SAFETY: this task owns columns col0..col0 + cols of every row.
                unsafe {
                    std::ptr::copy_nonoverlapping(panel.as_ptr(), out.0.add(r * w.n + col0), cols);
                }
            }
        }
    });
}

thread_local! {
    /// The calling thread's quantised inputs, grown once and reused.
    static INPUTS: RefCell<QuantisedRows> = RefCell::new(QuantisedRows::default());
}

/// `Y[m, n] = X[m, k] · Wᵀ` into `y` with each row of `X` quantised to Q8 and integer dot
/// products, split over the rayon pool.
pub fn matmul_int(x: &[f32], m: usize, w: &IntMatrix, y: &mut [f32]) {
    matmul_int_with(x, m, w, y, int8_is_fast());
}

fn matmul_int_with(x: &[f32], m: usize, w: &IntMatrix, y: &mut [f32], vnni: bool) {
    INPUTS.with(|cell| {
        // A product started inside another one on this thread (work stealing) gets its own.
        let mut own = QuantisedRows::default();
        let mut shared = cell.try_borrow_mut();
        let xq = match &mut shared {
            Ok(xq) => &mut **xq,
            Err(_) => &mut own,
        };
        xq.quantise_with(x, m, w.k, vnni);
        run(xq, m, w, y, vnni);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::quant::quantize_rows;

    fn matrix(format: BlockFormat, n: usize, k: usize, seed: u32) -> (QuantMatrix, Vec<f32>) {
        let w: Vec<f32> = (0..n * k)
            .map(|i| {
                let h = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                (h % 2001) as f32 / 1000.0 - 1.0
            })
            .collect();
        let rows = quantize_rows(format, &w, n, k);
        let refs: Vec<&[u8]> = rows.iter().map(Vec::as_slice).collect();
        let q = QuantMatrix::from_rows(format, &refs, k).unwrap();
        // The blocks' own values, read back through the exact kernel (identity input).
        let eye: Vec<f32> = (0..k * k)
            .map(|i| if i / k == i % k { 1.0 } else { 0.0 })
            .collect();
        let mut back = vec![0f32; k * n];
        crate::host::quant::matmul_quant(&eye, k, &q, &mut back);
        let values: Vec<f32> = (0..n * k).map(|i| back[(i % k) * n + i / k]).collect();
        (q, values)
    }

    fn inputs(m: usize, k: usize) -> Vec<f32> {
        (0..m * k)
            .map(|i| {
                ((i * 7919 % 1013) as f32 - 506.0) / 300.0 * if i % 5 == 0 { 4.0 } else { 1.0 }
            })
            .collect()
    }

    /// Every row's outputs are the same bits whether it is multiplied alone or with up to 19
    /// others (one-, multi-row and wide tiles, remainder panels, a partial last panel), on the
    /// VNNI kernel and the portable one alike, and the two kernels agree: the property verify/AR
    /// bit-identity rests on in this mode.
    #[test]
    fn integer_products_are_batch_invariant_and_match_the_portable_definition() {
        let (n, k) = (150, 96);
        for format in [BlockFormat::Q4_1, BlockFormat::Q4_0, BlockFormat::Q8_0] {
            let (q, _) = matrix(format, n, k, 7);
            let w = IntMatrix::from_quant(&q).unwrap();
            let x = inputs(20, k);
            let mut alone = vec![0f32; 20 * n];
            for r in 0..20 {
                matmul_int_with(&x[r * k..][..k], 1, &w, &mut alone[r * n..][..n], false);
            }
            for vnni in [false, int8_is_fast()] {
                for m in [1, 2, 3, 4, 5, 8, 9, 13, 20] {
                    let mut y = vec![0f32; m * n];
                    matmul_int_with(&x[..m * k], m, &w, &mut y, vnni);
                    for (i, (a, b)) in y.iter().zip(&alone).enumerate() {
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "{format:?} vnni {vnni} m {m}: output {i} {a} vs alone {b}"
                        );
                    }
                }
            }
        }
    }

    /// The products are those of the blocks' values and the rounded inputs: within the error the
    /// input rounding allows, |Σ w·(x − dₓqₓ)| ≤ Σ_blocks dₓ/2 · Σ|w|, plus float rounding.
    #[test]
    fn integer_products_are_within_the_input_rounding_of_the_exact_ones() {
        let (n, k, m) = (40, 128, 3);
        for format in [BlockFormat::Q4_1, BlockFormat::Q4_0, BlockFormat::Q8_0] {
            let (q, values) = matrix(format, n, k, 3);
            let w = IntMatrix::from_quant(&q).unwrap();
            let x = inputs(m, k);
            let mut y = vec![0f32; m * n];
            matmul_int(&x, m, &w, &mut y);
            for r in 0..m {
                for o in 0..n {
                    let (mut exact, mut bound, mut mag) = (0f64, 0f64, 0f64);
                    for b in 0..k / QBLOCK {
                        let xs = &x[r * k + b * QBLOCK..][..QBLOCK];
                        let ws = &values[o * k + b * QBLOCK..][..QBLOCK];
                        let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
                        let step = f64::from(amax) / 127.0;
                        for (xi, wi) in xs.iter().zip(ws) {
                            exact += f64::from(*xi) * f64::from(*wi);
                            bound += step / 2.0 * f64::from(wi.abs());
                            mag += f64::from((xi * wi).abs());
                        }
                    }
                    let got = f64::from(y[r * n + o]);
                    let err = (got - exact).abs();
                    assert!(
                        err <= bound * 1.001 + mag * 1e-5,
                        "{format:?} row {r} out {o}: {got} vs {exact} (bound {bound})"
                    );
                }
            }
        }
    }

    /// Negative control for the batch-invariance test: inputs quantised with one scale shared by
    /// all rows of a product (a plausible mistake) change a row's outputs with its companions,
    /// which that test's comparison catches.
    #[test]
    fn a_scale_shared_across_rows_would_break_batch_invariance() {
        let (n, k) = (32, 64);
        let (q, _) = matrix(BlockFormat::Q4_1, n, k, 11);
        let w = IntMatrix::from_quant(&q).unwrap();
        let x = inputs(4, k);
        let mut alone = vec![0f32; n];
        matmul_int_with(&x[..k], 1, &w, &mut alone, false);
        // Shared scale: quantise as usual, then give every row-block the batch's largest scale.
        let mut xq = QuantisedRows::default();
        xq.quantise(&x, 4, k);
        let nb = k / QBLOCK;
        for b in 0..nb {
            let dmax = (0..4).map(|r| xq.d[r * nb + b]).fold(0f32, f32::max);
            let id = 1.0 / dmax;
            for r in 0..4 {
                let mut sum = 0;
                for d in 0..QBLOCK {
                    let v = ((x[r * k + b * QBLOCK + d] * id).round_ties_even() as i32)
                        .clamp(-127, 127);
                    xq.q[r * k + b * QBLOCK + d] = v as i8;
                    sum += v;
                }
                xq.d[r * nb + b] = dmax;
                xq.s[r * nb + b] = sum;
            }
        }
        let mut shared = vec![0f32; 4 * n];
        run(&xq, 4, &w, &mut shared, false);
        assert!(
            shared[..n]
                .iter()
                .zip(&alone)
                .any(|(a, b)| a.to_bits() != b.to_bits()),
            "a shared scale left row 0 unchanged: the invariance test would not see it"
        );
    }
}
