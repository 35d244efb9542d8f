//! Metric names and helpers, in one place so names stay consistent (Prometheus conventions:
//! `tidesync_` prefix, base units, `_total` for counters, `_seconds` for durations).
//!
//! Everything goes through the `metrics` facade: without an installed recorder these calls
//! cost next to nothing; `tidesync-metrics-prometheus` installs one.

use std::sync::atomic::Ordering;
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

use tidesync_core::ErrorKind;
use tidesync_core::hlc::wall_millis;

use crate::shared::EngineState;

/// Pushed entries by table and outcome (`acked`, `retry`, `auth`, `conflict`, `dead_letter`).
pub const PUSH_TOTAL: &str = "tidesync_push_total";
/// Request latency by table and kind (`push`, `pull`).
pub const REQUEST_SECONDS: &str = "tidesync_request_duration_seconds";
/// Retries scheduled, by error class.
pub const RETRIES_TOTAL: &str = "tidesync_retries_total";
/// Entries dead-lettered, by table.
pub const DEAD_LETTERS_TOTAL: &str = "tidesync_dead_letters_total";
/// Dead letters currently waiting.
pub const DEAD_LETTERS: &str = "tidesync_dead_letters_waiting";
/// Conflicts by table, strategy, detection path and outcome.
pub const CONFLICTS_TOTAL: &str = "tidesync_conflicts_total";
/// Pulled pages, by table.
pub const PULL_PAGES_TOTAL: &str = "tidesync_pull_pages_total";
/// Pull requests by table and outcome (`ok`, `error`).
pub const PULLS_TOTAL: &str = "tidesync_pull_total";
/// Remote records and deletes applied locally, by table.
pub const RECORDS_APPLIED_TOTAL: &str = "tidesync_records_applied_total";
/// Outbox entries waiting, by table.
pub const OUTBOX_DEPTH: &str = "tidesync_outbox_depth";
/// Age of the oldest waiting entry, by table.
pub const OUTBOX_OLDEST_AGE: &str = "tidesync_outbox_oldest_age_seconds";
/// Time since the last successful pull of a table.
pub const CHECKPOINT_LAG: &str = "tidesync_checkpoint_lag_seconds";
/// Server clock minus local clock.
pub const CLOCK_SKEW: &str = "tidesync_clock_skew_seconds";
/// 1 when this instance leads.
pub const LEADER: &str = "tidesync_leader";
/// The fencing epoch.
pub const LEADER_EPOCH: &str = "tidesync_leader_epoch";
/// Sync cycle duration by outcome (`completed`, `failed`).
pub const CYCLE_SECONDS: &str = "tidesync_sync_cycle_duration_seconds";
/// 1 while online.
pub const ONLINE: &str = "tidesync_online";
/// 1 while pushing waits for new credentials.
pub const AUTH_REQUIRED: &str = "tidesync_auth_required";

/// Outbox entries by state (ready, waiting, dead_letter, blocked_dead_letter, …), set at the
/// end of every cycle.
pub const OUTBOX_ENTRIES: &str = "tidesync_outbox_entries";
/// Seconds spent offline (the server unreachable), counted when it answers again.
pub const OFFLINE_SECONDS_TOTAL: &str = "tidesync_offline_seconds_total";
/// 1 while the server's live channel is open.
pub const LIVE_CONNECTED: &str = "tidesync_live_connected";
/// Live-channel reconnects (successful connects after the first).
pub const LIVE_RECONNECTS_TOTAL: &str = "tidesync_live_reconnects_total";
/// Live-channel events received (hints and changes).
pub const LIVE_EVENTS_TOTAL: &str = "tidesync_live_events_total";
/// How long a group of store writes waited for the writer thread (its oldest write, from
/// submission to the start of its group).
pub const STORE_QUEUE_WAIT: &str = "tidesync_store_queue_wait_seconds";
/// The writer thread's work on one group before its commit (the engine's logic in the
/// transaction).
pub const STORE_WORK_SECONDS: &str = "tidesync_store_work_duration_seconds";
/// One group's commit by the store (rows written and made durable).
pub const STORE_COMMIT_SECONDS: &str = "tidesync_store_commit_duration_seconds";

