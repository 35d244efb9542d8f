//! The conformance suites run against core's defaults (`ServerWins`, `InProcessLeader`), against
//! deliberately broken plugins (the checks must fail), and against a transport that is not REST.

mod core_defaults;
mod in_memory_transport;
mod suites_catch_broken_plugins;
