//! The base model (DESIGN §8): the decoder-only transformer shared by Llama (2, 3.1, YaRN,
//! SmolLM2) and Qwen2/2.5 — its configuration, rotary embeddings, forward pass and KV cache — and
//! the prompt helpers that run tokens through it. It knows nothing of decoding beyond
//! `forward(tokens, positions, mask)`.

pub mod cache;
pub mod config;
pub mod prompt;
pub mod rope;
mod transformer;

pub use cache::KvCache;
pub use config::ModelConfig;
pub use transformer::{
    AttentionMask, ForwardOutput, Linear, LoadOptions, LogitRows, Model, Outputs, RmsNorm,
    WeightsChoice, is_flex,
};
