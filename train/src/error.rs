//! The training crate's error type; every variant renders as one sentence.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("cannot write or read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Checkpoint(String),
    /// Several training processes could not meet or exchange gradients.
    #[error("{0}")]
    Distributed(String),
    /// A data-parallel worker failed during its step.
    #[error("{0}")]
    Worker(String),
    #[error(transparent)]
    Infer(#[from] tokenswift_infer::InferError),
    #[error(transparent)]
    Dataset(#[from] tokenswift_datasets::DatasetError),
}

impl TrainError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, TrainError>;
