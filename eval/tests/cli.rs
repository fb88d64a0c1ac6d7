//! `tokenswift-eval` on bad input: one sentence on stderr, a non-zero exit, no panic.

use std::process::Command;

fn eval(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tokenswift-eval"))
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

#[test]
fn bad_ceiling_and_speedup_settings_are_one_sentence() {
    for (args, needle) in [
        (&["ceiling", "--gen-len", "0"][..], "--gen-len"),
        (&["ceiling", "--reps", "0"], "--reps"),
        (&["speedup", "--gen-len", "0"], "--gen-len"),
    ] {
        let (ok, e) = eval(args);
        assert!(!ok, "{args:?} succeeded: {e}");
        assert!(!e.contains("panicked"), "{e}");
        let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {e}");
        assert!(lines[0].contains(needle), "{args:?}: {e}");
    }
}

#[test]
fn a_bad_shard_or_an_empty_merge_is_refused_in_one_sentence() {
    for bad in ["0/2", "3/2", "two"] {
        let (ok, e) = eval(&["speedup", "--shard", bad]);
        assert!(!ok && !e.contains("panicked"), "{bad}: {e}");
        assert!(
            e.lines().next().unwrap().contains("--shard") && e.contains("I/N"),
            "{bad}: {e}"
        );
    }
    let empty = tempfile::tempdir().unwrap();
    let (ok, e) = eval(&["merge", empty.path().to_str().unwrap()]);
    assert!(!ok && !e.contains("panicked"), "{e}");
    let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{e}");
    assert!(
        lines[0].contains("nothing") || lines[0].contains("no results.csv"),
        "{e}"
    );
}
