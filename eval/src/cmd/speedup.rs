//! `tokenswift-eval speedup`: AR against TokenSwift on the same prompts.

use anyhow::Result;
use tokenswift_cli::Ui;
use tokenswift_eval::measure::checkpoints;
use tokenswift_eval::runner::run_grid;

use super::{RunArgs, base_setting, load};
pub fn speedup(a: RunArgs, ui: &Ui) -> Result<()> {
    let bench = load(&a, ui)?;
    let s = base_setting(&a, bench.prompts[0].len())?;
    let cps = checkpoints(a.gen_len, a.checkpoints, &a.at);
    run_grid(
        &bench,
        "speedup",
        &[s],
        a.gen_len,
        &cps,
        &a.out,
        "TokenSwift vs AR",
        ui,
    )?;
    if a.shard.is_none() {
        println!("{}", std::fs::read_to_string(a.out.join("summary.md"))?);
    }
    Ok(())
}
