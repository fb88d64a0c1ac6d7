//! Fetching hub checkpoints with `hf-hub` (the library decides what a model argument means and
//! which files a checkpoint needs; the transfer, with its progress display, lives here).

use std::path::{Path, PathBuf};

use tokenswift_infer::load::hub::{
    CHECKPOINT_FILES, ModelSource, SHARD_INDEX, SINGLE_WEIGHTS, ensure_default_model,
    hub_unavailable, model_source, shard_files,
};
use tokenswift_infer::{InferError, Result};

/// Turns a model argument into a local checkpoint directory, fetching what is needed.
/// `progress` receives one line per phase.
pub fn resolve_model(arg: &str, progress: &dyn Fn(&str)) -> Result<PathBuf> {
    match model_source(arg)? {
        ModelSource::Local(dir) => Ok(dir),
        ModelSource::Default => ensure_default_model(progress),
        ModelSource::Hub(id) => hub_download(&id, progress),
    }
}

/// Downloads the files of hub model `id` (or finds them in the local hub cache when
/// `HF_HUB_OFFLINE=1`).
fn hub_download(id: &str, progress: &dyn Fn(&str)) -> Result<PathBuf> {
    let offline =
        std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if offline {
        let cache = hf_hub::Cache::from_env().model(id.to_string());
        let cfg = cache.get("config.json").ok_or_else(|| {
            hub_unavailable(
                id,
                "HF_HUB_OFFLINE is set and it is not in the local hub cache",
            )
        })?;
        return Ok(cfg.parent().unwrap_or(Path::new(".")).to_path_buf());
    }
    progress(&format!("downloading {id} from the Hugging Face hub"));
    let hint = |e: &dyn std::fmt::Display| hub_unavailable(id, &e.to_string());
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(|e| hint(&e))?;
    let repo = api.model(id.to_string());
    let mut dir = None;
    for f in CHECKPOINT_FILES {
        let p = repo.get(f).map_err(|e| hint(&e))?;
        dir.get_or_insert_with(|| p.parent().unwrap_or(Path::new(".")).to_path_buf());
    }
    match repo.get(SHARD_INDEX) {
        Ok(index) => {
            let text = std::fs::read_to_string(&index).map_err(|e| {
                InferError::Context(format!("cannot read {}: {e}", index.display()))
            })?;
            for s in shard_files(&text)? {
                repo.get(&s).map_err(|e| hint(&e))?;
            }
        }
        Err(_) => {
            repo.get(SINGLE_WEIGHTS).map_err(|e| hint(&e))?;
        }
    }
    Ok(dir.expect("CHECKPOINT_FILES is not empty"))
}
