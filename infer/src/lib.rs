//! tokenswift-infer: the base model (Llama 2/3.1, YaRN Llama, Qwen2/2.5, SmolLM2) on burn 0.22,
//! weight and tokenizer loading, the embedded default model, KV caches, sampling and decoding.
//!
//! TokenSwift: "From Hours to Minutes: Lossless Acceleration of Ultra Long Sequence Generation up
//! to 100K Tokens" (Wu et al., ICML 2025, arXiv 2502.18890).

pub mod cache;
pub mod cli_support;
pub mod config;
pub mod convert;
pub mod cpu;
pub mod decoding;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod heads;
pub mod hub;
pub mod kernels;
pub mod model;
pub mod rope;
pub mod sampling;
pub mod tokenizer;
pub mod weights;

pub use error::{InferError, Result};
