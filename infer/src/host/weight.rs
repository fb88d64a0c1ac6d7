//! A weight matrix as the CPU fast path holds it, whichever kernel multiplies by it.

use super::int8::{IntMatrix, matmul_int};
use super::kernels::{PackedMatrix, matmul_packed};
use super::quant::{BlockFormat, QuantMatrix, matmul_quant};

/// A weight matrix as the CPU fast path holds it: packed f32, or GGUF blocks.
#[derive(Debug, Clone)]
pub enum Weight {
    F32(PackedMatrix),
    Quant(QuantMatrix),
    /// Blocks multiplied by 8-bit-quantised inputs in integers (`--activations q8`).
    Int(IntMatrix),
}

impl Weight {
    pub fn rows(&self) -> usize {
        match self {
            Self::F32(w) => w.rows(),
            Self::Quant(w) => w.rows(),
            Self::Int(w) => w.rows(),
        }
    }

    pub fn cols(&self) -> usize {
        match self {
            Self::F32(w) => w.cols(),
            Self::Quant(w) => w.cols(),
            Self::Int(w) => w.cols(),
        }
    }

    /// `Y[m, n] = X[m, k] · Wᵀ`.
    pub fn matmul(&self, x: &[f32], m: usize, y: &mut [f32]) {
        match self {
            Self::F32(w) => matmul_packed(x, m, w, y),
            Self::Quant(w) => matmul_quant(x, m, w, y),
            Self::Int(w) => matmul_int(x, m, w, y),
        }
    }

    /// `f32`, `q4_1`, …
    pub fn format_name(&self) -> &'static str {
        match self {
            Self::F32(_) => "f32",
            Self::Quant(w) => w.format().name(),
            Self::Int(w) => match w.format() {
                BlockFormat::Q8_0 => "q8_0×q8",
                BlockFormat::Q4_0 => "q4_0×q8",
                _ => "q4_1×q8",
            },
        }
    }

    /// Multiplies by 8-bit-quantised inputs in integers from now on, where this weight is held as
    /// Q4_0, Q4_1 or Q8_0 blocks (returns whether it switched); f32 and bf16 matrices stay exact.
    pub fn use_int8_products(&mut self) -> bool {
        if let Self::Quant(q) = self
            && let Some(i) = IntMatrix::from_quant(q)
        {
            *self = Self::Int(i);
        }
        matches!(self, Self::Int(_))
    }
}
