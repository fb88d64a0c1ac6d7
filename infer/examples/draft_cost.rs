//! Cost of the n-gram lookup drafts per step (the draft phase of a plain AR step): replays an AR
//! output through a lag-0 context table and the corpus table, drafting at every position as an
//! `auto` session does (4 alternatives, 16 tokens). `cargo run --release --example draft_cost -- PROMPT_FILE N`
use burn::tensor::{DType, Device};
use std::time::Instant;
use tokenswift_infer::decoding::ar::generate_ar;
use tokenswift_infer::decoding::corpus::{CorpusNgrams, corpus_ngrams};
use tokenswift_infer::decoding::ngram::ContextTable;
use tokenswift_infer::load::tokenizer::TextTokenizer;
use tokenswift_infer::model::{LoadOptions, Model};
use tokenswift_infer::sampling::SamplingConfig;
fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let home = std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/tokenswift");
    let dir = home.join("models/smollm2-135m");
    let model =
        Model::load_with(&dir, &Device::flex(), DType::F32, LoadOptions::default()).unwrap();
    let tok = TextTokenizer::load(&dir).unwrap();
    let prompt = tok
        .encode(&std::fs::read_to_string(&a[0]).unwrap())
        .unwrap();
    let n: usize = a[1].parse().unwrap();
    let (out, _) = generate_ar(
        &model,
        &prompt,
        n,
        &SamplingConfig::default(),
        false,
        &mut |_| Ok(()),
    )
    .unwrap();
    let heads = std::path::PathBuf::from("heads/smollm2-135m/heads.safetensors");
    let corpus = corpus_ngrams(&model, &heads, &CorpusNgrams::Auto)
        .unwrap()
        .unwrap();
    let all: Vec<u32> = prompt.iter().chain(&out).copied().collect();
    for round in 0..3 {
        let mut t = ContextTable::new();
        let (mut feed, mut draft, mut chains) = (0f64, 0f64, 0usize);
        for i in 0..out.len() {
            let end = prompt.len() + i;
            let t0 = Instant::now();
            t.catch_up(&all[..end], end);
            let t1 = Instant::now();
            for table in [&t, &*corpus] {
                chains += table.draft(&all[..end], 16, 4).len();
            }
            draft += t1.elapsed().as_secs_f64();
            feed += (t1 - t0).as_secs_f64();
        }
        let per = |s: f64| 1e6 * s / out.len() as f64;
        println!(
            "round {round}: feed {:.1} µs/token, draft {:.1} µs/step ({:.1} chains/step)",
            per(feed),
            per(draft),
            chains as f64 / out.len() as f64
        );
    }
}
