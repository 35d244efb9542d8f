//! The transport plugin contract: how outbox entries reach the server and changes come back.
//!
//! A transport is one layer with no hidden retries: it makes one attempt per call, with a
//! timeout, and classifies every failure through [`crate::ErrorKind`]:
//! - `Network`, `Timeout`, `RateLimited`, `Server` → retryable (with `retry_after` when the
//!   server sent `Retry-After`);
//! - `Auth` → the engine asks the app for new credentials; nothing is dead-lettered;
//! - `Conflict` → the conflict resolver (with the server's current record when known);
//! - `Permanent`, `Decode` → the dead-letter queue, with the response excerpt.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Result;
use crate::outbox::Op;
use crate::record::{Key, Record};
use crate::spec::TableSpec;

/// One outbox entry, as the transport sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushRequest {
    /// The table (collection) name.
    pub table: String,
    /// The record's key.
    pub key: Key,
    /// What to do on the server.
    pub op: Op,
    /// Create/update: the full local record. Delete: the last known record (so URL templates
    /// such as `/posts/{serverId}` still work), if any.
    pub record: Option<Record>,
    /// Update: the top-level fields changed since the last synced version (what a PATCH sends).
    pub changed: Vec<String>,
    /// Stable idempotency key, fixed when the entry was enqueued, the same on every retry.
    pub idempotency_key: String,
    /// The version token (version field or ETag) of the base the change was made against.
    pub base_version: Option<String>,
    /// The leader's fencing epoch, sent so a server can refuse a deposed leader.
    pub epoch: Option<u64>,
}

/// What the server answered to a successful push.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PushOutcome {
    /// The server's version of the record after the write, if the response carried it.
    pub record: Option<Record>,
    /// The version token after the write (from the version field or the ETag).
    pub version: Option<String>,
    /// The key the server assigned, when it differs from the local key (temp id → server id).
    pub server_key: Option<Key>,
    /// The server's clock at response time (HTTP `Date`), in epoch milliseconds.
    pub server_time_ms: Option<i64>,
}

/// A request for the next page of remote changes of one table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullRequest {
    /// The table (collection) name.
    pub table: String,
    /// The checkpoint after the last applied page, as the transport defined it; `None` for a
    /// first (initial) sync.
    pub cursor: Option<Value>,
    /// How many records to ask for.
    pub page_size: usize,
}

/// One page of remote changes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PullPage {
    /// Records created or changed on the server.
    pub records: Vec<Record>,
    /// Keys deleted on the server (from tombstones or a deleted-ids feed).
    pub deleted: Vec<Key>,
    /// The checkpoint to store, in the same transaction that applies this page.
    pub cursor: Option<Value>,
    /// Whether another page follows.
    pub has_more: bool,
    /// The server's clock (HTTP `Date`), in epoch milliseconds.
    pub server_time_ms: Option<i64>,
    /// Total number of changes the server reported, when it does (for progress).
    pub total: Option<u64>,
    /// What was wrong with this page that the configuration can fix (the page was still
    /// applied); the engine reports it per table in the sync report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<PullWarning>,
}

/// Something wrong with a pulled page that the configuration can fix. The page was applied,
/// but the pull cannot make the progress it should (the next sync reads the same items again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PullWarning {
    /// Items whose cursor field does not parse in the configured timestamp format (or is
    /// missing): they were applied, but the checkpoint cannot move past them.
    CursorUnparsed {
        /// The cursor field.
        field: String,
        /// The configured timestamp format.
        format: String,
        /// How many items.
        items: u64,
        /// One of them (`key K: value`), to show what the server writes.
        example: String,
    },
    /// The page (or the page walk it ended) delivered new items but the checkpoint's filter
    /// value did not move: the next sync asks for the same items again.
    NoProgress {
        /// How many new items the page or walk delivered.
        items: u64,
        /// Why, as far as the transport can tell.
        reason: String,
    },
}

