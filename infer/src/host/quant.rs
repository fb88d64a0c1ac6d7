//! Block-quantised weights for the packed kernel: GGUF's Q4_0, Q4_1 and Q8_0 blocks, kept at
//! their own size in memory and dequantised in the kernel (W4A32 / W8A32).
//!
//! Why: decoding a small model on a CPU is bound by reading the weights (DESIGN §6); a Q4_1
//! matrix is 0.75 bytes per weight here against 4 for f32. The values the kernel multiplies are
//! exactly the f32 values [`crate::load::gguf::dequantize`] gives, and they are accumulated in the
//! same order as the f32 kernel's, so a product over a [`QuantMatrix`] equals the product over the
//! converted f32 matrix bit for bit: the goldens, the lossless tests and the verify/AR
//! bit-identity hold unchanged.
//!
//! Q4_1's `d·q + m` is one fused multiply-add in the SIMD tiles of up to 8 rows and a multiply
//! then an add elsewhere ([`QuantMatrix::dequant_panel`], the dequantiser): the same bits, because
//! `d` is an f16 value (11 significant bits) and `q` a 4-bit integer, so `d·q` is exact in f32 and
//! the add is the only rounding either way (DESIGN §6.1a).
//!
//! Layout: per panel of 16 output rows and per block of 32 depths, the rows' scales (d, and m for
//! Q4_1) as f32, then the blocks' quant bytes transposed so that one byte position of the 16 rows
//! is 16 consecutive bytes. A panel is dequantised into a thread-local `[k][16]` f32 window (L2
//! resident) and the f32 tile code runs over it, so the weights stream from memory once per call
//! at their quantised size.

use std::cell::RefCell;

use rayon::prelude::*;

use super::kernels::{OutPtr, PANEL, Panels, copy_floats, par_panel_ranges, task_body};

/// Values per quantisation block.
pub const QBLOCK: usize = 32;

/// A GGUF block format the kernel reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockFormat {
    /// 32 × 4-bit, one f16 scale: `d · (q − 8)`.
    Q4_0,
    /// 32 × 4-bit, f16 scale and minimum: `d · q + m`.
    Q4_1,
    /// 32 × 8-bit signed, one f16 scale: `d · q`.
    Q8_0,
    /// bf16 values (not a GGUF block type here: 32 of them count as a block so the same code
    /// walks them); widened to f32 exactly.
    Bf16,
}

impl BlockFormat {
    /// Bytes of one GGUF block of [`QBLOCK`] values.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q8_0 => 34,
            Self::Bf16 => 64,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Q4_0 => "q4_0",
            Self::Q4_1 => "q4_1",
            Self::Q8_0 => "q8_0",
            Self::Bf16 => "bf16",
        }
    }

    /// f32 scales per row and block (d, and m for Q4_1).
    fn scales(self) -> usize {
        match self {
            Self::Q4_1 => 2,
            Self::Bf16 => 0,
            _ => 1,
        }
    }

    /// Offset of the quant bytes in a block.
    fn quant_offset(self) -> usize {
        match self {
            Self::Q4_1 => 4,
            Self::Bf16 => 0,
            _ => 2,
        }
    }

    /// Quant bytes per row and block.
    fn quant_bytes(self) -> usize {
        match self {
            Self::Q8_0 => 32,
            Self::Bf16 => 64,
            _ => 16,
        }
    }
}

/// A little-endian bf16 widened to f32 (exact).
#[inline(always)]
fn bf16(lo: u8, hi: u8) -> f32 {
    f32::from_bits(u32::from(u16::from_le_bytes([lo, hi])) << 16)
}

fn f16(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Quantises a row-major `[n, k]` f32 matrix (`k` a multiple of [`QBLOCK`]) into GGUF blocks of
/// `format`, row by row, with the rounding of ggml's reference quantisers (`quantize_row_*_ref`;
/// bf16: round to nearest even).
/// Lossy: the product over the result is the product over the blocks' values, not over `w`.
pub fn quantize_rows(format: BlockFormat, w: &[f32], n: usize, k: usize) -> Vec<Vec<u8>> {
    assert!(
        k.is_multiple_of(QBLOCK) && w.len() == n * k,
        "a [{n}, {k}] matrix"
    );
    let bb = format.block_bytes();
    w.par_chunks(k)
        .map(|row| {
            let mut out = vec![0u8; k / QBLOCK * bb];
            for (x, blk) in row.chunks_exact(QBLOCK).zip(out.chunks_exact_mut(bb)) {
                quantize_block(format, x, blk);
            }
            out
        })
        .collect()
}

fn put_f16(dst: &mut [u8], v: f32) {
    dst[..2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
}

fn quantize_block(format: BlockFormat, x: &[f32], blk: &mut [u8]) {
    let inv = |d: f32| if d != 0.0 { 1.0 / d } else { 0.0 };
    match format {
        BlockFormat::Bf16 => {
            for (o, &v) in blk.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&half::bf16::from_f32(v).to_le_bytes());
            }
        }
        BlockFormat::Q8_0 => {
            let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = inv(d);
            put_f16(&mut blk[0..2], d);
            for (q, &v) in blk[2..34].iter_mut().zip(x) {
                *q = (v * id).round() as i8 as u8;
            }
        }
        BlockFormat::Q4_1 => {
            let min = x.iter().copied().fold(f32::INFINITY, f32::min);
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let d = (max - min) / 15.0;
            let id = inv(d);
            put_f16(&mut blk[0..2], d);
            put_f16(&mut blk[2..4], min);
            let q = |v: f32| (((v - min) * id + 0.5) as i8).clamp(0, 15) as u8;
            for j in 0..QBLOCK / 2 {
                blk[4 + j] = q(x[j]) | (q(x[j + QBLOCK / 2]) << 4);
            }
        }
        BlockFormat::Q4_0 => {
            let max = x
                .iter()
                .copied()
                .fold(0f32, |a, v| if v.abs() > a.abs() { v } else { a });
            let d = max / -8.0;
            let id = inv(d);
            put_f16(&mut blk[0..2], d);
            let q = |v: f32| ((v * id + 8.5) as i8).clamp(0, 15) as u8;
            for j in 0..QBLOCK / 2 {
                blk[2 + j] = q(x[j]) | (q(x[j + QBLOCK / 2]) << 4);
            }
        }
    }
}

