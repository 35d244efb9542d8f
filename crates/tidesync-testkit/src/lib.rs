//! # tidesync-testkit
//!
//! What tidesync's own tests use, shipped so that plugin authors can use it too:
//! - [`store_suite`]: the conformance suite every [`tidesync_core::Store`] backend must pass;
//! - [`server`]: a real HTTP reference REST server (axum, 127.0.0.1, ephemeral port) with
//!   seeded, deterministic fault injection;
//! - [`transport_suite`]: the checks any [`tidesync_core::Transport`] must pass against that
//!   server, or against a remote of its own for a transport that does not speak HTTP (push and
//!   fetch, pull round trips, idempotent retries, conflicts, gap-free paging with ties,
//!   classification of failures);
//! - [`conflict_suite`]: the checks every [`tidesync_core::ConflictStrategy`] must pass on
//!   generated conflicts (no panic on any input, determinism) and the rules a strategy declares
//!   (fixed outcome, converged sides, ties and unknown times);
//! - [`gate`]: a TCP gate on 127.0.0.1 in front of a server, for outage tests (forward, refuse,
//!   or accept and never answer);
//! - [`leader_suite`]: the checks every [`tidesync_core::LeaderElector`] must pass (one leader
//!   at a time, renewals keep the epoch, resign hands over with a strictly higher epoch).

pub mod conflict_suite;
pub mod gate;
pub mod leader_suite;
pub mod server;
pub mod store_suite;
pub mod transport_suite;
