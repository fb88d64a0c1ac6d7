//! Tiny random Llama / Qwen2 checkpoints (MHA, GQA, bias, every RoPE scaling, tied and untied) against
//! goldens from `transformers` (scripts/make_goldens.py), plus the loader's error cases and the
//! attention-mask and cache semantics tree verification relies on.

use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device};
use tokenswift_infer::decoding::trie::CandidateTrie;
use tokenswift_infer::model::{AttentionMask, LogitRows, Model};
use tokenswift_infer::tensor::to_host_f32;

const TINY: &[&str] = &[
    "llama-mha",
    "llama-gqa-llama3",
    "llama-gqa-yarn",
    "llama-linear-untied",
    "qwen2-gqa-bias",
];

fn golden_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/goldens")
        .join(format!("tiny-{name}"))
}

struct Golden {
    tokens: Vec<u32>,
    positions: Vec<usize>,
    logits: Vec<Vec<f32>>,
}

fn golden(name: &str) -> Golden {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(golden_dir(name).join("golden.json")).unwrap(),
    )
    .unwrap();
    let ints = |k: &str| -> Vec<u64> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect()
    };
    Golden {
        tokens: ints("tokens").into_iter().map(|x| x as u32).collect(),
        positions: ints("positions").into_iter().map(|x| x as usize).collect(),
        logits: v["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect(),
    }
}

fn load(name: &str) -> Model {
    Model::load(&golden_dir(name), &Device::flex(), DType::F32).unwrap()
}

/// The device of the burn-ops path: flex, or `TOKENSWIFT_TEST_DEVICE` (e.g. `vulkan:cpu`, Mesa's
/// lavapipe, in a `--features vulkan` build), so that these tests run on a GPU API unchanged.
fn burn_device() -> Device {
    let Ok(name) = std::env::var("TOKENSWIFT_TEST_DEVICE") else {
        return Device::flex();
    };
    let choice = tokenswift_infer::device::DeviceChoice::parse(&name)
        .unwrap_or_else(|e| panic!("TOKENSWIFT_TEST_DEVICE: {e}"));
    choice
        .resolve()
        .unwrap_or_else(|e| panic!("TOKENSWIFT_TEST_DEVICE: {e}"))
        .0
}

