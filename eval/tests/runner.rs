//! A whole grid on a tiny random model: rows, outputs, summary and charts are written; a rerun
//! skips finished cells; an interrupted grid resumes where it stopped.

use std::path::PathBuf;

use burn::tensor::{DType, Device};
use tokenswift_cli::Ui;
use tokenswift_eval::runner::{Bench, Setting, run_grid};
use tokenswift_eval::table::ResultsTable;
use tokenswift_infer::decoding::session::TokenSwiftConfig;
use tokenswift_infer::draft::heads::DraftHeads;
use tokenswift_infer::model::Model;
use tokenswift_infer::sampling::SamplingConfig;

fn bench() -> Bench {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../infer/tests/goldens/tiny-llama-mha");
    let model = Model::load(&dir, &Device::flex(), DType::F32).unwrap();
    let heads = DraftHeads::init_for(&model, 3, &Device::flex());
    Bench {
        model,
        tokenizer: None,
        heads,
        draft_vocab: None,
        corpus_ngrams: None,
        repeats: 1,
        prompts: vec![
            (0..20).map(|i| (i * 7 % 64) as u32).collect(),
            (0..16).map(|i| (i * 5 % 64) as u32).collect(),
        ],
    }
}

fn settings(windows: &[usize]) -> Vec<Setting> {
    windows
        .iter()
        .map(|&w| Setting {
            name: format!("penalty-window={w}"),
            sampling: SamplingConfig {
                penalty_window: w,
                ..SamplingConfig::greedy()
            },
            ts: TokenSwiftConfig {
                kv_budget: 32,
                ngram_topk: 4,
                ..Default::default()
            },
        })
        .collect()
}

#[test]
fn grid_writes_everything_and_a_rerun_skips_finished_cells() {
    let b = bench();
    let dir = tempfile::tempdir().unwrap();
    let ui = Ui { quiet: true };
    // An "interrupted" sweep: only the first value ran.
    run_grid(
        &b,
        "sweep",
        &settings(&[0]),
        40,
        &[20, 40],
        dir.path(),
        "t",
        &ui,
    )
    .unwrap();
    let table = ResultsTable::new(dir.path()).unwrap();
    let first = table.read().unwrap();
    assert_eq!(first.len(), 2 * 2, "2 prompts × 2 checkpoints");
    assert!(
        first.iter().all(|r| r.identical == 1),
        "greedy TokenSwift equals AR"
    );
    // The full sweep: the finished cells are not measured again (their rows are unchanged and
    // not duplicated), the new ones are added.
    run_grid(
        &b,
        "sweep",
        &settings(&[0, 8]),
        40,
        &[20, 40],
        dir.path(),
        "t",
        &ui,
    )
    .unwrap();
    let all = table.read().unwrap();
    assert_eq!(all.len(), 8);
    assert_eq!(&all[..4], &first[..]);
    assert_eq!(table.finished_cells().unwrap().len(), 4);
    let summary = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(summary.contains("penalty-window=8") && summary.contains("Distinct-4"));
    for chart in [
        "sweep-speedup-vs-length.png",
        "sweep-distinct.svg",
        "sweep-sweep-distinct.png",
        "sweep-time-vs-length.png",
    ] {
        assert!(dir.path().join("charts").join(chart).exists(), "{chart}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path().join("outputs"))
            .unwrap()
            .count(),
        4
    );
    assert!(dir.path().join("results.parquet").exists());
}
