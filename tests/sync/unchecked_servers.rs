//! Servers with no concurrency control at all (the reference server's
//! [`Concurrency::Unchecked`]: `If-Match` and body versions ignored, every write accepted).
//! Without help the last write wins silently; with the table's `conflict_detection` the engine
//! finds the conflicts itself: `pull_first` (the cycle pulls the table before pushing it: the
//! pull path) or `fetch_before_write` (the current record is fetched before each update and
//! delete and its version compared with the base: the push path). Every strategy then gives
//! its promised outcome, whichever of the two edits came first, and one more cycle sends
//! nothing. The routes are recipe 11 of `docs/rest-routes.md`, parsed from the doc.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tidesync::{Engine, EngineBuilder, MemoryStore, TableSpec};
use tidesync_conflict_merge::FieldMerge;
use tidesync_conflict_policies::{ClientWins, LastWriteWins, ParkForApp, ServerWins};
use tidesync_testkit::server::{CollectionConfig, Concurrency, ReferenceServer};
use tidesync_transport_rest::{ConflictDetection, RestConfig, RestTransport};

use crate::support::settings;

const DETECTIONS: [ConflictDetection; 2] = [
    ConflictDetection::PullFirst,
    ConflictDetection::FetchBeforeWrite,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    ServerWins,
    ClientWins,
    LastWriteWins,
    FieldMerge,
    Park,
}

const STRATEGIES: [Strategy; 5] = [
    Strategy::ServerWins,
    Strategy::ClientWins,
    Strategy::LastWriteWins,
    Strategy::FieldMerge,
    Strategy::Park,
];

async fn unchecked_server() -> ReferenceServer {
    ReferenceServer::builder()
        .without_auth()
        .collection(
            "posts",
            CollectionConfig::default().concurrency(Concurrency::Unchecked),
        )
        .start()
        .await
}

const DOC: &str = include_str!("../../docs/rest-routes.md");

/// Recipe 11 of `docs/rest-routes.md`, with the detection under test.
fn recipe(detection: ConflictDetection) -> RestConfig {
    let section = DOC
        .split("\n## ")
        .find(|s| s.starts_with("11. A server that checks nothing"))
        .expect("recipe 11 in docs/rest-routes.md");
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("its TOML block");
    let mut config: RestConfig = toml::from_str(block).expect("recipe 11 parses");
    if let Some(posts) = config.tables.get_mut("posts") {
        assert_eq!(posts.conflict_detection, ConflictDetection::PullFirst);
        posts.conflict_detection = detection;
    }
    config
}

fn engine(server: &ReferenceServer, detection: ConflictDetection, strategy: Strategy) -> Engine {
    let mut config = recipe(detection);
    config.base_url = server.url().to_owned();
    let transport = RestTransport::from_config(config)
        .request_timeout(Duration::from_secs(2))
        .build()
        .expect("transport");
    let builder = Engine::builder()
        .store(MemoryStore::new())
        .table(TableSpec::new("posts"))
        .transport(transport)
        .settings(settings());
    with_strategy(builder, strategy).start().expect("engine")
}

fn with_strategy(builder: EngineBuilder, strategy: Strategy) -> EngineBuilder {
    match strategy {
        Strategy::ServerWins => builder.conflicts("posts", ServerWins),
        Strategy::ClientWins => builder.conflicts("posts", ClientWins),
        Strategy::LastWriteWins => builder.conflicts("posts", LastWriteWins::new()),
        Strategy::FieldMerge => builder.conflicts("posts", FieldMerge::new()),
        Strategy::Park => builder.conflicts("posts", ParkForApp),
    }
}

/// Live records by id, without the server-owned `updatedAt`.
fn by_id(records: Vec<Value>) -> BTreeMap<String, Value> {
    records
        .into_iter()
        .map(|mut r| {
            if let Some(map) = r.as_object_mut() {
                map.remove("updatedAt");
            }
            let id = r["id"].as_str().unwrap_or_default().to_owned();
            (id, r)
        })
        .collect()
}

async fn local(engine: &Engine) -> BTreeMap<String, Value> {
    let t = engine.table::<Value>("posts").expect("table");
    by_id(t.scan(None, 1000).await.expect("scan"))
}

