//! TokenSwift is lossless: greedy output equals greedy AR token for token, and sampled output
//! has AR's distribution — on tiny random models (with partial-cache re-selections) and on the
//! default model.

use std::path::PathBuf;

use burn::module::Param;
use burn::tensor::{DType, Device, Tensor, TensorData};
use tokenswift_infer::decoding::engine::{AcceptRule, TokenSwiftConfig, generate_tokenswift};
use tokenswift_infer::decoding::tree::{DraftMode, TreeChoice};
use tokenswift_infer::generate::generate_ar;
use tokenswift_infer::heads::DraftHeads;
use tokenswift_infer::model::Model;
use tokenswift_infer::sampling::{SamplerRng, SamplingConfig};

fn tiny(name: &str, cpu_kernels: bool) -> Model {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/goldens/tiny-{name}"));
    Model::load_with(&dir, &Device::flex(), DType::F32, cpu_kernels).unwrap()
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
) -> (
    Vec<u32>,
    tokenswift_infer::decoding::engine::TokenSwiftStats,
) {
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
                    stop_at_eos: false,
                    accept: AcceptRule::PerNode,
                };
                let (got, stats) = ts(&model, &heads, &p, n, &s, &cfg);
                assert_eq!(got, want, "{name} {draft:?} prompt {plen} gen {n}");
                assert_eq!(stats.generated_tokens, n);
                if draft == DraftMode::Separate && plen + n > 40 {
                    assert!(
                        stats.selections >= 2,
                        "{name}: the partial cache re-selected {} times",
                        stats.selections
                    );
                }
            }
        }
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
            ..Default::default()
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
    assert!(!stats.last_tree.is_empty());
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
            ..Default::default()
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

/// Sampled TokenSwift has AR's distribution (chi-square within the 99.9 % bound), and the same
/// test rejects the reference code's per-row sampling, which over-accepts the draft's tokens.
#[test]
fn sampling_distribution_matches_ar_and_the_test_has_teeth() {
    let model = tiny("llama-mha", true);
    // Heads whose top-1 is a constant wrong-ish guess: over-acceptance shows up as a bias
    // towards it.
    let heads = random_heads(&model, 9);
    let n = 3000;
    let (chi, dof) = second_token_chi_square(&model, &heads, AcceptRule::PerNode, n);
    // 99.9 % quantile of chi-square ≈ dof + 3.1·sqrt(2·dof) + 5 (Wilson–Hilferty bound, loose).
    let critical = dof as f64 + 3.1 * (2.0 * dof as f64).sqrt() + 5.0;
    println!("per-node: chi-square {chi:.1} on {dof} dof (critical {critical:.1})");
    assert!(
        chi < critical,
        "per-node acceptance: chi-square {chi:.1} ≥ {critical:.1}"
    );
    let (chi, _) = second_token_chi_square(&model, &heads, AcceptRule::PerRowReference, n);
    println!("per-row (reference): chi-square {chi:.1}");
    assert!(
        chi > 3.0 * critical,
        "the biased sampler was not detected: chi-square {chi:.1}"
    );
}
