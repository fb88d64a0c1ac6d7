//! Finding the draft heads that belong to a base model, and their draft vocabulary (in the
//! manifest), with the rules every front end shares. (The corpus n-gram table beside the heads is
//! loaded by [`crate::decoding::corpus`].)

use std::path::{Path, PathBuf};

use crate::error::{InferError, Result};
use crate::load::weights::Checkpoint;
use crate::model::Model;

use super::heads::{DraftHeads, HeadsManifest, base_fingerprint, load_heads, manifest_path};

/// The heads committed for the default model.
pub fn committed_heads() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../heads/smollm2-135m/heads.safetensors")
}

/// Where the heads for `model` (loaded from `model_dir`) are: `explicit` when given (a heads file,
/// or a checkpoint directory with heads inside), else the committed heads when they were trained
/// on this base, else the base checkpoint itself when it holds heads (the published layout).
pub fn heads_path(model: &Model, model_dir: &Path, explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if !p.exists() {
            return Err(InferError::setting(
                "heads",
                format!("{} does not exist", p.display()),
            ));
        }
        return Ok(p.to_path_buf());
    }
    let committed = committed_heads();
    if committed.exists() && manifest_path(&committed).exists() {
        let m = HeadsManifest::load(&manifest_path(&committed))?;
        if m.base_fingerprint == base_fingerprint(model) {
            return Ok(committed);
        }
    }
    if Checkpoint::open(model_dir)
        .map(|c| DraftHeads::count_in(&c) > 0)
        .unwrap_or(false)
    {
        return Ok(model_dir.to_path_buf());
    }
    Err(InferError::setting(
        "heads",
        format!(
            "is needed: no draft heads were found for {} (train them with `train-heads --base …`, or decode autoregressively)",
            model_dir.display()
        ),
    ))
}

/// The draft heads for `model` (see [`heads_path`]).
pub fn resolve_heads(
    model: &Model,
    model_dir: &Path,
    explicit: Option<&Path>,
) -> Result<DraftHeads> {
    load_heads(&heads_path(model, model_dir, explicit)?, model)
}

/// The draft vocabulary of the heads at `heads`: the first `size` tokens of their manifest's
/// ranking, or `None` for the whole vocabulary (`size` 0 or at least the vocabulary, or heads
/// without a ranking).
pub fn draft_vocabulary(model: &Model, heads: &Path, size: usize) -> Result<Option<Vec<u32>>> {
    if size == 0 || size >= model.config().vocab_size {
        return Ok(None);
    }
    let mpath = manifest_path(heads);
    if !heads.is_file() || !mpath.exists() {
        return Ok(None);
    }
    let ranking = HeadsManifest::load(&mpath)?.token_ranking;
    if ranking.is_empty() {
        return Ok(None);
    }
    Ok(Some(ranking.into_iter().take(size).collect()))
}
