//! tokenswift-train: training TokenSwift's interrelated draft layers (DESIGN §1) on a frozen base
//! model. The base runs without autodiff; only the heads are on the autodiff path, with the
//! cross-entropy over the vocabulary computed in chunks. Binary: `train-heads`.

pub mod collective;
pub mod distill;
pub mod error;
pub mod evaluate;
pub mod objective;
pub mod parallel;
pub mod recipe;
pub mod trainer;

pub use error::{Result, TrainError};
pub use recipe::{Recipe, Schedule};
pub use tokenswift_infer as infer;
