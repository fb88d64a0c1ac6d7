//! `train-heads` on bad input: one sentence on stderr, a non-zero exit, no panic.

use std::process::Command;

fn train_heads(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_train-heads"))
        .args(args)
        .env("TOKENSWIFT_QUIET", "1")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn one_sentence(ok: bool, stderr: &str, needles: &[&str]) {
    assert!(!ok, "expected failure: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "`{n}` missing: {stderr}");
    }
}

#[test]
fn unknown_base_and_bad_flags_are_one_sentence() {
    let (ok, e) = train_heads(&["--base", "gpt-17"]);
    one_sentence(ok, &e, &["gpt-17"]);
    let (ok, e) = train_heads(&["--data", "/no/such/corpus"]);
    one_sentence(ok, &e, &["/no/such/corpus"]);
    let (ok, e) = train_heads(&["--grad-accum", "0"]);
    one_sentence(ok, &e, &["--grad-accum"]);
    let (ok, e) = train_heads(&["--devices", "2"]);
    one_sentence(ok, &e, &["--devices 2"]);
    let (ok, e) = train_heads(&["--seq-len", "100000", "--out", "/tmp/never-used"]);
    one_sentence(ok, &e, &["exceeds the model's context of 8192"]);
}

#[test]
fn unwritable_output_directory_fails_before_any_work() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let out = file.path().join("run");
    let (ok, e) = train_heads(&["--out", out.to_str().unwrap()]);
    one_sentence(ok, &e, &[out.to_str().unwrap()]);
}

#[test]
fn ranking_update_of_missing_heads_is_one_sentence() {
    let (ok, e) = train_heads(&[
        "--data",
        "austen",
        "--update-ranking",
        "/no/such/heads.safetensors",
    ]);
    one_sentence(ok, &e, &["/no/such/heads.json"]);
}

#[test]
fn ranking_update_of_another_bases_heads_is_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let heads = dir.path().join("heads.safetensors");
    std::fs::write(
        dir.path().join("heads.json"),
        r#"{"base_model": "someone-elses-model", "base_fingerprint": "0123", "hidden_size": 576, "vocab_size": 49152, "num_heads": 3}"#,
    )
    .unwrap();
    let (ok, e) = train_heads(&[
        "--data",
        "austen",
        "--update-ranking",
        heads.to_str().unwrap(),
    ]);
    one_sentence(ok, &e, &["someone-elses-model"]);
}
