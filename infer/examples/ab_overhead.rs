//! Diagnostic: plain AR against a TokenSwift session whose every step is a plain AR step
//! (`--draft none --ngram-topk 0`), alternating in one process.
use burn::tensor::{DType, Device};
use tokenswift_infer::decoding::planner::DraftMode;
use tokenswift_infer::decoding::session::{TokenSwiftConfig, generate_tokenswift};
use tokenswift_infer::draft::heads::DraftHeads;
use tokenswift_infer::load::tokenizer::TextTokenizer;
use tokenswift_infer::model::Model;
use tokenswift_infer::sampling::SamplingConfig;
fn main() {
    let dir = std::path::PathBuf::from(std::env::var("HOME").unwrap())
        .join(".cache/tokenswift/models/smollm2-135m");
    let model = Model::load(&dir, &Device::flex(), DType::F32).unwrap();
    let tok = TextTokenizer::load(&dir).unwrap();
    let prompt = tok
        .encode(&std::fs::read_to_string("datasets/prompts/pride-and-prejudice.txt").unwrap())
        .unwrap();
    let heads = DraftHeads::init_for(&model, 0, &Device::flex());
    let s = SamplingConfig::default();
    let cfg = TokenSwiftConfig {
        draft: DraftMode::None,
        ngram_topk: 0,
        kv_budget: 512,
        ..Default::default()
    };
    let n = 400;
    for _ in 0..4 {
        let (_, a) =
            tokenswift_infer::decoding::ar::generate_ar(&model, &prompt, n, &s, false, &mut |_| {
                Ok(())
            })
            .unwrap();
        let (_, t) =
            generate_tokenswift(&model, &heads, &prompt, n, &s, &cfg, &mut |_| Ok(())).unwrap();
        println!(
            "AR {:.2} ms/token, all-AR session {:.2} ms/token ({} steps)",
            1e3 / a.decode_tokens_per_second(),
            1e3 / t.decode_tokens_per_second(),
            t.steps
        );
    }
}
