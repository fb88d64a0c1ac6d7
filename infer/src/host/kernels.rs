//! A multi-threaded CPU kernel for the skinny matrix products of decoding: `Y[m, n] = X[m, k] ·
//! W[n, k]ᵀ` with few rows (m = 1 for AR decoding, up to ~100 for tree verification) and large n.
//!
//! Why: flex's matmul runs 1–8 rows on one thread and 2–8 rows slower than 1, so verifying 16
//! tokens cost ~10× one token; speculative decoding on a CPU lives or dies on that ratio. Here the
//! weight is packed once at load time into panels of 16 output columns (`[n/16][k][16]`), each
//! panel is streamed from memory once per call and reused from cache for every block of rows, and
//! panels are split across the rayon pool. The microkernel keeps MR rows × 16·NP columns of
//! accumulators in registers; it is plain Rust over fixed-size arrays, compiled three times (AVX-512,
//! AVX2+FMA, baseline) and chosen at run time.

use rayon::prelude::*;

/// Output columns per packed panel.
pub const PANEL: usize = 16;
/// Rows per register block.
const MR: usize = 6;
/// Depth per cache block (a panel pair's slice is 2·16·KC·4 bytes = 16 KiB, half of a 32 KiB L1).
const KC: usize = 128;
/// Depth steps (panel rows of 64 bytes, one cache line each) a tile asks for ahead of its loads.
const PREFETCH_AHEAD: usize = 16;

/// A weight matrix `[n, k]` (HF `[out, in]` layout) packed for [`matmul_packed`].
#[derive(Debug, Clone)]
pub struct PackedMatrix {
    /// `[n_panels][k][PANEL]`, zero-padded past `n`.
    data: Vec<f32>,
    n: usize,
    k: usize,
}

impl PackedMatrix {
    /// Packs a row-major `[n, k]` matrix.
    pub fn pack(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(
            w.len(),
            n * k,
            "weight has {} values, expected {n}×{k}",
            w.len()
        );
        let panels = n.div_ceil(PANEL);
        let mut data = vec![0f32; panels * k * PANEL];
        data.par_chunks_mut(k * PANEL)
            .enumerate()
            .for_each(|(p, panel)| {
                for j in 0..PANEL {
                    let row = p * PANEL + j;
                    if row < n {
                        let src = &w[row * k..(row + 1) * k];
                        for (kk, &v) in src.iter().enumerate() {
                            panel[kk * PANEL + j] = v;
                        }
                    }
                }
            });
        Self { data, n, k }
    }

    pub fn rows(&self) -> usize {
        self.n
    }

    pub fn cols(&self) -> usize {
        self.k
    }

    /// The packed data as a panel view.
    pub fn panels(&self) -> Panels<'_> {
        Panels {
            data: &self.data,
            n: self.n,
            k: self.k,
            stride: self.k * PANEL,
            first: 0,
        }
    }
}

/// A borrowed `[n, k]` matrix in panel layout: panel `p` (output columns `16p..16p+16`) holds
/// `k × 16` values at `data[p·stride..]`, row `kk` of the panel at `kk·16`. A stride larger than
/// `k·16` lets a growing buffer (the KV cache) be used with any `k` up to its capacity.
#[derive(Debug, Clone, Copy)]
pub struct Panels<'a> {
    pub data: &'a [f32],
    pub n: usize,
    pub k: usize,
    pub stride: usize,
    /// The panel `data` starts with (0 but for a window of a few dequantised panels).
    pub first: usize,
}

impl Panels<'_> {
    fn panel(&self, p: usize) -> &[f32] {
        let at = (p - self.first) * self.stride;
        &self.data[at..at + self.k * PANEL]
    }
}

