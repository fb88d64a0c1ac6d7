//! TokenSwift is lossless: greedy output equals greedy AR token for token, and sampled output
//! has AR's distribution — on tiny random models (with partial-cache re-selections) and on the
//! default model.

use std::path::PathBuf;

use burn::module::Param;
use burn::tensor::{DType, Device, Tensor, TensorData};
use tokenswift_infer::decoding::ar::generate_ar;
use tokenswift_infer::decoding::planner::{DraftMode, NgramLag, TreeChoice};
use tokenswift_infer::decoding::session::{
    AcceptRule, ExternalDrafter, Faults, Session, TokenSwiftConfig, TokenSwiftStats,
    generate_tokenswift, run_session,
};
use tokenswift_infer::decoding::trie::CandidateTrie;
use tokenswift_infer::draft::heads::DraftHeads;
use tokenswift_infer::draft::vocab::LmHeadSubset;
use tokenswift_infer::model::prompt::forward_chunks;
use tokenswift_infer::model::{AttentionMask, LogitRows, Model};
use tokenswift_infer::sampling::{SamplerRng, SamplingConfig};
use tokenswift_infer::tensor::to_host_f32;

fn tiny(name: &str, cpu_kernels: bool) -> Model {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/goldens/tiny-{name}"));
    Model::load_with(
        &dir,
        &Device::flex(),
        DType::F32,
        tokenswift_infer::model::LoadOptions {
            cpu_kernels,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Random (not trained) heads, so the drafts are sometimes right and sometimes wrong.
fn random_heads(model: &Model, seed: u64) -> DraftHeads {
    let device = model.device().clone();
    let mut heads = DraftHeads::init_for(model, 3, &device);
    let h = model.config().hidden_size;
    let mut rng = SamplerRng::new(seed);
    for l in &mut heads.layers {
        let w: Vec<f32> = (0..h * h)
            .map(|_| (rng.uniform() as f32 - 0.5) * 0.3)
            .collect();
        l.linear = Param::from_tensor(Tensor::from_data(TensorData::new(w, [h, h]), &device));
    }
    heads
}

fn prompt(len: usize, seed: u64, vocab: usize) -> Vec<u32> {
    let mut rng = SamplerRng::new(seed);
    // A repetitive prompt so the n-gram table has something to propose.
    let motif: Vec<u32> = (0..7)
        .map(|_| (rng.next_u64() % vocab as u64) as u32)
        .collect();
    (0..len)
        .map(|i| {
            if i % 3 == 0 {
                (rng.next_u64() % vocab as u64) as u32
            } else {
                motif[i % 7]
            }
        })
        .collect()
}

fn ar(model: &Model, prompt: &[u32], n: usize, s: &SamplingConfig) -> Vec<u32> {
    generate_ar(model, prompt, n, s, false, &mut |_| Ok(()))
        .unwrap()
        .0
}

fn ts(
    model: &Model,
    heads: &DraftHeads,
    prompt: &[u32],
    n: usize,
    s: &SamplingConfig,
    cfg: &TokenSwiftConfig,
) -> (Vec<u32>, TokenSwiftStats) {
    generate_tokenswift(model, heads, prompt, n, s, cfg, &mut |_| Ok(())).unwrap()
}

fn greedy_with_penalty() -> SamplingConfig {
    SamplingConfig {
        penalty: 1.2,
        penalty_window: 24,
        min_p: 0.1,
        ..SamplingConfig::greedy()
    }
}

#[test]
fn greedy_tokenswift_equals_greedy_ar_on_tiny_models() {
    for (name, kernels) in [
        ("llama-mha", true),
        ("qwen2-gqa-bias", true),
        ("llama-gqa-llama3", false),
    ] {
        let model = tiny(name, kernels);
        let vocab = model.config().vocab_size;
        let heads = random_heads(&model, 11);
        for (plen, n, seed) in [(40, 120, 1), (9, 60, 2), (70, 150, 3)] {
            let p = prompt(plen, seed, vocab);
            let s = greedy_with_penalty();
            let want = ar(&model, &p, n, &s);
            for draft in [DraftMode::Separate, DraftMode::Fused] {
                let cfg = TokenSwiftConfig {
                    tree: if draft == DraftMode::Separate {
                        TreeChoice::Fixed(vec![1, 3, 3, 3])
                    } else {
                        TreeChoice::Fixed(vec![3, 2, 2])
                    },
                    ngram_topk: 5,
                    kv_budget: 32,
                    draft,
                    ..TokenSwiftConfig::paper()
                };
                let (got, stats) = ts(&model, &heads, &p, n, &s, &cfg);
                assert_eq!(got, want, "{name} {draft:?} prompt {plen} gen {n}");
                let auto = TokenSwiftConfig {
                    kv_budget: 32,
                    draft,
                    ..TokenSwiftConfig::default()
                };
                assert_eq!(
                    ts(&model, &heads, &p, n, &s, &auto).0,
                    want,
                    "{name} auto tree, {draft:?}, prompt {plen} gen {n}"
                );
                assert_eq!(stats.generated_tokens, n);
                if draft == DraftMode::Separate && plen + n > 40 {
                    assert!(
                        stats.partial_selections >= 2,
                        "{name}: the partial cache re-selected {} times",
                        stats.partial_selections
                    );
                }
            }
        }
    }
}

/// Every trie node's verify logits are, bit for bit, the logits of autoregressive decoding's
/// one-token pass at that position after the node's path — for nodes whose column in the verify
/// pass differs from their position (siblings before them), over a cache whose length is not a
/// multiple of the kernels' 16 lanes. This is what lets sampled TokenSwift output equal AR output
/// byte for byte at any length (not only in distribution): a draw can never land on the other
/// side of a rounding difference.
#[test]
fn tree_verify_logits_are_bit_identical_to_one_token_passes() {
    for name in ["llama-mha", "qwen2-gqa-bias"] {
        let model = tiny(name, true);
        let vocab = model.config().vocab_size as u32;
        let p = prompt(45, 7, vocab as usize);
        let (context, root) = p.split_at(p.len() - 1);
        let prefix = |model: &Model| {
            let mut cache = model.new_cache(128);
            forward_chunks(model, context, &mut cache, LogitRows::None, &mut |_, _| {
                Ok(())
            })
            .unwrap();
            cache
        };
        let choices: Vec<Vec<u32>> = (0..3)
            .map(|d| (0..3).map(|i| (d * 5 + i * 7 + 1) % vocab).collect())
            .collect();
        let mut trie = CandidateTrie::from_tree(root[0], &choices, &[3, 2, 2]);
        trie.insert_path(&[choices[0][1], 9 % vocab, 4 % vocab, 2 % vocab]);
        let mut full = prefix(&model);
        let pos = full.len();
        let out = model
            .forward(
                trie.tokens(),
                &trie.positions(pos),
                &AttentionMask::Tree(trie.mask()),
                &mut full,
                LogitRows::All,
            )
            .unwrap();
        let rows = to_host_f32(out.logits.unwrap());
        let v = vocab as usize;
        let mut checked = 0;
        for node in 0..trie.len() {
            let mut cache = prefix(&model);
            let mut last = Vec::new();
            for (i, &t) in std::iter::once(&root[0])
                .chain(trie.path_tokens(node).iter())
                .enumerate()
            {
                let o = model
                    .forward(
                        &[t],
                        &[pos + i],
                        &AttentionMask::Causal,
                        &mut cache,
                        LogitRows::Last,
                    )
                    .unwrap();
                last = to_host_f32(o.logits.unwrap());
            }
            let got: Vec<u32> = rows[node * v..(node + 1) * v]
                .iter()
                .map(|x| x.to_bits())
                .collect();
            let want: Vec<u32> = last.iter().map(|x| x.to_bits()).collect();
            assert_eq!(
                got,
                want,
                "{name}: node {node} (depth {})",
                trie.depth(node)
            );
            checked += usize::from(node != trie.depth(node));
        }
        assert!(
            checked > 20,
            "{checked} nodes sat off their position's column"
        );
    }
}

/// `lm_head` over a subset of the vocabulary gives exactly the subset's columns of the full
/// product, on the CPU kernels and on plain burn ops.
#[test]
fn lm_head_subset_matches_the_full_columns() {
    for kernels in [true, false] {
        let model = tiny("qwen2-gqa-bias", kernels);
        let h = model.config().hidden_size;
        let x: Vec<f32> = (0..3 * h)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 9.0)
            .collect();
        let t = || Tensor::<2>::from_data(TensorData::new(x.clone(), [3, h]), model.device());
        let full = model.lm_head_rows(t());
        let ids = [5u32, 63, 0, 17, 42];
        let sub = LmHeadSubset::new(&model, &ids).unwrap();
        let got = sub.project(t());
        let v = model.config().vocab_size;
        for r in 0..3 {
            for (c, &id) in ids.iter().enumerate() {
                let (a, b) = (got[r * ids.len() + c], full[r * v + id as usize]);
                assert!(
                    (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                    "row {r} token {id}: {a} vs {b}"
                );
            }
        }
        assert!(LmHeadSubset::new(&model, &[64]).is_err());
        assert!(LmHeadSubset::new(&model, &[]).is_err());
    }
}

/// A draft restricted to a few tokens proposes only those, and the output is still greedy AR's.
#[test]
fn restricted_draft_vocabulary_stays_lossless() {
    let model = tiny("llama-mha", true);
    let heads = random_heads(&model, 3);
    let p = prompt(40, 9, 64);
    let s = greedy_with_penalty();
    let want = ar(&model, &p, 120, &s);
    // The prompt's tokens, most frequent first: the n-grams and the draft agree on them.
    let ranking = tokenswift_infer::draft::heads::rank_tokens([p.as_slice()], 64, 64);
    for draft in [DraftMode::Separate, DraftMode::Fused] {
        let cfg = TokenSwiftConfig {
            tree: TreeChoice::Fixed(vec![2, 2]),
            kv_budget: 24,
            draft,
            draft_vocab: Some(ranking[..6].to_vec()),
            ..TokenSwiftConfig::paper()
        };
        let (got, stats) = ts(&model, &heads, &p, 120, &s, &cfg);
        assert_eq!(got, want, "{draft:?}");
        assert!(stats.steps < 120, "{draft:?}: {} steps", stats.steps);
    }
}

/// One uniform per emitted token in emission order: with the same seed, sampled TokenSwift output
/// is the AR output.
#[test]
fn sampled_tokenswift_equals_ar_with_the_same_seed() {
    let model = tiny("llama-mha", true);
    let heads = random_heads(&model, 5);
    let p = prompt(30, 4, 64);
    for seed in 0..6 {
        let s = SamplingConfig {
            seed,
            penalty_window: 16,
            ..SamplingConfig::default()
        };
        let cfg = TokenSwiftConfig {
            kv_budget: 24,
            ngram_topk: 4,
            ..TokenSwiftConfig::paper()
        };
        let (got, stats) = ts(&model, &heads, &p, 80, &s, &cfg);
        assert_eq!(got, ar(&model, &p, 80, &s), "seed {seed}");
        assert!(stats.steps < 80);
    }
}

#[test]
fn auto_tree_stays_lossless() {
    let model = tiny("llama-mha", true);
    let heads = random_heads(&model, 2);
    let p = prompt(30, 8, 64);
    let s = greedy_with_penalty();
    let cfg = TokenSwiftConfig {
        tree: TreeChoice::Auto,
        kv_budget: 40,
        ngram_topk: 3,
        ..Default::default()
    };
    let (got, stats) = ts(&model, &heads, &p, 200, &s, &cfg);
    assert_eq!(got, ar(&model, &p, 200, &s));
    assert!(stats.steps < 200, "{} steps", stats.steps);
}

/// Chi-square of the second emitted token's histogram (TokenSwift, seeds `0..n`) against AR's
/// (independent seeds), bins with few expected counts merged.
fn second_token_chi_square(
    model: &Model,
    heads: &DraftHeads,
    rule: AcceptRule,
    n: u64,
) -> (f64, usize) {
    let p = prompt(12, 21, 64);
    let count = |tokenswift: bool, seed: u64| {
        let s = SamplingConfig {
            seed,
            min_p: 0.0,
            penalty: 1.0,
            ..SamplingConfig::default()
        };
        let cfg = TokenSwiftConfig {
            ngram_topk: 0,
            accept: rule,
            ..TokenSwiftConfig::paper()
        };
        if tokenswift {
            ts(model, heads, &p, 2, &s, &cfg).0[1]
        } else {
            ar(model, &p, 2, &s)[1]
        }
    };
    let (mut a, mut b) = (vec![0f64; 64], vec![0f64; 64]);
    for seed in 0..n {
        a[count(true, seed) as usize] += 1.0;
        b[count(false, 1_000_000 + seed) as usize] += 1.0;
    }
    // Two-sample chi-square over bins with at least 10 counts in total; the rest pooled.
    let (mut chi, mut dof) = (0.0, 0usize);
    let (mut ra, mut rb) = (0.0, 0.0);
    for i in 0..64 {
        if a[i] + b[i] >= 10.0 {
            chi += (a[i] - b[i]).powi(2) / (a[i] + b[i]);
            dof += 1;
        } else {
            ra += a[i];
            rb += b[i];
        }
    }
    if ra + rb > 0.0 {
        chi += (ra - rb).powi(2) / (ra + rb);
        dof += 1;
    }
    (chi, dof - 1)
}

/// Sampled TokenSwift on `model` has AR's distribution (chi-square within the 99.9 % bound), and
/// the same test rejects the reference code's per-row sampling, which over-accepts the draft's
/// tokens.
fn distribution_matches_ar_and_the_test_has_teeth(model: &Model, n: u64) {
    // Heads whose top-1 is a constant wrong-ish guess: over-acceptance shows up as a bias
    // towards it.
    let heads = random_heads(model, 9);
    let (chi, dof) = second_token_chi_square(model, &heads, AcceptRule::PerNode, n);
    // 99.9 % quantile of chi-square ≈ dof + 3.1·sqrt(2·dof) + 5 (Wilson–Hilferty bound, loose).
    let critical = dof as f64 + 3.1 * (2.0 * dof as f64).sqrt() + 5.0;
    println!("per-node: chi-square {chi:.1} on {dof} dof (critical {critical:.1})");
    assert!(
        chi < critical,
        "per-node acceptance: chi-square {chi:.1} ≥ {critical:.1}"
    );
    let (chi, _) = second_token_chi_square(model, &heads, AcceptRule::PerRowReference, n);
    println!("per-row (reference): chi-square {chi:.1}");
    assert!(
        chi > 3.0 * critical,
        "the biased sampler was not detected: chi-square {chi:.1}"
    );
}

#[test]
fn sampling_distribution_matches_ar_and_the_test_has_teeth() {
    distribution_matches_ar_and_the_test_has_teeth(&tiny("llama-mha", true), 3000);
}

/// The same on the burn-ops path (what a GPU runs): there verify and AR are equal in distribution
/// (not promised bit for bit), which is what this measures; the per-row control must still fail.
#[test]
fn sampling_distribution_on_the_burn_path_matches_ar() {
    distribution_matches_ar_and_the_test_has_teeth(&tiny("llama-mha", false), 1500);
}

/// A base + heads checkpoint in the published layout (`model.medusa_layers.*` inside the base
/// safetensors) loads and runs TokenSwift losslessly.
#[test]
fn published_layout_checkpoint_runs() {
    use tokenswift_infer::draft::heads::load_heads;
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/goldens/tiny-llama-mha");
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "generation_config.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let base = tokenswift_infer::load::weights::Checkpoint::open(&src).unwrap();
    let mut tensors = Vec::new();
    let names: Vec<String> = base.names().cloned().collect();
    let mut base = base;
    for n in names {
        let shape = safetensors_shape(&src.join("model.safetensors"), &n);
        tensors.push((n.clone(), shape.clone(), base.read_f32(&n, &shape).unwrap()));
    }
    let model = tiny("llama-mha", true);
    tensors.extend(random_heads(&model, 3).tensors());
    tokenswift_infer::load::weights::write_f32_safetensors(
        &dir.path().join("model.safetensors"),
        &tensors,
    )
    .unwrap();
    let model =
        tokenswift_infer::draft::heads::load_base(dir.path(), &Device::flex(), DType::F32).unwrap();
    let heads = load_heads(dir.path(), &model).unwrap();
    assert_eq!(heads.len(), 3);
    let p = prompt(20, 1, 64);
    let s = greedy_with_penalty();
    let (got, _) = ts(&model, &heads, &p, 40, &s, &TokenSwiftConfig::paper());
    assert_eq!(got, ar(&model, &p, 40, &s));
}

fn safetensors_shape(file: &std::path::Path, name: &str) -> Vec<usize> {
    let data = std::fs::read(file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&data).unwrap();
    st.tensor(name).unwrap().shape().to_vec()
}

/// EOS is honoured mid-path with `stop_at_eos`, and ignored by default.
#[test]
fn eos_stops_mid_path_only_when_asked() {
    let model = tiny("llama-mha", true);
    let heads = random_heads(&model, 4);
    let p = prompt(20, 6, 64);
    let s = SamplingConfig::greedy();
    let plain = ar(&model, &p, 60, &s);
    let eos = model.config().eos_token_ids[0];
    let (got, _) = ts(&model, &heads, &p, 60, &s, &TokenSwiftConfig::paper());
    assert_eq!(got, plain);
    let cfg = TokenSwiftConfig {
        stop_at_eos: true,
        ..TokenSwiftConfig::paper()
    };
    let (got, stats) = ts(&model, &heads, &p, 60, &s, &cfg);
    match plain.iter().position(|&t| t == eos) {
        Some(i) => {
            assert_eq!(got, plain[..=i].to_vec());
            assert!(stats.stopped_at_eos);
        }
        None => assert_eq!(got, plain),
    }
}

/// Bad settings are errors that say what is wrong.
#[test]
fn bad_settings_are_clear_errors() {
    let model = tiny("llama-mha", true);
    let heads = random_heads(&model, 4);
    let p = prompt(20, 6, 64);
    let s = SamplingConfig::greedy();
    let run = |cfg: TokenSwiftConfig, n: usize| {
        generate_tokenswift(&model, &heads, &p, n, &s, &cfg, &mut |_| Ok(()))
            .err()
            .map(|e| e.to_string())
    };
    let e = run(
        TokenSwiftConfig {
            kv_budget: 16,
            ..TokenSwiftConfig::paper()
        },
        10,
    )
    .unwrap();
    assert!(e.contains("16 attention sinks"), "{e}");
    let e = run(
        TokenSwiftConfig {
            tree: TreeChoice::Fixed(vec![1, 1, 1, 1, 1]),
            ..TokenSwiftConfig::paper()
        },
        10,
    )
    .unwrap();
    assert!(e.contains("at most 4"), "{e}");
    let e = run(TokenSwiftConfig::paper(), 300).unwrap();
    assert!(e.contains("context of 256"), "{e}");
}

/// ≥ 100K tokens from a tiny random model whose context allows it, with a 256-slot partial cache:
/// the draft path's cache stays at its budget and the output equals greedy AR. A small tree
/// (`1,2`, two n-gram chains) keeps each verify's attention over the growing 100K-position cache
/// cheap. Takes a few minutes:
/// `cargo test --release -p tokenswift-infer --test tokenswift -- --ignored --nocapture`.
#[test]
#[ignore]
fn hundred_thousand_tokens_in_bounded_draft_memory() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/goldens/tiny-llama-mha");
    let dir = tempfile::tempdir().unwrap();
    for f in ["generation_config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg["max_position_embeddings"] = serde_json::json!(131072);
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let model = Model::load(dir.path(), &Device::flex(), DType::F32).unwrap();
    let heads = random_heads(&model, 8);
    let p = prompt(300, 2, 64);
    let n = 100_000;
    let s = SamplingConfig {
        penalty_window: 64,
        ..greedy_with_penalty()
    };
    let t0 = std::time::Instant::now();
    let cfg = TokenSwiftConfig {
        kv_budget: 256,
        tree: TreeChoice::Fixed(vec![1, 2]),
        ngram_topk: 2,
        ..TokenSwiftConfig::paper()
    };
    let (got, stats) = ts(&model, &heads, &p, n, &s, &cfg);
    let ts_time = t0.elapsed();
    assert_eq!(got.len(), n);
    assert!(
        stats.partial_selections > 100,
        "{} selections",
        stats.partial_selections
    );
    // The draft pass's cache is the budget plus the draft token, not the 100K-token history.
    assert_eq!(stats.draft_cache_capacity, 257);
    let t1 = std::time::Instant::now();
    assert_eq!(got, ar(&model, &p, n, &s));
    println!(
        "100K tokens: TokenSwift {:.1} s ({} steps, {} selections), AR {:.1} s",
        ts_time.as_secs_f64(),
        stats.steps,
        stats.partial_selections,
        t1.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// Tests with teeth. The tiny random models are near-uniform, so their own drafts are rarely
// accepted under sampling and several properties could not fail. An *oracle* drafter that knows
// the AR output makes every step accept deep paths — at off-column trie positions, since a wrong
// sibling is inserted first — so each lossless property is exercised, and each deliberate fault
// (the negative controls) must change the output.
// ---------------------------------------------------------------------------------------------

/// Proposes, below every root, a wrong token and then the next `len` tokens of `want` (the AR
/// output for this prompt and seed, generated after `prompt_len` tokens).
fn oracle(prompt_len: usize, want: Vec<u32>, len: usize, vocab: u32) -> ExternalDrafter<'static> {
    Box::new(move |history: &[u32]| {
        let g = history.len() - prompt_len;
        let next = &want[g.min(want.len())..(g + len).min(want.len())];
        if next.is_empty() {
            return Vec::new();
        }
        vec![vec![(next[0] + 1) % vocab], next.to_vec()]
    })
}

/// TokenSwift with an extra drafter; also returns every step's (tokens, accepted drafts).
#[allow(clippy::type_complexity)]
fn ts_with(
    model: &Model,
    heads: &DraftHeads,
    prompt: &[u32],
    n: usize,
    s: &SamplingConfig,
    cfg: &TokenSwiftConfig,
    drafter: ExternalDrafter<'static>,
) -> (Vec<u32>, TokenSwiftStats, Vec<(Vec<u32>, usize)>) {
    let mut session = Session::new(model, heads, prompt, n, s, cfg).unwrap();
    session.set_external_drafter(drafter);
    let mut steps = Vec::new();
    run_session(&mut session, &mut |r| {
        steps.push((r.tokens.to_vec(), r.accepted));
        Ok(())
    })
    .unwrap();
    let (got, stats) = session.finish();
    (got, stats, steps)
}

fn sampled(seed: u64) -> SamplingConfig {
    SamplingConfig {
        seed,
        penalty: 1.5,
        penalty_window: 16,
        ..SamplingConfig::default()
    }
}

/// With drafts that are right, sampled runs accept deep paths (every depth up to the chain's),
/// mostly at off-column positions, and the output is still AR's for the same seed.
#[test]
fn oracle_drafts_are_accepted_deep_and_off_column_and_stay_lossless() {
    let model = tiny("llama-mha", true);
    let heads = random_heads(&model, 5);
    let p = prompt(30, 4, 64);
    let n = 120;
    for (seed, cfg) in [
        (0, TokenSwiftConfig::default()),
        (1, TokenSwiftConfig::paper()),
        (
            2,
            TokenSwiftConfig {
                tree: TreeChoice::Fixed(vec![2, 1]),
                draft: DraftMode::Fused,
                ..TokenSwiftConfig::default()
            },
        ),
    ] {
        let s = sampled(seed);
        let want = ar(&model, &p, n, &s);
        let cfg = TokenSwiftConfig {
            kv_budget: 24,
            ..cfg
        };
        let (got, stats, _) = ts_with(
            &model,
            &heads,
            &p,
            n,
            &s,
            &cfg,
            oracle(p.len(), want.clone(), 6, 64),
        );
        assert_eq!(got, want, "seed {seed}, {:?}", cfg.tree);
        assert!(
            stats.accepted * 10 >= n * 7,
            "seed {seed}: only {} of {n} tokens were accepted drafts",
            stats.accepted
        );
        assert!(
            stats.accepted_by_depth.len() >= 6 && stats.accepted_by_depth[5] > 0,
            "seed {seed}: accepted by depth {:?}",
            stats.accepted_by_depth
        );
        assert!(
            stats.accepted_off_column * 2 >= stats.accepted,
            "seed {seed}: {} of {} accepted nodes off their column",
            stats.accepted_off_column,
            stats.accepted
        );
    }
}

/// Negative controls: each deliberate fault makes the lossless comparison fail (the output
/// differs from AR's), with the same oracle drafts under which the faultless run equals AR.
#[test]
fn each_fault_breaks_the_equality_with_ar() {
    let model = tiny("llama-mha", true);
    let heads = random_heads(&model, 5);
    let greedy = SamplingConfig {
        penalty: 3.0,
        penalty_window: 8,
        ..SamplingConfig::greedy()
    };
    let faults = [
        (
            "one penalty window per step",
            greedy.clone(),
            Faults {
                one_window_per_step: true,
                ..Faults::default()
            },
        ),
        (
            "penalty on the root row only",
            greedy.clone(),
            Faults {
                penalty_on_root_only: true,
                ..Faults::default()
            },
        ),
        (
            "a changed random-number order",
            sampled(3),
            Faults {
                extra_uniform: true,
                ..Faults::default()
            },
        ),
        (
            "a wrong keep index",
            greedy.clone(),
            Faults {
                keep_next_node: true,
                ..Faults::default()
            },
        ),
    ];
    for (what, s, fault) in faults {
        let mut broke = 0;
        for seed in 0..3 {
            let p = prompt(24, 10 + seed, 64);
            let want = ar(&model, &p, 80, &s);
            let cfg = TokenSwiftConfig {
                kv_budget: 24,
                ..TokenSwiftConfig::default()
            };
            let (clean, ..) = ts_with(
                &model,
                &heads,
                &p,
                80,
                &s,
                &cfg,
                oracle(p.len(), want.clone(), 6, 64),
            );
            assert_eq!(
                clean, want,
                "{what}: the faultless run must equal AR (prompt {seed})"
            );
            let cfg = TokenSwiftConfig {
                faults: fault,
                ..cfg
            };
            let (got, ..) = ts_with(
                &model,
                &heads,
                &p,
                80,
                &s,
                &cfg,
                oracle(p.len(), want.clone(), 6, 64),
            );
            broke += usize::from(got != want);
        }
        assert_eq!(
            broke,
            3,
            "{what}: the fault went unnoticed in {} of 3 prompts",
            3 - broke
        );
    }
}

/// Same seed, same output, for the planner's modes: the default (`auto` everything), a draft
/// vocabulary, and n-gram-only steps (no heads at all).
#[test]
fn auto_modes_equal_ar_with_the_same_seed() {
    let model = tiny("llama-mha", true);
    let heads = random_heads(&model, 6);
    let no_heads = DraftHeads::init_for(&model, 0, model.device());
    let p = prompt(40, 12, 64);
    let ranking = tokenswift_infer::draft::heads::rank_tokens([p.as_slice()], 64, 64);
    for seed in 0..4 {
        let s = sampled(seed);
        let want = ar(&model, &p, 100, &s);
        for (what, h, cfg) in [
            ("auto", &heads, TokenSwiftConfig::default()),
            (
                "draft vocabulary",
                &heads,
                TokenSwiftConfig {
                    draft_vocab: Some(ranking[..8].to_vec()),
                    ..TokenSwiftConfig::default()
                },
            ),
            (
                "n-grams only, unlagged",
                &no_heads,
                TokenSwiftConfig {
                    ngram_lag: NgramLag::Tokens(0),
                    ..TokenSwiftConfig::default()
                },
            ),
        ] {
            let cfg = TokenSwiftConfig {
                kv_budget: 24,
                ..cfg
            };
            let (got, stats) = ts(&model, h, &p, 100, &s, &cfg);
            assert_eq!(got, want, "{what}, seed {seed}");
            if what.starts_with("n-grams") {
                assert_eq!(stats.heads_steps + stats.separate_steps, 0);
            }
        }
    }
}

/// With `stop_at_eos`, an end-of-sequence token accepted in the middle of a drafted path ends the
/// output right there (sampled, same seed as AR); without it, EOS is an ordinary token. A fixed
/// tree keeps the steps independent of timing, so the token made EOS is one the run accepted
/// strictly inside a drafted path.
#[test]
fn eos_accepted_mid_path_stops_a_sampled_run() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/goldens/tiny-llama-mha");
    let base = tiny("llama-mha", true);
    let heads = random_heads(&base, 7);
    let p = prompt(20, 6, 64);
    let s = sampled(5);
    let plain = ar(&base, &p, 60, &s);
    let cfg = TokenSwiftConfig {
        tree: TreeChoice::Fixed(vec![1, 1]),
        draft: DraftMode::Fused,
        ngram_topk: 0,
        kv_budget: 24,
        ..TokenSwiftConfig::default()
    };
    let (got, _, steps) = ts_with(
        &base,
        &heads,
        &p,
        60,
        &s,
        &cfg,
        oracle(p.len(), plain.clone(), 6, 64),
    );
    assert_eq!(got, plain);
    // EOS := a token first seen at index ≥ 8 of the output, accepted inside a drafted path.
    let mut index = 0;
    let mut pick = None;
    for (tokens, accepted) in &steps {
        for (j, &t) in tokens.iter().enumerate() {
            if pick.is_none() && index >= 8 && j < *accepted && !plain[..index].contains(&t) {
                pick = Some((index, t));
            }
            index += 1;
        }
    }
    let (at, eos) = pick.expect("a fresh token accepted mid-path");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        src.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    for f in ["config.json", "generation_config.json"] {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(src.join(f)).unwrap()).unwrap();
        v["eos_token_id"] = serde_json::json!(eos);
        std::fs::write(dir.path().join(f), v.to_string()).unwrap();
    }
    let model = Model::load(dir.path(), &Device::flex(), DType::F32).unwrap();
    assert_eq!(model.config().eos_token_ids, vec![eos]);
    let stop = TokenSwiftConfig {
        stop_at_eos: true,
        ..cfg.clone()
    };
    let (got, stats, steps) = ts_with(
        &model,
        &heads,
        &p,
        60,
        &s,
        &stop,
        oracle(p.len(), plain.clone(), 6, 64),
    );
    assert_eq!(got, plain[..=at].to_vec());
    assert!(stats.stopped_at_eos);
    let (tokens, accepted) = steps.last().unwrap();
    let i = tokens.iter().position(|&t| t == eos).unwrap();
    assert!(
        i < *accepted,
        "EOS was the bonus token, not an accepted draft: {tokens:?} ({accepted} accepted)"
    );
    // In `auto` mode too, and without stop_at_eos the run goes on, still equal to AR.
    let auto = TokenSwiftConfig {
        stop_at_eos: true,
        kv_budget: 24,
        ..TokenSwiftConfig::default()
    };
    let (got, ..) = ts_with(
        &model,
        &heads,
        &p,
        60,
        &s,
        &auto,
        oracle(p.len(), plain.clone(), 6, 64),
    );
    assert_eq!(got, plain[..=at].to_vec());
    let (got, ..) = ts_with(
        &model,
        &heads,
        &p,
        60,
        &s,
        &cfg,
        oracle(p.len(), plain.clone(), 6, 64),
    );
    assert_eq!(got, plain);
}

/// The partial KV cache on the device (the burn path a GPU runs) selects the same positions as the
/// CPU fast path's host cache on the same inputs, and its batched gather (fill) and batched write
/// of a step's recent tokens hold exactly what the one-copy-per-layer-head-slot reference
/// (`copy_position`) writes. A negative control: the reference with the slot order reversed
/// differs, so the comparison can fail.
#[test]
fn device_partial_cache_selects_and_writes_like_the_host_and_the_per_slot_reference() {
    use tokenswift_infer::decoding::partial::{SINKS, select_positions};
    use tokenswift_infer::decoding::partial_cache::{PartialKvCache, importance};
    use tokenswift_infer::model::Outputs;
    let budget = 40;
    for name in ["llama-gqa-llama3", "qwen2-gqa-bias"] {
        let run = |cpu_kernels: bool| {
            let model = tiny(name, cpu_kernels);
            let vocab = model.config().vocab_size;
            let tokens = prompt(90, 5, vocab);
            let mut full = model.new_cache(128);
            let positions: Vec<usize> = (0..tokens.len()).collect();
            model
                .forward(
                    &tokens,
                    &positions,
                    &AttentionMask::Causal,
                    &mut full,
                    LogitRows::None,
                )
                .unwrap();
            let out = model
                .forward_with(
                    &[3],
                    &[90],
                    &AttentionMask::Causal,
                    &mut full,
                    Outputs {
                        logits: LogitRows::None,
                        last_queries: true,
                    },
                )
                .unwrap();
            let queries = out.last_queries.unwrap();
            let mut partial = PartialKvCache::new(&model, budget);
            partial.select(&model, &full, &queries).unwrap();
            let chosen: Vec<Vec<usize>> = (0..model.config().num_layers)
                .flat_map(|l| {
                    (0..model.config().num_kv_heads)
                        .map(move |h| (l, h))
                        .collect::<Vec<_>>()
                })
                .map(|(l, h)| partial.positions(l, h).to_vec())
                .collect();
            // A step's recent tokens (positions 88..91) go in with one batched write.
            assert!(partial.place_recent(&full, 88..91).unwrap());
            (model, full, queries, partial, chosen)
        };
        let (_, _, _, _, host_chosen) = run(true);
        let (model, full, queries, partial, dev_chosen) = run(false);
        assert_eq!(
            host_chosen, dev_chosen,
            "{name}: device and host select differently"
        );
        assert!(host_chosen.iter().any(|p| p.len() == budget));

        // The per-slot reference: every (layer, head, slot) copied on its own.
        let scores = importance(&model, &full, &queries);
        let mut reference = model.new_cache(budget + 1);
        let mut reversed = model.new_cache(budget + 1);
        for (layer, heads) in scores.iter().enumerate() {
            for (h, s) in heads.iter().enumerate() {
                let mut picked = select_positions(s, SINKS, budget);
                // The step's recent tokens, as place_recent puts them: the last slots, newest lowest.
                for (i, p) in (88..91).enumerate() {
                    picked[budget - 1 - i] = p;
                }
                for (slot, &p) in picked.iter().enumerate() {
                    reference.copy_position(&full, layer, h, p, slot).unwrap();
                    reversed
                        .copy_position(&full, layer, h, p, budget - 1 - slot)
                        .unwrap();
                }
            }
        }
        reference.set_len(budget).unwrap();
        reversed.set_len(budget).unwrap();
        let mut got = partial.cache;
        got.set_len(budget).unwrap();
        let mut differs = false;
        for layer in 0..model.config().num_layers {
            for (a, b, c) in [
                (got.keys(layer), reference.keys(layer), reversed.keys(layer)),
                (
                    got.values(layer),
                    reference.values(layer),
                    reversed.values(layer),
                ),
            ] {
                let (a, b, c) = (to_host_f32(a), to_host_f32(b), to_host_f32(c));
                assert_eq!(a, b, "{name}: layer {layer} differs from the per-slot copy");
                differs |= a != c;
            }
        }
        assert!(differs, "{name}: the negative control must differ");
    }
}

/// The paired runner (what `--compare-ar` and the evaluation time) produces exactly what the two
/// methods produce alone, alternates in chunks (the order flipped every chunk; neither runs more
/// than a chunk and one step ahead of the other), and times each method on its own steps: both decode times are positive
/// and neither includes the other's (their sum is at most the run's wall time).
#[test]
fn paired_runs_equal_separate_runs_and_alternate_in_chunks() {
    use tokenswift_infer::decoding::paired::{CHUNK, Method, generate_paired};
    let model = tiny("llama-mha", true);
    let heads = random_heads(&model, 5);
    let p = prompt(30, 4, 64);
    let n = 3 * CHUNK + 17;
    for s in [greedy_with_penalty(), sampled(3)] {
        let cfg = TokenSwiftConfig {
            kv_budget: 40,
            ngram_topk: 3,
            ..Default::default()
        };
        let (mut ts_count, mut ar_count, mut widest_lead) = (0usize, 0usize, 0i64);
        let mut switches = 0;
        let mut last = None;
        let t0 = std::time::Instant::now();
        let r = generate_paired(&model, &heads, &p, n, &s, &cfg, &mut |pr| {
            match pr.method {
                Method::TokenSwift => ts_count = pr.generated,
                Method::Ar => ar_count = pr.generated,
            }
            switches += usize::from(last.is_some_and(|m| m != pr.method));
            last = Some(pr.method);
            widest_lead = widest_lead.max((ts_count as i64 - ar_count as i64).abs());
            Ok(())
        })
        .unwrap();
        let wall = t0.elapsed();
        let (alone, _) = ts(&model, &heads, &p, n, &s, &cfg);
        assert_eq!(r.ts_tokens, alone);
        assert_eq!(r.ar_tokens, ar(&model, &p, n, &s));
        assert_eq!((ts_count, ar_count), (n, n));
        assert!(switches >= n / CHUNK, "{switches} switches");
        assert!(widest_lead <= (CHUNK + 32) as i64, "lead {widest_lead}");
        let (a, b) = (r.ts_stats.decode_time, r.ar_stats.decode_time);
        assert!(a > std::time::Duration::ZERO && b > std::time::Duration::ZERO);
        assert!(a + b <= wall, "{a:?} + {b:?} > {wall:?}");
        assert_eq!(r.ar_stats.generated_tokens, n);
        assert_eq!(r.ts_stats.generated_tokens, n);
    }
}
