//! Options shared by the binaries (`tokenswift`, `train-heads`, `tokenswift-eval`): device choice,
//! model loading, sampling flags, progress display.

use std::path::PathBuf;

use crate::hub::resolve_model;
use crate::model::Model;
use crate::sampling::SamplingConfig;
use crate::tokenizer::TextTokenizer;
use anyhow::{Context, Result, bail};
use burn::tensor::{DType, Device};
use clap::{Args, ValueEnum};
use std::path::Path;

use crate::decoding::ngram::ContextTable;
use crate::decoding::partial::SINKS;
use crate::decoding::planner::{DraftMode, NgramLag, TreeChoice};
use crate::decoding::session::{DEFAULT_KV_BUDGET, DEFAULT_NGRAM_TOPK, TokenSwiftConfig};
use crate::heads::{DraftHeads, HeadsManifest, base_fingerprint, load_heads, manifest_path};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Compute device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceChoice {
    /// The first compiled-in device that works: cuda, then vulkan, then flex.
    Auto,
    /// burn's flex CPU backend (f32).
    Flex,
    /// NVIDIA GPU through CUDA (bf16); needs the `cuda` feature.
    Cuda,
    /// Any Vulkan GPU through wgpu (f32); needs the `vulkan` feature.
    Vulkan,
}

impl DeviceChoice {
    /// The device and the weight dtype used on it.
    pub fn resolve(self) -> Result<(Device, DType)> {
        match self {
            Self::Auto => {
                // The first compiled-in GPU that answers, else the CPU.
                let candidates = [
                    (cfg!(feature = "cuda"), Self::Cuda),
                    (cfg!(feature = "vulkan"), Self::Vulkan),
                    (cfg!(feature = "flex"), Self::Flex),
                ];
                let mut last_error = None;
                for (_, choice) in candidates.into_iter().filter(|(built, _)| *built) {
                    match choice.resolve() {
                        Ok(r) => return Ok(r),
                        Err(e) => last_error = Some(e),
                    }
                }
                Err(last_error.unwrap_or_else(|| {
                    anyhow::anyhow!(
                        "this binary was built without any backend feature (flex, cuda, vulkan)"
                    )
                }))
            }
            Self::Flex => {
                #[cfg(feature = "flex")]
                return Ok((Device::flex(), DType::F32));
                #[allow(unreachable_code)]
                {
                    bail!("this binary was built without the `flex` feature")
                }
            }
            Self::Cuda => {
                #[cfg(feature = "cuda")]
                return probe(Device::cuda(0), "CUDA").map(|d| (d, DType::BF16));
                #[allow(unreachable_code)]
                {
                    bail!(
                        "this binary was built without the `cuda` feature; rebuild with --features cuda (needs network access at build time)"
                    )
                }
            }
            Self::Vulkan => {
                #[cfg(feature = "vulkan")]
                return probe(
                    Device::vulkan(burn::tensor::DeviceKind::DefaultDevice),
                    "Vulkan",
                )
                .map(|d| (d, DType::F32));
                #[allow(unreachable_code)]
                {
                    bail!(
                        "this binary was built without the `vulkan` feature; rebuild with --features vulkan"
                    )
                }
            }
        }
    }
}

/// Runs one tiny operation on `device` in a separate thread, with panic messages silenced, so a
/// machine without the GPU or its driver gets one sentence instead of a backtrace from the
/// backend's threads.
#[cfg(any(feature = "cuda", feature = "vulkan"))]
fn probe(device: Device, name: &str) -> Result<Device> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let d = device.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let ok = std::panic::catch_unwind(|| {
            burn::tensor::Tensor::<1>::zeros([1], &d).into_data();
        })
        .is_ok();
        let _ = tx.send(ok);
    });
    let ok = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .unwrap_or(false);
    std::panic::set_hook(hook);
    if !ok {
        bail!(
            "no usable {name} device was found (is a GPU with its driver installed?); use --device flex to run on the CPU"
        );
    }
    Ok(device)
}

/// Model selection.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// A local checkpoint directory, a known alias (smollm2-135m, qwen2.5-1.5b, qwen2.5-7b,
    /// qwen2.5-14b, llama3.1-8b, llama2-7b-yarn-128k) or a Hugging Face `org/name`.
    #[arg(long, env = "TOKENSWIFT_MODEL", default_value = "smollm2-135m")]
    pub model: String,
    /// Compute device.
    #[arg(long, env = "TOKENSWIFT_DEVICE", value_enum, default_value = "auto")]
    pub device: DeviceChoice,
}

