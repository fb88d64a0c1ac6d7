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
    // clap's usage errors: the sentence, then its pointer to --help.
    let (ok, e) = train_heads(&["--devices", "0"]);
    assert!(!ok && !e.contains("panicked"), "{e}");
    assert!(
        e.lines()
            .next()
            .unwrap()
            .contains("--devices must be at least 1"),
        "{e}"
    );
    let (ok, e) = train_heads(&["--devices", "0,1"]);
    assert!(!ok && !e.contains("panicked"), "{e}");
    assert!(e.lines().next().unwrap().contains("cuda:0,1"), "{e}");
    let (ok, e) = train_heads(&["--nodes", "2", "--master", "127.0.0.1:9"]);
    one_sentence(ok, &e, &["--node-rank"]);
    let (ok, e) = train_heads(&["--nodes", "2", "--node-rank", "2", "--master", "h:1"]);
    one_sentence(ok, &e, &["out of range"]);
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

/// A tiny base (the goldens' 2-layer Llama, vocab 64) with a word-level tokenizer, and a corpus of
/// two documents of those words.
fn tiny_base_and_corpus(dir: &std::path::Path) -> (String, String) {
    let goldens = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infer/tests/goldens");
    let base = dir.join("base");
    std::fs::create_dir_all(&base).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(goldens.join("tiny-llama-mha").join(f), base.join(f)).unwrap();
    }
    std::fs::write(
        base.join("tokenizer.json"),
        r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
"model":{"type":"WordLevel","vocab":{"a":0,"b":1,"<unk>":2,"c":3,"d":4},"unk_token":"<unk>"}}"#,
    )
    .unwrap();
    let corpus = dir.join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    let words = ["a", "b", "c", "d"];
    for (name, n) in [("one.txt", 300), ("two.txt", 200), ("three.txt", 100)] {
        let text: Vec<&str> = (0..n).map(|i| words[(i * 7 + i / 3) % 4]).collect();
        std::fs::write(corpus.join(name), text.join(" ")).unwrap();
    }
    (base.display().to_string(), corpus.display().to_string())
}

/// `--data self:CORPUS`: the base's own continuations of the training documents are generated,
/// cached one line per sample, trained on, and recorded in heads.json; the held-out document is
/// never a prompt; an interrupted cache (one sample and a torn line) is completed to exactly the
/// samples of an uninterrupted run, and progress lines appear when stderr is not a terminal.
#[test]
fn self_distillation_trains_on_the_bases_own_text_and_resumes_its_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (base, corpus) = tiny_base_and_corpus(dir.path());
    let cache = dir.path().join("distill");
    let run = |out: &str, quiet: bool| {
        let out_dir = dir.path().join(out);
        let o = Command::new(env!("CARGO_BIN_EXE_train-heads"))
            .args([
                "--base",
                &base,
                "--data",
                &format!("self:{corpus}"),
                "--distill-samples",
                "3",
                "--distill-prompt-len",
                "8",
                "--distill-len",
                "24",
                "--distill-temperatures",
                "0,1",
                "--distill-dir",
                cache.to_str().unwrap(),
                "--seq-len",
                "16",
                "--steps",
                "2",
                "--batch",
                "1",
                "--grad-accum",
                "1",
                "--warmup",
                "1",
                "--out",
                out_dir.to_str().unwrap(),
            ])
            .env("TOKENSWIFT_QUIET", if quiet { "1" } else { "0" })
            .env("TOKENSWIFT_LOG_EVERY", "0.000001")
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{stderr}");
        (out_dir, stderr)
    };
    let (out, stderr) = run("first", false);
    assert!(stderr.contains("self-distillation sample 3/3"), "{stderr}");
    assert!(stderr.contains("training step 2/2"), "{stderr}");

    let files: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["i"], i);
        assert_eq!(l["tokens"].as_array().unwrap().len(), 8 + 24);
        assert_ne!(l["doc"], "two", "the held-out document was a prompt");
        assert_eq!(l["temperature"].as_f64().unwrap(), [0.0, 1.0][i % 2]);
    }

    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("heads.json")).unwrap()).unwrap();
    let metrics = &manifest["metrics"];
    assert_eq!(metrics["held_out"]["documents"], serde_json::json!(["two"]));
    assert_eq!(
        metrics["train_documents"],
        serde_json::json!(["one", "three"])
    );
    assert_eq!(metrics["self_distillation"]["samples"], 3);
    let key = metrics["self_distillation"]["key"].as_str().unwrap();
    assert!(files[0].display().to_string().contains(key));
    assert!(
        manifest["recipe"]["data"]
            .as_str()
            .unwrap()
            .ends_with(&format!("#{key}")),
        "{manifest}"
    );

    // Interrupted after one sample, mid-line: a rerun completes it to the same samples.
    let first_line = text.lines().next().unwrap();
    std::fs::write(&files[0], format!("{first_line}\n{{\"i\":1,\"doc\":\"on")).unwrap();
    run("second", true);
    assert_eq!(std::fs::read_to_string(&files[0]).unwrap(), text);
}

