//! The `tokenswift` subcommands, one file each.

pub mod bench;
pub mod fetch;
pub mod generate;
