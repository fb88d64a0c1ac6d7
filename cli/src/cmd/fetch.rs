//! `tokenswift fetch`: fetch and convert the embedded default model (or resolve any model).

use anyhow::Result;
use clap::Args;
use tokenswift_cli::hub::resolve_model;

use tokenswift_cli::Ui;

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Model to fetch (alias, `org/name` or directory).
    #[arg(long, default_value = "smollm2-135m")]
    pub model: String,
}

pub fn run(args: FetchArgs, ui: Ui) -> Result<()> {
    let dir = resolve_model(&args.model, &|m| ui.note(m))?;
    println!("{}", dir.display());
    Ok(())
}