/// Both execution paths: the CPU kernels (packed weights) and plain burn ops (the path GPUs take,
/// on [`burn_device`]).
fn both(name: &str) -> Vec<(&'static str, Model)> {
    ["cpu-kernels", "burn-ops"]
        .into_iter()
        .map(|path| {
            let device = if path == "cpu-kernels" {
                Device::flex()
            } else {
                burn_device()
            };
            let m = Model::load_with(
                &golden_dir(name),
                &device,
                DType::F32,
                tokenswift_infer::model::LoadOptions {
                    cpu_kernels: path == "cpu-kernels",
                    ..Default::default()
                },
            )
            .unwrap();
            (path, m)
        })
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn tiny_models_match_transformers_in_one_pass() {
    for name in TINY {
        for (path, model) in both(name) {
            let g = golden(name);
            let mut cache = model.new_cache(32);
            let out = model
                .forward(
                    &g.tokens,
                    &g.positions,
                    &AttentionMask::Causal,
                    &mut cache,
                    LogitRows::All,
                )
                .unwrap();
            let ours = to_host_f32(out.logits.unwrap());
            let vocab = model.config().vocab_size;
            let mut worst = 0f32;
            for (i, row) in g.logits.iter().enumerate() {
                worst = worst.max(max_abs_diff(&ours[i * vocab..(i + 1) * vocab], row));
            }
            println!("{name} ({path}): max |Δlogit| = {worst:.2e}");
            assert!(worst < 1e-4, "{name} ({path}): max |Δlogit| {worst}");
        }
    }
}

#[test]
fn incremental_decoding_with_the_cache_matches_one_pass() {
    for name in TINY {
        for (path, model) in both(name) {
            let g = golden(name);
            let vocab = model.config().vocab_size;
            let mut cache = model.new_cache(32);
            let split = 7;
            model
                .forward(
                    &g.tokens[..split],
                    &g.positions[..split],
                    &AttentionMask::Causal,
                    &mut cache,
                    LogitRows::None,
                )
                .unwrap();
            for i in split..g.tokens.len() {
                let out = model
                    .forward(
                        &g.tokens[i..=i],
                        &g.positions[i..=i],
                        &AttentionMask::Causal,
                        &mut cache,
                        LogitRows::Last,
                    )
                    .unwrap();
                let ours = to_host_f32(out.logits.unwrap());
                assert_eq!(ours.len(), vocab);
                let d = max_abs_diff(&ours, &g.logits[i]);
                assert!(d < 1e-4, "{name} ({path}) step {i}: max |Δlogit| {d}");
            }
            assert_eq!(cache.len(), g.tokens.len());
        }
    }
}

/// A tree of new tokens verified in one pass with a tree mask and depth positions gives, at every
/// node, the logits of running that node's path causally on its own.
#[test]
fn tree_mask_equals_separate_causal_paths() {
    for (_, model) in both("llama-gqa-llama3") {
        // A short prefix, and one whose tree straddles a 16-position panel boundary of the host
        // cache (positions 30..34; `keep` moves 33 → 32).
        tree_mask_case(&model, &[3, 9, 27, 17]);
        let long: Vec<u32> = (0..30).map(|i| (i * 11 + 5) % 64).collect();
        tree_mask_case(&model, &long);
    }
}

fn tree_mask_case(model: &Model, prefix: &[u32]) {
    let prefix: Vec<u32> = prefix.to_vec();
    // Tree: root r=5; children a=8, b=11 of r; c=2 child of a. Order: [r, a, b, c].
    let mut trie = CandidateTrie::new(5);
    trie.insert_path(&[8]);
    trie.insert_path(&[11]);
    trie.insert_path(&[8, 2]);
    let nodes = trie.tokens().to_vec();
    assert_eq!(nodes, vec![5, 8, 11, 2]);
    let q = nodes.len();
    let allowed = trie.mask();
    let mut cache = model.new_cache(48);
    let pre_pos: Vec<usize> = (0..prefix.len()).collect();
    model
        .forward(
            &prefix,
            &pre_pos,
            &AttentionMask::Causal,
            &mut cache,
            LogitRows::None,
        )
        .unwrap();
    let positions = trie.positions(prefix.len());
    let out = model
        .forward(
            &nodes,
            &positions,
            &AttentionMask::Tree(allowed),
            &mut cache,
            LogitRows::All,
        )
        .unwrap();
    let tree_logits = to_host_f32(out.logits.unwrap());
    let vocab = model.config().vocab_size;
    for i in 0..q {
        // The root, then the node's path.
        let mut seq = prefix.clone();
        seq.push(nodes[0]);
        seq.extend(trie.path_tokens(i));
        let mut c = model.new_cache(48);
        let pos: Vec<usize> = (0..seq.len()).collect();
        let o = model
            .forward(&seq, &pos, &AttentionMask::Causal, &mut c, LogitRows::Last)
            .unwrap();
        let reference = to_host_f32(o.logits.unwrap());
        let d = max_abs_diff(&tree_logits[i * vocab..(i + 1) * vocab], &reference);
        assert!(d < 1e-4, "node {i}: max |Δlogit| {d}");
    }
    // Keeping the accepted path r → a → c makes the cache equal to the causal run of that path.
    cache
        .keep(
            prefix.len(),
            &[prefix.len(), prefix.len() + 1, prefix.len() + 3],
        )
        .unwrap();
    assert_eq!(cache.len(), prefix.len() + 3);
    let next = model
        .forward(
            &[7],
            &[cache.len()],
            &AttentionMask::Causal,
            &mut cache,
            LogitRows::Last,
        )
        .unwrap();
    let mut seq = prefix.clone();
    seq.extend([5, 8, 2, 7]);
    let mut c = model.new_cache(48);
    let pos: Vec<usize> = (0..seq.len()).collect();
    let o = model
        .forward(&seq, &pos, &AttentionMask::Causal, &mut c, LogitRows::Last)
        .unwrap();
    let d = max_abs_diff(
        &to_host_f32(next.logits.unwrap()),
        &to_host_f32(o.logits.unwrap()),
    );
    assert!(d < 1e-4, "after keep: max |Δlogit| {d}");
}

#[test]
fn cache_bounds_are_checked() {
    let model = load("llama-mha");
    let mut cache = model.new_cache(4);
    let e = cache.rollback_to(1).unwrap_err().to_string();
    assert!(e.contains("holds only 0"), "{e}");
    model
        .forward(
            &[1, 2, 3],
            &[0, 1, 2],
            &AttentionMask::Causal,
            &mut cache,
            LogitRows::None,
        )
        .unwrap();
    let e = model
        .forward(
            &[1, 2],
            &[3, 4],
            &AttentionMask::Causal,
            &mut cache,
            LogitRows::None,
        )
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("cannot take 2 more"), "{e}");
    assert!(cache.keep(1, &[2, 1]).is_err());
    assert!(cache.keep(1, &[0]).is_err());
    assert!(cache.keep(1, &[3]).is_err());
    cache.rollback_to(1).unwrap();
    assert_eq!(cache.len(), 1);
    cache.reset();
    assert!(cache.is_empty());
}

