//! Writes a synthetic bf16 checkpoint with random weights at a real model's shapes (no download),
//! for `tokenswift bench --model DIR` at scale (`scripts/gpu-check.sh`).
//! `cargo run --release --example synthetic_checkpoint -- llama3.1-8b|1b OUT_DIR`
use tokenswift_infer::load::synthetic::LlamaShape;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let shape = match args.first().map(String::as_str) {
        Some("llama3.1-8b") => LlamaShape::LLAMA31_8B,
        Some("1b") => LlamaShape::ONE_B,
        _ => {
            eprintln!("usage: synthetic_checkpoint llama3.1-8b|1b OUT_DIR");
            return std::process::ExitCode::from(2);
        }
    };
    let Some(out) = args.get(1) else {
        eprintln!("usage: synthetic_checkpoint llama3.1-8b|1b OUT_DIR");
        return std::process::ExitCode::from(2);
    };
    match shape.write_bf16(std::path::Path::new(out)) {
        Ok(params) => {
            println!("{out}: {:.2}B parameters in bf16", params as f64 / 1e9);
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("could not write the checkpoint to {out}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
