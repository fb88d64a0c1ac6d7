//! The corpus n-gram table beside a heads file (`heads.ngrams`, DESIGN §4.3): choosing and
//! loading it for a base model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::draft::heads::base_fingerprint;
use crate::error::{InferError, Result};
use crate::model::Model;

use super::ngram::ContextTable;

/// Which corpus n-gram table to draft from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorpusNgrams {
    /// The `.ngrams` file beside the heads, when there is one.
    Auto,
    None,
    File(PathBuf),
}

impl CorpusNgrams {
    /// Parses `auto`, `none` or a path.
    pub fn parse(s: &str) -> Self {
        match s {
            "auto" => CorpusNgrams::Auto,
            "none" => CorpusNgrams::None,
            path => CorpusNgrams::File(PathBuf::from(path)),
        }
    }
}

/// The corpus n-gram table for the heads at `heads`, checked against `model`.
pub fn corpus_ngrams(
    model: &Model,
    heads: &Path,
    choice: &CorpusNgrams,
) -> Result<Option<Arc<ContextTable>>> {
    let path = match choice {
        CorpusNgrams::None => return Ok(None),
        CorpusNgrams::Auto => {
            let p = heads.with_extension("ngrams");
            if !heads.is_file() || !p.is_file() {
                return Ok(None);
            }
            p
        }
        CorpusNgrams::File(p) => p.clone(),
    };
    let bytes = std::fs::read(&path).map_err(|e| InferError::io(&path, e))?;
    let table =
        ContextTable::from_bytes(&bytes, model.config().vocab_size, &base_fingerprint(model))
            .map_err(|e| InferError::Context(format!("{}: {e}", path.display())))?;
    Ok(Some(Arc::new(table)))
}