impl ModelArgs {
    /// Resolves, fetches if needed, and loads the model and its tokenizer.
    pub fn load(&self, ui: &Ui) -> Result<(PathBuf, Model, TextTokenizer)> {
        let dir = resolve_model(&self.model, &|m| ui.note(m))?;
        let (device, dtype) = self.device.resolve()?;
        let spinner = ui.spinner(format!("loading {}", dir.display()));
        let model = Model::load(&dir, &device, dtype)?;
        let tokenizer = TextTokenizer::load(&dir)?;
        spinner.finish_and_clear();
        Ok((dir, model, tokenizer))
    }
}

/// Sampling flags, shared by every command that samples.
#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// Softmax temperature; 0 = greedy decoding (argmax).
    #[arg(
        long,
        env = "TOKENSWIFT_TEMPERATURE",
        allow_negative_numbers = true,
        default_value_t = 1.0
    )]
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = off).
    #[arg(long, env = "TOKENSWIFT_TOP_K", default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest set of tokens with this much probability (1 = off).
    #[arg(
        long,
        env = "TOKENSWIFT_TOP_P",
        allow_negative_numbers = true,
        default_value_t = 1.0
    )]
    pub top_p: f32,
    /// Drop tokens below min-p × the top token's probability (0 = off; paper: 0.1).
    #[arg(
        long,
        env = "TOKENSWIFT_MIN_P",
        allow_negative_numbers = true,
        default_value_t = 0.1
    )]
    pub min_p: f32,
    /// The filters above never keep fewer tokens than this.
    #[arg(long, env = "TOKENSWIFT_MIN_TOKENS_TO_KEEP", default_value_t = 20)]
    pub min_tokens_to_keep: usize,
    /// Eta-sampling epsilon (0 = off).
    #[arg(
        long,
        env = "TOKENSWIFT_ETA",
        allow_negative_numbers = true,
        default_value_t = 0.0
    )]
    pub eta: f32,
    /// Contextual penalty for tokens in the window (1 = off; paper: 1.2).
    #[arg(
        long,
        env = "TOKENSWIFT_PENALTY",
        allow_negative_numbers = true,
        default_value_t = 1.2
    )]
    pub penalty: f32,
    /// Number of most recent tokens the penalty looks at (0 = no penalty).
    #[arg(long, env = "TOKENSWIFT_PENALTY_WINDOW", default_value_t = 1024)]
    pub penalty_window: usize,
    /// Comma-separated token ids that are never generated.
    #[arg(long, env = "TOKENSWIFT_BAN_TOKENS", value_delimiter = ',')]
    pub ban_tokens: Vec<u32>,
    /// Seed of the sampler.
    #[arg(long, env = "TOKENSWIFT_SEED", default_value_t = 0)]
    pub seed: u64,
}

impl SamplingArgs {
    pub fn config(&self) -> SamplingConfig {
        SamplingConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            min_tokens_to_keep: self.min_tokens_to_keep,
            eta: self.eta,
            penalty: self.penalty,
            penalty_window: self.penalty_window,
            ban_tokens: self.ban_tokens.clone(),
            seed: self.seed,
        }
    }
}

/// Progress display on stderr, silenced by `--quiet`.
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    pub quiet: bool,
}

impl Ui {
    pub fn note(&self, msg: &str) {
        if !self.quiet {
            eprintln!("{msg}");
        }
    }

    fn target(&self) -> ProgressDrawTarget {
        if self.quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        }
    }

    pub fn spinner(&self, msg: String) -> ProgressBar {
        let pb = ProgressBar::with_draw_target(None, self.target());
        pb.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").unwrap());
        pb.set_message(msg);
        pb.enable_steady_tick(std::time::Duration::from_millis(120));
        pb
    }

    pub fn bar(&self, len: u64, msg: &str) -> ProgressBar {
        let pb = ProgressBar::with_draw_target(Some(len), self.target());
        pb.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                .unwrap()
                .progress_chars("=> "),
        );
        pb.set_message(msg.to_string());
        pb
    }
}

