//! The command-line layer shared by the three binaries (`tokenswift`, `train-heads`,
//! `tokenswift-eval`): flag groups (clap), progress display (indicatif) and the exit path. The
//! rules behind the flags live in the libraries; errors that name a setting are shown here as the
//! flag that sets it.

pub mod hub;

use hub::resolve_model;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokenswift_infer::InferError;
use tokenswift_infer::decoding::corpus::{CorpusNgrams, corpus_ngrams};
use tokenswift_infer::decoding::ngram::ContextTable;
use tokenswift_infer::decoding::planner::{DraftMode, NgramLag, TreeChoice};
use tokenswift_infer::decoding::session::{DEFAULT_NGRAM_TOPK, TokenSwiftConfig};
use tokenswift_infer::device::DeviceChoice;
use tokenswift_infer::draft::heads::{DraftHeads, load_base_on, load_heads};
use tokenswift_infer::draft::resolve::{draft_vocabulary, heads_path};
use tokenswift_infer::draft::vocab::DEFAULT_DRAFT_VOCAB;
use tokenswift_infer::host::quant::BlockFormat;
use tokenswift_infer::load::tokenizer::TextTokenizer;
use tokenswift_infer::model::{Model, WeightsChoice};
use tokenswift_infer::sampling::SamplingConfig;

/// Compute device (`--device`): `auto` (the first compiled-in device that works: cuda, then
/// vulkan, then flex), `flex` (burn's CPU backend, f32), `cuda` / `cuda:N` (NVIDIA GPU N, bf16;
/// needs the `cuda` feature), `vulkan` / `vulkan:N` / `vulkan:cpu` (a Vulkan GPU, the Nth
/// discrete one, or Mesa's CPU driver; f32; needs the `vulkan` feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceArg(pub DeviceChoice);

impl DeviceArg {
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        DeviceChoice::parse(s).map(DeviceArg)
    }

    pub fn choice(self) -> DeviceChoice {
        self.0
    }
}

/// The CPU fast path's weights (`--weights`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WeightsArg {
    /// Each matrix as the checkpoint stores it: the default model's Q4_1 layers and Q8_0
    /// lm_head as their GGUF blocks, dequantised in the kernel to exactly the f32 values (same
    /// logits as `f32`, ~5× less weight memory to read); a bf16 checkpoint's matrices as bf16
    /// (widened exactly); f32 for f32 safetensors.
    Auto,
    /// Every matrix in f32 (the checkpoint's values, converted).
    F32,
    /// Every matrix quantised to Q8_0 at load (lossy: a different model than the checkpoint's,
    /// though TokenSwift stays lossless against AR on it).
    #[value(name = "q8_0")]
    Q8_0,
    /// Every matrix quantised to Q4_1 at load (lossy, as q8_0).
    #[value(name = "q4_1")]
    Q4_1,
    /// Every matrix quantised to Q4_0 at load (lossy, as q8_0).
    #[value(name = "q4_0")]
    Q4_0,
    /// Every matrix rounded to bf16 at load (lossless for a bf16 checkpoint, where `auto` does
    /// the same; lossy for f32 ones).
    Bf16,
}

impl WeightsArg {
    pub fn choice(self) -> WeightsChoice {
        match self {
            WeightsArg::Auto => WeightsChoice::Auto,
            WeightsArg::F32 => WeightsChoice::F32,
            WeightsArg::Q8_0 => WeightsChoice::Quantise(BlockFormat::Q8_0),
            WeightsArg::Q4_1 => WeightsChoice::Quantise(BlockFormat::Q4_1),
            WeightsArg::Q4_0 => WeightsChoice::Quantise(BlockFormat::Q4_0),
            WeightsArg::Bf16 => WeightsChoice::Quantise(BlockFormat::Bf16),
        }
    }
}

