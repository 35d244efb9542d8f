#![doc = include_str!("../README.md")]

mod config;
mod custom;
mod lww;
mod policies;
mod timestamp;

pub use config::{PolicyConfig, STRATEGY_NAMES, by_name};
pub use custom::{AsyncFnStrategy, FnStrategy, async_strategy_fn, strategy_fn};
pub use lww::{LastWriteWins, RemoteTime, Winner, last_write_winner};
pub use policies::{ClientWins, ParkForApp, ServerWins, converged};
pub use timestamp::{AUTO_SECONDS_BELOW, TimestampFormat, parse_rfc3339_ms, parse_timestamp_ms};

use tidesync_core::{Conflict, Resolution};

/// One debug event per decision: the strategy, the record, how the conflict was found, which
/// sides are deleted, the outcome and what decided it. Never the record contents.
pub(crate) fn log_outcome(strategy: &str, conflict: &Conflict, resolution: &Resolution, by: &str) {
    tracing::debug!(
        strategy,
        table = %conflict.table,
        key = %conflict.key,
        detected_by = conflict.detected_by.as_str(),
        local_deleted = conflict.local.is_none(),
        remote_deleted = conflict.remote.is_none(),
        outcome = resolution.as_str(),
        decided_by = by,
        "conflict resolved"
    );
}
