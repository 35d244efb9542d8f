//! # tidesync-testkit
//!
//! What tidesync's own tests use, shipped so that plugin authors can use it too:
//! - [`store_suite`]: the conformance suite every [`tidesync_core::Store`] backend must pass;
//! - [`server`]: a real HTTP reference REST server (axum, 127.0.0.1, ephemeral port) with
//!   seeded, deterministic fault injection;
//! - [`transport_suite`]: the checks any [`tidesync_core::Transport`] must pass against that
//!   server (push and fetch, pull round trips, idempotent retries, conflicts, gap-free paging
//!   with ties, classification of failures).

pub mod gate;
pub mod server;
pub mod store_suite;
pub mod transport_suite;