/// Model selection.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// A local checkpoint directory, a known alias (smollm2-135m, qwen2.5-1.5b, qwen2.5-7b,
    /// qwen2.5-14b, llama3.1-8b, llama2-7b-yarn-128k) or a Hugging Face `org/name`.
    #[arg(long, env = "TOKENSWIFT_MODEL", default_value = "smollm2-135m")]
    pub model: String,
    /// Compute device: auto, flex, cuda, cuda:N, vulkan, vulkan:N or vulkan:cpu (auto: cuda,
    /// then vulkan, then flex, among the compiled-in backends).
    #[arg(long, env = "TOKENSWIFT_DEVICE", default_value = "auto", value_parser = DeviceArg::parse)]
    pub device: DeviceArg,
    /// Weights of the CPU fast path (ignored on a GPU): `auto` keeps the checkpoint's own format.
    #[arg(long, env = "TOKENSWIFT_WEIGHTS", value_enum, default_value = "auto")]
    pub weights: WeightsArg,
    /// On the CPU (flex): `host` runs the packed CPU kernels (the fast path); `burn` runs every
    /// operation as a burn op, exactly the code a GPU runs (slower here; for debugging and
    /// testing the GPU path). Ignored on a GPU, which always runs burn ops.
    #[arg(long, env = "TOKENSWIFT_KERNELS", value_enum, default_value = "host")]
    pub kernels: KernelsArg,
    /// Inputs of the CPU fast path's products with block-quantised matrices (the default
    /// model's): `f32` multiplies them exactly, `q8` rounds each input row to 8 bits per block of
    /// 32 and multiplies in integers (AVX-512 VNNI; as llama.cpp does), faster on wide verifies
    /// but a slightly different model, so the text differs from `f32`'s. TokenSwift stays
    /// lossless against AR in either mode.
    #[arg(
        long,
        env = "TOKENSWIFT_ACTIVATIONS",
        value_enum,
        default_value = "f32"
    )]
    pub activations: ActivationsArg,
}

/// The inputs of the fast path's block-quantised products (`--activations`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ActivationsArg {
    /// f32 inputs: exact products of the checkpoint's values.
    F32,
    /// 8-bit inputs per block of 32, integer products (lossy against `f32`).
    Q8,
}

/// Which code computes the forward pass on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KernelsArg {
    /// The CPU fast path (packed kernels, host KV cache).
    Host,
    /// burn ops, as on a GPU.
    Burn,
}