/// A `[n, k]` weight (HF `[out, in]` layout) of GGUF blocks, packed for [`matmul_quant`].
#[derive(Debug, Clone)]
pub struct QuantMatrix {
    format: BlockFormat,
    /// `[panels][k/32][scales][PANEL]`.
    scales: Vec<f32>,
    /// `[panels][k/32][quant bytes][PANEL]`.
    quants: Vec<u8>,
    n: usize,
    k: usize,
}

impl QuantMatrix {
    /// Packs `rows` (each the row's `k/32` GGUF blocks, in order) as a `[rows.len(), k]` matrix.
    /// Rows are given one by one so that a caller can reorder (un-permute q/k) or stack matrices
    /// (q/k/v, gate/up) without copying the blocks first.
    pub fn from_rows(format: BlockFormat, rows: &[&[u8]], k: usize) -> Result<Self, String> {
        if k == 0 || !k.is_multiple_of(QBLOCK) {
            return Err(format!(
                "a {} matrix needs a row length that is a multiple of {QBLOCK}, not {k}",
                format.name()
            ));
        }
        let nb = k / QBLOCK;
        let bb = format.block_bytes();
        if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != nb * bb) {
            return Err(format!(
                "row {i} of a {} matrix has {} bytes, expected {} ({nb} blocks of {bb})",
                format.name(),
                r.len(),
                nb * bb
            ));
        }
        let n = rows.len();
        let panels = n.div_ceil(PANEL);
        let (sc, qo, qb) = (format.scales(), format.quant_offset(), format.quant_bytes());
        let mut scales = vec![0f32; panels * nb * sc * PANEL];
        let mut quants = vec![0u8; panels * nb * qb * PANEL];
        for (row, bytes) in rows.iter().enumerate() {
            let (p, j) = (row / PANEL, row % PANEL);
            for (b, blk) in bytes.chunks_exact(bb).enumerate() {
                let s = (p * nb + b) * sc * PANEL;
                if sc > 0 {
                    scales[s + j] = f16(&blk[0..2]);
                }
                if format == BlockFormat::Q4_1 {
                    scales[s + PANEL + j] = f16(&blk[2..4]);
                }
                let q = (p * nb + b) * qb * PANEL;
                let src = &blk[qo..qo + qb];
                if format == BlockFormat::Bf16 {
                    // Value i of the 16 rows as 16 consecutive bf16s.
                    for (i, v) in src.chunks_exact(2).enumerate() {
                        quants[q + (i * PANEL + j) * 2..][..2].copy_from_slice(v);
                    }
                } else if format == BlockFormat::Q8_0 {
                    for (i, &v) in src.iter().enumerate() {
                        quants[q + i * PANEL + j] = v;
                    }
                } else {
                    // GGUF byte i holds depths i (low nibble) and i + 16 (high); here byte t
                    // holds depths 2t (low) and 2t + 1 (high), so that the kernel walks the
                    // depths in order, two per byte.
                    let nib = |d: usize| {
                        if d < 16 {
                            src[d] & 0x0f
                        } else {
                            src[d - 16] >> 4
                        }
                    };
                    for t in 0..QBLOCK / 2 {
                        quants[q + t * PANEL + j] = nib(2 * t) | (nib(2 * t + 1) << 4);
                    }
                }
            }
        }
        Ok(Self {
            format,
            scales,
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

    /// The scales as laid out: `[panels][k/32][scales][PANEL]`.
    pub(super) fn raw_scales(&self) -> &[f32] {
        &self.scales
    }

    /// The integer quant of output `j` of panel `p` at depth `d` of block `b`: a Q4 nibble
    /// (0..=15) or a Q8 value (−128..=127). Not for bf16 matrices.
    pub(super) fn quant(&self, p: usize, b: usize, j: usize, d: usize) -> i32 {
        let nb = self.k / QBLOCK;
        let q = &self.quants[(p * nb + b) * self.format.quant_bytes() * PANEL..];
        match self.format {
            BlockFormat::Q8_0 => i32::from(q[d * PANEL + j] as i8),
            BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
                let byte = q[(d / 2) * PANEL + j];
                i32::from(if d.is_multiple_of(2) {
                    byte & 0x0f
                } else {
                    byte >> 4
                })
            }
            BlockFormat::Bf16 => unreachable!("bf16 has no integer quants"),
        }
    }

    /// Panel `p` as f32 `[k][PANEL]` into `out`: per value the expression of
    /// [`crate::load::gguf::dequantize`], so the same bits.
    #[inline(always)]
    fn dequant_panel(&self, p: usize, out: &mut [f32]) {
        let nb = self.k / QBLOCK;
        let (sc, qb) = (self.format.scales(), self.format.quant_bytes());
        for b in 0..nb {
            let s = &self.scales[(p * nb + b) * sc * PANEL..][..sc * PANEL];
            let q = &self.quants[(p * nb + b) * qb * PANEL..][..qb * PANEL];
            let o = &mut out[b * QBLOCK * PANEL..][..QBLOCK * PANEL];
            if self.format == BlockFormat::Bf16 {
                for (v, o) in q.chunks_exact(2).zip(o.iter_mut()) {
                    *o = bf16(v[0], v[1]);
                }
                continue;
            }
            let d: &[f32; PANEL] = s[..PANEL].try_into().expect("a panel of scales");
            let row = |i: usize| -> &[u8; PANEL] {
                q[i * PANEL..][..PANEL]
                    .try_into()
                    .expect("a panel of quants")
            };
            match self.format {
                BlockFormat::Q8_0 => {
                    for (kk, o) in o.chunks_exact_mut(PANEL).enumerate() {
                        let qr = row(kk);
                        for j in 0..PANEL {
                            o[j] = d[j] * f32::from(qr[j] as i8);
                        }
                    }
                }
                BlockFormat::Q4_1 => {
                    let mn: &[f32; PANEL] = s[PANEL..].try_into().expect("a panel of minimums");
                    for (t, pair) in o.chunks_exact_mut(2 * PANEL).enumerate() {
                        let qr = row(t);
                        let (lo, hi) = pair.split_at_mut(PANEL);
                        for j in 0..PANEL {
                            lo[j] = d[j] * f32::from(qr[j] & 0x0f) + mn[j];
                            hi[j] = d[j] * f32::from(qr[j] >> 4) + mn[j];
                        }
                    }
                }
                BlockFormat::Bf16 => unreachable!("handled above"),
                BlockFormat::Q4_0 => {
                    for (t, pair) in o.chunks_exact_mut(2 * PANEL).enumerate() {
                        let qr = row(t);
                        let (lo, hi) = pair.split_at_mut(PANEL);
                        for j in 0..PANEL {
                            lo[j] = d[j] * (f32::from(qr[j] & 0x0f) - 8.0);
                            hi[j] = d[j] * (f32::from(qr[j] >> 4) - 8.0);
                        }
                    }
                }
            }
        }
    }
}

/// The fused kernel's block formats as const parameters (one compiled loop per format).
const F_Q8_0: u8 = 0;
const F_Q4_0: u8 = 1;
const F_Q4_1: u8 = 2;
const F_BF16: u8 = 3;

/// The 16 values of one depth of a depth pair of one panel's block: the low nibbles (`half` 0,
/// depth 2t) or the high (`half` 1, depth 2t + 1), by the expression of
/// [`crate::load::gguf::dequantize`].
#[inline(always)]
fn nibble<const F: u8>(
    q: &[u8; PANEL],
    half: usize,
    d: &[f32; PANEL],
    mn: &[f32; PANEL],
    out: &mut [f32; PANEL],
) {
    for j in 0..PANEL {
        let v = if half == 0 { q[j] & 0x0f } else { q[j] >> 4 };
        out[j] = if F == F_Q4_1 {
            d[j] * f32::from(v) + mn[j]
        } else {
            d[j] * (f32::from(v) - 8.0)
        };
    }
}

/// `acc[r][p][j] += Σ_kk x[r·k + kk] · W[panel p, kk, j]` over the whole depth, dequantising
/// each weight once in registers and using it for every row (no f32 copy of the panel is
/// written). Per output the depths are accumulated in order, one (fused where `FMA`)
/// multiply-add each, starting from zero: the f32 kernel's sum, so the same bits.
#[inline(always)]
fn fused_tile<const R: usize, const NP: usize, const FMA: bool, const F: u8>(
    x: &[f32],
    w: &QuantMatrix,
    first_panel: usize,
    row0: usize,
    y: &OutPtr,
) {
    let (k, nb) = (w.k, w.k / QBLOCK);
    let sc = w.format.scales();
    let qb = w.format.quant_bytes();
    let last_panel = first_panel + NP;
    // Bounds once per call, so the inner loop is loads, conversions and FMAs only.
    assert!(x.len() >= (row0 + R) * k, "input rows out of bounds");
    assert!(
        w.scales.len() >= last_panel * nb * sc * PANEL
            && w.quants.len() >= last_panel * nb * qb * PANEL,
        "panels out of bounds"
    );
    let xp = x[row0 * k..].as_ptr();
    let load16 = |v: &[f32], at: usize| -> [f32; PANEL] {
        // SAFETY: `at + PANEL <= v.len()` for every call below (asserted above).
        unsafe { *(v.as_ptr().add(at) as *const [f32; PANEL]) }
    };
    let bytes16 = |at: usize| -> &[u8; PANEL] {
        // SAFETY: as above, for the quant bytes.
        unsafe { &*(w.quants.as_ptr().add(at) as *const [u8; PANEL]) }
    };
    let mut acc = [[[0f32; PANEL]; NP]; R];
    for b in 0..nb {
        let blk: [usize; NP] = std::array::from_fn(|p| (first_panel + p) * nb + b);
        let d: [[f32; PANEL]; NP] = std::array::from_fn(|p| {
            if F == F_BF16 {
                [0.0; PANEL]
            } else {
                load16(&w.scales, blk[p] * sc * PANEL)
            }
        });
        let mn: [[f32; PANEL]; NP] = std::array::from_fn(|p| {
            if F == F_Q4_1 {
                load16(&w.scales, blk[p] * sc * PANEL + PANEL)
            } else {
                [0.0; PANEL]
            }
        });
        let q0: [usize; NP] = std::array::from_fn(|p| blk[p] * qb * PANEL);
        let k0 = b * QBLOCK;
        if F == F_Q8_0 || F == F_BF16 {
            for i in 0..QBLOCK {
                let mut wv = [[0f32; PANEL]; NP];
                for p in 0..NP {
                    if F == F_BF16 {
                        // SAFETY: 16 bf16s (32 bytes) at this offset are within the quants
                        // (asserted above); u16 has no invalid bit patterns.
                        let v: [u16; PANEL] = unsafe {
                            (w.quants.as_ptr().add(q0[p] + i * 2 * PANEL) as *const [u16; PANEL])
                                .read_unaligned()
                        };
                        for j in 0..PANEL {
                            wv[p][j] = f32::from_bits(u32::from(u16::from_le(v[j])) << 16);
                        }
                    } else {
                        let q = bytes16(q0[p] + i * PANEL);
                        for j in 0..PANEL {
                            wv[p][j] = d[p][j] * f32::from(q[j] as i8);
                        }
                    }
                }
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    // SAFETY: row r of the tile holds k > k0 + i values (asserted above).
                    let xv = unsafe { *xp.add(r * k + k0 + i) };
                    for p in 0..NP {
                        for j in 0..PANEL {
                            acc_r[p][j] = if FMA {
                                xv.mul_add(wv[p][j], acc_r[p][j])
                            } else {
                                acc_r[p][j] + xv * wv[p][j]
                            };
                        }
                    }
                }
            }
        } else {
            for t in 0..QBLOCK / 2 {
                // Depth 2t (low nibbles) for every row, then depth 2t + 1 (high): one set of
                // dequantised weights live at a time, so the tile's accumulators, the scales and
                // the weights fit AVX2's 16 registers.
                let q: [&[u8; PANEL]; NP] = std::array::from_fn(|p| bytes16(q0[p] + t * PANEL));
                for half in 0..2 {
                    let mut wv = [[0f32; PANEL]; NP];
                    for p in 0..NP {
                        nibble::<F>(q[p], half, &d[p], &mn[p], &mut wv[p]);
                    }
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        // SAFETY: as above; k0 + 2t + 1 < k.
                        let xv = unsafe { *xp.add(r * k + k0 + 2 * t + half) };
                        for p in 0..NP {
                            for j in 0..PANEL {
                                acc_r[p][j] = if FMA {
                                    xv.mul_add(wv[p][j], acc_r[p][j])
                                } else {
                                    acc_r[p][j] + xv * wv[p][j]
                                };
                            }
                        }
                    }
                }
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (p, vals) in row.iter().enumerate() {
            let col0 = (first_panel + p) * PANEL;
            let cols = PANEL.min(w.n.saturating_sub(col0));
            // SAFETY: row0 + r < m and col0 + cols <= n; this task owns these columns.
            unsafe {
                let dst = y.0.add((row0 + r) * w.n + col0);
                copy_floats(vals.as_ptr(), dst, cols);
            }
        }
    }
}

/// Rows per fused register tile with AVX-512 (more spill the registers).
const FUSED_TILE: usize = 12;
/// Rows per fused register tile without AVX-512 or AVX2 (the baseline; AVX2 has [`avx2`]).
const NARROW_TILE: usize = 4;
/// Up to this many rows the product runs fused (each weight dequantised in registers once per
/// row tile); more rows (prefill) dequantise depth chunks into an L1 window once and reuse them.
const FUSED_ROWS: usize = 36;

/// Panels `p0..p1` of rows `row0..row0 + rows`, fused. With AVX-512's 32 registers
/// (`WIDE`; `rows ≤ FUSED_TILE`): two panels per tile up to 6 rows, one beyond. The baseline
/// (`rows ≤ NARROW_TILE`): one panel per tile. (AVX2 + FMA runs [`avx2::task`] instead.)
#[inline(always)]
fn fused_rows<const FMA: bool, const WIDE: bool, const F: u8>(
    x: &[f32],
    (row0, rows): (usize, usize),
    w: &QuantMatrix,
    (p0, p1): (usize, usize),
    y: &OutPtr,
) {
    macro_rules! tiles {
        ($np:literal, $($r:literal)*) => {{
            let mut p = p0;
            while p1 - p >= $np {
                match rows {
                    $($r => fused_tile::<$r, $np, FMA, F>(x, w, p, row0, y),)*
                    _ => unreachable!("at most {FUSED_TILE} rows per tile"),
                }
                p += $np;
            }
            p
        }};
    }
    let p = if !WIDE {
        tiles!(1, 1 2 3 4 5 6)
    } else if rows <= 6 {
        tiles!(2, 1 2 3 4 5 6)
    } else {
        tiles!(1, 7 8 9 10 11 12)
    };
    if p < p1 {
        match rows {
            1 => fused_tile::<1, 1, FMA, F>(x, w, p, row0, y),
            2 => fused_tile::<2, 1, FMA, F>(x, w, p, row0, y),
            3 => fused_tile::<3, 1, FMA, F>(x, w, p, row0, y),
            4 => fused_tile::<4, 1, FMA, F>(x, w, p, row0, y),
            5 => fused_tile::<5, 1, FMA, F>(x, w, p, row0, y),
            6 => fused_tile::<6, 1, FMA, F>(x, w, p, row0, y),
            _ => unreachable!("odd panel counts only reach here with two-panel tiles"),
        }
    }
}

/// Panels `p0..p1` of an `m ≤ FUSED_ROWS` product, in balanced row tiles of at most
/// [`FUSED_TILE`] rows.
#[inline(always)]
fn fused_task<const FMA: bool, const WIDE: bool, const F: u8>(
    x: &[f32],
    m: usize,
    w: &QuantMatrix,
    panels: (usize, usize),
    y: &OutPtr,
) {
    let max = if WIDE { FUSED_TILE } else { NARROW_TILE };
    let tile = m.div_ceil(m.div_ceil(max));
    let mut row0 = 0;
    while row0 < m {
        let rows = tile.min(m - row0);
        fused_rows::<FMA, WIDE, F>(x, (row0, rows), w, panels, y);
        row0 += rows;
    }
}

/// The fused product on AVX2 + FMA, with intrinsics: tiles of up to [`avx2::ROWS`] rows by one or
/// two vectors of 8 outputs (half panels), so that a verify of up to 8 rows dequantises each
/// weight once and a tile's accumulators, its scales and the dequantised weights stay in AVX2's
/// 16 registers. The values and their order are the portable tile's: each weight by the expression of
/// [`crate::load::gguf::dequantize`] (a multiply, then an add: no fused multiply-add), each output
/// accumulated over the depths in order with one fused multiply-add per depth from zero, so the
/// products equal the f32 kernel's bit for bit.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{F_BF16, F_Q4_0, F_Q4_1, F_Q8_0, OutPtr, PANEL, QBLOCK, QuantMatrix};

