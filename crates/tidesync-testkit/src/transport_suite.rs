//! The transport conformance suite: what every [`Transport`] plugin must do, checked against
//! a remote service the suite seeds, inspects and makes misbehave.
//!
//! A transport crate runs it from an integration test. For an HTTP transport the remote is the
//! [reference server](crate::server): [`run_all`] starts one per check (without auth) and asks
//! a [`TransportFactory`] for a transport configured against it:
//!
//! ```no_run
//! use std::sync::Arc;
//! use tidesync_core::Transport;
//! use tidesync_testkit::transport_suite;
//! # fn my_transport(_base_url: &str, _table: &str) -> Arc<dyn Transport> { panic!("doc") }
//! # async fn demo() {
//! transport_suite::run_all(&|base_url: &str, table: &str| my_transport(base_url, table)).await;
//! # }
//! ```
//!
//! A transport that speaks something else (a message queue, gRPC, an in-process channel)
//! brings its own remote: it implements [`Remote`] for its service and [`RemoteFactory`] to
//! start one, and calls [`run_all_against`]. The checks speak of records, versions, idempotency
//! keys and [`Fault`]s, never of URLs or status codes; the HTTP-only assertions (the status of
//! a 503) apply only when [`Remote::speaks_http`] says so. The testkit's own tests run the suite
//! with an in-memory transport this way (`tests/conformance/in_memory_transport.rs`).
//!
//! # What the factory must hand out
//!
//! `factory.transport(address, table)` returns a transport for the remote at `address` (for
//! the reference server its base URL, in which table `table` is the collection
//! `/api/{table}`; see the server's module docs for the routes), with:
//! - string keys in field `id`; the remote owns `updatedAt` (epoch ms) and `version`;
//! - push: create, update, delete; an update with `base_version` set must carry it (a
//!   `version` body field or `If-Match`) so that a stale one is refused as a conflict; the
//!   idempotency key sent with every write;
//! - fetch by key, and `version_of` reading the `version` field;
//! - pull: any gap-free checkpoint the remote supports (for the reference server, its filters
//!   and pagination styles), honouring `PullRequest.page_size`, reporting tombstones
//!   (`deleted: true`) or the `/api/{table}/deleted` feed as `PullPage.deleted`;
//! - a request timeout of at most 5 s (the timeout check hangs the remote for 30 s).
//!
//! Every check is a `pub async fn` taking the remotes and the factory, so a transport can also
//! run them one by one (one `#[tokio::test]` each gives better reports; [`ReferenceRemotes`]
//! starts reference servers). A check panics with a message naming the check and what was
//! wrong. Run them on a multi-threaded runtime.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tidesync_core::{ErrorKind, Key, Op, PullRequest, PushRequest, Record, Transport};

use crate::server::{FaultKind, ReferenceServer, RetryAfter, ServerHandle};

/// Hands out transports for the suite.
pub trait TransportFactory: Send + Sync {
    /// A transport in which `table` is the collection `/api/{table}` of the reference server
    /// at `base_url` (see the module docs for the required behaviour).
    fn transport(&self, base_url: &str, table: &str) -> Arc<dyn Transport>;
}

impl<F> TransportFactory for F
where
    F: Fn(&str, &str) -> Arc<dyn Transport> + Send + Sync,
{
    fn transport(&self, base_url: &str, table: &str) -> Arc<dyn Transport> {
        self(base_url, table)
    }
}

/// The table (collection) every check uses.
pub const TABLE: &str = "suite_items";

/// A misbehaviour of the remote, for the next request it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Temporarily unavailable (HTTP 503): a retryable server error.
    Unavailable,
    /// Too many requests, come back later (HTTP 429 with `Retry-After` in this form).
    RateLimited(RetryAfter),
    /// The write is applied, then the connection drops before the answer arrives.
    AnswerLost,
    /// The connection drops before anything is applied.
    Dropped,
    /// No answer for this long.
    Hang(Duration),
    /// An answer that cannot be decoded.
    Garbled,
}