/// Registers descriptions and units of every metric (call once, after installing a recorder).
pub fn describe_all() {
    describe_counter!(PUSH_TOTAL, "Outbox entries pushed, by table and outcome");
    describe_histogram!(
        REQUEST_SECONDS,
        Unit::Seconds,
        "HTTP request latency, by table and kind"
    );
    describe_counter!(RETRIES_TOTAL, "Retries scheduled, by error class");
    describe_counter!(
        DEAD_LETTERS_TOTAL,
        "Entries moved to the dead-letter queue, by table"
    );
    describe_gauge!(DEAD_LETTERS, "Dead letters currently waiting");
    describe_counter!(
        CONFLICTS_TOTAL,
        "Conflicts, by table, strategy, detection path and outcome"
    );
    describe_counter!(PULL_PAGES_TOTAL, "Pages pulled, by table");
    describe_counter!(PULLS_TOTAL, "Pull requests, by table and outcome");
    describe_counter!(
        RECORDS_APPLIED_TOTAL,
        "Remote records and deletes applied locally, by table"
    );
    describe_gauge!(
        OUTBOX_DEPTH,
        "Outbox entries waiting to be pushed, by table"
    );
    describe_gauge!(
        OUTBOX_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest waiting outbox entry, by table"
    );
    describe_gauge!(
        CHECKPOINT_LAG,
        Unit::Seconds,
        "Time since the last successful pull, by table"
    );
    describe_gauge!(
        CLOCK_SKEW,
        Unit::Seconds,
        "Server clock minus local clock (from HTTP Date)"
    );
    describe_gauge!(LEADER, "1 when this instance is the sync leader");
    describe_gauge!(LEADER_EPOCH, "Fencing epoch of the current leadership");
    describe_histogram!(
        CYCLE_SECONDS,
        Unit::Seconds,
        "Sync cycle duration, by outcome"
    );
    describe_gauge!(ONLINE, "1 while the server is reachable");
    describe_gauge!(AUTH_REQUIRED, "1 while pushing waits for new credentials");
    describe_gauge!(
        OUTBOX_ENTRIES,
        "Outbox entries by state at the end of the last cycle (ready, in_flight, waiting, dead_letter, blocked_dead_letter, blocked_reference, parked, queued)"
    );
    describe_counter!(
        OFFLINE_SECONDS_TOTAL,
        "Seconds spent offline (server unreachable), added when it answers again"
    );
    describe_gauge!(LIVE_CONNECTED, "1 while the server's live channel is open");
    describe_counter!(
        LIVE_RECONNECTS_TOTAL,
        "Live-channel reconnects (successful connects after the first)"
    );
    describe_counter!(
        LIVE_EVENTS_TOTAL,
        "Live-channel events received (hints and changes)"
    );
    describe_histogram!(
        STORE_QUEUE_WAIT,
        Unit::Seconds,
        "Time a group of store writes waited for the writer thread (its oldest write)"
    );
    describe_histogram!(
        STORE_WORK_SECONDS,
        Unit::Seconds,
        "Writer thread's work on a group of store writes before its commit"
    );
    describe_histogram!(
        STORE_COMMIT_SECONDS,
        Unit::Seconds,
        "Store commit of a group of writes (rows written and made durable)"
    );
}

/// Records where one group commit of the store writer spent its time: waiting for the writer,
/// the jobs' work in the transaction, the store's commit.
pub fn store_group(queue_wait: Duration, work: Duration, commit: Duration) {
    histogram!(STORE_QUEUE_WAIT).record(queue_wait.as_secs_f64());
    histogram!(STORE_WORK_SECONDS).record(work.as_secs_f64());
    histogram!(STORE_COMMIT_SECONDS).record(commit.as_secs_f64());
}