impl ModelArgs {
    /// Resolves, fetches if needed, and loads the model (heads stored inside its checkpoint are
    /// left to the heads loader) and its tokenizer.
    pub fn load(&self, ui: &Ui) -> Result<(PathBuf, Model, TextTokenizer)> {
        if self.kernels == KernelsArg::Burn && self.weights != WeightsArg::Auto {
            bail!(
                "--weights {} applies to the host kernels only; --kernels burn runs the checkpoint's own values",
                self.weights
                    .to_possible_value()
                    .map(|v| v.get_name().to_string())
                    .unwrap_or_default()
            );
        }
        if self.kernels == KernelsArg::Burn && self.activations == ActivationsArg::Q8 {
            bail!("--activations q8 applies to the host kernels only, not to --kernels burn");
        }
        let dir = resolve_model(&self.model, &|m| ui.note(m))?;
        let (device, dtype) = self.device.choice().resolve()?;
        let spinner = ui.spinner(format!("loading {}", dir.display()));
        let mut model = load_base_on(
            &dir,
            &device,
            dtype,
            self.weights.choice(),
            self.kernels == KernelsArg::Host,
        )?;
        if self.activations == ActivationsArg::Q8 {
            // An error on the burn path (a GPU), in the library's words.
            if model.use_int8_products()? == 0 {
                ui.note(
                    "--activations q8: this model has no Q4_0/Q4_1/Q8_0 matrices (only those take integer products); nothing changes",
                );
            } else if !tokenswift_infer::host::int8::int8_is_fast() {
                ui.note(
                    "--activations q8: this CPU lacks AVX-512 VNNI; the integer products run a slow portable loop",
                );
            }
        }
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
        default_value_t = SamplingConfig::default().temperature
    )]
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = off).
    #[arg(long, env = "TOKENSWIFT_TOP_K", default_value_t = SamplingConfig::default().top_k)]
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest set of tokens with this much probability (1 = off).
    #[arg(
        long,
        env = "TOKENSWIFT_TOP_P",
        allow_negative_numbers = true,
        default_value_t = SamplingConfig::default().top_p
    )]
    pub top_p: f32,
    /// Drop tokens below min-p × the top token's probability (0 = off; paper: 0.1).
    #[arg(
        long,
        env = "TOKENSWIFT_MIN_P",
        allow_negative_numbers = true,
        default_value_t = SamplingConfig::default().min_p
    )]
    pub min_p: f32,
    /// The filters above never keep fewer tokens than this.
    #[arg(
        long,
        env = "TOKENSWIFT_MIN_TOKENS_TO_KEEP",
        default_value_t = SamplingConfig::default().min_tokens_to_keep
    )]
    pub min_tokens_to_keep: usize,
    /// Eta-sampling epsilon (0 = off).
    #[arg(
        long,
        env = "TOKENSWIFT_ETA",
        allow_negative_numbers = true,
        default_value_t = SamplingConfig::default().eta
    )]
    pub eta: f32,
    /// Contextual penalty for tokens in the window (1 = off; paper: 1.2).
    #[arg(
        long,
        env = "TOKENSWIFT_PENALTY",
        allow_negative_numbers = true,
        default_value_t = SamplingConfig::default().penalty
    )]
    pub penalty: f32,
    /// Number of most recent tokens the penalty looks at (0 = no penalty).
    #[arg(
        long,
        env = "TOKENSWIFT_PENALTY_WINDOW",
        default_value_t = SamplingConfig::default().penalty_window
    )]
    pub penalty_window: usize,
    /// Comma-separated token ids that are never generated.
    #[arg(long, env = "TOKENSWIFT_BAN_TOKENS", value_delimiter = ',')]
    pub ban_tokens: Vec<u32>,
    /// Seed of the sampler.
    #[arg(long, env = "TOKENSWIFT_SEED", default_value_t = SamplingConfig::default().seed)]
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
    #[arg(long, env = "TOKENSWIFT_DRAFT_VOCAB", default_value_t = DEFAULT_DRAFT_VOCAB)]
    pub draft_vocab: usize,
    /// N-gram table of the heads' training corpus, a free draft source for `--tree auto`:
    /// `auto` (the `.ngrams` file beside the heads, when there is one), `none`, or a file
    /// written by `train-heads`.
    #[arg(long, env = "TOKENSWIFT_CORPUS_NGRAMS", default_value = "auto")]
    pub corpus_ngrams: String,
}