/// The service a transport under test talks to, as the suite seeds, inspects and breaks it.
///
/// Records are JSON objects keyed by their string field `id`; the remote owns their
/// `updatedAt` (epoch ms) and `version` (1 on create, one more on every update).
pub trait Remote: Send + Sync {
    /// Where the transport finds the remote; handed to [`TransportFactory::transport`].
    fn address(&self) -> String;
    /// Whether the remote speaks HTTP, so that status codes can be checked too.
    fn speaks_http(&self) -> bool;
    /// The live record `id` of `table`, as stored (`None` if missing or deleted).
    fn record(&self, table: &str, id: &str) -> Option<Value>;
    /// Creates a record behind the transport's back (a change made by another client).
    fn insert(&self, table: &str, record: Value) -> Result<(), String>;
    /// Changes fields of a record behind the transport's back.
    fn update(&self, table: &str, id: &str, patch: Value) -> Result<(), String>;
    /// Deletes a record behind the transport's back, leaving a tombstone.
    fn delete(&self, table: &str, id: &str) -> Result<(), String>;
    /// How many times a create of `id` was applied.
    fn create_count(&self, table: &str, id: &str) -> usize;
    /// The idempotency key of every create request that reached the remote, in order.
    fn create_idempotency_keys(&self) -> Vec<String>;
    /// The remote's clock, in epoch milliseconds.
    fn now_ms(&self) -> i64;
    /// Stops the remote's clock at `at_ms` (writes get that `updatedAt`), or restarts it.
    fn freeze_clock(&self, at_ms: Option<i64>);
    /// Makes the next request misbehave.
    fn fail_next(&self, fault: Fault);
}

/// A boxed future, for [`RemoteFactory::start`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Starts remotes for the suite: a new, empty one per check.
pub trait RemoteFactory: Send + Sync {
    /// Starts a remote.
    fn start(&self) -> BoxFuture<'_, Box<dyn Remote>>;
}

/// Starts [reference servers](crate::server) without auth: the remote of HTTP transports.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReferenceRemotes;

impl RemoteFactory for ReferenceRemotes {
    fn start(&self) -> BoxFuture<'_, Box<dyn Remote>> {
        Box::pin(async {
            let server = ReferenceServer::builder().without_auth().start().await;
            Box::new(server) as Box<dyn Remote>
        })
    }
}

impl Remote for ReferenceServer {
    fn address(&self) -> String {
        self.url().to_owned()
    }

    fn speaks_http(&self) -> bool {
        true
    }

    fn record(&self, table: &str, id: &str) -> Option<Value> {
        ServerHandle::record(self, table, id)
    }

    fn insert(&self, table: &str, record: Value) -> Result<(), String> {
        self.insert_direct(table, record)
            .map(drop)
            .map_err(|e| format!("{e:?}"))
    }

    fn update(&self, table: &str, id: &str, patch: Value) -> Result<(), String> {
        self.update_direct(table, id, patch)
            .map(drop)
            .map_err(|e| format!("{e:?}"))
    }

    fn delete(&self, table: &str, id: &str) -> Result<(), String> {
        self.delete_direct(table, id)
            .map(drop)
            .map_err(|e| format!("{e:?}"))
    }

    fn create_count(&self, table: &str, id: &str) -> usize {
        ServerHandle::create_count(self, table, id)
    }

    fn create_idempotency_keys(&self) -> Vec<String> {
        self.request_log()
            .iter()
            .filter(|r| r.method == "POST")
            .filter_map(|r| r.header("idempotency-key").map(str::to_owned))
            .collect()
    }

    fn now_ms(&self) -> i64 {
        ServerHandle::now_ms(self)
    }

    fn freeze_clock(&self, at_ms: Option<i64>) {
        ServerHandle::freeze_clock(self, at_ms);
    }

    fn fail_next(&self, fault: Fault) {
        let kind = match fault {
            Fault::Unavailable => FaultKind::status(503),
            Fault::RateLimited(retry_after) => FaultKind::status_retry_after(429, retry_after),
            Fault::AnswerLost => FaultKind::CommitThenDrop,
            Fault::Dropped => FaultKind::Drop,
            Fault::Hang(duration) => FaultKind::Hang(duration),
            Fault::Garbled => FaultKind::Malformed,
        };
        ServerHandle::fail_next(self, 1, kind);
    }
}