    /// Rows per tile: 8 accumulators + scales, weights and temporaries fit 16 registers.
    pub(super) const ROWS: usize = 8;

    /// Rows `row0..row0 + R` by `C` vectors of 8 outputs, the first being half `v0 % 2` of panel
    /// `v0 / 2`, over the whole depth. `R·C` independent accumulators hide the FMA latency (each
    /// output's sum is one serial chain, in depth order).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn tile<const R: usize, const C: usize, const F: u8>(
        x: &[f32],
        w: &QuantMatrix,
        v0: usize,
        row0: usize,
        y: &OutPtr,
    ) {
        let (k, nb) = (w.k, w.k / QBLOCK);
        let (sc, qb) = (w.format.scales(), w.format.quant_bytes());
        let last_panel = (v0 + C - 1) / 2;
        assert!(x.len() >= (row0 + R) * k, "input rows out of bounds");
        assert!(
            w.scales.len() >= (last_panel + 1) * nb * sc * PANEL
                && w.quants.len() >= (last_panel + 1) * nb * qb * PANEL,
            "panel out of bounds"
        );
        let xr: [*const f32; R] = std::array::from_fn(|r| x[(row0 + r) * k..].as_ptr());
        // Per vector: its panel and its first column within the panel.
        let pc: [(usize, usize); C] = std::array::from_fn(|c| ((v0 + c) / 2, 8 * ((v0 + c) % 2)));
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        // One depth: the C dequantised weight vectors times each row's input.
        macro_rules! depth {
            ($wv:expr, $depth:expr) => {{
                let wv: [__m256; C] = $wv;
                for r in 0..R {
                    // SAFETY: row r holds k values and depth < k (asserted above).
                    let xv = unsafe { _mm256_broadcast_ss(&*xr[r].add($depth)) };
                    for c in 0..C {
                        acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
                    }
                }
            }};
        }
        for b in 0..nb {
            let k0 = b * QBLOCK;
            let s: [usize; C] = std::array::from_fn(|c| (pc[c].0 * nb + b) * sc * PANEL + pc[c].1);
            // Byte offsets of the vectors' first quant (one byte per value; two for bf16).
            let q: [usize; C] = std::array::from_fn(|c| {
                (pc[c].0 * nb + b) * qb * PANEL + pc[c].1 * if F == F_BF16 { 2 } else { 1 }
            });
            // SAFETY (all loads below): within the panels' scales and quants (asserted above).
            let d: [__m256; C] = std::array::from_fn(|c| {
                if F == F_BF16 {
                    _mm256_setzero_ps()
                } else {
                    unsafe { _mm256_loadu_ps(w.scales.as_ptr().add(s[c])) }
                }
            });
            if F == F_Q4_0 || F == F_Q4_1 {
                let mn: [__m256; C] = std::array::from_fn(|c| {
                    if F == F_Q4_1 {
                        unsafe { _mm256_loadu_ps(w.scales.as_ptr().add(s[c] + PANEL)) }
                    } else {
                        _mm256_set1_ps(8.0)
                    }
                });
                let low = _mm256_set1_epi32(0x0f);
                // An opaque trip count keeps the loop rolled: unrolled 16 times, its schedule
                // spills the accumulators.
                for t in 0..std::hint::black_box(QBLOCK / 2) {
                    let weights = |v: __m256i, c: usize, h: usize| {
                        let n = if h == 0 {
                            _mm256_and_si256(v, low)
                        } else {
                            _mm256_srli_epi32::<4>(v)
                        };
                        let f = _mm256_cvtepi32_ps(n);
                        if F == F_Q4_1 {
                            // One fused op, the same bits as `d·q + m` (module doc).
                            _mm256_fmadd_ps(d[c], f, mn[c])
                        } else {
                            _mm256_mul_ps(d[c], _mm256_sub_ps(f, mn[c]))
                        }
                    };
                    let bytes = |c: usize| {
                        _mm256_cvtepu8_epi32(unsafe {
                            _mm_loadl_epi64(
                                w.quants.as_ptr().add(q[c] + t * PANEL) as *const __m128i
                            )
                        })
                    };
                    // Both nibbles of a byte are used at once (depth 2t, then 2t + 1).
                    let held: [__m256i; C] = std::array::from_fn(bytes);
                    for h in 0..2 {
                        depth!(
                            std::array::from_fn(|c| weights(held[c], c, h)),
                            k0 + 2 * t + h
                        );
                    }
                }
            } else if F == F_Q8_0 {
                for i in 0..QBLOCK {
                    let wv = std::array::from_fn(|c| {
                        let bytes = unsafe {
                            _mm_loadl_epi64(
                                w.quants.as_ptr().add(q[c] + i * PANEL) as *const __m128i
                            )
                        };
                        _mm256_mul_ps(d[c], _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)))
                    });
                    depth!(wv, k0 + i);
                }
            } else {
                for i in 0..QBLOCK {
                    let wv = std::array::from_fn(|c| {
                        let h = unsafe {
                            _mm_loadu_si128(
                                w.quants.as_ptr().add(q[c] + i * PANEL * 2) as *const __m128i
                            )
                        };
                        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
                    });
                    depth!(wv, k0 + i);
                }
            }
        }
        for c in 0..C {
            let col0 = pc[c].0 * PANEL + pc[c].1;
            let cols = 8.min(w.n.saturating_sub(col0));
            for (r, a) in acc.iter().enumerate() {
                // SAFETY: row0 + r < m and col0 + cols <= n; this task owns these columns.
                unsafe {
                    let dst = y.0.add((row0 + r) * w.n + col0);
                    if cols == 8 {
                        _mm256_storeu_ps(dst, a[c]);
                    } else if cols > 0 {
                        let mut tmp = [0f32; 8];
                        _mm256_storeu_ps(tmp.as_mut_ptr(), a[c]);
                        std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, cols);
                    }
                }
            }
        }
    }

    /// Panels `p0..p1` of all `m` rows, in balanced row tiles of at most [`ROWS`] rows, each over
    /// as many 8-output vectors as keep about 8 accumulators in flight.
    #[target_feature(enable = "avx2,fma")]
    fn task_format<const F: u8>(
        x: &[f32],
        m: usize,
        w: &QuantMatrix,
        (p0, p1): (usize, usize),
        y: &OutPtr,
    ) {
        let tile_rows = m.div_ceil(m.div_ceil(ROWS));
        // Vectors of 8 outputs that hold any column of this task's panels.
        let (v_first, v_end) = (2 * p0, (2 * p1).min(w.n.div_ceil(8)));
        let mut row0 = 0;
        while row0 < m {
            let rows = tile_rows.min(m - row0);
            let mut v = v_first;
            macro_rules! run {
                ($c:literal) => {{
                    while v_end - v >= $c {
                        match rows {
                            1 => tile::<1, $c, F>(x, w, v, row0, y),
                            2 => tile::<2, $c, F>(x, w, v, row0, y),
                            3 => tile::<3, $c, F>(x, w, v, row0, y),
                            4 => tile::<4, $c, F>(x, w, v, row0, y),
                            5 => tile::<5, $c, F>(x, w, v, row0, y),
                            6 => tile::<6, $c, F>(x, w, v, row0, y),
                            7 => tile::<7, $c, F>(x, w, v, row0, y),
                            8 => tile::<8, $c, F>(x, w, v, row0, y),
                            _ => unreachable!("at most {ROWS} rows per tile"),
                        }
                        v += $c;
                    }
                }};
            }
            // Two vectors per row where the registers allow it (measured on AVX2, Q4_1 at 3
            // and 4 rows and Q8_0 at 5 and 6 are the limits); one beyond.
            let two = if F == F_Q4_0 || F == F_Q4_1 { 4 } else { 6 };
            if rows <= two {
                run!(2);
            }
            run!(1);
            row0 += rows;
        }
    }

    /// Panels `p0..p1` of an `m`-row product, fused.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn task(x: &[f32], m: usize, w: &QuantMatrix, panels: (usize, usize), y: &OutPtr) {
        match w.format {
            super::BlockFormat::Q8_0 => task_format::<F_Q8_0>(x, m, w, panels, y),
            super::BlockFormat::Q4_0 => task_format::<F_Q4_0>(x, m, w, panels, y),
            super::BlockFormat::Q4_1 => task_format::<F_Q4_1>(x, m, w, panels, y),
            super::BlockFormat::Bf16 => task_format::<F_BF16>(x, m, w, panels, y),
        }
    }
}