#[test]
fn positions_beyond_the_context_are_an_error() {
    let model = load("llama-mha");
    let mut cache = model.new_cache(4);
    let e = model
        .forward(
            &[1],
            &[256],
            &AttentionMask::Causal,
            &mut cache,
            LogitRows::None,
        )
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("beyond the model's context of 256"), "{e}");
    let e = model
        .forward(
            &[64],
            &[0],
            &AttentionMask::Causal,
            &mut cache,
            LogitRows::None,
        )
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("outside the vocabulary"), "{e}");
}

// ---- loader error cases: each is one sentence naming what is wrong ----

fn copy_tiny(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(golden_dir(name).join(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn rewrite_tensors(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<f32>)>)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let data = v
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (n, v.shape().to_vec(), data)
        })
        .collect();
    edit(&mut tensors);
    let raw: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, d)| d.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&raw)
        .map(|((n, s, _), b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
}

fn load_err(dir: &Path) -> String {
    Model::load(dir, &Device::flex(), DType::F32)
        .err()
        .expect("load must fail")
        .to_string()
}

#[test]
fn missing_tensor_is_named() {
    let d = copy_tiny("llama-mha");
    rewrite_tensors(d.path(), |t| {
        t.retain(|(n, _, _)| n != "model.layers.1.mlp.up_proj.weight")
    });
    let e = load_err(d.path());
    assert!(
        e.contains("model.layers.1.mlp.up_proj.weight") && e.contains("no tensor"),
        "{e}"
    );
}

#[test]
fn wrong_shape_names_tensor_and_both_shapes() {
    let d = copy_tiny("llama-mha");
    rewrite_tensors(d.path(), |t| {
        let e = t
            .iter_mut()
            .find(|(n, _, _)| n == "model.norm.weight")
            .unwrap();
        e.1 = vec![16];
        e.2.truncate(16);
    });
    let e = load_err(d.path());
    assert!(
        e.contains("model.norm.weight") && e.contains("[16]") && e.contains("[32]"),
        "{e}"
    );
}

#[test]
fn unused_tensor_is_reported() {
    let d = copy_tiny("llama-mha");
    rewrite_tensors(d.path(), |t| {
        t.push((
            "model.layers.9.extra.weight".into(),
            vec![2],
            vec![0.0, 1.0],
        ))
    });
    let e = load_err(d.path());
    assert!(
        e.contains("model.layers.9.extra.weight") && e.contains("does not use"),
        "{e}"
    );
}

#[test]
fn truncated_safetensors_is_an_error() {
    let d = copy_tiny("llama-mha");
    let p = d.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("not a valid safetensors file"), "{e}");
}

#[test]
fn missing_directory_and_unsupported_architecture() {
    let e = load_err(Path::new("/nonexistent/model/dir"));
    assert!(
        e.contains("/nonexistent/model/dir") && e.contains("no such directory"),
        "{e}"
    );
    let d = copy_tiny("llama-mha");
    let cfg = std::fs::read_to_string(d.path().join("config.json"))
        .unwrap()
        .replace("\"llama\"", "\"mamba\"");
    std::fs::write(d.path().join("config.json"), cfg).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("mamba") && e.contains("supported"), "{e}");
}

#[test]
fn missing_tokenizer_is_an_error() {
    let d = copy_tiny("llama-mha");
    let e = tokenswift_infer::load::tokenizer::TextTokenizer::load(d.path())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("tokenizer.json") && e.contains("does not exist"),
        "{e}"
    );
}

