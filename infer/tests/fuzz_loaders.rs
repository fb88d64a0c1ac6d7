//! Hostile-input tests of the model loaders: thousands of mutated `config.json` files and
//! safetensors checkpoints. Each must load or fail with an error — never panic, and never allocate
//! from a size the files claim but do not hold. Bounded to a few seconds.

use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device};
use serde_json::{Value, json};
use tokenswift_infer::model::{Model, ModelConfig};
use tokenswift_infer::sampling::SamplerRng;

fn tiny_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/goldens/tiny-llama-gqa-llama3")
}

fn pick<'a, T>(rng: &mut SamplerRng, v: &'a [T]) -> &'a T {
    &v[(rng.next_u64() % v.len() as u64) as usize]
}

/// Values a hostile or broken config might hold in any field.
fn odd_value(rng: &mut SamplerRng) -> Value {
    pick(
        rng,
        &[
            json!(0),
            json!(-1),
            json!(1),
            json!(3),
            json!(7),
            json!(u32::MAX),
            json!(u64::MAX),
            json!(1u64 << 40),
            json!(1.5),
            json!(-0.0),
            json!(1e308),
            json!("llama"),
            json!(""),
            json!(null),
            json!([1, 2]),
            json!({"rope_type": "yarn", "factor": 0}),
            json!({"rope_type": "llama3", "factor": -1, "low_freq_factor": 0, "high_freq_factor": 0}),
            json!(true),
        ],
    )
    .clone()
}

/// Every mutated config parses to a valid config or is an error; a config that parses is small
/// enough to compute with (no dimension product overflows), and loading the tiny checkpoint with
/// it either works or is an error.
#[test]
fn mutated_configs_never_panic() {
    let dir = tiny_dir();
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let base: Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<String> = base.as_object().unwrap().keys().cloned().collect();
    let mut rng = SamplerRng::new(5);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.join("model.safetensors"),
        tmp.path().join("model.safetensors"),
    )
    .unwrap();
    let (mut parsed, mut loaded) = (0, 0);
    for i in 0..2000u32 {
        let mut v = base.clone();
        for _ in 0..1 + rng.next_u64() % 3 {
            let key = pick(&mut rng, &keys).clone();
            if rng.next_u64().is_multiple_of(5) {
                v.as_object_mut().unwrap().remove(&key);
            } else {
                v[key.as_str()] = odd_value(&mut rng);
            }
        }
        let text = if i.is_multiple_of(50) {
            // Broken JSON now and then.
            let mut t = v.to_string();
            t.truncate((rng.next_u64() % t.len() as u64) as usize);
            t
        } else {
            v.to_string()
        };
        let Ok(c) = ModelConfig::from_json(Path::new("config.json"), &text) else {
            continue;
        };
        parsed += 1;
        // Derived sizes must be computable.
        let _ = c.group_size();
        let _ = c
            .num_heads
            .checked_mul(c.head_dim)
            .expect("bounded dimensions");
        if i.is_multiple_of(10) {
            std::fs::write(tmp.path().join("config.json"), &text).unwrap();
            loaded += usize::from(Model::load(tmp.path(), &Device::flex(), DType::F32).is_ok());
        }
    }
    assert!(
        parsed > 0 && parsed < 2000,
        "{parsed} of 2000 mutated configs parsed"
    );
    println!("{parsed} configs parsed, {loaded} loaded");
}

/// A tiny checkpoint whose safetensors bytes are mutated — header length, header JSON (dtypes,
/// shapes, offsets) and data — loads or is an error, never a panic.
#[test]
fn mutated_checkpoints_never_panic() {
    let dir = tiny_dir();
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let names: Vec<String> = header
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join("config.json"), tmp.path().join("config.json")).unwrap();
    let mut rng = SamplerRng::new(9);
    let mut loaded = 0;
    for i in 0..600 {
        let mut b = bytes.clone();
        match i % 3 {
            // Raw bytes anywhere in the header (or its length field).
            0 => {
                for _ in 0..1 + rng.next_u64() % 3 {
                    let at = (rng.next_u64() % (8 + header_len) as u64) as usize;
                    b[at] = rng.next_u64() as u8;
                }
            }
            // A well-formed header that lies: a tensor's dtype, shape or offsets changed.
            1 => {
                let mut h = header.clone();
                let name = pick(&mut rng, &names).clone();
                let t = &mut h[name.as_str()];
                match rng.next_u64() % 4 {
                    0 => {
                        t["dtype"] =
                            json!(pick(&mut rng, &["F16", "BF16", "I64", "U8", "F64", "X"]))
                    }
                    1 => t["shape"] = json!([1u64 << 40, 1u64 << 40]),
                    2 => t["shape"] = json!([3, 5]),
                    _ => t["data_offsets"] = json!([0, u64::MAX]),
                }
                let hs = h.to_string().into_bytes();
                let data = &bytes[8 + header_len..];
                b = (hs.len() as u64).to_le_bytes().to_vec();
                b.extend_from_slice(&hs);
                b.extend_from_slice(data);
            }
            // Truncated.
            _ => {
                let cut = (rng.next_u64() % bytes.len() as u64) as usize;
                b.truncate(cut);
            }
        }
        std::fs::write(tmp.path().join("model.safetensors"), &b).unwrap();
        loaded += usize::from(Model::load(tmp.path(), &Device::flex(), DType::F32).is_ok());
    }
    assert!(
        loaded < 600,
        "every mutated checkpoint loaded: the test mutates nothing"
    );
}