/// The fused product on AVX-512, with intrinsics: tiles of up to [`avx512::ROWS`] rows by one to
/// four whole panels (16 outputs, one vector per row and panel). The autovectorised portable tile
/// assembles the nibbles through scalar byte moves on AVX-512 (`vpinsrb`, `movzwl`); here each
/// panel's 16 quant bytes are one load and one widening. Values and order are the portable tile's,
/// as in [`avx2`]: each weight by [`crate::load::gguf::dequantize`]'s expression (a multiply, then
/// an add), each output accumulated over the depths in order with one fused multiply-add per depth
/// from zero, so the products equal the f32 kernel's bit for bit.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::super::kernels::{prefetch, store_tile_avx512};
    use super::{F_BF16, F_Q4_0, F_Q4_1, F_Q8_0, OutPtr, PANEL, QBLOCK, QuantMatrix};

    /// Rows per tile: 16 accumulators (one panel) + scales, weights and temporaries fit 32
    /// registers.
    pub(super) const ROWS: usize = 16;
    /// How many blocks ahead of its loads a tile asks for a panel's quants and scales (1 and 4
    /// measured slower than 2; 8 no faster than none).
    const PREFETCH_BLOCKS: usize = 2;

    /// Rows `row0..row0 + R` by panels `p0..p0 + C`, over the whole depth. `R·C` independent
    /// accumulators hide the FMA latency (each output's sum is one serial chain, in depth order).
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline]
    fn tile<const R: usize, const C: usize, const F: u8>(
        x: &[f32],
        w: &QuantMatrix,
        p0: usize,
        row0: usize,
        y: &OutPtr,
    ) {
        let (k, nb) = (w.k, w.k / QBLOCK);
        let (sc, qb) = (w.format.scales(), w.format.quant_bytes());
        assert!(x.len() >= (row0 + R) * k, "input rows out of bounds");
        assert!(
            w.scales.len() >= (p0 + C) * nb * sc * PANEL
                && w.quants.len() >= (p0 + C) * nb * qb * PANEL,
            "panel out of bounds"
        );
        let xr: [*const f32; R] = std::array::from_fn(|r| x[(row0 + r) * k..].as_ptr());
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        // One depth: the C dequantised weight vectors times each row's input.
        macro_rules! depth {
            ($wv:expr, $depth:expr) => {{
                let wv: [__m512; C] = $wv;
                for r in 0..R {
                    // SAFETY: row r holds k values and depth < k (asserted above).
                    let xv = _mm512_set1_ps(unsafe { *xr[r].add($depth) });
                    for c in 0..C {
                        acc[r][c] = _mm512_fmadd_ps(xv, wv[c], acc[r][c]);
                    }
                }
            }};
        }
        for b in 0..nb {
            let k0 = b * QBLOCK;
            let blk: [usize; C] = std::array::from_fn(|c| (p0 + c) * nb + b);
            let q: [usize; C] = std::array::from_fn(|c| blk[c] * qb * PANEL);
            // Each panel's blocks are one stream of quants and one of scales; asking for the
            // lines [`PREFETCH_BLOCKS`] blocks ahead made a whole forward pass at a 2000-token
            // context ~9 % faster at one token, ~6 % at four (DESIGN §6.1a). Past a panel's
            // last block the addresses run into the next panel's: a prefetch never faults.
            for c in 0..C {
                let quants = w
                    .quants
                    .as_ptr()
                    .wrapping_add(q[c] + PREFETCH_BLOCKS * qb * PANEL);
                prefetch(quants, qb * PANEL);
                let scales = w
                    .scales
                    .as_ptr()
                    .wrapping_add((blk[c] + PREFETCH_BLOCKS) * sc * PANEL);
                prefetch(scales, sc * PANEL * 4);
            }
            // SAFETY (all loads below): within the panels' scales and quants (asserted above).
            let d: [__m512; C] = std::array::from_fn(|c| {
                if F == F_BF16 {
                    _mm512_setzero_ps()
                } else {
                    unsafe { _mm512_loadu_ps(w.scales.as_ptr().add(blk[c] * sc * PANEL)) }
                }
            });
            if F == F_Q4_0 || F == F_Q4_1 {
                let mn: [__m512; C] = std::array::from_fn(|c| {
                    if F == F_Q4_1 {
                        unsafe {
                            _mm512_loadu_ps(w.scales.as_ptr().add(blk[c] * sc * PANEL + PANEL))
                        }
                    } else {
                        _mm512_set1_ps(8.0)
                    }
                });
                let low = _mm512_set1_epi32(0x0f);
                // An opaque trip count keeps the loop rolled (unrolled, its schedule spills the
                // accumulators).
                for t in 0..std::hint::black_box(QBLOCK / 2) {
                    let weights = |v: __m512i, c: usize, h: usize| {
                        let n = if h == 0 {
                            _mm512_and_si512(v, low)
                        } else {
                            _mm512_srli_epi32::<4>(v)
                        };
                        let f = _mm512_cvtepi32_ps(n);
                        if F == F_Q4_1 && R <= 8 {
                            // One fused op, the same bits as `d·q + m` (module doc). Tiles of
                            // 9–16 rows keep the multiply and add: fused, their schedule made
                            // a 16-row product ~19 % slower.
                            _mm512_fmadd_ps(d[c], f, mn[c])
                        } else if F == F_Q4_1 {
                            _mm512_add_ps(_mm512_mul_ps(d[c], f), mn[c])
                        } else {
                            _mm512_mul_ps(d[c], _mm512_sub_ps(f, mn[c]))
                        }
                    };
                    // Both nibbles of a byte are used at once (depth 2t, then 2t + 1).
                    let held: [__m512i; C] = std::array::from_fn(|c| {
                        _mm512_cvtepu8_epi32(unsafe {
                            _mm_loadu_si128(
                                w.quants.as_ptr().add(q[c] + t * PANEL) as *const __m128i
                            )
                        })
                    });
                    for h in 0..2 {
                        depth!(
                            std::array::from_fn(|c| weights(held[c], c, h)),
                            k0 + 2 * t + h
                        );
                    }
                }
            } else if F == F_Q8_0 {
                for i in 0..QBLOCK {
                    let wv = std::array::from_fn(|c| {
                        let bytes = unsafe {
                            _mm_loadu_si128(
                                w.quants.as_ptr().add(q[c] + i * PANEL) as *const __m128i
                            )
                        };
                        _mm512_mul_ps(d[c], _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes)))
                    });
                    depth!(wv, k0 + i);
                }
            } else {
                for i in 0..QBLOCK {
                    let wv = std::array::from_fn(|c| {
                        let h = unsafe {
                            _mm256_loadu_si256(
                                w.quants.as_ptr().add(q[c] + i * PANEL * 2) as *const __m256i
                            )
                        };
                        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
                    });
                    depth!(wv, k0 + i);
                }
            }
        }
        // SAFETY: rows row0..row0 + R < m and these panels' columns belong to this task.
        unsafe { store_tile_avx512(&acc, y, w.n, p0, row0) }
    }

    /// Panels `p0..p1` of all `m` rows, in balanced row tiles of at most [`ROWS`] rows, each over
    /// as many panels as keep 4–16 accumulators in flight within the 32 registers.
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn task_format<const F: u8>(
        x: &[f32],
        m: usize,
        w: &QuantMatrix,
        (p0, p1): (usize, usize),
        y: &OutPtr,
    ) {
        let tile_rows = m.div_ceil(m.div_ceil(ROWS));
        let mut row0 = 0;
        while row0 < m {
            let rows = tile_rows.min(m - row0);
            let mut p = p0;
            macro_rules! run {
                ($c:literal, $($r:literal)*) => {{
                    while p1 - p >= $c {
                        match rows {
                            $($r => tile::<$r, $c, F>(x, w, p, row0, y),)*
                            _ => unreachable!("no {}-row tile over {} panels", rows, $c),
                        }
                        p += $c;
                    }
                }};
            }
            // Panels per tile by rows: accumulators, plus three registers per panel (scales,
            // offsets, quant bytes), stay within 32.
            let widest = match rows {
                1..=3 => 4,
                4 => 3,
                5..=8 => 2,
                _ => 1,
            };
            if widest >= 4 {
                run!(4, 1 2 3);
            }
            if widest >= 3 {
                run!(3, 1 2 3 4);
            }
            if widest >= 2 {
                run!(2, 1 2 3 4 5 6 7 8);
            }
            run!(1, 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
            row0 += rows;
        }
    }

    /// Panels `p0..p1` of an `m`-row product, fused.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) fn task(x: &[f32], m: usize, w: &QuantMatrix, panels: (usize, usize), y: &OutPtr) {
        match w.format {
            super::BlockFormat::Q8_0 => task_format::<F_Q8_0>(x, m, w, panels, y),
            super::BlockFormat::Q4_0 => task_format::<F_Q4_0>(x, m, w, panels, y),
            super::BlockFormat::Q4_1 => task_format::<F_Q4_1>(x, m, w, panels, y),
            super::BlockFormat::Bf16 => task_format::<F_BF16>(x, m, w, panels, y),
        }
    }
}

