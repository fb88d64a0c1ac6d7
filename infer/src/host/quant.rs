//! Block-quantised weights for the packed kernel: GGUF's Q4_0, Q4_1 and Q8_0 blocks, kept at
//! their own size in memory and dequantised in the kernel (W4A32 / W8A32).
//!
//! Why: decoding a small model on a CPU is bound by reading the weights (DESIGN §6); a Q4_1
//! matrix is 0.75 bytes per weight here against 4 for f32. The values the kernel multiplies are
//! exactly the f32 values [`crate::load::gguf::dequantize`] gives (the same expression, no fused
//! multiply-add), and they are accumulated in the same order as the f32 kernel's, so a product
//! over a [`QuantMatrix`] equals the product over the converted f32 matrix bit for bit: the
//! goldens, the lossless tests and the verify/AR bit-identity hold unchanged.
//!
//! Layout: per panel of 16 output rows and per block of 32 depths, the rows' scales (d, and m for
//! Q4_1) as f32, then the blocks' quant bytes transposed so that one byte position of the 16 rows
//! is 16 consecutive bytes. A panel is dequantised into a thread-local `[k][16]` f32 window (L2
//! resident) and the f32 tile code runs over it, so the weights stream from memory once per call
//! at their quantised size.

use std::cell::RefCell;

use rayon::prelude::*;

use super::kernels::{OutPtr, PANEL, PackedMatrix, Panels, matmul_packed, task_body};

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
}

impl BlockFormat {
    /// Bytes of one GGUF block of [`QBLOCK`] values.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q8_0 => 34,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Q4_0 => "q4_0",
            Self::Q4_1 => "q4_1",
            Self::Q8_0 => "q8_0",
        }
    }

    /// f32 scales per row and block (d, and m for Q4_1).
    fn scales(self) -> usize {
        match self {
            Self::Q4_1 => 2,
            _ => 1,
        }
    }

    /// Offset of the quant bytes in a block.
    fn quant_offset(self) -> usize {
        match self {
            Self::Q4_1 => 4,
            _ => 2,
        }
    }

    /// Quant bytes per row and block.
    fn quant_bytes(self) -> usize {
        match self {
            Self::Q8_0 => 32,
            _ => 16,
        }
    }
}

fn f16(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
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
                scales[s + j] = f16(&blk[0..2]);
                if format == BlockFormat::Q4_1 {
                    scales[s + PANEL + j] = f16(&blk[2..4]);
                }
                let q = (p * nb + b) * qb * PANEL;
                for (i, &v) in blk[qo..qo + qb].iter().enumerate() {
                    quants[q + i * PANEL + j] = v;
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

    /// Panel `p` as f32 `[k][PANEL]` into `out`: per value the expression of
    /// [`crate::load::gguf::dequantize`], so the same bits.
    #[inline(always)]
    fn dequant_panel(&self, p: usize, out: &mut [f32]) {
        let nb = self.k / QBLOCK;
        let (sc, qb) = (self.format.scales(), self.format.quant_bytes());
        for b in 0..nb {
            let s = &self.scales[(p * nb + b) * sc * PANEL..][..sc * PANEL];
            let d: &[f32; PANEL] = s[..PANEL].try_into().expect("a panel of scales");
            let q = &self.quants[(p * nb + b) * qb * PANEL..][..qb * PANEL];
            let o = &mut out[b * QBLOCK * PANEL..][..QBLOCK * PANEL];
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
                    let (lo, hi) = o.split_at_mut(QBLOCK / 2 * PANEL);
                    for (i, (lo, hi)) in lo
                        .chunks_exact_mut(PANEL)
                        .zip(hi.chunks_exact_mut(PANEL))
                        .enumerate()
                    {
                        let qr = row(i);
                        for j in 0..PANEL {
                            lo[j] = d[j] * f32::from(qr[j] & 0x0f) + mn[j];
                            hi[j] = d[j] * f32::from(qr[j] >> 4) + mn[j];
                        }
                    }
                }
                BlockFormat::Q4_0 => {
                    let (lo, hi) = o.split_at_mut(QBLOCK / 2 * PANEL);
                    for (i, (lo, hi)) in lo
                        .chunks_exact_mut(PANEL)
                        .zip(hi.chunks_exact_mut(PANEL))
                        .enumerate()
                    {
                        let qr = row(i);
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

thread_local! {
    /// Each pool thread's dequantised window (two panels), grown once and reused.
    static WINDOW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Panels `p0..p1`, all rows: two panels at a time dequantised into `window`, then the f32 tile
/// code over them (same tiling, same accumulation order as [`matmul_packed`]).
#[inline(always)]
fn qtask_body<const FMA: bool>(
    x: &[f32],
    m: usize,
    w: &QuantMatrix,
    (p0, p1): (usize, usize),
    y: &OutPtr,
    window: &mut Vec<f32>,
) {
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
        task_body::<FMA>(x, m, &view, p, p + np, y);
        p += np;
    }
}

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
    qtask_body::<true>(x, m, w, r, y, window)
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
    qtask_body::<true>(x, m, w, r, y, window)
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
        qtask_body::<false>(x, m, w, r, y, window)
    })
}

/// `Y[m, n] = X[m, k] · Wᵀ` into `y` (length `m·n`) for a block-quantised `W`, split over the
/// rayon pool as [`matmul_packed`] splits an f32 one.
pub fn matmul_quant(x: &[f32], m: usize, w: &QuantMatrix, y: &mut [f32]) {
    assert_eq!(
        x.len(),
        m * w.k,
        "input has {} values, expected {m}×{}",
        x.len(),
        w.k
    );
    assert_eq!(
        y.len(),
        m * w.n,
        "output has {} values, expected {m}×{}",
        y.len(),
        w.n
    );
    let panels = w.n.div_ceil(PANEL);
    let threads = rayon::current_num_threads().max(1);
    let per_task = (panels.div_ceil(threads * 4)).next_multiple_of(2).max(2);
    let out = OutPtr(y.as_mut_ptr());
    let n_tasks = panels.div_ceil(per_task);
    (0..n_tasks).into_par_iter().for_each(|t| {
        let p0 = t * per_task;
        let p1 = (p0 + per_task).min(panels);
        qtask(x, m, w, (p0, p1), &out);
    });
}

/// A weight matrix as the CPU fast path holds it: packed f32, or GGUF blocks.
#[derive(Debug, Clone)]
pub enum Weight {
    F32(PackedMatrix),
    Quant(QuantMatrix),
}

impl Weight {
    pub fn rows(&self) -> usize {
        match self {
            Self::F32(w) => w.rows(),
            Self::Quant(w) => w.rows(),
        }
    }

    pub fn cols(&self) -> usize {
        match self {
            Self::F32(w) => w.cols(),
            Self::Quant(w) => w.cols(),
        }
    }

    /// `Y[m, n] = X[m, k] · Wᵀ`.
    pub fn matmul(&self, x: &[f32], m: usize, y: &mut [f32]) {
        match self {
            Self::F32(w) => matmul_packed(x, m, w, y),
            Self::Quant(w) => matmul_quant(x, m, w, y),
        }
    }

    /// `f32`, `q4_1`, …
    pub fn format_name(&self) -> &'static str {
        match self {
            Self::F32(_) => "f32",
            Self::Quant(w) => w.format.name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
