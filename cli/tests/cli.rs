//! The `tokenswift` binary on bad input: one clear sentence on stderr, a non-zero exit, no panic.

use std::path::Path;
use std::process::{Command, Output};

fn tokenswift(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tokenswift"))
        .args(args)
        .env("TOKENSWIFT_QUIET", "1")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("the binary runs")
}

fn tiny() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../infer/tests/goldens/tiny-llama-mha")
        .display()
        .to_string()
}

/// Asserts failure with exactly one `error:` line containing every `needle`, and no panic.
fn assert_one_sentence_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "`{n}` missing from: {}", lines[0]);
    }
}

#[test]
fn missing_model_directory() {
    let out = tokenswift(&["generate", "--model", "./no/such/dir", "--prompt", "hi"]);
    assert_one_sentence_error(&out, &["./no/such/dir", "no such model directory"]);
}

#[test]
fn hub_model_offline_says_how_to_use_a_local_directory() {
    let out = tokenswift(&["generate", "--model", "someorg/somemodel", "--prompt", "hi"]);
    assert_one_sentence_error(&out, &["someorg/somemodel", "local directory"]);
}

#[test]
fn unknown_model_name() {
    let out = tokenswift(&["generate", "--model", "gpt-17", "--prompt", "hi"]);
    assert_one_sentence_error(&out, &["gpt-17", "known alias"]);
}