/// Runs every check against [reference servers](crate::server).
pub async fn run_all(factory: &dyn TransportFactory) {
    run_all_against(&ReferenceRemotes, factory).await;
}

/// Runs every check against remotes from `remotes`.
pub async fn run_all_against(remotes: &dyn RemoteFactory, factory: &dyn TransportFactory) {
    create_update_fetch_delete(remotes, factory).await;
    pull_round_trip(remotes, factory).await;
    idempotent_retry(remotes, factory).await;
    conflicts_are_classified(remotes, factory).await;
    gap_free_paging_with_ties(remotes, factory).await;
    failures_are_classified(remotes, factory).await;
}

fn record(value: Value) -> Record {
    match value {
        Value::Object(map) => map,
        _ => Record::new(),
    }
}

fn request(op: Op, id: &str, rec: Option<Value>, idem: &str) -> PushRequest {
    PushRequest {
        table: TABLE.to_owned(),
        key: Key::from(id),
        op,
        record: rec.map(record),
        changed: Vec::new(),
        idempotency_key: idem.to_owned(),
        base_version: None,
        epoch: None,
    }
}

/// Pulls until `has_more` is false (at most `max_calls` calls); returns the changed keys, the
/// deleted keys and the final cursor.
async fn drain(
    check: &str,
    transport: &dyn Transport,
    cursor: Option<Value>,
    page_size: usize,
) -> (Vec<Key>, Vec<Key>, Option<Value>) {
    let mut cursor = cursor;
    let (mut changed, mut deleted) = (Vec::new(), Vec::new());
    for _ in 0..500 {
        let page = transport
            .pull(PullRequest {
                table: TABLE.to_owned(),
                cursor: cursor.clone(),
                page_size,
            })
            .await
            .unwrap_or_else(|e| panic!("[{check}] pull failed: {e}"));
        for r in &page.records {
            let key = r
                .get("id")
                .and_then(Key::from_json)
                .unwrap_or_else(|| panic!("[{check}] pulled record without an id: {r:?}"));
            changed.push(key);
        }
        deleted.extend(page.deleted);
        if page.cursor.is_some() {
            cursor = page.cursor;
        }
        if !page.has_more {
            return (changed, deleted, cursor);
        }
    }
    panic!("[{check}] pull did not finish within 500 pages");
}

/// Create, update (with the base version), fetch, delete, delete again (404 = success).
pub async fn create_update_fetch_delete(
    remotes: &dyn RemoteFactory,
    factory: &dyn TransportFactory,
) {
    const CHECK: &str = "create_update_fetch_delete";
    let server = remotes.start().await;
    let t = factory.transport(&server.address(), TABLE);

    let created = t
        .push(request(
            Op::Create,
            "c1",
            Some(json!({"id": "c1", "title": "one"})),
            "k-c1-1",
        ))
        .await
        .unwrap_or_else(|e| panic!("[{CHECK}] create failed: {e}"));
    let stored = server
        .record(TABLE, "c1")
        .unwrap_or_else(|| panic!("[{CHECK}] the server has no record after create"));
    assert_eq!(stored["title"], json!("one"), "[{CHECK}] created record");
    if let Some(rec) = &created.record {
        assert_eq!(
            rec.get("id"),
            Some(&json!("c1")),
            "[{CHECK}] create outcome record"
        );
    }
    assert_eq!(
        created.version.as_deref(),
        Some("1"),
        "[{CHECK}] create outcome version"
    );

    let mut update = request(
        Op::Update,
        "c1",
        Some(json!({"id": "c1", "title": "two", "version": 1})),
        "k-c1-2",
    );
    update.changed = vec!["title".to_owned()];
    update.base_version = Some("1".to_owned());
    let updated = t
        .push(update)
        .await
        .unwrap_or_else(|e| panic!("[{CHECK}] update failed: {e}"));
    assert_eq!(
        server.record(TABLE, "c1").map(|r| r["title"].clone()),
        Some(json!("two")),
        "[{CHECK}] updated record"
    );
    assert_eq!(
        updated.version.as_deref(),
        Some("2"),
        "[{CHECK}] update outcome version"
    );

    let fetched = t
        .fetch(TABLE, &Key::from("c1"))
        .await
        .unwrap_or_else(|e| panic!("[{CHECK}] fetch failed: {e}"))
        .unwrap_or_else(|| panic!("[{CHECK}] fetch found nothing"));
    assert_eq!(fetched.record.get("title"), Some(&json!("two")));
    assert_eq!(
        fetched.version.as_deref(),
        Some("2"),
        "[{CHECK}] fetch version"
    );
    assert_eq!(
        t.version_of(TABLE, &fetched.record).as_deref(),
        Some("2"),
        "[{CHECK}] version_of"
    );
    let missing = t
        .fetch(TABLE, &Key::from("nope"))
        .await
        .unwrap_or_else(|e| panic!("[{CHECK}] fetch of a missing record failed: {e}"));
    assert!(missing.is_none(), "[{CHECK}] fetch of a missing record");

    let mut delete = request(Op::Delete, "c1", Some(json!({"id": "c1"})), "k-c1-3");
    delete.base_version = Some("2".to_owned());
    t.push(delete)
        .await
        .unwrap_or_else(|e| panic!("[{CHECK}] delete failed: {e}"));
    assert!(
        server.record(TABLE, "c1").is_none(),
        "[{CHECK}] record still live after delete"
    );
    t.push(request(Op::Delete, "c1", None, "k-c1-4"))
        .await
        .unwrap_or_else(|e| panic!("[{CHECK}] deleting an already deleted record: {e}"));
}

