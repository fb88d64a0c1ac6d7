//! A whole grid on a tiny random model: rows, outputs, summary and charts are written; a rerun
//! skips finished cells; an interrupted grid resumes where it stopped.

use std::path::PathBuf;

use burn::tensor::{DType, Device};
use tokenswift_cli::Ui;
use tokenswift_eval::provenance::Provenance;
use tokenswift_eval::runner::{Bench, Setting, Shard, merge, run_grid};
use tokenswift_eval::table::ResultsTable;
use tokenswift_infer::decoding::session::TokenSwiftConfig;
use tokenswift_infer::draft::heads::DraftHeads;
use tokenswift_infer::model::Model;
use tokenswift_infer::sampling::SamplingConfig;

fn bench() -> Bench {
    bench_of("tiny-llama-mha")
}

fn bench_of(golden: &str) -> Bench {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../infer/tests/goldens")
        .join(golden);
    let model = Model::load(&dir, &Device::flex(), DType::F32).unwrap();
    let heads = DraftHeads::init_for(&model, 3, &Device::flex());
    Bench {
        provenance: Provenance::of(&model, &heads, None, None),
        model,
        tokenizer: None,
        heads,
        draft_vocab: None,
        corpus_ngrams: None,
        repeats: 1,
        prefill_len: 20,
        shard: None,
        cells_met: Default::default(),
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
    let ui = Ui {
        quiet: true,
        log_every: 0.0,
    };
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

/// Runs `settings` into `dir` and returns how many rows the table holds afterwards.
fn rows_after(b: &Bench, settings: &[Setting], dir: &std::path::Path) -> usize {
    run_grid(
        b,
        "speedup",
        settings,
        24,
        &[24],
        dir,
        "t",
        &Ui {
            quiet: true,
            log_every: 0.0,
        },
    )
    .unwrap();
    ResultsTable::new(dir).unwrap().read().unwrap().len()
}

#[test]
fn a_cell_is_reused_only_when_everything_that_produced_it_is_equal() {
    let dir = tempfile::tempdir().unwrap();
    let b = bench();
    let base = settings(&[16]);
    // 2 prompts × 1 checkpoint.
    assert_eq!(rows_after(&b, &base, dir.path()), 2);
    // Everything equal: both cells are reused (the control for every case below).
    assert_eq!(rows_after(&b, &base, dir.path()), 2);
    // Another prefill (the prompts cut shorter): measured again, stored beside the old rows.
    let mut shorter = bench();
    for p in &mut shorter.prompts {
        p.truncate(12);
    }
    shorter.prefill_len = 12;
    assert_eq!(rows_after(&shorter, &base, dir.path()), 4);
    assert_eq!(
        rows_after(&shorter, &base, dir.path()),
        4,
        "and then reused"
    );
    // Another sampling value under the same setting name.
    let mut seeded = settings(&[16]);
    seeded[0].sampling.seed += 1;
    assert_eq!(rows_after(&b, &seeded, dir.path()), 6);
    // Another TokenSwift setting under the same name.
    let mut lag = settings(&[16]);
    lag[0].ts.ngram_topk = 2;
    assert_eq!(rows_after(&b, &lag, dir.path()), 8);
    // Other heads.
    let mut other_heads = bench();
    other_heads.heads = DraftHeads::init(3, 32, 1e-5, &Device::flex());
    other_heads.provenance = Provenance::of(&other_heads.model, &other_heads.heads, None, None);
    assert_ne!(other_heads.provenance.heads, b.provenance.heads);
    assert_eq!(rows_after(&other_heads, &base, dir.path()), 10);
    // Another model (same vocabulary size, so the same prompts are valid).
    let other_model = bench_of("tiny-llama-gqa-llama3");
    assert_ne!(other_model.provenance.model, b.provenance.model);
    assert_eq!(rows_after(&other_model, &base, dir.path()), 12);
    assert_eq!(
        rows_after(&other_model, &base, dir.path()),
        12,
        "and then reused"
    );
    // The summary says the directory mixes models and keeps the settings apart.
    let summary = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(
        summary.contains("This directory mixes results of 3 models or heads"),
        "{summary}"
    );
    assert!(summary.contains("penalty-window=16 ["), "{summary}");
}

#[test]
fn a_table_from_before_fingerprints_is_kept_and_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let b = bench();
    assert_eq!(rows_after(&b, &settings(&[16]), dir.path()), 2);
    // Rewrite the table as an older version wrote it: no fingerprint or source columns.
    let path = dir.path().join("results.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let old: String = text
        .lines()
        .map(|l| {
            let cut = l.rsplitn(3, ',').nth(2).unwrap();
            format!("{cut}\n")
        })
        .collect();
    assert!(old.lines().next().unwrap().ends_with(",identical"));
    std::fs::write(&path, old).unwrap();
    // Its rows read back, unfingerprinted; the same grid measures its cells again.
    let rows = ResultsTable::new(dir.path()).unwrap().read().unwrap();
    assert!(rows.len() == 2 && rows.iter().all(|r| r.fingerprint.is_empty()));
    assert_eq!(rows_after(&b, &settings(&[16]), dir.path()), 4);
    let rows = ResultsTable::new(dir.path()).unwrap().read().unwrap();
    assert_eq!(rows.iter().filter(|r| r.fingerprint.is_empty()).count(), 2);
}

/// What a cell measured that does not depend on timing: its place in the grid, its checkpoints,
/// the output's Distinct-n and whether it equals AR's.
fn cells(dir: &std::path::Path) -> Vec<(String, i64, [u64; 4], i64)> {
    let mut v: Vec<_> = ResultsTable::new(dir)
        .unwrap()
        .read()
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.cell_key(),
                r.checkpoint,
                r.distinct.map(f64::to_bits),
                r.identical,
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn two_shards_and_a_merge_equal_one_unsharded_run() {
    let ui = Ui {
        quiet: true,
        log_every: 0.0,
    };
    let grid = settings(&[0, 8, 16]);
    let run = |b: &Bench, dir: &std::path::Path| {
        run_grid(b, "sweep", &grid, 24, &[12, 24], dir, "sharded sweep", &ui).unwrap()
    };
    let whole = tempfile::tempdir().unwrap();
    run(&bench(), whole.path());
    let expected = cells(whole.path());
    assert_eq!(
        expected.len(),
        3 * 2 * 2,
        "3 settings × 2 prompts × 2 checkpoints"
    );

    let split = tempfile::tempdir().unwrap();
    let mut keys = Vec::new();
    for index in 1..=2 {
        // Each shard a separate process: a fresh bench, the same command line.
        let mut b = bench();
        b.shard = Some(Shard { index, count: 2 });
        run(&b, split.path());
        let t = ResultsTable::named(split.path(), &format!("results.shard-{index}-of-2.csv"));
        let k = t.unwrap().finished_cells().unwrap();
        assert_eq!(k.len(), 3, "6 cells dealt to 2 shards");
        keys.push(k);
    }
    assert!(keys[0].is_disjoint(&keys[1]), "a cell ran in both shards");
    assert!(
        !split.path().join("results.csv").exists() && !split.path().join("summary.md").exists(),
        "shards write only their own tables"
    );
    assert_eq!(merge(split.path(), None).unwrap(), (6, 6));
    assert_eq!(cells(split.path()), expected);
    let summary = std::fs::read_to_string(split.path().join("summary.md")).unwrap();
    assert!(summary.starts_with("# sharded sweep"), "{summary}");
    assert!(split.path().join("results.parquet").exists());
    // Merging again adds nothing; the unsharded command then reuses every cell.
    assert_eq!(merge(split.path(), None).unwrap(), (0, 6));
    run(&bench(), split.path());
    assert_eq!(cells(split.path()), expected);
}

#[test]
fn shards_are_written_i_of_n() {
    assert_eq!(
        "2/8".parse::<Shard>().unwrap(),
        Shard { index: 2, count: 8 }
    );
    for bad in ["0/2", "3/2", "1", "a/b", "1/0", ""] {
        let e = bad.parse::<Shard>().unwrap_err().to_string();
        assert!(e.contains("I/N") && !e.contains('\n'), "{bad}: {e}");
    }
    let s = Shard { index: 2, count: 3 };
    assert_eq!((0..7).filter(|&i| s.owns(i)).collect::<Vec<_>>(), [1, 4]);
}
