pub mod bench;
pub use tokenswift_infer::cli_support as common;
pub mod fetch;
pub mod generate;