impl PullWarning {
    /// Adds `other`'s figures to this warning when it is the same finding (the same kind,
    /// field and format); returns whether it did.
    pub fn absorb(&mut self, other: &PullWarning) -> bool {
        match (self, other) {
            (
                PullWarning::CursorUnparsed {
                    field,
                    format,
                    items,
                    ..
                },
                PullWarning::CursorUnparsed {
                    field: f2,
                    format: fmt2,
                    items: n2,
                    ..
                },
            ) if field == f2 && format == fmt2 => {
                *items = items.saturating_add(*n2);
                true
            }
            (PullWarning::NoProgress { items, .. }, PullWarning::NoProgress { items: n2, .. }) => {
                *items = items.saturating_add(*n2);
                true
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for PullWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PullWarning::CursorUnparsed {
                field,
                format,
                items,
                example,
            } => write!(
                f,
                "{items} pulled item{} whose cursor field `{field}` does not parse as the \
                 configured timestamp `{format}` (e.g. {example}): applied, but the checkpoint \
                 cannot move past them and every sync reads them again; fix the route's \
                 `timestamp` (`tidesync doctor` shows what the server writes)",
                if *items == 1 { "" } else { "s" }
            ),
            PullWarning::NoProgress { items, reason } => write!(
                f,
                "{items} new item{} pulled without moving the checkpoint ({reason}): every \
                 sync reads them again",
                if *items == 1 { "" } else { "s" }
            ),
        }
    }
}

/// A record fetched by key, for conflict follow-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fetched {
    /// The server's current record.
    pub record: Record,
    /// Its version token.
    pub version: Option<String>,
}

/// A transport plugin. Implementations must be cheap to share (`Arc<dyn Transport>`).
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// A short name for logs and metrics (`"rest"`).
    fn name(&self) -> &str;

    /// Pushes one entry. One attempt, with a timeout; failures classified.
    async fn push(&self, request: PushRequest) -> Result<PushOutcome>;

    /// Checks, when the engine starts, that this transport can serve `spec` the way the
    /// spec asks (a pushed table has write routes, a pulled one a feed, …). An error names
    /// the table and, in [`Error::setting_path`](crate::Error::setting_path), the transport
    /// setting at fault, so the library and a config checker report the same mistakes before
    /// any data moves. The default accepts every table.
    fn check_table(&self, _spec: &TableSpec) -> Result<()> {
        Ok(())
    }

    /// Whether `table` has a bulk endpoint.
    fn supports_batch(&self, _table: &str) -> bool {
        false
    }

    /// Whether the server assigns the keys of `table`'s new records (a create's answer brings
    /// the real key). While such a create was sent but not acknowledged, the engine does not
    /// pull the table: the server may already hold the record under a key the engine cannot
    /// tie to the local one yet, and pulling it would show the application two copies. That
    /// includes a create dead-lettered when the server may have applied it (a 2xx whose body
    /// did not decode, retries run out; see `DeadLetterInfo::may_have_been_applied`): retrying
    /// or discarding that dead letter lets the table be pulled again.
    fn assigns_keys(&self, _table: &str) -> bool {
        false
    }

    /// How often the engine reconciles `table`'s hard deletes: lists every key of the pull
    /// feed (a [`Transport::pull`] walk from no cursor) and deletes locally the records the
    /// server no longer has and that have no pending local change. `None` (the default):
    /// never on its own.
    fn reconcile_every(&self, _table: &str) -> Option<std::time::Duration> {
        None
    }

    /// Pushes several entries of one table in one request where the API allows it. The outer
    /// error means the whole request failed; the inner results are per entry, in order.
    async fn push_batch(&self, requests: Vec<PushRequest>) -> Result<Vec<Result<PushOutcome>>> {
        let mut results = Vec::with_capacity(requests.len());
        for request in requests {
            results.push(self.push(request).await);
        }
        Ok(results)
    }

    /// Pulls one page of changes after `request.cursor`.
    async fn pull(&self, request: PullRequest) -> Result<PullPage>;

    /// Fetches the server's current version of one record; `Ok(None)` if it does not exist.
    async fn fetch(&self, table: &str, key: &Key) -> Result<Option<Fetched>>;

    /// The version token carried by a record of `table` (e.g. its `version` field), if any.
    fn version_of(&self, _table: &str, _record: &Record) -> Option<String> {
        None
    }

    /// When the server last modified a record of `table` (e.g. its `updatedAt` field), in the
    /// server's epoch milliseconds, if known. Used by last-write-wins strategies.
    fn modified_at_ms(&self, _table: &str, _record: &Record) -> Option<i64> {
        None
    }

    /// The server's live channel (Server-Sent Events, WebSocket…), when one is configured;
    /// `None` (the default): no live channel, changes arrive by polling only. See
    /// [`crate::live`].
    fn live(&self) -> Option<std::sync::Arc<dyn crate::live::LiveChannel>> {
        None
    }

    /// Whether a sync cycle pulls `table` before it pushes it (default: push, then pull).
    /// For servers that refuse no stale write: pending local edits then meet the remote
    /// changes on the pull path, where the table's conflict strategy decides, before they go
    /// out. What changes on the server between that pull and the push is still overwritten.
    fn pull_before_push(&self, _table: &str) -> bool {
        false
    }
}