/// Remote creates, updates and deletes come back through pulls; a caught-up pull is empty.
pub async fn pull_round_trip(remotes: &dyn RemoteFactory, factory: &dyn TransportFactory) {
    const CHECK: &str = "pull_round_trip";
    let server = remotes.start().await;
    let t = factory.transport(&server.address(), TABLE);
    for i in 0..7 {
        server
            .insert(TABLE, json!({"id": format!("r{i}"), "n": i}))
            .unwrap_or_else(|e| panic!("[{CHECK}] seeding: {e:?}"));
    }
    let (changed, _, cursor) = drain(CHECK, t.as_ref(), None, 3).await;
    let got: BTreeSet<String> = changed.iter().map(ToString::to_string).collect();
    let want: BTreeSet<String> = (0..7).map(|i| format!("r{i}")).collect();
    assert_eq!(got, want, "[{CHECK}] initial pull");
    assert!(cursor.is_some(), "[{CHECK}] no checkpoint after a pull");

    let (changed, deleted, cursor) = drain(CHECK, t.as_ref(), cursor, 3).await;
    assert!(
        changed.is_empty() && deleted.is_empty(),
        "[{CHECK}] a caught-up pull returned {changed:?} / {deleted:?}"
    );

    // Later writes get later timestamps.
    tokio::time::sleep(Duration::from_millis(5)).await;
    server
        .update(TABLE, "r2", json!({"n": 20}))
        .unwrap_or_else(|e| panic!("[{CHECK}] remote update: {e:?}"));
    server
        .delete(TABLE, "r4")
        .unwrap_or_else(|e| panic!("[{CHECK}] remote delete: {e:?}"));
    let (changed, deleted, _) = drain(CHECK, t.as_ref(), cursor, 3).await;
    assert!(
        changed.contains(&Key::from("r2")),
        "[{CHECK}] remote update not pulled: {changed:?}"
    );
    assert!(
        deleted.contains(&Key::from("r4")),
        "[{CHECK}] remote delete not pulled: {deleted:?}"
    );
    assert!(
        !changed.contains(&Key::from("r4")),
        "[{CHECK}] a deleted record came back as a change"
    );
}