/// Server and local hold the same live records, nothing is queued, and one more cycle sends
/// nothing (every request it makes is a GET).
async fn converged_and_quiet(server: &ReferenceServer, engine: &Engine, what: &str) {
    assert_eq!(
        local(engine).await,
        by_id(server.records("posts")),
        "{what}"
    );
    assert!(
        engine.outbox(None, 10).expect("outbox").is_empty(),
        "{what}: queued"
    );
    server.clear_log();
    let report = engine.sync().await.expect("sync");
    assert_eq!(
        (report.pushed, report.conflicts),
        (0, 0),
        "{what}: {report:?}"
    );
    let writes: Vec<_> = server
        .request_log()
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(writes.is_empty(), "{what}: sent again: {writes:?}");
}

/// A LWW decision needs the two edits apart on the clock (same host: no skew).
async fn tick() {
    tokio::time::sleep(Duration::from_millis(30)).await;
}

/// A synced record, then an edit on the server (another client) and a local edit, in the
/// given order. Field merge edits different fields; the others edit the same one.
async fn both_edited(
    server: &ReferenceServer,
    engine: &Engine,
    strategy: Strategy,
    remote_first: bool,
) {
    let t = engine.table::<Value>("posts").expect("table");
    t.put(&json!({"id": "p1", "title": "base", "body": "b"}))
        .await
        .expect("put");
    engine.sync().await.expect("sync");
    let (remote, mine) = if strategy == Strategy::FieldMerge {
        (
            json!({"body": "remote body"}),
            json!({"title": "local title"}),
        )
    } else {
        (json!({"title": "remote"}), json!({"title": "local"}))
    };
    if remote_first {
        server
            .update_direct("posts", "p1", remote)
            .expect("remote edit");
        tick().await;
        t.update("p1", mine).await.expect("local edit");
    } else {
        t.update("p1", mine).await.expect("local edit");
        tick().await;
        server
            .update_direct("posts", "p1", remote)
            .expect("remote edit");
    }
}

/// What the strategy promises for `both_edited`: (title, body) on both sides.
fn promised(strategy: Strategy, remote_first: bool) -> (&'static str, &'static str) {
    match strategy {
        Strategy::ServerWins | Strategy::Park => ("remote", "b"),
        Strategy::ClientWins => ("local", "b"),
        Strategy::LastWriteWins if remote_first => ("local", "b"),
        Strategy::LastWriteWins => ("remote", "b"),
        Strategy::FieldMerge => ("local title", "remote body"),
    }
}

#[tokio::test]
async fn without_detection_an_unchecked_server_loses_the_remote_edit_silently() {
    // The problem the settings below solve: push first, nothing refused, no conflict.
    let server = unchecked_server().await;
    let engine = engine(&server, ConflictDetection::Server, Strategy::ServerWins);
    both_edited(&server, &engine, Strategy::ServerWins, true).await;
    let report = engine.sync().await.expect("sync");
    assert_eq!(report.conflicts, 0, "{report:?}");
    assert_eq!(
        server.record("posts", "p1").expect("live")["title"],
        "local"
    );
}

#[tokio::test]
async fn every_strategy_keeps_its_promise_on_a_server_that_checks_nothing() {
    for detection in DETECTIONS {
        for strategy in STRATEGIES {
            for remote_first in [true, false] {
                let what = format!("{detection:?}, {strategy:?}, remote first {remote_first}");
                let server = unchecked_server().await;
                let engine = engine(&server, detection, strategy);
                both_edited(&server, &engine, strategy, remote_first).await;
                let report = engine.sync().await.expect("sync");
                assert_eq!(
                    (report.conflicts, report.dead_lettered),
                    (1, 0),
                    "{what}: {report:?}"
                );
                if strategy == Strategy::Park {
                    assert_eq!(
                        engine.parked_conflicts(None).expect("parked").len(),
                        1,
                        "{what}"
                    );
                    assert_eq!(
                        server.record("posts", "p1").expect("live")["title"],
                        "remote",
                        "{what}: parked, nothing pushed over the remote edit"
                    );
                    let merged = json!({"id": "p1", "title": "settled", "body": "b"});
                    engine
                        .settle_conflict(
                            "posts",
                            "p1",
                            tidesync::Resolution::Merged(
                                merged.as_object().cloned().expect("object"),
                            ),
                        )
                        .await
                        .expect("settle");
                    engine.sync().await.expect("sync");
                    assert_eq!(
                        server.record("posts", "p1").expect("live")["title"],
                        "settled",
                        "{what}"
                    );
                } else {
                    // Client-wins and a local LWW win may need the next cycle's push (a pull
                    // path decision re-queues the local version); nothing else is sent.
                    engine.sync().await.expect("sync");
                    let (title, body) = promised(strategy, remote_first);
                    let on_server = server.record("posts", "p1").expect("live");
                    assert_eq!(
                        (on_server["title"].clone(), on_server["body"].clone()),
                        (json!(title), json!(body)),
                        "{what}"
                    );
                }
                converged_and_quiet(&server, &engine, &what).await;
            }
        }
    }
}