/// `acc[r][j] += Σ_{kk ∈ k0..k1} x[r·k + kk] · panel_j[kk]` for `R` rows and `NP` panels.
/// `FMA` selects fused multiply-add (only where the CPU has it; otherwise it is a slow libm call).
#[inline(always)]
fn microkernel<const R: usize, const NP: usize, const FMA: bool>(
    x: &[f32],
    k: usize,
    (k0, k1): (usize, usize),
    panels: [&[f32]; NP],
    out: &mut [[[f32; PANEL]; NP]; R],
) {
    // Bounds once per call, so the inner loop is loads and FMAs only (a check per element made
    // the 16-row tile front-end bound).
    assert!(k1 <= k && k0 <= k1, "depth range out of bounds");
    assert!(x.len() >= (R - 1) * k + k1, "input rows out of bounds");
    for p in &panels {
        assert!(p.len() >= k1 * PANEL, "panel out of bounds");
    }
    let xp = x.as_ptr();
    // A local copy, so the accumulators live in registers for the whole loop.
    let mut acc = *out;
    for kk in k0..k1 {
        // Each panel is its own stream (panels lie `k·16` floats apart), and the attention's
        // panels (the KV cache: 46 KB per cached token) come from L3 on every pass: asking for
        // the line `PREFETCH_AHEAD` depth steps ahead made the value product of attention 11 %
        // (one token) to 19 % (two) faster in a forward pass at a 2000-token context, and f32
        // weights at 2–16 rows 8–13 %. A one-row tile (two loads per depth step, load-bound
        // already) measured ~5 % slower with it, so it has none (DESIGN §6.1).
        if R >= 2 {
            for p in &panels {
                prefetch(p.as_ptr().wrapping_add((kk + PREFETCH_AHEAD) * PANEL), 64);
            }
        }
        let mut w = [[0f32; PANEL]; NP];
        for (p, wp) in w.iter_mut().enumerate() {
            // SAFETY: kk < k1 and every panel holds at least k1·PANEL values (asserted above).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    panels[p].as_ptr().add(kk * PANEL),
                    wp.as_mut_ptr(),
                    PANEL,
                )
            };
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: row r starts at r·k and holds at least k1 > kk values (asserted above).
            let xv = unsafe { *xp.add(r * k + kk) };
            for (acc_rp, wp) in acc_r.iter_mut().zip(&w) {
                for j in 0..PANEL {
                    acc_rp[j] = if FMA {
                        xv.mul_add(wp[j], acc_rp[j])
                    } else {
                        acc_rp[j] + xv * wp[j]
                    };
                }
            }
        }
    }
    *out = acc;
}

