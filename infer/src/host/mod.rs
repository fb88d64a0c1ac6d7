//! The CPU fast path (DESIGN §6): on flex with f32 weights the forward pass runs here, on host
//! memory, with one packed skinny-matmul kernel for every product and a host KV cache laid out for
//! it. The burn-ops path ([`crate::model`]) stays for GPUs and is tested against this one.

pub mod kernels;
pub mod kv;
pub mod layer;
pub mod quant;
