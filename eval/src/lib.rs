//! tokenswift-eval: speedup, acceptance rate and Distinct-n measurements, paper-table reproduction
//! and ablation sweeps, written as tables and charts under `reports/`. Filled by the eval issue.

pub use tokenswift_infer as infer;