#[test]
fn sharded_checkpoints_load() {
    let d = copy_tiny("llama-mha");
    // Split into two shards with an index.
    let bytes = std::fs::read(d.path().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let (a, b) = names.split_at(names.len() / 2);
    let mut map = serde_json::Map::new();
    for (shard, part) in [
        ("model-00001-of-00002.safetensors", a),
        ("model-00002-of-00002.safetensors", b),
    ] {
        let views: Vec<(String, safetensors::tensor::TensorView)> = part
            .iter()
            .map(|n| (n.clone(), st.tensor(n).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &d.path().join(shard)).unwrap();
        for n in part {
            map.insert(n.clone(), serde_json::Value::String(shard.into()));
        }
    }
    std::fs::remove_file(d.path().join("model.safetensors")).unwrap();
    std::fs::write(
        d.path().join("model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();
    let sharded = Model::load(d.path(), &Device::flex(), DType::F32).unwrap();
    let g = golden("llama-mha");
    let mut cache = sharded.new_cache(16);
    let out = sharded
        .forward(
            &g.tokens,
            &g.positions,
            &AttentionMask::Causal,
            &mut cache,
            LogitRows::Last,
        )
        .unwrap();
    let d = max_abs_diff(&to_host_f32(out.logits.unwrap()), g.logits.last().unwrap());
    assert!(d < 1e-4);
}

/// The published TokenSwift layout: heads stored inside the base checkpoint. The base loader for
/// such checkpoints leaves them alone, the heads loader finds them; the plain model loader, which
/// knows nothing of heads, reports them as unused.
#[test]
fn heads_inside_a_base_checkpoint_load() {
    use tokenswift_infer::draft::heads::{DraftHeads, head_tensor_names, load_base};
    use tokenswift_infer::load::weights::Checkpoint;
    let d = copy_tiny("llama-mha");
    rewrite_tensors(d.path(), |t| {
        for i in 0..3 {
            let [lin, inp, post] = head_tensor_names(i);
            t.push((
                lin,
                vec![32, 32],
                (0..32 * 32).map(|x| (x % 7) as f32 * 0.01).collect(),
            ));
            t.push((inp, vec![32], vec![1.0; 32]));
            t.push((post, vec![32], vec![1.0; 32]));
        }
    });
    let e = Model::load(d.path(), &Device::flex(), DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("model.medusa_layers.0.linear.weight"), "{e}");
    let model = load_base(d.path(), &Device::flex(), DType::F32).unwrap();
    let mut ckpt = Checkpoint::open(d.path()).unwrap();
    assert_eq!(DraftHeads::count_in(&ckpt), 3);
    let heads = DraftHeads::from_checkpoint(&mut ckpt, 3, 32, 1e-5, &Device::flex()).unwrap();
    let mut cache = model.new_cache(4);
    let out = model
        .forward(
            &[1, 2],
            &[0, 1],
            &AttentionMask::Causal,
            &mut cache,
            LogitRows::None,
        )
        .unwrap();
    let logits = heads.logits(out.hidden, model.lm_head_weight());
    assert_eq!(logits.len(), 3);
    assert_eq!(logits[2].dims(), [2, 64]);
}

// ---- bf16 checkpoints: kept as bf16 by `--weights auto`, widened exactly in the kernel ----

/// A copy of tiny model `name` whose tensors are stored as bf16 (rounded from the f32 values).
fn bf16_copy(name: &str) -> tempfile::TempDir {
    let dir = copy_tiny(name);
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let data = v
                .data()
                .chunks_exact(4)
                .flat_map(|b| {
                    half::bf16::from_f32(f32::from_le_bytes(b.try_into().unwrap())).to_le_bytes()
                })
                .collect();
            (n, v.shape().to_vec(), data)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, s.clone(), b);
            (n.clone(), v.unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
    dir
}

fn load_weights(dir: &Path, weights: tokenswift_infer::model::WeightsChoice) -> Model {
    let opts = tokenswift_infer::model::LoadOptions {
        weights,
        ..Default::default()
    };
    Model::load_with(dir, &Device::flex(), DType::F32, opts).unwrap()
}

/// Logits of a 9-token prefill, then passes of 1, 3 and 14 rows over the cache.
fn passes(model: &Model) -> Vec<Vec<f32>> {
    let ids: Vec<u32> = (0..27).map(|i| (i * 7 + 3) % 64).collect();
    let mut cache = model.new_cache(ids.len());
    let mut at = 0;
    let mut out = Vec::new();
    for n in [9, 1, 3, 14] {
        let pos: Vec<usize> = (at..at + n).collect();
        let o = model
            .forward(
                &ids[at..at + n],
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
}

fn same_bits(a: &[Vec<f32>], b: &[Vec<f32>]) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()))
}

/// A bf16 checkpoint under `--weights auto` runs on its bf16 matrices (tied and untied
/// `lm_head`, with and without q/k/v bias), and every logit equals the f32 path's over the same
/// (exactly widened) values. Control: the same matrices re-quantised to Q8_0 differ.
#[test]
fn bf16_checkpoints_run_as_bf16_with_the_f32_logits() {
    use tokenswift_infer::host::quant::BlockFormat;
    use tokenswift_infer::model::WeightsChoice;
    for name in ["llama-gqa-llama3", "llama-linear-untied", "qwen2-gqa-bias"] {
        let dir = bf16_copy(name);
        let kept = load_weights(dir.path(), WeightsChoice::Auto);
        let wide = load_weights(dir.path(), WeightsChoice::F32);
        let q8 = load_weights(dir.path(), WeightsChoice::Quantise(BlockFormat::Q8_0));
        assert_eq!(kept.weights_format(), "bf16", "{name}");
        assert_eq!(wide.weights_format(), "f32", "{name}");
        let (a, b) = (passes(&kept), passes(&wide));
        assert!(same_bits(&a, &b), "{name}: bf16 logits differ from f32's");
        assert!(!same_bits(&a, &passes(&q8)), "{name}: the Q8_0 control");
    }
}

/// Quantising a model whose rows are not whole blocks (intermediate size 48: `down_proj` rows of
/// 48 values) is one sentence naming the setting, not a panic; the same checkpoint loads as f32,
/// so the refusal is the quantiser's.
#[test]
fn quantising_rows_that_are_not_whole_blocks_is_refused_in_one_sentence() {
    use tokenswift_infer::host::quant::BlockFormat;
    use tokenswift_infer::model::{LoadOptions, WeightsChoice};
    let dir = copy_tiny("llama-mha");
    let config = dir.path().join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let (hidden, inter, cut) = (32usize, 64usize, 48usize);
    assert_eq!(c["intermediate_size"], inter);
    c["intermediate_size"] = cut.into();
    std::fs::write(&config, c.to_string()).unwrap();
    rewrite_tensors(dir.path(), |ts| {
        for (name, shape, data) in ts.iter_mut() {
            if name.ends_with("gate_proj.weight") || name.ends_with("up_proj.weight") {
                // [inter, hidden] → the first `cut` rows.
                data.truncate(cut * hidden);
                *shape = vec![cut, hidden];
            } else if name.ends_with("down_proj.weight") {
                // [hidden, inter] → the first `cut` columns of every row.
                *data = data
                    .chunks_exact(inter)
                    .flat_map(|row| row[..cut].to_vec())
                    .collect();
                *shape = vec![hidden, cut];
            }
        }
    });
    let load = |weights| {
        let opts = LoadOptions {
            weights,
            ..Default::default()
        };
        Model::load_with(dir.path(), &Device::flex(), DType::F32, opts)
    };
    assert!(
        load(WeightsChoice::F32).is_ok(),
        "the f32 control must load"
    );
    for format in [BlockFormat::Q4_1, BlockFormat::Q8_0, BlockFormat::Bf16] {
        let err = load(WeightsChoice::Quantise(format))
            .err()
            .expect("quantising 48-value rows must fail")
            .to_string();
        assert!(
            err.contains("multiple of 32") && err.contains("48") && !err.contains('\n'),
            "{err}"
        );
    }
}

/// A synthetic checkpoint (`load::synthetic`, what `scripts/gpu-check.sh` benchmarks at the 8B
/// shape) loads and runs: finite logits over its whole vocabulary.
#[test]
fn a_synthetic_checkpoint_loads_and_runs() {
    use tokenswift_infer::load::synthetic::LlamaShape;
    let shape = LlamaShape {
        hidden: 64,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        head_dim: 16,
        ffn: 128,
        vocab: 256,
        tied: false,
        max_positions: 512,
    };
    let dir = tempfile::tempdir().unwrap();
    let params = shape.write_bf16(dir.path()).unwrap();
    assert_eq!(
        params,
        2 * 256 * 64 + 2 * (64 * 64 * 2 + 32 * 64 * 2 + 3 * 64 * 128 + 2 * 64) + 64
    );
    let model = Model::load(dir.path(), &Device::flex(), DType::F32).unwrap();
    let mut cache = model.new_cache(8);
    let out = model
        .forward(
            &[1, 7, 200],
            &[0, 1, 2],
            &AttentionMask::Causal,
            &mut cache,
            LogitRows::Last,
        )
        .unwrap();
    let logits = to_host_f32(out.logits.unwrap());
    assert_eq!(logits.len(), 256);
    assert!(logits.iter().all(|v| v.is_finite()));
}
