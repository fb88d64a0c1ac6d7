//! Getting a model onto the machine: checkpoints (single or sharded safetensors), the GGUF reader
//! and its conversion, hub resolution and the embedded default model, the tokenizer.

pub mod convert;
pub mod gguf;
pub mod hub;
#[cfg(test)]
mod quant_reference;
pub mod synthetic;
pub mod tokenizer;
pub mod weights;