/// Sets the outbox-by-state gauges.
pub fn outbox_states(summary: &tidesync_core::local::OutboxSummary) {
    for (state, count) in [
        ("ready", summary.ready),
        ("in_flight", summary.in_flight),
        ("waiting", summary.waiting),
        ("dead_letter", summary.dead_letters),
        ("blocked_dead_letter", summary.behind_dead_letter),
        ("blocked_reference", summary.waiting_for_reference),
        ("parked", summary.parked),
        ("queued", summary.behind_head),
    ] {
        metrics::gauge!(OUTBOX_ENTRIES, "state" => state).set(count as f64);
    }
}

/// Adds a stretch of time spent offline.
pub fn offline_for(elapsed: Duration) {
    metrics::counter!(OFFLINE_SECONDS_TOTAL).increment(elapsed.as_secs());
}

/// Counts one push outcome.
pub fn push_outcome(table: &str, outcome: &'static str) {
    counter!(PUSH_TOTAL, "table" => table.to_owned(), "outcome" => outcome).increment(1);
}

/// Records a request's latency.
pub fn request_latency(table: &str, kind: &'static str, elapsed: Duration) {
    histogram!(REQUEST_SECONDS, "table" => table.to_owned(), "kind" => kind)
        .record(elapsed.as_secs_f64());
}

/// Counts a scheduled retry.
pub fn retry(kind: ErrorKind) {
    counter!(RETRIES_TOTAL, "class" => kind.as_str()).increment(1);
}

/// Counts a dead letter.
pub fn dead_lettered(table: &str) {
    counter!(DEAD_LETTERS_TOTAL, "table" => table.to_owned()).increment(1);
}

/// Counts a conflict.
pub fn conflict(table: &str, strategy: &str, path: &'static str, outcome: &'static str) {
    counter!(
        CONFLICTS_TOTAL,
        "table" => table.to_owned(),
        "strategy" => strategy.to_owned(),
        "path" => path,
        "outcome" => outcome
    )
    .increment(1);
}

/// Counts a pulled page and its applied records.
pub fn pulled_page(table: &str, applied: u64) {
    counter!(PULL_PAGES_TOTAL, "table" => table.to_owned()).increment(1);
    counter!(RECORDS_APPLIED_TOTAL, "table" => table.to_owned()).increment(applied);
}

/// Counts a pull request.
pub fn pull_request(table: &str, ok: bool) {
    counter!(PULLS_TOTAL, "table" => table.to_owned(), "outcome" => if ok { "ok" } else { "error" }).increment(1);
}

/// Records a finished cycle.
pub fn cycle(ok: bool, elapsed: Duration) {
    histogram!(CYCLE_SECONDS, "outcome" => if ok { "completed" } else { "failed" })
        .record(elapsed.as_secs_f64());
}

/// Updates the clock offset from a server `Date` (ms, second resolution); warns past 5
/// minutes of skew.
pub fn observe_server_clock(state: &EngineState, server_ms: i64) {
    // HTTP `Date` has one-second resolution (it is truncated), so the true offset lies in
    // `[date - now, date - now + 1000)`: take the middle, and treat anything within that
    // resolution as no skew at all rather than inventing up to a second of it.
    let raw = server_ms + 500 - wall_millis() as i64;
    let offset = if raw.abs() <= 1_000 { 0 } else { raw };
    let previous = state.clock_offset_ms.swap(offset, Ordering::Relaxed);
    gauge!(CLOCK_SKEW).set(offset as f64 / 1000.0);
    if offset.abs() > 300_000 && previous.abs() <= 300_000 {
        tracing::warn!(
            offset_ms = offset,
            "server clock differs from the local clock by more than 5 minutes"
        );
    }
}
