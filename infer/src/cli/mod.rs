pub mod bench;
pub mod common;
pub mod fetch;
pub mod generate;