/// Asks the CPU to bring the cache lines of the `bytes` bytes from `at` into L1: a hint, which
/// never faults wherever `at` points (it may run past an allocation's end), so callers compute
/// addresses ahead with `wrapping_add`. Shared by the f32 and block-quantised tiles.
#[inline(always)]
pub(super) fn prefetch<T>(at: *const T, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    for line in (0..bytes).step_by(64) {
        // SAFETY: a prefetch only computes the address; nothing is dereferenced.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                (at as *const i8).wrapping_add(line),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (at, bytes);
}

/// Copies `n ≤ PANEL` floats; a whole panel (every panel but a matrix's last) as one fixed-size
/// copy, which compiles to vector moves rather than a `memmove` call per tile row.
///
/// # Safety
/// `src` and `dst` must be valid for `n` floats and not overlap.
#[inline(always)]
pub(super) unsafe fn copy_floats(src: *const f32, dst: *mut f32, n: usize) {
    // SAFETY: the caller's guarantees.
    unsafe {
        if n == PANEL {
            std::ptr::copy_nonoverlapping(src as *const [f32; PANEL], dst as *mut [f32; PANEL], 1);
        } else {
            std::ptr::copy_nonoverlapping(src, dst, n);
        }
    }
}

pub(super) struct OutPtr(pub(super) *mut f32);
// SAFETY: tasks write disjoint column ranges of the output.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// One register tile over the depth range `k0..k1`, added to the output when `k0 > 0`.
#[inline(always)]
fn block<const R: usize, const NP: usize, const FMA: bool>(
    x: &[f32],
    w: &Panels,
    first_panel: usize,
    row0: usize,
    (k0, k1): (usize, usize),
    y: &OutPtr,
) {
    let k = w.k;
    let panels: [&[f32]; NP] = std::array::from_fn(|p| w.panel(first_panel + p));
    let mut acc = [[[0f32; PANEL]; NP]; R];
    if k0 > 0 {
        for (r, row) in acc.iter_mut().enumerate() {
            for (p, vals) in row.iter_mut().enumerate() {
                let col0 = (first_panel + p) * PANEL;
                let cols = PANEL.min(w.n.saturating_sub(col0));
                // SAFETY: as for the store below; these values were written by this task.
                unsafe {
                    let src = y.0.add((row0 + r) * w.n + col0);
                    copy_floats(src, vals.as_mut_ptr(), cols);
                }
            }
        }
    }
    microkernel::<R, NP, FMA>(&x[row0 * k..(row0 + R) * k], k, (k0, k1), panels, &mut acc);
    for (r, row) in acc.iter().enumerate() {
        for (p, vals) in row.iter().enumerate() {
            let col0 = (first_panel + p) * PANEL;
            let cols = PANEL.min(w.n.saturating_sub(col0));
            // SAFETY: row < m and col0 + cols <= n; this task owns these columns.
            unsafe {
                let dst = y.0.add((row0 + r) * w.n + col0);
                copy_floats(vals.as_ptr(), dst, cols);
            }
        }
    }
}

/// One register tile of `rows` rows (at most [`MR`]) from `row0` over panel `p`, at depth range
/// `range`.
#[inline(always)]
fn rows_1p<const FMA: bool>(
    x: &[f32],
    w: &Panels,
    p: usize,
    row0: usize,
    rows: usize,
    range: (usize, usize),
    y: &OutPtr,
) {
    macro_rules! go {
        ($($r:literal)*) => {
            match rows {
                $($r => block::<$r, 1, FMA>(x, w, p, row0, range, y),)*
                _ => unreachable!("at most {MR} rows per tile"),
            }
        };
    }
    go!(1 2 3 4 5 6)
}

/// Up to this many rows, the one-panel path (16 vector registers) runs balanced tiles of at
/// most [`MR`] rows over the whole depth, reusing each panel from cache.
const ONE_PANEL_ROWS: usize = 36;

/// One task: panels `p0..p1`, all rows.
///
/// With AVX-512's 32 registers (`WIDE`): two-panel tiles of at most [`MR_WIDE`] rows (up to 24
/// accumulators), balanced, over the whole depth up to [`MR_WIDE`] rows and over depth blocks of
/// [`KC`] that stay in L1 beyond (a verify of 13 or more tokens, the attention of a 5-token or
/// wider verify, prefill). Tiles of at most 6 rows (6 + 3 for 9 rows) made a 3- and a 4-token
/// verify at a 2000-token context 5 % and 6 % slower, in the attention's products (`q_profile`,
/// alternated pass by pass, DESIGN §6.1). A one-panel tile of up to 12 rows, which streams each
/// weight once for every row, measured slower here for 7–16 rows: the attention of a 4-token
/// verify at a 2000-token context −25 % (`examples/attn_bench.rs`), f32 weights at 8–16 rows
/// −20 % (`examples/kernel_bench.rs`).
///
/// With 16 vector registers (`!WIDE`: AVX2, baseline) every tile is one panel of at most [`MR`]
/// rows (12 accumulators, the classic 6×16 AVX2 tile), over the whole depth up to
/// [`ONE_PANEL_ROWS`] rows and over depth blocks beyond.
///
/// Every output is accumulated over the depth in the same order whatever the tiling (depth
/// blocks store and reload the exact partial sums), so a row's result does not depend on how
/// many rows are computed with it.
#[inline(always)]
pub(super) fn task_body<const FMA: bool, const WIDE: bool>(
    x: &[f32],
    m: usize,
    w: &Panels,
    p0: usize,
    p1: usize,
    y: &OutPtr,
) {
    if !WIDE {
        if m <= ONE_PANEL_ROWS {
            let tile = m.div_ceil(m.div_ceil(MR));
            for p in p0..p1 {
                let mut row0 = 0;
                while row0 < m {
                    let rows = tile.min(m - row0);
                    rows_1p::<FMA>(x, w, p, row0, rows, (0, w.k), y);
                    row0 += rows;
                }
            }
        } else {
            for p in p0..p1 {
                run_panels::<1, FMA>(x, m, w, p, y, MR);
            }
        }
        return;
    }
    let mut p = p0;
    while p + 2 <= p1 {
        run_panels::<2, FMA>(x, m, w, p, y, MR_WIDE);
        p += 2;
    }
    if p < p1 {
        run_panels::<1, FMA>(x, m, w, p, y, MR_WIDE);
    }
}

/// Rows per register tile with AVX-512's 32 registers: 12 rows × 2 panels = 24 accumulators,
/// plus the two panel vectors and a broadcast.
const MR_WIDE: usize = 12;

/// Register tiles of `NP` panels from `first_panel` over all `m` rows: row blocks of at most
/// `max_rows` rows, balanced (9 rows run as one tile of 9 and 18 as two of 9 with `max_rows` 12,
/// not 6 + 3 and 12 + 6: a 3-row tile has too few independent accumulators to hide the
/// multiply-add latency), over the whole depth when one block holds every row and over depth
/// blocks of [`KC`] beyond, which keep a panel pair's slice in L1 while every row block uses it.
#[inline(always)]
fn run_panels<const NP: usize, const FMA: bool>(
    x: &[f32],
    m: usize,
    w: &Panels,
    first_panel: usize,
    y: &OutPtr,
    max_rows: usize,
) {
    let blocks = m.div_ceil(max_rows).max(1);
    let tile = m.div_ceil(blocks);
    let kc = if blocks > 1 { KC } else { w.k.max(1) };
    let mut k0 = 0;
    while k0 < w.k {
        let k1 = (k0 + kc).min(w.k);
        let mut row0 = 0;
        while row0 < m {
            let rows = (m - row0).min(tile);
            let r = (k0, k1);
            let p = first_panel;
            match rows {
                12 => block::<12, NP, FMA>(x, w, p, row0, r, y),
                11 => block::<11, NP, FMA>(x, w, p, row0, r, y),
                10 => block::<10, NP, FMA>(x, w, p, row0, r, y),
                9 => block::<9, NP, FMA>(x, w, p, row0, r, y),
                8 => block::<8, NP, FMA>(x, w, p, row0, r, y),
                7 => block::<7, NP, FMA>(x, w, p, row0, r, y),
                6 => block::<6, NP, FMA>(x, w, p, row0, r, y),
                5 => block::<5, NP, FMA>(x, w, p, row0, r, y),
                4 => block::<4, NP, FMA>(x, w, p, row0, r, y),
                3 => block::<3, NP, FMA>(x, w, p, row0, r, y),
                2 => block::<2, NP, FMA>(x, w, p, row0, r, y),
                _ => block::<1, NP, FMA>(x, w, p, row0, r, y),
            }
            row0 += rows;
        }
        k0 = k1;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn task_avx512(x: &[f32], m: usize, w: &Panels, p0: usize, p1: usize, y: &OutPtr) {
    task_body::<true, true>(x, m, w, p0, p1, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn task_avx2(x: &[f32], m: usize, w: &Panels, p0: usize, p1: usize, y: &OutPtr) {
    task_body::<true, false>(x, m, w, p0, p1, y)
}

fn task(x: &[f32], m: usize, w: &Panels, p0: usize, p1: usize, y: &OutPtr) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the enabled features (checked just above).
            return unsafe { task_avx512(x, m, w, p0, p1, y) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as above.
            return unsafe { task_avx2(x, m, w, p0, p1, y) };
        }
    }
    task_body::<false, false>(x, m, w, p0, p1, y)
}

/// `Y[m, n] = X[m, k] · Wᵀ` into `y` (length `m·n`), split over the rayon pool.
pub fn matmul_packed(x: &[f32], m: usize, w: &PackedMatrix, y: &mut [f32]) {
    matmul_panels(x, m, &w.panels(), y)
}

/// As [`matmul_packed`], over a panel view.
pub fn matmul_panels(x: &[f32], m: usize, w: &Panels, y: &mut [f32]) {
    let panels = w.n.div_ceil(PANEL);
    assert!(
        w.first == 0
            && w.k * PANEL <= w.stride
            && (panels - 1) * w.stride + w.k * PANEL <= w.data.len(),
        "panel view out of bounds"
    );
    par_panel_ranges(x.len(), y, m, (w.n, w.k), |p0, p1, out| {
        task(x, m, w, p0, p1, out)
    });
}

/// Stores a tile of AVX-512 accumulators (`acc[r][c]`: row `row0 + r`, panel `p0 + c`) into the
/// row-major `[m, n]` output, dropping the last panel's columns past `n`. Shared by the AVX-512
/// tiles of the block kernels.
///
/// # Safety
/// Rows `row0..row0 + R` are below `m`, and the calling task owns these panels' columns.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn store_tile_avx512<const R: usize, const C: usize>(
    acc: &[[std::arch::x86_64::__m512; C]; R],
    y: &OutPtr,
    n: usize,
    p0: usize,
    row0: usize,
) {
    use std::arch::x86_64::_mm512_storeu_ps;
    for c in 0..C {
        let col0 = (p0 + c) * PANEL;
        let cols = PANEL.min(n.saturating_sub(col0));
        for (r, a) in acc.iter().enumerate() {
            // SAFETY: the caller's contract; col0 + cols <= n.
            unsafe {
                let dst = y.0.add((row0 + r) * n + col0);
                if cols == PANEL {
                    _mm512_storeu_ps(dst, a[c]);
                } else if cols > 0 {
                    let mut tmp = [0f32; PANEL];
                    _mm512_storeu_ps(tmp.as_mut_ptr(), a[c]);
                    std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, cols);
                }
            }
        }
    }
}

/// Checks `x` (`x_len` values) and `y` against an `[m, k] · [n, k]ᵀ` product, then runs `task`
/// on the rayon pool over ranges of output panels: enough tasks to balance the pool, each a
/// whole number of panel pairs, each writing only its own columns of `y`. Shared by the f32 and
/// the block-quantised kernels.
pub(super) fn par_panel_ranges(
    x_len: usize,
    y: &mut [f32],
    m: usize,
    dims: (usize, usize),
    task: impl Fn(usize, usize, &OutPtr) + Sync,
) {
    par_panel_ranges_aligned(x_len, y, m, dims, 2, task)
}

/// [`par_panel_ranges`] with each task's panel count a multiple of `align` (but the last).
pub(super) fn par_panel_ranges_aligned(
    x_len: usize,
    y: &mut [f32],
    m: usize,
    (n, k): (usize, usize),
    align: usize,
    task: impl Fn(usize, usize, &OutPtr) + Sync,
) {
    assert_eq!(x_len, m * k, "input has {x_len} values, expected {m}×{k}");
    assert_eq!(
        y.len(),
        m * n,
        "output has {} values, expected {m}×{n}",
        y.len()
    );
    let panels = n.div_ceil(PANEL);
    let threads = rayon::current_num_threads().max(1);
    let per_task = (panels.div_ceil(threads * 4))
        .next_multiple_of(align)
        .max(align);
    let out = OutPtr(y.as_mut_ptr());
    let n_tasks = panels.div_ceil(per_task);
    (0..n_tasks).into_par_iter().for_each(|t| {
        let p0 = t * per_task;
        let p1 = (p0 + per_task).min(panels);
        task(p0, p1, &out);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], m: usize, w: &[f32], n: usize, k: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for r in 0..m {
            for o in 0..n {
                y[r * n + o] = (0..k)
                    .map(|i| f64::from(x[r * k + i]) * f64::from(w[o * k + i]))
                    .sum::<f64>() as f32;
            }
        }
        y
    }

    /// `matmul_packed` through the kernel this CPU dispatches to (`body` 0) or through one tile
    /// body whatever the CPU: the 32-register (`WIDE`) one (1), the 16-register one with fused
    /// multiply-adds (2) or without (3).
    fn matmul_with(body: u8, x: &[f32], m: usize, w: &PackedMatrix, y: &mut [f32]) {
        let p = w.panels();
        par_panel_ranges(x.len(), y, m, (p.n, p.k), |p0, p1, out| match body {
            0 => task(x, m, &p, p0, p1, out),
            1 => task_body::<true, true>(x, m, &p, p0, p1, out),
            2 => task_body::<true, false>(x, m, &p, p0, p1, out),
            _ => task_body::<false, false>(x, m, &p, p0, p1, out),
        });
    }

    /// A row's product is the same bits whatever the number of rows computed with it (one-row,
    /// two-panel, one-panel and depth-blocked paths; k above the depth block), in the dispatched
    /// kernel and in every tile body: the property verify/AR bit-identity rests on.
    #[test]
    fn a_rows_product_does_not_depend_on_the_row_count() {
        let (n, k) = (50, 700);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 30.0)
            .collect();
        let packed = PackedMatrix::pack(&w, n, k);
        let rows = 70;
        let x: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        for body in 0..4u8 {
            let alone: Vec<Vec<f32>> = (0..rows)
                .map(|r| {
                    let mut y = vec![f32::NAN; n];
                    matmul_with(body, &x[r * k..(r + 1) * k], 1, &packed, &mut y);
                    y
                })
                .collect();
            for m in [2, 3, 4, 5, 6, 7, 9, 12, 13, 24, 25, 36, 37, 70] {
                let mut y = vec![f32::NAN; m * n];
                matmul_with(body, &x[..m * k], m, &packed, &mut y);
                for (r, a) in alone.iter().enumerate().take(m) {
                    let same = y[r * n..(r + 1) * n]
                        .iter()
                        .zip(a)
                        .all(|(p, q)| p.to_bits() == q.to_bits());
                    assert!(
                        same,
                        "body {body}: row {r} of {m} differs from the row alone"
                    );
                }
            }
        }
    }

    #[test]
    fn matches_a_naive_product_for_awkward_shapes() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 17, 5),
            (7, 33, 9),
            (13, 64, 31),
            (6, 100, 64),
            (64, 48, 20),
            (13, 40, 700),
            (7, 16, 513),
            (9, 50, 576),
            (16, 33, 64),
            (17, 70, 300),
        ] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                .collect();
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 30.0)
                .collect();
            let packed = PackedMatrix::pack(&w, n, k);
            let mut y = vec![f32::NAN; m * n];
            matmul_packed(&x, m, &packed, &mut y);
            let r = reference(&x, m, &w, n, k);
            let worst = y
                .iter()
                .zip(&r)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(worst < 1e-4 * k as f32, "m={m} n={n} k={k}: {worst}");
        }
    }
}
