//! tokenswift-infer: the base model (Llama 2/3.1, YaRN Llama, Qwen2/2.5, SmolLM2) on burn 0.22,
//! weight and tokenizer loading, the embedded default model, the CPU fast path, sampling, and
//! decoding — autoregressive and TokenSwift.
//!
//! TokenSwift: "From Hours to Minutes: Lossless Acceleration of Ultra Long Sequence Generation up
//! to 100K Tokens" (Wu et al., ICML 2025, arXiv 2502.18890). How it is built: `DESIGN.md`.
//!
//! | module | what |
//! |---|---|
//! | [`model`] | config, rope, the transformer's forward pass, the KV cache, prompt helpers |
//! | [`host`] | the CPU fast path: packed kernel, decoder layer, host KV cache |
//! | [`load`] | safetensors, GGUF and its conversion, hub resolution, tokenizer |
//! | [`draft`] | draft heads, draft vocabulary, heads resolution |
//! | [`decoding`] | AR loop, the TokenSwift session and its parts |
//! | [`sampling`] | logits processing and sampling (pure) |
//! | [`device`] | choosing the compute device |

pub mod decoding;
pub mod device;
pub mod draft;
pub mod error;
pub mod host;
pub mod load;
pub mod model;
pub mod sampling;
pub mod tensor;

pub use error::{InferError, Result};