#[test]
fn invalid_sampling_values_name_the_flag() {
    for (flag, value, needle) in [
        ("--top-p", "1.5", "--top-p"),
        ("--top-p", "0", "--top-p"),
        ("--temperature", "-0.5", "--temperature"),
        ("--min-p", "2", "--min-p"),
        ("--penalty", "0", "--penalty"),
        ("--eta", "1", "--eta"),
        ("--min-tokens-to-keep", "0", "--min-tokens-to-keep"),
    ] {
        let out = tokenswift(&[
            "generate",
            "--model",
            &tiny(),
            "--prompt",
            "hi",
            flag,
            value,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // The tiny checkpoint has no tokenizer, so sampling must be validated before that is loaded.
        assert_one_sentence_error(&out, &[needle]);
        assert!(
            stderr.contains(value) || flag == "--min-tokens-to-keep",
            "{stderr}"
        );
    }
}

#[test]
fn missing_tokenizer_is_reported() {
    let out = tokenswift(&["generate", "--model", &tiny(), "--prompt", "hi"]);
    assert_one_sentence_error(&out, &["tokenizer.json", "does not exist"]);
}

#[test]
fn missing_prompt_and_unreadable_prompt_file() {
    let out = tokenswift(&["generate", "--model", &tiny()]);
    assert_one_sentence_error(&out, &["--prompt"]);
    let out = tokenswift(&[
        "generate",
        "--model",
        &tiny(),
        "--prompt-file",
        "/no/such/prompt.txt",
    ]);
    assert_one_sentence_error(&out, &["/no/such/prompt.txt"]);
}

#[test]
fn malformed_flag_value_is_a_usage_error() {
    let out = tokenswift(&["generate", "--max-new-tokens", "lots", "--prompt", "x"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--max-new-tokens") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn prompt_longer_than_the_context() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("long.txt");
    std::fs::write(&file, "word ".repeat(9000)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tokenswift"))
        .args([
            "generate",
            "--model",
            "smollm2-135m",
            "--max-new-tokens",
            "10",
        ])
        .arg("--prompt-file")
        .arg(&file)
        .env("TOKENSWIFT_QUIET", "1")
        .output()
        .unwrap();
    assert_one_sentence_error(&out, &["exceeds the model's context of 8192 tokens"]);
}

#[test]
fn generates_text_and_statistics_on_the_default_model() {
    let out = Command::new(env!("CARGO_BIN_EXE_tokenswift"))
        .args([
            "generate",
            "--model",
            "smollm2-135m",
            "--prompt",
            "The capital of France is",
        ])
        .args([
            "--max-new-tokens",
            "8",
            "--temperature",
            "0",
            "--penalty",
            "1",
        ])
        .env("TOKENSWIFT_QUIET", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with(" Paris"), "{stdout}");
    assert!(
        stderr.contains("generated 8 tokens") && stderr.contains("tok/s"),
        "{stderr}"
    );
}

/// Two processes fetching the default model into an empty cache at once (parallel tests, two
/// terminals) both succeed: one converts, the other waits for it.
#[test]
fn concurrent_fetches_into_an_empty_cache() {
    let home = tempfile::tempdir().unwrap();
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_tokenswift"))
            .args(["fetch", "--model", "smollm2-135m"])
            .env("TOKENSWIFT_HOME", home.path())
            .env("TOKENSWIFT_QUIET", "1")
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
    }
    let dir = home.path().join("models/smollm2-135m");
    assert!(dir.join("config.json").exists() && dir.join("model.safetensors").exists());
    assert!(!home.path().join("models/smollm2-135m.partial").exists());
}

#[test]
fn a_backend_that_was_not_built_is_named() {
    if cfg!(feature = "vulkan") {
        return; // this build has it; a machine without a GPU is covered by the probe's sentence
    }
    let out = tokenswift(&[
        "generate",
        "--model",
        &tiny(),
        "--prompt",
        "hi",
        "--device",
        "vulkan",
    ]);
    assert_one_sentence_error(&out, &["vulkan", "feature"]);
}

fn generate_default(extra: &[&str]) -> Output {
    let mut args = vec![
        "generate",
        "--model",
        "smollm2-135m",
        "--prompt",
        "Once upon a time",
    ];
    if !extra.contains(&"--max-new-tokens") {
        args.extend_from_slice(&["--max-new-tokens", "4"]);
    }
    args.extend_from_slice(extra);
    tokenswift(&args)
}

#[test]
fn malformed_or_too_deep_trees_are_refused() {
    let out = tokenswift(&["generate", "--tree", "1,x", "--prompt", "x"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--tree") && stderr.contains("1,3,3,3"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
    let dir = tempfile::tempdir().unwrap();
    let heads = write_heads(dir.path(), None);
    let out = generate_default(&["--tree", "1,1,1,1,1", "--heads", &heads]);
    assert_one_sentence_error(&out, &["--tree has 5 levels", "at most 4"]);
    let out = generate_default(&["--tree", "1,1,1,1", "--draft", "fused", "--heads", &heads]);
    assert_one_sentence_error(&out, &["at most 3 in fused mode"]);
}

#[test]
fn partial_budget_out_of_range_is_refused() {
    let out = generate_default(&["--kv-budget", "8"]);
    assert_one_sentence_error(&out, &["--kv-budget", "16 attention sinks", "got 8"]);
    let out = generate_default(&["--kv-budget", "100000"]);
    assert_one_sentence_error(
        &out,
        &[
            "--kv-budget 100000",
            "larger than the prompt plus the generation",
        ],
    );
}

#[test]
fn generation_beyond_the_context_is_refused() {
    let out = generate_default(&["--max-new-tokens", "9000"]);
    assert_one_sentence_error(&out, &["exceeds the model's context of 8192 tokens"]);
}

/// Writes untrained heads for SmolLM2's width; with `fingerprint`, a manifest naming that base.
fn write_heads(dir: &Path, fingerprint: Option<&str>) -> String {
    use burn::tensor::Device;
    use tokenswift_infer::draft::heads::{DraftHeads, HeadsManifest, manifest_path};
    let path = dir.join("heads.safetensors");
    DraftHeads::init(3, 576, 1e-5, &Device::flex())
        .save(&path)
        .unwrap();
    if let Some(fp) = fingerprint {
        HeadsManifest {
            base_model: "someone-elses-model".into(),
            base_fingerprint: fp.into(),
            hidden_size: 576,
            vocab_size: 49152,
            num_heads: 3,
            recipe: serde_json::json!({}),
            metrics: serde_json::json!({}),
            token_ranking: Vec::new(),
        }
        .save(&manifest_path(&path))
        .unwrap();
    }
    path.display().to_string()
}

#[test]
fn heads_of_another_base_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let heads = write_heads(dir.path(), Some("0123456789abcdef0123"));
    let out = generate_default(&["--heads", &heads]);
    assert_one_sentence_error(
        &out,
        &[
            "were trained on base `someone-elses-model`",
            "not on this model",
        ],
    );
    let out = generate_default(&["--heads", "/no/such/heads.safetensors"]);
    assert_one_sentence_error(&out, &["/no/such/heads.safetensors", "does not exist"]);
    // Heads of another width (the tiny test model's base checkpoint has none).
    let out = generate_default(&["--heads", &tiny()]);
    assert_one_sentence_error(&out, &["holds no draft heads"]);
}

/// The tiny checkpoint in a temporary directory with a minimal word-level tokenizer (`a`, `b`):
/// enough to load and to tokenize short prompts.
fn tiny_with_tokenizer() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let goldens = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infer/tests/goldens");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(goldens.join("tiny-llama-mha").join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(
        dir.path().join("tokenizer.json"),
        r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
"model":{"type":"WordLevel","vocab":{"a":0,"b":1,"<unk>":2},"unk_token":"<unk>"}}"#,
    )
    .unwrap();
    dir
}

/// `bench --llamacpp` refuses a missing `--gguf` file, or a model other than the default without
/// one, in one sentence before any measurement.
#[test]
fn bench_peer_without_its_gguf_is_refused() {
    let dir = tiny_with_tokenizer();
    let model = dir.path().display().to_string();
    let out = tokenswift(&[
        "bench",
        "--model",
        &model,
        "--llamacpp",
        "python3",
        "--gguf",
        "./no/such.gguf",
    ]);
    assert_one_sentence_error(&out, &["--gguf ./no/such.gguf", "no such file"]);
    let out = tokenswift(&["bench", "--model", &model, "--llamacpp", "python3"]);
    assert_one_sentence_error(&out, &["--llamacpp needs --gguf FILE"]);
}

/// `bench` on a tiny model: the decode table gives a rate from two tokens on, and says "n/a"
/// (not "inf") when the only token came from the prefill.
#[test]
fn bench_decode_rate_needs_two_tokens() {
    let dir = tiny_with_tokenizer();
    let model = dir.path().display().to_string();
    let run = |n: &str| {
        let out = tokenswift(&[
            "bench",
            "--quiet",
            "--model",
            &model,
            "--contexts",
            "8",
            "--q",
            "1,2",
            "--reps",
            "1",
            "--decode-tokens",
            n,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let row = text
            .lines()
            .skip_while(|l| !l.starts_with("## prefill and decode"))
            .find(|l| l.starts_with("| 8 |"))
            .expect("a decode row for context 8")
            .to_string();
        assert!(!text.contains("inf"), "{text}");
        row
    };
    assert!(run("1").ends_with("| n/a | n/a |"));
    let row = run("4");
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert!(cells[3].parse::<f64>().unwrap() > 0.0, "{row}");
}

/// `--kernels burn` runs the forward pass as burn ops on the CPU (the code a GPU runs) and says
/// so; `--kernels host` (the default) runs the packed kernels; quantised `--weights` with burn ops
/// are refused in one sentence.
#[test]
fn kernels_switch_between_the_host_kernels_and_burn_ops() {
    let dir = tiny_with_tokenizer();
    let model = dir.path().display().to_string();
    let run = |kernels: &str| {
        let out = tokenswift(&[
            "generate",
            "--model",
            &model,
            "--prompt",
            "a b a b",
            "--method",
            "ar",
            "--max-new-tokens",
            "8",
            "--kernels",
            kernels,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("generated 8 tokens"), "{stderr}");
        stderr
    };
    assert!(run("burn").contains("forward pass: burn ops"));
    assert!(run("host").contains("forward pass: host kernels, f32 weights"));
    let out = tokenswift(&[
        "generate",
        "--model",
        &model,
        "--prompt",
        "a",
        "--kernels",
        "burn",
        "--weights",
        "q8_0",
    ]);
    assert_one_sentence_error(&out, &["--weights q8_0", "--kernels burn"]);
    let out = tokenswift(&[
        "generate",
        "--model",
        &model,
        "--prompt",
        "a",
        "--kernels",
        "burn",
        "--activations",
        "q8",
    ]);
    assert_one_sentence_error(&out, &["--activations q8", "--kernels burn"]);
}

/// `--activations q8` switches the block-quantised matrices to integer products (the first
/// stderr line says so) and TokenSwift's greedy output still equals AR's.
#[test]
fn int8_activations_are_used_and_stay_lossless() {
    let dir = tiny_with_tokenizer();
    let model = dir.path().display().to_string();
    let out = tokenswift(&[
        "generate",
        "--model",
        &model,
        "--prompt",
        "a b a b a b",
        "--max-new-tokens",
        "24",
        "--temperature",
        "0",
        "--draft",
        "none",
        "--weights",
        "q8_0",
        "--activations",
        "q8",
        "--compare-ar",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("forward pass: host kernels, q8_0×q8"),
        "{stderr}"
    );
    assert!(stderr.contains("outputs identical"), "{stderr}");
}

/// A model nobody trained heads for: `--draft none` decodes with n-gram drafts only (outputs equal
/// to AR's), while any other `--draft` still asks for `--heads` in one sentence.
#[test]
fn draft_none_needs_no_heads() {
    let dir = tiny_with_tokenizer();
    let model = dir.path().display().to_string();
    let args = |draft: &'static str| {
        vec![
            "generate".to_string(),
            "--model".into(),
            model.clone(),
            "--prompt".into(),
            "a b a b a".into(),
            "--max-new-tokens".into(),
            "12".into(),
            "--temperature".into(),
            "0".into(),
            "--compare-ar".into(),
            "--draft".into(),
            draft.into(),
        ]
    };
    let run = |draft| {
        let a = args(draft);
        tokenswift(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = run("none");
    let stdout =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("outputs identical"), "{stdout}");
    assert_one_sentence_error(&run("auto"), &["--heads is needed"]);
}

#[test]
fn invalid_log_every_names_the_flag() {
    for value in ["-1", "soon", "inf"] {
        let flag = format!("--log-every={value}");
        let out = tokenswift(&["generate", &flag, "--prompt", "x"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("--log-every") && stderr.contains(value),
            "{value}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