fn heads_in(dir: &std::path::Path) -> Vec<Vec<f32>> {
    use tokenswift_infer::draft::heads::DraftHeads;
    let mut ckpt =
        tokenswift_infer::load::weights::Checkpoint::open_file(&dir.join("heads.safetensors"))
            .unwrap();
    let k = DraftHeads::count_in(&ckpt);
    DraftHeads::from_checkpoint(&mut ckpt, k, 32, 1e-5, &burn::tensor::Device::flex())
        .unwrap()
        .tensors()
        .into_iter()
        .map(|(_, _, v)| v)
        .collect()
}

/// `--devices 2` (two burn-train workers in one process) and two processes meeting over loopback
/// (`--nodes 2`, one worker each) train the heads of one worker over the same 4 sequences per
/// step, within float tolerance; only rank 0 writes. A third run on other data differs (the
/// comparison can fail).
#[test]
fn two_workers_and_two_processes_train_the_heads_of_one() {
    let dir = tempfile::tempdir().unwrap();
    let (base, corpus) = tiny_base_and_corpus(dir.path());
    let cmd = |out: &std::path::Path, extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_train-heads"));
        c.args([
            "--base",
            &base,
            "--data",
            &corpus,
            "--min-doc-tokens",
            "16",
            "--seq-len",
            "16",
            "--steps",
            "2",
            "--batch",
            "2",
            "--grad-accum",
            "2",
            "--warmup",
            "1",
            "--accept-tokens",
            "0",
            "--out",
            out.to_str().unwrap(),
        ])
        .args(extra)
        .env("TOKENSWIFT_QUIET", "1")
        .env("HF_HUB_OFFLINE", "1");
        c
    };
    let ok = |o: std::process::Output| {
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{e}");
        e
    };
    let one = dir.path().join("one");
    ok(cmd(&one, &[]).output().unwrap());
    let two = dir.path().join("two");
    ok(cmd(&two, &["--devices", "2"]).output().unwrap());

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let master = format!("127.0.0.1:{port}");
    let nodes = dir.path().join("nodes");
    let rank1_out = dir.path().join("rank1");
    let rank1 = cmd(
        &rank1_out,
        &["--nodes", "2", "--node-rank", "1", "--master", &master],
    )
    .spawn()
    .unwrap();
    ok(cmd(
        &nodes,
        &["--nodes", "2", "--node-rank", "0", "--master", &master],
    )
    .output()
    .unwrap());
    ok(rank1.wait_with_output().unwrap());
    assert!(
        !rank1_out.join("heads.safetensors").exists(),
        "rank 1 wrote heads"
    );

    let reference = heads_in(&one);
    for other in [&two, &nodes] {
        let h = heads_in(other);
        let d = reference
            .iter()
            .zip(&h)
            .flat_map(|(x, y)| x.iter().zip(y).map(|(u, v)| (u - v).abs()))
            .fold(0.0f32, f32::max);
        assert!(d <= 1e-5, "{}: differs by {d}", other.display());
    }
    let reseeded = dir.path().join("reseeded");
    ok(cmd(&reseeded, &["--seed", "43"]).output().unwrap());
    let h = heads_in(&reseeded);
    let d = reference
        .iter()
        .zip(&h)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(u, v)| (u - v).abs()))
        .fold(0.0f32, f32::max);
    assert!(d > 1e-3, "another data order changed the heads by only {d}");
}
