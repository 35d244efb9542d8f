#![doc = include_str!("../README.md")]

mod config;
mod merge;

pub use config::{FieldMergeConfig, MergePolicy, STRATEGY_NAMES, by_name};
pub use merge::{FieldConflict, FieldMerge, FieldOutcome, MAX_DEPTH, MergeOutcome, local_is_later};
