//! Property tests (issue 8, DESIGN invariants 4 and 10): no input makes the parsers, the page
//! decoding or the local database panic; bad input gets a clear error naming what is wrong;
//! `Retry-After` never turns into an absurd delay; and any sequence of local writes, pushes,
//! failures, dead letters, restarts and pulls keeps the outbox invariants the crash test
//! checks.
//!
//! Case counts are bounded so CI stays fast (`PROPTEST_CASES` raises them for a long run:
//! `PROPTEST_CASES=5000 cargo test --test props`).

mod configs;
mod outbox;
mod pages;
mod retry;
mod templates;

use proptest::prelude::*;
use serde_json::Value;

/// Cases per property, unless `PROPTEST_CASES` says otherwise.
pub fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Field names of every config struct, so generated objects sometimes parse deep.
pub const FIELD_NAMES: &[&str] = &[
    // RestConfig
    "base_url",
    "connect_timeout_ms",
    "request_timeout_ms",
    "max_response_bytes",
    "excerpt_bytes",
    "idempotency_header",
    "epoch_header",
    "auth_retries",
    "headers",
    "tables",
    // TableRoutes, WriteRoute, FetchRoute, BulkRoute, Versioning
    "key",
    "fields",
    "server_ids",
    "create",
    "update",
    "delete",
    "delete_not_found_ok",
    "fetch",
    "bulk",
    "pull",
    "version",
    "conflict_record",
    "method",
    "url",
    "body",
    "envelope",
    "response",
    "ignore_response",
    "ops_field",
    "results",
    "status_field",
    "record",
    "field",
    "etag",
    // Feed, Pagination, Tombstone
    "query",
    "items",
    "cursor_field",
    "timestamp",
    "cursor_format",
    "filter",
    "pagination",
    "tombstone",
    "deleted",
    "since_token",
    "style",
    "has_more",
    "total",
    "next",
    "first_page",
    "value",
    // TableSpec
    "name",
    "key_kind",
    "indexes",
    "references",
    "push",
    "table",
    // SyncSettings, RateLimit
    "interval",
    "debounce",
    "sync_on_start",
    "concurrency",
    "batch_size",
    "backoff_base",
    "backoff_cap",
    "max_attempts",
    "page_size",
    "max_pages",
    "rate_limits",
    "global_rate_limit",
    "probe_base",
    "probe_cap",
    "stale_after",
    "max_requests",
    "window",
    // records
    "id",
    "updatedAt",
    "title",
    "rank",
];

/// Strings that mean something to one parser or another.
pub const WORDS: &[&str] = &[
    "",
    "posts",
    "id",
    "/api/posts",
    "/api/posts/{id}",
    "/api/{table}/{key}?v={version}",
    "{",
    "}",
    "{{}}",
    "{cursor}",
    "{limit}",
    "http://127.0.0.1:1",
    "https://api.example.com",
    "ftp://x",
    "not a url",
    "GET",
    "POST",
    "PUT",
    "PATCH",
    "DELETE",
    "post",
    "full",
    "changed",
    "none",
    "keyset",
    "inclusive",
    "exclusive",
    "offset",
    "page",
    "token",
    "link",
    "epoch_ms",
    "epoch_seconds",
    "rfc3339",
    "string",
    "integer",
    "/data",
    "/hasMore",
    "~2x",
    "5m",
    "250ms",
    "30s",
    "1h",
    "off",
    "-1",
    "0",
    "18446744073709551616",
    "Idempotency-Key",
    "bad header",
    "X-Ünïcode",
];

/// Any JSON value, biased towards config field names and meaningful strings.
pub fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-3i64..70_000).prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        ".{0,24}".prop_map(Value::String),
        prop::sample::select(WORDS).prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((arb_field(), inner), 0..8)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// An object key: mostly a real field name, sometimes anything.
pub fn arb_field() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(FIELD_NAMES).prop_map(str::to_owned),
        1 => ".{0,12}",
    ]
}