/// A create whose response was lost is retried with the same idempotency key and takes
/// effect once.
pub async fn idempotent_retry(remotes: &dyn RemoteFactory, factory: &dyn TransportFactory) {
    const CHECK: &str = "idempotent_retry";
    let server = remotes.start().await;
    let t = factory.transport(&server.address(), TABLE);
    let req = request(
        Op::Create,
        "i1",
        Some(json!({"id": "i1", "n": 1})),
        "idem-i1",
    );
    server.fail_next(Fault::AnswerLost);
    let err = t
        .push(req.clone())
        .await
        .err()
        .unwrap_or_else(|| panic!("[{CHECK}] a dropped connection reported success"));
    assert!(
        err.retryable(),
        "[{CHECK}] a dropped connection must be retryable, got {err}"
    );
    t.push(req)
        .await
        .unwrap_or_else(|e| panic!("[{CHECK}] the retry failed: {e}"));
    assert_eq!(
        server.create_count(TABLE, "i1"),
        1,
        "[{CHECK}] the retried create was applied twice"
    );
    let sent = server.create_idempotency_keys();
    assert_eq!(
        sent,
        ["idem-i1", "idem-i1"],
        "[{CHECK}] idempotency key on every attempt"
    );
}

/// A stale base version and a create of an existing id are conflicts, carrying the server's
/// record when the response has it.
pub async fn conflicts_are_classified(remotes: &dyn RemoteFactory, factory: &dyn TransportFactory) {
    const CHECK: &str = "conflicts_are_classified";
    let server = remotes.start().await;
    let t = factory.transport(&server.address(), TABLE);
    server
        .insert(TABLE, json!({"id": "x1", "title": "server"}))
        .unwrap_or_else(|e| panic!("[{CHECK}] seeding: {e:?}"));
    server
        .update(TABLE, "x1", json!({"title": "server again"}))
        .unwrap_or_else(|e| panic!("[{CHECK}] seeding: {e:?}"));

    let mut stale = request(
        Op::Update,
        "x1",
        Some(json!({"id": "x1", "title": "mine", "version": 1})),
        "k-x1",
    );
    stale.changed = vec!["title".to_owned()];
    stale.base_version = Some("1".to_owned());
    let err = t
        .push(stale)
        .await
        .err()
        .unwrap_or_else(|| panic!("[{CHECK}] a stale update was accepted"));
    assert_eq!(
        err.kind(),
        ErrorKind::Conflict,
        "[{CHECK}] stale update: {err}"
    );
    if let Some(remote) = err.remote_record() {
        assert_eq!(
            remote.get("version"),
            Some(&json!(2)),
            "[{CHECK}] remote record"
        );
    }
    assert_eq!(
        err.table_name(),
        Some(TABLE),
        "[{CHECK}] error names the table"
    );
    assert_eq!(
        err.record_key(),
        Some("x1"),
        "[{CHECK}] error names the key"
    );

    let err = t
        .push(request(
            Op::Create,
            "x1",
            Some(json!({"id": "x1"})),
            "k-x1-c",
        ))
        .await
        .err()
        .unwrap_or_else(|| panic!("[{CHECK}] creating an existing id succeeded"));
    assert_eq!(
        err.kind(),
        ErrorKind::Conflict,
        "[{CHECK}] duplicate create: {err}"
    );
    assert_eq!(
        server.record(TABLE, "x1").map(|r| r["title"].clone()),
        Some(json!("server again")),
        "[{CHECK}] a refused write changed the server"
    );
}