impl TokenSwiftArgs {
    /// The engine settings for a prompt of `prompt` tokens and `gen_len` new ones (heads-derived
    /// settings are filled by [`TokenSwiftArgs::draft`]).
    pub fn config(
        &self,
        prompt: usize,
        gen_len: usize,
        stop_at_eos: bool,
    ) -> Result<TokenSwiftConfig> {
        Ok(TokenSwiftConfig {
            tree: self.tree.clone(),
            ngram_topk: self.ngram_topk,
            ngram_lag: self.ngram_lag,
            kv_budget: TokenSwiftConfig::kv_budget_for(self.kv_budget, prompt, gen_len)?,
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

    /// Where the heads for `model` are (see `--heads`).
    pub fn heads_path(&self, model: &Model, model_dir: &Path) -> Result<PathBuf> {
        Ok(heads_path(model, model_dir, self.heads.as_deref())?)
    }

    /// Loads the heads for `model` (see `--heads`).
    pub fn load_heads(&self, model: &Model, model_dir: &Path) -> Result<DraftHeads> {
        Ok(load_heads(&self.heads_path(model, model_dir)?, model)?)
    }

    /// The heads, their draft vocabulary (`--draft-vocab`) and their corpus n-gram table
    /// (`--corpus-ngrams`).
    ///
    /// With `--draft none` and no heads found (a model nobody trained heads for), no heads:
    /// n-gram drafts only.
    pub fn draft(&self, model: &Model, model_dir: &Path) -> Result<Draft> {
        let path = match self.heads_path(model, model_dir) {
            Ok(path) => path,
            Err(_) if matches!(self.draft, DraftArg::None) && self.heads.is_none() => {
                return Ok(Draft {
                    heads: DraftHeads::init_for(model, 0, model.device()),
                    vocab: None,
                    corpus_ngrams: None,
                });
            }
            Err(e) => return Err(e),
        };
        Ok(Draft {
            heads: load_heads(&path, model).context("cannot load the draft heads")?,
            vocab: draft_vocabulary(model, &path, self.draft_vocab)?,
            corpus_ngrams: corpus_ngrams(model, &path, &CorpusNgrams::parse(&self.corpus_ngrams))?,
        })
    }
}

/// The draft heads and their companions, as the flags chose them.
pub struct Draft {
    pub heads: DraftHeads,
    pub vocab: Option<Vec<u32>>,
    pub corpus_ngrams: Option<Arc<ContextTable>>,
}

impl Draft {
    /// `cfg` with the draft vocabulary and the corpus table filled in.
    pub fn apply(&self, cfg: TokenSwiftConfig) -> TokenSwiftConfig {
        TokenSwiftConfig {
            draft_vocab: self.vocab.clone(),
            corpus_ngrams: self.corpus_ngrams.clone(),
            ..cfg
        }
    }
}

/// Progress display on stderr, silenced by `--quiet`.
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    pub quiet: bool,
    /// Seconds between the plain progress lines of [`Ui::logged_bar`] when stderr is not a
    /// terminal (0: none).
    pub log_every: f64,
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

    /// [`Ui::bar`] that, when stderr is not a terminal (Slurm, nohup), still reports: its line
    /// is written to stderr every `log_every` seconds, first when it starts.
    pub fn logged_bar(&self, len: u64, msg: &str) -> ProgressBar {
        use std::io::IsTerminal;
        let pb = self.bar(len, msg);
        if !self.quiet && self.log_every > 0.0 && !std::io::stderr().is_terminal() {
            pb.set_draw_target(ProgressDrawTarget::term_like_with_hz(
                Box::new(LineLog::new(std::time::Duration::from_secs_f64(
                    self.log_every,
                ))),
                1,
            ));
        }
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

/// A progress bar's draw target for a stderr that is not a terminal: each drawn frame is kept,
/// and written as one plain line (elapsed time first) at most once per `every`.
#[derive(Debug)]
struct LineLog {
    every: std::time::Duration,
    started: std::time::Instant,
    state: std::sync::Mutex<(String, Option<std::time::Instant>)>,
}

impl LineLog {
    fn new(every: std::time::Duration) -> Self {
        Self {
            every,
            started: std::time::Instant::now(),
            state: std::sync::Mutex::new((String::new(), None)),
        }
    }

    fn edit(&self, f: impl FnOnce(&mut String)) -> std::io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut st.0);
        Ok(())
    }
}

impl indicatif::TermLike for LineLog {
    fn width(&self) -> u16 {
        200
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        self.edit(String::clear)
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.edit(|f| {
            f.push_str(s);
            f.push(' ');
        })
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.edit(|f| f.push_str(s))
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.edit(String::clear)
    }
    fn flush(&self) -> std::io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let due = st.1.is_none_or(|t| t.elapsed() >= self.every);
        let line = st.0.trim();
        if due && !line.is_empty() {
            eprintln!("[{}] {line}", clock(self.started.elapsed()));
            st.1 = Some(std::time::Instant::now());
        }
        Ok(())
    }
}

/// `--log-every`: a number of seconds, 0 or more.
pub fn parse_log_every(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1e9).contains(&v) => Ok(v),
        _ => Err(format!(
            "`{s}` is not a number of seconds (0 or more; 0: no progress lines)"
        )),
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

/// An elapsed time or ETA for progress lines: `1h02m`, `12m05s`, `40s`.
pub fn clock(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
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

/// One error of a chain as the command line shows it: a library setting as its flag
/// (`top_p` → `--top-p`).
fn as_flag(e: &(dyn std::error::Error + 'static)) -> String {
    match e.downcast_ref::<InferError>() {
        Some(InferError::Setting { field, message }) => {
            format!("--{} {message}", field.replace('_', "-"))
        }
        _ => e.to_string(),
    }
}

/// The exit of every binary: success, or the error chain as one `error:` line and a failure code.
pub fn exit_code(result: Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(as_flag).collect();
            eprintln!("error: {}", chain.join(": "));
            std::process::ExitCode::FAILURE
        }
    }
}
