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
