//! Profiling aid: forward passes of q new tokens over a cached context, the q values
//! interleaved so drift hits them alike. `cargo run --release --example q_profile -- CTX REPS Q...`
use burn::tensor::{DType, Device};
use tokenswift_infer::model::{AttentionMask, LoadOptions, LogitRows, Model, WeightsChoice};
fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    let (ctx, reps, qs) = (a[0], a[1], &a[2..]);
    let max_q = *qs.iter().max().unwrap();
    let dir = std::path::PathBuf::from(std::env::var("HOME").unwrap())
        .join(".cache/tokenswift/models/smollm2-135m");
    // WEIGHTS=f32 for the f32 kernel; otherwise the checkpoint's own blocks (what `generate` runs).
    let weights = if std::env::var("WEIGHTS").as_deref() == Ok("f32") {
        WeightsChoice::F32
    } else {
        WeightsChoice::Auto
    };
    let opts = LoadOptions {
        weights,
        ..Default::default()
    };
    let mut model = Model::load_with(&dir, &Device::flex(), DType::F32, opts).unwrap();
    // ACTIVATIONS=q8: integer products (`--activations q8`).
    if std::env::var("ACTIVATIONS").as_deref() == Ok("q8") {
        model.use_int8_products().unwrap();
    }
    let mut cache = model.new_cache(ctx + max_q);
    let toks: Vec<u32> = (0..ctx + max_q)
        .map(|i| ((i * 7919 + 13) % 49000) as u32)
        .collect();
    tokenswift_infer::model::prompt::prefill(&model, &toks[..ctx], &mut cache, &mut |_| {})
        .unwrap();
    let mut rows = Vec::new();
    let mut total = vec![0f64; qs.len()];
    // IN_POOL=1: the whole loop runs on a rayon worker (the kernels' parallel calls then start
    // from inside the pool instead of blocking this thread on each one).
    let in_pool = std::env::var("IN_POOL").as_deref() == Ok("1");
    let mut body = || {
        for rep in 0..=reps {
            for (j, &q) in qs.iter().enumerate() {
                let pos: Vec<usize> = (ctx..ctx + q).collect();
                let mask: Vec<bool> = (0..q).flat_map(|i| (0..q).map(move |j| j <= i)).collect();
                let t = std::time::Instant::now();
                let o = model
                    .forward(
                        &toks[ctx..ctx + q],
                        &pos,
                        &AttentionMask::Tree(mask),
                        &mut cache,
                        LogitRows::None,
                    )
                    .unwrap();
                model.logits_of_rows_vec(&o.hidden, &[0], &mut rows);
                cache.rollback_to(ctx).unwrap();
                if rep > 0 {
                    total[j] += t.elapsed().as_secs_f64();
                }
            }
        }
    };
    if in_pool {
        tokenswift_infer::host::on_pool(body);
    } else {
        body();
    }
    for (j, &q) in qs.iter().enumerate() {
        println!(
            "q={q} ctx={ctx}: {:.2} ms/pass ({:.3} of q={})",
            total[j] * 1e3 / reps as f64,
            total[j] / total[0],
            qs[0]
        );
    }
}
