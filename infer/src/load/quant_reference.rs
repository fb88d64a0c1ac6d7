//! The quantised kernels checked against the GGUF dequantiser, bit for bit.
//!
//! Kept in `load` (which depends on `host`), so that `host` never imports `load`: the reference for
//! the quantised kernels is the GGUF dequantiser.
use crate::host::kernels::{PackedMatrix, matmul_packed};
use crate::host::quant::{BlockFormat, QBLOCK, QuantMatrix, matmul_quant};
use crate::load::gguf::{GgmlType, dequantize};

/// A deterministic byte stream (xorshift).
struct Bytes(u64);
impl Bytes {
    fn next(&mut self) -> u8 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 24) as u8
    }
}

/// One row of `k/32` random blocks with small, finite f16 scales.
fn random_row(format: BlockFormat, k: usize, rng: &mut Bytes) -> Vec<u8> {
    let mut row = Vec::new();
    for _ in 0..k / QBLOCK {
        let mut blk = vec![0u8; format.block_bytes()];
        for b in blk.iter_mut() {
            *b = rng.next();
        }
        if format == BlockFormat::Bf16 {
            // Finite values: exponent byte 0x3b..0x3e (magnitudes ~2⁻⁹…2), any sign/mantissa.
            for v in blk.chunks_exact_mut(2) {
                v[1] = (v[1] & 0x80) | (0x3b + v[1] % 4);
            }
            row.extend(blk);
            continue;
        }
        let scale = |rng: &mut Bytes, sign: bool| {
            let v = (f32::from(rng.next()) + 1.0) / 4096.0;
            half::f16::from_f32(if sign && rng.next() & 1 == 1 { -v } else { v }).to_le_bytes()
        };
        blk[0..2].copy_from_slice(&scale(rng, false));
        if format == BlockFormat::Q4_1 {
            blk[2..4].copy_from_slice(&scale(rng, true));
        }
        row.extend(blk);
    }
    row
}

fn ggml(format: BlockFormat) -> GgmlType {
    match format {
        BlockFormat::Q4_0 => GgmlType::Q4_0,
        BlockFormat::Q4_1 => GgmlType::Q4_1,
        BlockFormat::Q8_0 => GgmlType::Q8_0,
        BlockFormat::Bf16 => GgmlType::Bf16,
    }
}

fn product(x: &[f32], m: usize, w: &QuantMatrix) -> Vec<f32> {
    let mut y = vec![f32::NAN; m * w.rows()];
    matmul_quant(x, m, w, &mut y);
    y
}

/// For every format, awkward row counts (a single row, partial panels, an odd panel count)
/// and every row-count regime of the tilers (1, ≤ 8, ≤ 36, prefill-sized with depth blocks),
/// the quantised product equals the product over the dequantised f32 matrix bit for bit. A
/// single changed quant byte must change the output (the comparison is not vacuous).
#[test]
fn quantised_products_equal_the_dequantised_f32_product_bit_for_bit() {
    let mut rng = Bytes(0x9e3779b97f4a7c15);
    for format in [
        BlockFormat::Q4_0,
        BlockFormat::Q4_1,
        BlockFormat::Q8_0,
        BlockFormat::Bf16,
    ] {
        // (600, 64) and (1000, 32): enough panels per task for AVX-512's three- and four-panel
        // tiles (and a partial last panel).
        for &(n, k) in &[
            (1, 32),
            (17, 64),
            (33, 160),
            (100, 576),
            (48, 1536),
            (600, 64),
            (1000, 32),
        ] {
            let rows: Vec<Vec<u8>> = (0..n).map(|_| random_row(format, k, &mut rng)).collect();
            let refs: Vec<&[u8]> = rows.iter().map(Vec::as_slice).collect();
            let q = QuantMatrix::from_rows(format, &refs, k).unwrap();
            let f: Vec<f32> = rows
                .iter()
                .flat_map(|r| dequantize(ggml(format), r))
                .collect();
            let packed = PackedMatrix::pack(&f, n, k);
            // Every row count of the AVX2 tiles (1–8 rows, one or two vectors per row, balanced
            // splits up to 17), AVX-512's (≤ 16 rows, one to four panels), the fused limit (36)
            // and prefill.
            for m in (1..=17).chain([24, 36, 37, 40, 70]) {
                let x: Vec<f32> = (0..m * k)
                    .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                    .collect();
                let mut want = vec![f32::NAN; m * n];
                matmul_packed(&x, m, &packed, &mut want);
                let got = product(&x, m, &q);
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{format:?} n={n} k={k} m={m}");
            }
            // Control: one weight changed in the quantised matrix only.
            let mut bad_rows = rows.clone();
            let last = bad_rows[n - 1].len() - 1;
            bad_rows[n - 1][last] ^= 0x11;
            let bad_refs: Vec<&[u8]> = bad_rows.iter().map(Vec::as_slice).collect();
            let bad = QuantMatrix::from_rows(format, &bad_refs, k).unwrap();
            let x: Vec<f32> = (0..k).map(|i| (i % 7) as f32 + 1.0).collect();
            let mut want = vec![0f32; n];
            matmul_packed(&x, 1, &packed, &mut want);
            assert_ne!(product(&x, 1, &bad)[n - 1], want[n - 1], "{format:?}");
        }
    }
}