thread_local! {
    /// Each pool thread's dequantised window (two panels), grown once and reused.
    static WINDOW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Panels `p0..p1`, all rows: two panels at a time dequantised into `window`, then the f32 tile
/// code over them (same tiling, same accumulation order as [`matmul_packed`]).
#[inline(always)]
fn qtask_body<const FMA: bool, const WIDE: bool>(
    x: &[f32],
    m: usize,
    w: &QuantMatrix,
    (p0, p1): (usize, usize),
    y: &OutPtr,
    window: &mut Vec<f32>,
) {
    if m <= FUSED_ROWS {
        match w.format {
            BlockFormat::Q8_0 => fused_task::<FMA, WIDE, F_Q8_0>(x, m, w, (p0, p1), y),
            BlockFormat::Q4_0 => fused_task::<FMA, WIDE, F_Q4_0>(x, m, w, (p0, p1), y),
            BlockFormat::Q4_1 => fused_task::<FMA, WIDE, F_Q4_1>(x, m, w, (p0, p1), y),
            BlockFormat::Bf16 => fused_task::<FMA, WIDE, F_BF16>(x, m, w, (p0, p1), y),
        }
        return;
    }
    let span = w.k * PANEL;
    if window.len() < 2 * span {
        window.resize(2 * span, 0.0);
    }
    let mut p = p0;
    while p < p1 {
        let np = (p1 - p).min(2);
        for i in 0..np {
            w.dequant_panel(p + i, &mut window[i * span..(i + 1) * span]);
        }
        let view = Panels {
            data: &window[..np * span],
            n: w.n,
            k: w.k,
            stride: span,
            first: p,
        };
        task_body::<FMA, WIDE>(x, m, &view, p, p + np, y);
        p += np;
    }
}

/// `TOKENSWIFT_PORTABLE_TILE` set: fused products run the portable tile instead of the AVX-512 or
/// AVX2 intrinsics (same values), for side-by-side timings of the two.
#[cfg(target_arch = "x86_64")]
static PORTABLE_TILE: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var_os("TOKENSWIFT_PORTABLE_TILE").is_some());

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn qtask_avx512(
    x: &[f32],
    m: usize,
    w: &QuantMatrix,
    r: (usize, usize),
    y: &OutPtr,
    window: &mut Vec<f32>,
) {
    if m <= FUSED_ROWS && !*PORTABLE_TILE {
        return avx512::task(x, m, w, r, y);
    }
    qtask_body::<true, true>(x, m, w, r, y, window)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn qtask_avx2(
    x: &[f32],
    m: usize,
    w: &QuantMatrix,
    r: (usize, usize),
    y: &OutPtr,
    window: &mut Vec<f32>,
) {
    if m <= FUSED_ROWS && !*PORTABLE_TILE {
        return avx2::task(x, m, w, r, y);
    }
    qtask_body::<true, false>(x, m, w, r, y, window)
}

fn qtask(x: &[f32], m: usize, w: &QuantMatrix, r: (usize, usize), y: &OutPtr) {
    WINDOW.with(|cell| {
        let window = &mut cell.borrow_mut();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports the enabled features (checked just above).
                return unsafe { qtask_avx512(x, m, w, r, y, window) };
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: as above.
                return unsafe { qtask_avx2(x, m, w, r, y, window) };
            }
        }
        qtask_body::<false, false>(x, m, w, r, y, window)
    })
}

