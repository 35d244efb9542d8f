//! The conformance suites run against core's defaults (`ServerWins`, `InProcessLeader`).

mod core_defaults;
mod suites_catch_broken_plugins;