/// Reads the prompt from `--prompt` or `--prompt-file`.
pub fn read_prompt(prompt: &Option<String>, file: &Option<PathBuf>) -> Result<String> {
    match (prompt, file) {
        (Some(p), None) => Ok(p.clone()),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the prompt file {}", f.display())),
        (Some(_), Some(_)) => bail!("give either --prompt or --prompt-file, not both"),
        (None, None) => bail!("give a prompt with --prompt TEXT or --prompt-file FILE"),
    }
}

/// How TokenSwift drafts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DraftArg {
    /// Chosen per step by measured gain: n-grams only, the heads on the verify pass's hidden
    /// state, or the separate pass (with a fixed tree: separate when the tree has K+1 levels,
    /// else fused).
    Auto,
    /// The paper's extra base pass over the partial KV cache, then the heads (K+1 depths).
    Separate,
    /// The heads on the verify pass's hidden state: no extra pass, K depths.
    Fused,
    /// No heads: n-gram lookup drafts only (needs `--tree auto`).
    None,
}

/// TokenSwift options (shared with the benchmarks). The paper's configuration is
/// `--tree 1,3,3,3 --draft separate --ngram-topk 20 --ngram-lag paper`.
#[derive(Debug, Clone, Args)]
pub struct TokenSwiftArgs {
    /// Draft heads: a heads file (with its .json manifest) or a checkpoint directory with the
    /// heads inside (published TokenSwift layout). Default for the default model: the committed
    /// heads.
    #[arg(long, env = "TOKENSWIFT_HEADS")]
    pub heads: Option<PathBuf>,
    /// `auto`: each step verifies the candidates (heads, n-grams) that maximise expected tokens
    /// per second under measured costs and acceptance, possibly none (a plain AR step). Or a
    /// fixed arity per depth verified whole every step (`1,3,3,3` = the paper's 40-node tree).
    #[arg(long, env = "TOKENSWIFT_TREE", default_value = "auto", value_parser = TreeChoice::parse)]
    pub tree: TreeChoice,
    /// With a fixed tree: n-gram chains retrieved per depth-1 token (the paper's k = 20). With
    /// `--tree auto`: alternative first tokens per lookup draft (at most 4). 0 = no n-grams.
    #[arg(long, env = "TOKENSWIFT_NGRAM_TOPK", default_value_t = DEFAULT_NGRAM_TOPK)]
    pub ngram_topk: usize,
    /// How far behind the emitted text the n-gram tables are fed: `paper` (one penalty window,
    /// so recently penalised n-grams are not proposed), a number of tokens (0 = at once), or
    /// `auto` (both tables, whichever is accepted more often).
    #[arg(long, env = "TOKENSWIFT_NGRAM_LAG", default_value = "auto", value_parser = NgramLag::parse)]
    pub ngram_lag: NgramLag,
    /// Partial KV cache budget for the separate draft pass (sinks included). Default 4096, or
    /// the whole prompt + generation when shorter.
    #[arg(long, env = "TOKENSWIFT_KV_BUDGET")]
    pub kv_budget: Option<usize>,
    /// How the heads' drafts are produced.
    #[arg(long, env = "TOKENSWIFT_DRAFT", value_enum, default_value = "auto")]
    pub draft: DraftArg,
    /// Tokens the draft may propose: the N most frequent of the heads' training corpus (their
    /// manifest's ranking). Drafting projects onto N rows of `lm_head` instead of the whole
    /// vocabulary, the largest single memory read of a draft; verification still uses the whole
    /// vocabulary, so the output is unchanged. 0 = the whole vocabulary (also used when the
    /// heads carry no ranking).
    #[arg(long, env = "TOKENSWIFT_DRAFT_VOCAB", default_value_t = 8192)]
    pub draft_vocab: usize,
    /// N-gram table of the heads' training corpus, a free draft source for `--tree auto`:
    /// `auto` (the `.ngrams` file beside the heads, when there is one), `none`, or a file
    /// written by `train-heads`.
    #[arg(long, env = "TOKENSWIFT_CORPUS_NGRAMS", default_value = "auto")]
    pub corpus_ngrams: String,
}