/// `Y[m, n] = X[m, k] · Wᵀ` into `y` (length `m·n`) for a block-quantised `W`, split over the
/// rayon pool as [`matmul_packed`] splits an f32 one.
pub fn matmul_quant(x: &[f32], m: usize, w: &QuantMatrix, y: &mut [f32]) {
    par_panel_ranges(x.len(), y, m, (w.n, w.k), |p0, p1, out| {
        qtask(x, m, w, (p0, p1), out)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quantising rounds each value to within half a step of its block's grid (Q8_0: amax/127,
    /// Q4_1: (max − min)/15), with the f16 scale's own rounding on top; Q4_0 (step amax/8) within
    /// a whole step, since its grid stops one step short of −max's opposite.
    #[test]
    fn quantisers_round_to_their_grid() {
        let k = 64;
        let w: Vec<f32> = (0..3 * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        for (format, steps) in [
            (BlockFormat::Q8_0, 127.0),
            (BlockFormat::Q4_1, 15.0 / 2.0),
            (BlockFormat::Q4_0, 4.0),
            (BlockFormat::Bf16, 128.0),
        ] {
            let rows = quantize_rows(format, &w, 3, k);
            let refs: Vec<&[u8]> = rows.iter().map(Vec::as_slice).collect();
            let q = QuantMatrix::from_rows(format, &refs, k).unwrap();
            // Multiply by the identity to read the dequantised values back.
            let eye: Vec<f32> = (0..k * k)
                .map(|i| if i / k == i % k { 1.0 } else { 0.0 })
                .collect();
            let mut back = vec![0f32; k * 3];
            matmul_quant(&eye, k, &q, &mut back);
            for r in 0..3 {
                for blk in 0..k / QBLOCK {
                    let xs = &w[r * k + blk * QBLOCK..][..QBLOCK];
                    let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
                    let tol = amax / steps * 0.51 + amax * 2e-3;
                    for (j, &x) in xs.iter().enumerate() {
                        let got = back[(blk * QBLOCK + j) * 3 + r];
                        assert!((got - x).abs() <= tol, "{format:?} {x} → {got}");
                    }
                }
            }
        }
    }

    /// The SIMD tiles dequantise Q4_1 as one fused `d·q + m`, the reference as a multiply then
    /// an add. They agree for every finite f16 scale, every 4-bit quant and minimums of every
    /// exponent, because `d·q` is exact in f32 when `d` has f16's 11 significant bits. Control: a
    /// scale with f32's 24 bits breaks the equality, so the argument (not luck) carries it.
    #[test]
    fn q4_1_fused_dequantisation_equals_multiply_then_add() {
        let split = |d: f32, q: f32, m: f32| (d * q + m, d.mul_add(q, m));
        let minimums: Vec<f32> = (-30..=30)
            .flat_map(|e| [1.0f32, -1.0, 1.337, -0.6093].map(|s| s * 2f32.powi(e)))
            .chain([0.0, -0.0])
            .collect();
        for bits in 0..=u16::MAX {
            let d = f16(&bits.to_le_bytes());
            if !d.is_finite() {
                continue;
            }
            for q in 0..16 {
                for &m in &minimums {
                    let (a, b) = split(d, q as f32, m);
                    assert_eq!(a.to_bits(), b.to_bits(), "d={d:e} q={q} m={m:e}");
                }
            }
        }
        let d = 1.0 + f32::EPSILON;
        let differs = (0..16).any(|q| {
            minimums.iter().any(|&m| {
                let (a, b) = split(d, q as f32, m);
                a.to_bits() != b.to_bits()
            })
        });
        assert!(differs, "a 24-bit scale must be able to tell the two apart");
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(QuantMatrix::from_rows(BlockFormat::Q4_1, &[&[0u8; 20]], 33).is_err());
        assert!(QuantMatrix::from_rows(BlockFormat::Q4_1, &[&[0u8; 19]], 32).is_err());
        assert!(QuantMatrix::from_rows(BlockFormat::Q8_0, &[&[0u8; 34]], 32).is_ok());
    }

    /// Q4_1 at 0.75 bytes per weight (f32 scales), Q8_0 at 1.125.
    #[test]
    fn quantised_matrices_are_small() {
        let k = 576;
        let q41 = vec![0u8; k / QBLOCK * 20];
        let q80 = vec![0u8; k / QBLOCK * 34];
        let a = QuantMatrix::from_rows(BlockFormat::Q4_1, &vec![q41.as_slice(); 64], k).unwrap();
        let b = QuantMatrix::from_rows(BlockFormat::Q8_0, &vec![q80.as_slice(); 64], k).unwrap();
        assert_eq!(a.bytes(), 64 * k * 3 / 4);
        assert_eq!(b.bytes(), 64 * k * 9 / 8);
    }
}