/// Many records sharing one `updatedAt` across page boundaries: none is skipped, and a later
/// pull sees only what changed after.
pub async fn gap_free_paging_with_ties(
    remotes: &dyn RemoteFactory,
    factory: &dyn TransportFactory,
) {
    const CHECK: &str = "gap_free_paging_with_ties";
    let server = remotes.start().await;
    let t = factory.transport(&server.address(), TABLE);
    let t0 = server.now_ms();
    let mut want = BTreeSet::new();
    for (at, ids) in [
        (t0, 0..2),
        (t0 + 1, 2..12),
        (t0 + 2, 12..13),
        (t0 + 3, 13..17),
    ] {
        server.freeze_clock(Some(at));
        for i in ids {
            let id = format!("t{i:02}");
            server
                .insert(TABLE, json!({"id": id}))
                .unwrap_or_else(|e| panic!("[{CHECK}] seeding: {e:?}"));
            want.insert(id);
        }
    }
    server.freeze_clock(None);
    for page_size in [3, 4, 5] {
        let (changed, _, cursor) = drain(CHECK, t.as_ref(), None, page_size).await;
        let got: BTreeSet<String> = changed.iter().map(ToString::to_string).collect();
        assert_eq!(got, want, "[{CHECK}] page size {page_size}: gaps");
        // New changes after the checkpoint.
        server.freeze_clock(Some(t0 + 10 + page_size as i64));
        let fresh = [format!("n{page_size}a"), format!("n{page_size}b")];
        for id in &fresh {
            server
                .insert(TABLE, json!({"id": id}))
                .unwrap_or_else(|e| panic!("[{CHECK}] seeding: {e:?}"));
            want.insert(id.clone());
        }
        server.freeze_clock(None);
        let (changed, _, _) = drain(CHECK, t.as_ref(), cursor, page_size).await;
        let got: BTreeSet<String> = changed.iter().map(ToString::to_string).collect();
        for id in &fresh {
            assert!(
                got.contains(id),
                "[{CHECK}] page size {page_size}: {id} missed"
            );
        }
    }
}

/// 5xx, 429 (both `Retry-After` forms), a dropped connection, a hang, a malformed body and an
/// unknown route are classified.
pub async fn failures_are_classified(remotes: &dyn RemoteFactory, factory: &dyn TransportFactory) {
    const CHECK: &str = "failures_are_classified";
    let server = remotes.start().await;
    let t = factory.transport(&server.address(), TABLE);
    let push = |id: &str| request(Op::Create, id, Some(json!({"id": id})), &format!("k-{id}"));

    server.fail_next(Fault::Unavailable);
    let err = t.push(push("f1")).await.err();
    let err = err.unwrap_or_else(|| panic!("[{CHECK}] 503 reported success"));
    assert_eq!(err.kind(), ErrorKind::Server, "[{CHECK}] 503: {err}");
    assert!(err.retryable(), "[{CHECK}] 503 is retryable: {err}");
    if server.speaks_http() {
        assert_eq!(err.http_status(), Some(503), "[{CHECK}] 503 status");
    }

    for (retry_after, want) in [
        (RetryAfter::Seconds(7), 7u64),
        (RetryAfter::HttpDate(120), 120u64),
    ] {
        server.fail_next(Fault::RateLimited(retry_after));
        let err = t.push(push("f2")).await.err();
        let err = err.unwrap_or_else(|| panic!("[{CHECK}] 429 reported success"));
        assert_eq!(err.kind(), ErrorKind::RateLimited, "[{CHECK}] 429: {err}");
        let delay = err
            .retry_after_delay()
            .unwrap_or_else(|| panic!("[{CHECK}] 429 {retry_after:?}: no retry_after"));
        assert!(
            delay.as_secs() <= want && delay.as_secs() + 3 >= want,
            "[{CHECK}] 429 {retry_after:?}: retry_after {delay:?}"
        );
    }

    server.fail_next(Fault::Dropped);
    let err = t.push(push("f3")).await.err();
    let err = err.unwrap_or_else(|| panic!("[{CHECK}] a drop reported success"));
    assert!(err.retryable(), "[{CHECK}] drop: {err}");

    server.fail_next(Fault::Hang(Duration::from_secs(30)));
    let started = Instant::now();
    let err = t.push(push("f4")).await.err();
    let err = err.unwrap_or_else(|| panic!("[{CHECK}] a hang reported success"));
    assert_eq!(err.kind(), ErrorKind::Timeout, "[{CHECK}] hang: {err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "[{CHECK}] hang: took {:?}",
        started.elapsed()
    );

    server.fail_next(Fault::Garbled);
    let err = t.push(push("f5")).await.err();
    let err = err.unwrap_or_else(|| panic!("[{CHECK}] a malformed body reported success"));
    assert_eq!(err.kind(), ErrorKind::Decode, "[{CHECK}] malformed: {err}");
    assert!(!err.retryable(), "[{CHECK}] malformed is not retryable");

    // After all that, the transport still works.
    t.push(push("f6"))
        .await
        .unwrap_or_else(|e| panic!("[{CHECK}] a normal push after the faults failed: {e}"));
}
