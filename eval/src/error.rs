//! The eval crate's error type; every variant renders as one sentence.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot write or read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("results table: {0}")]
    Table(#[from] polars::prelude::PolarsError),
    #[error("{0}")]
    Chart(String),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Infer(#[from] tokenswift_infer::InferError),
    #[error(transparent)]
    Dataset(#[from] tokenswift_datasets::DatasetError),
}

impl EvalError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        EvalError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, EvalError>;