impl TokenSwiftArgs {
    /// The engine settings for a prompt of `prompt` tokens and `gen` new ones.
    pub fn config(
        &self,
        prompt: usize,
        gen_len: usize,
        stop_at_eos: bool,
    ) -> Result<TokenSwiftConfig> {
        let total = prompt + gen_len;
        let kv_budget = match self.kv_budget {
            Some(b) if b > total => bail!(
                "--kv-budget {b} is larger than the prompt plus the generation ({total} tokens); give at most {total}"
            ),
            Some(b) if b <= SINKS => {
                bail!("--kv-budget {b} must be larger than the {SINKS} attention sinks")
            }
            Some(b) => b,
            None => DEFAULT_KV_BUDGET.min(total).max(SINKS + 1),
        };
        Ok(TokenSwiftConfig {
            tree: self.tree.clone(),
            ngram_topk: self.ngram_topk,
            ngram_lag: self.ngram_lag,
            kv_budget,
            draft: match self.draft {
                DraftArg::Auto => DraftMode::Auto,
                DraftArg::Separate => DraftMode::Separate,
                DraftArg::Fused => DraftMode::Fused,
                DraftArg::None => DraftMode::None,
            },
            stop_at_eos,
            ..TokenSwiftConfig::default()
        })
    }

    /// Where the heads for `model` are (see `--heads`): a heads file or a checkpoint directory.
    fn heads_path(&self, model: &Model, model_dir: &Path) -> Result<PathBuf> {
        if let Some(p) = &self.heads {
            if !p.exists() {
                bail!("heads {} do not exist", p.display());
            }
            return Ok(p.clone());
        }
        let committed = committed_heads();
        if committed.exists() && manifest_path(&committed).exists() {
            let m = HeadsManifest::load(&manifest_path(&committed))?;
            if m.base_fingerprint == base_fingerprint(model) {
                return Ok(committed);
            }
        }
        if crate::weights::Checkpoint::open(model_dir)
            .map(|c| DraftHeads::count_in(&c) > 0)
            .unwrap_or(false)
        {
            return Ok(model_dir.to_path_buf());
        }
        bail!(
            "no draft heads for {}: pass --heads FILE, train them with `train-heads --base ...`, or use --method ar",
            model_dir.display()
        )
    }

    /// Loads the heads for `model` (see `--heads`).
    pub fn load_heads(&self, model: &Model, model_dir: &Path) -> Result<DraftHeads> {
        Ok(load_heads(&self.heads_path(model, model_dir)?, model)?)
    }

    /// The draft vocabulary (see `--draft-vocab`): the first N tokens of the heads' ranking, or
    /// `None` for the whole vocabulary.
    pub fn draft_vocab(&self, model: &Model, model_dir: &Path) -> Result<Option<Vec<u32>>> {
        if self.draft_vocab == 0 || self.draft_vocab >= model.config().vocab_size {
            return Ok(None);
        }
        let path = self.heads_path(model, model_dir)?;
        let mpath = manifest_path(&path);
        if !path.is_file() || !mpath.exists() {
            return Ok(None);
        }
        let ranking = HeadsManifest::load(&mpath)?.token_ranking;
        if ranking.is_empty() {
            return Ok(None);
        }
        Ok(Some(ranking.into_iter().take(self.draft_vocab).collect()))
    }
}

impl TokenSwiftArgs {
    /// The corpus n-gram table (see `--corpus-ngrams`), checked against `model`.
    pub fn corpus_ngrams(
        &self,
        model: &Model,
        model_dir: &Path,
    ) -> Result<Option<std::sync::Arc<ContextTable>>> {
        let path = match self.corpus_ngrams.as_str() {
            "none" => return Ok(None),
            "auto" => {
                let heads = self.heads_path(model, model_dir)?;
                let p = heads.with_extension("ngrams");
                if !heads.is_file() || !p.is_file() {
                    return Ok(None);
                }
                p
            }
            file => PathBuf::from(file),
        };
        let bytes = std::fs::read(&path)
            .with_context(|| format!("cannot read the corpus n-gram table {}", path.display()))?;
        let table =
            ContextTable::from_bytes(&bytes, model.config().vocab_size, &base_fingerprint(model))
                .with_context(|| format!("{}", path.display()))?;
        Ok(Some(std::sync::Arc::new(table)))
    }
}

/// The heads committed for the default model.
pub fn committed_heads() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../heads/smollm2-135m/heads.safetensors")
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`; 0 elsewhere).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// The exit of every binary: success, or the error chain as one `error:` line and a failure code.
pub fn exit_code(result: Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", chain.join(": "));
            std::process::ExitCode::FAILURE
        }
    }
}
