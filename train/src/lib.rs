//! tokenswift-train: training TokenSwift's interrelated draft layers on a frozen base model
//! (binary `train-heads`). The training loop lands with the train-heads issue; this crate already
//! builds against the shared model so the workspace layout is fixed.

pub use tokenswift_infer as infer;
