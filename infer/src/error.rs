//! The error type of the inference library: one variant per kind of failure, each rendering as one
//! clear sentence that names the file, tensor or value at fault.

use std::path::PathBuf;

/// Everything that can go wrong while loading, converting or running a model.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid GGUF file: {reason}")]
    Gguf { path: PathBuf, reason: String },
    #[error("{path} is not a valid safetensors file: {reason}")]
    Safetensors { path: PathBuf, reason: String },
    #[error("model config {path} is invalid: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error(
        "unsupported model_type `{found}` in {path}; supported: llama (Llama 2, Llama 3.1, YaRN Llama, SmolLM2), qwen2 (Qwen2, Qwen2.5)"
    )]
    UnsupportedArchitecture { path: PathBuf, found: String },
    #[error("checkpoint {dir} has no tensor `{name}`")]
    MissingTensor { dir: PathBuf, name: String },
    #[error("tensor `{name}` in {dir} has shape {found:?}, expected {expected:?}")]
    TensorShape {
        dir: PathBuf,
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("tensor `{name}` in {dir} has unsupported dtype {dtype}")]
    TensorDtype {
        dir: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("checkpoint {dir} has tensors this model does not use: {names}")]
    UnusedTensors { dir: PathBuf, names: String },
    #[error("tokenizer {path} cannot be loaded: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("model `{0}` is neither a local directory, a known alias, nor an `org/name` hub id")]
    UnknownModel(String),
    #[error("{0}")]
    ModelUnavailable(String),
    /// A setting out of range; `field` is the setting's name as in the config structs
    /// (`top_p`, `kv_budget`, `tree`, …). Command-line front ends show it as their flag
    /// (`--top-p`), which is the same name in kebab case.
    #[error("setting `{field}` {message}")]
    Setting {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    Cache(String),
    #[error("{0}")]
    Context(String),
}

impl InferError {
    /// A setting out of range (see [`InferError::Setting`]).
    pub fn setting(field: &'static str, message: impl Into<String>) -> Self {
        Self::Setting {
            field,
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias of the inference library.
pub type Result<T, E = InferError> = std::result::Result<T, E>;
