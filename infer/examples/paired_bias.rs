//! Diagnostic: the paired runner (`--compare-ar`) with a TokenSwift session that never drafts
//! (every step a plain AR step, so any ratio away from 1 is the runner's bias or the session's
//! bookkeeping) and with the default session (n-grams and the planner; no heads), alternated.
//! `N=2048 REPS=3 [GREEDY=1] cargo run --release -p tokenswift-infer --example paired_bias`
//! (the README prompt; the checkpoint's own blocks, as `generate` runs them).
use burn::tensor::{DType, Device};
use tokenswift_infer::decoding::paired::generate_paired;
use tokenswift_infer::decoding::planner::DraftMode;
use tokenswift_infer::decoding::session::TokenSwiftConfig;
use tokenswift_infer::draft::heads::DraftHeads;
use tokenswift_infer::load::tokenizer::TextTokenizer;
use tokenswift_infer::model::{LoadOptions, Model, WeightsChoice};
use tokenswift_infer::sampling::SamplingConfig;

fn main() {
    tokenswift_infer::host::on_pool(run);
}

fn run() {
    let dir = std::path::PathBuf::from(std::env::var("HOME").unwrap())
        .join(".cache/tokenswift/models/smollm2-135m");
    let opts = LoadOptions {
        weights: WeightsChoice::Auto,
        ..Default::default()
    };
    let model = Model::load_with(&dir, &Device::flex(), DType::F32, opts).unwrap();
    let tok = TextTokenizer::load(&dir).unwrap();
    let prompt = tok
        .encode(&std::fs::read_to_string("datasets/prompts/pride-and-prejudice.txt").unwrap())
        .unwrap();
    let n: usize = std::env::var("N").map_or(1024, |v| v.parse().unwrap());
    let reps: usize = std::env::var("REPS").map_or(3, |v| v.parse().unwrap());
    let mut s = SamplingConfig::default();
    if std::env::var("GREEDY").is_ok() {
        s.temperature = 0.0;
    }
    let heads = DraftHeads::init_for(&model, 0, &Device::flex());
    let never = TokenSwiftConfig {
        draft: DraftMode::None,
        ngram_topk: 0,
        ..Default::default()
    };
    let default = TokenSwiftConfig::default();
    for rep in 0..reps {
        for (name, cfg) in [("never-drafting", &never), ("default", &default)] {
            let out =
                generate_paired(&model, &heads, &prompt, n, &s, cfg, &mut |_| Ok(())).unwrap();
            let ts = out.ts_stats.decode_time.as_secs_f64() / out.ts_tokens.len() as f64;
            let ar = out.ar_stats.decode_time.as_secs_f64() / out.ar_tokens.len() as f64;
            let st = &out.ts_stats;
            let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / st.steps as f64;
            println!(
                "rep {rep} {name}: AR {:.2} ms/token, TokenSwift {:.2} ms/token, {:.3}x \
                 ({} steps, {} plain; per step draft {:.0} us, verify {:.0} us, update {:.0} us)",
                ar * 1e3,
                ts * 1e3,
                ar / ts,
                st.steps,
                st.ar_steps,
                per(st.draft_time),
                per(st.verify_time),
                per(st.update_time),
            );
            assert_eq!(
                out.ts_tokens, out.ar_tokens,
                "TokenSwift's output must be AR's"
            );
        }
    }
}