/// Deletes on either side meet an edit on the other: server wins keeps the server's side,
/// client wins the local one.
#[tokio::test]
async fn deletes_meeting_edits_keep_the_promise_on_a_server_that_checks_nothing() {
    for detection in DETECTIONS {
        for strategy in [Strategy::ServerWins, Strategy::ClientWins] {
            for local_delete in [true, false] {
                let what = format!("{detection:?}, {strategy:?}, local delete {local_delete}");
                let server = unchecked_server().await;
                let engine = engine(&server, detection, strategy);
                let t = engine.table::<Value>("posts").expect("table");
                t.put(&json!({"id": "p1", "title": "base"}))
                    .await
                    .expect("put");
                engine.sync().await.expect("sync");
                if local_delete {
                    server
                        .update_direct("posts", "p1", json!({"title": "remote"}))
                        .expect("remote edit");
                    t.delete("p1").await.expect("local delete");
                } else {
                    server.delete_direct("posts", "p1").expect("remote delete");
                    t.update("p1", json!({"title": "local"}))
                        .await
                        .expect("local edit");
                }
                let report = engine.sync().await.expect("sync");
                assert_eq!(
                    (report.conflicts, report.dead_lettered),
                    (1, 0),
                    "{what}: {report:?}"
                );
                // A re-created record (client wins over a remote delete) goes out as a create,
                // which meets the tombstone (409) and is sent again as an upsert: up to two
                // more cycles.
                for _ in 0..2 {
                    if engine.outbox(None, 10).expect("outbox").is_empty() {
                        break;
                    }
                    let report = engine.sync().await.expect("sync");
                    assert_eq!(report.dead_lettered, 0, "{what}: {report:?}");
                }
                let live = server.record("posts", "p1");
                let want = match (strategy, local_delete) {
                    (Strategy::ServerWins, true) => Some("remote"),
                    (Strategy::ClientWins, false) => Some("local"),
                    _ => None,
                };
                let log: Vec<String> = server
                    .request_log()
                    .into_iter()
                    .map(|r| format!("{} {} -> {:?}", r.method, r.path, r.status))
                    .collect();
                assert_eq!(
                    live.as_ref().map(|r| r["title"].clone()),
                    want.map(|w| json!(w)),
                    "{what}: {log:?}"
                );
                converged_and_quiet(&server, &engine, &what).await;
            }
        }
    }
}

/// A pull-first table is pulled even by a push alone: the conflict is found on the pull path
/// before anything goes out.
#[tokio::test]
async fn a_push_of_a_pull_first_table_pulls_it_first() {
    let server = unchecked_server().await;
    let engine = engine(&server, ConflictDetection::PullFirst, Strategy::ServerWins);
    both_edited(&server, &engine, Strategy::ServerWins, true).await;
    server.clear_log();
    let report = engine.push().await.expect("push");
    assert_eq!((report.conflicts, report.pushed), (1, 0), "{report:?}");
    assert!(report.pages >= 1, "pulled: {report:?}");
    let methods: Vec<String> = server.request_log().into_iter().map(|r| r.method).collect();
    assert!(methods.iter().all(|m| m == "GET"), "{methods:?}");
    assert_eq!(
        server.record("posts", "p1").expect("live")["title"],
        "remote"
    );
    converged_and_quiet(&server, &engine, "push of a pull-first table").await;
}

