//! tokenswift-eval: speedup, acceptance rate and Distinct-n measurements (DESIGN §7), paper-table
//! reproduction (DESIGN §7) and ablation sweeps, written to run directories under `reports/` as a
//! results table (CSV + Parquet through polars), a Markdown summary and charts (plotters).

pub mod ceiling;
pub mod charts;
pub mod distinct;
pub mod error;
pub mod measure;
pub mod provenance;
pub mod report;
pub mod runner;
pub mod table;

pub use error::{EvalError, Result};
pub use tokenswift_infer as infer;
