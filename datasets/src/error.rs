//! The datasets crate's error type: each variant renders as one sentence naming what is at fault.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt corpus data: {0}")]
    Format(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Corpus(String),
    #[error(transparent)]
    Infer(#[from] tokenswift_infer::InferError),
}

impl DatasetError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        DatasetError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, DatasetError>;