/// Fetch before write: one GET before each update and delete of a synced record, none before
/// a create; a write whose answer was lost is not mistaken for a remote edit when retried.
#[tokio::test]
async fn fetch_before_write_reads_the_record_before_updates_and_deletes_only() {
    use tidesync_testkit::server::{FaultFilter, FaultKind};
    let server = unchecked_server().await;
    let engine = engine(
        &server,
        ConflictDetection::FetchBeforeWrite,
        Strategy::ServerWins,
    );
    let t = engine.table::<Value>("posts").expect("table");
    server.clear_log();
    t.put(&json!({"id": "a", "title": "a"})).await.expect("put");
    t.put(&json!({"id": "b", "title": "b"})).await.expect("put");
    engine.push().await.expect("push");
    let fetched = |server: &ReferenceServer| {
        server
            .request_log()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path.starts_with("/api/posts/"))
            .count()
    };
    assert_eq!(fetched(&server), 0, "creates fetch nothing");
    t.update("a", json!({"title": "a2"})).await.expect("update");
    t.delete("b").await.expect("delete");
    // The update commits, but its answer is lost: the retry fetches a record that shows
    // exactly what it writes, which is no conflict.
    server.fail_next_where(
        FaultFilter::writes().under("/api/posts/a"),
        1,
        FaultKind::CommitThenDrop,
    );
    let report = engine.sync().await.expect("sync");
    assert_eq!(
        (report.conflicts, report.dead_lettered),
        (0, 0),
        "{report:?}"
    );
    assert!(fetched(&server) >= 2, "one fetch per update and delete");
    assert_eq!(server.record("posts", "a").expect("live")["title"], "a2");
    assert!(server.record("posts", "b").is_none());
    converged_and_quiet(&server, &engine, "fetch before write").await;
}

/// A soft delete that keeps the id: the server answers a create of a deleted record's id with
/// 500 "duplicate id". Client wins against that remote delete creates the record again: the
/// 500 is settled by the probe (no live record: a tombstone holds the id) and the record goes
/// out through the recipe's `recreate` route (a PUT), never dead-lettered.
#[tokio::test]
async fn keep_local_over_a_soft_delete_that_keeps_the_id_recreates_through_the_recreate_route() {
    for detection in DETECTIONS {
        let what = format!("{detection:?}");
        let server = ReferenceServer::builder()
            .without_auth()
            .collection(
                "posts",
                CollectionConfig::default()
                    .concurrency(Concurrency::Unchecked)
                    .duplicate_id_500(true),
            )
            .start()
            .await;
        let engine = engine(&server, detection, Strategy::ClientWins);
        let t = engine.table::<Value>("posts").expect("table");
        t.put(&json!({"id": "p1", "title": "base"}))
            .await
            .expect("put");
        engine.sync().await.expect("sync");
        server.delete_direct("posts", "p1").expect("remote delete");
        t.update("p1", json!({"title": "local"}))
            .await
            .expect("local edit");
        let mut cycles = 0;
        while !engine.outbox(None, 10).expect("outbox").is_empty() {
            cycles += 1;
            assert!(cycles <= 3, "{what}: not settled in 3 cycles");
            let report = engine.sync().await.expect("sync");
            assert_eq!(report.dead_lettered, 0, "{what}: {report:?}");
        }
        let statuses: Vec<(String, Option<u16>)> = server
            .request_log()
            .into_iter()
            .filter(|r| r.method != "GET")
            .map(|r| (r.method, r.status))
            .collect();
        assert!(
            statuses.contains(&("POST".to_owned(), Some(500))),
            "{what}: the create met the kept id: {statuses:?}"
        );
        assert_eq!(
            server.record("posts", "p1").expect("written again")["title"],
            "local",
            "{what}: {statuses:?}"
        );
        converged_and_quiet(&server, &engine, &what).await;
    }
}

/// A create that committed but was answered 500: the probe finds the record as sent, so it
/// is acknowledged at once (no retry, no duplicate).
#[tokio::test]
async fn a_create_answered_500_after_it_committed_is_settled_by_the_probe() {
    use tidesync_testkit::server::{FaultFilter, FaultKind};
    let server = unchecked_server().await;
    let engine = engine(
        &server,
        ConflictDetection::FetchBeforeWrite,
        Strategy::ServerWins,
    );
    let t = engine.table::<Value>("posts").expect("table");
    t.put(&json!({"id": "p1", "title": "a"}))
        .await
        .expect("put");
    server.fail_next_where(
        FaultFilter::writes().under("/api/posts"),
        1,
        FaultKind::CommitThenStatus(500),
    );
    let report = engine.sync().await.expect("sync");
    assert_eq!(
        (report.pushed, report.retried, report.dead_lettered),
        (1, 0, 0),
        "{report:?}"
    );
    assert_eq!(server.create_count("posts", "p1"), 1);
    converged_and_quiet(&server, &engine, "create answered 500").await;
}
