//! The write-path recipes of `docs/rest-routes.md` (bare `If-Match` + 404, conflict as 400,
//! conditional update by query, row envelopes with required fields) through the whole engine, parsed from the doc and run against
//! the reference server configured to behave that way: queued creates, updates and deletes
//! converge exactly; a concurrent edit on both sides gives each strategy its promised outcome
//! (server wins, client wins, field merge and last write wins on the push and the pull path;
//! park on the push path); one more cycle sends nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tidesync::{Engine, MemoryStore, TableSpec};
use tidesync_conflict_policies::ClientWins;
use tidesync_testkit::server::{CollectionConfig, Concurrency, ReferenceServer};
use tidesync_transport_rest::{RestConfig, RestTransport};

use crate::support::settings;

const DOC: &str = include_str!("../../docs/rest-routes.md");

/// The doc's TOML block under the heading that starts with `heading`.
fn recipe(heading: &str) -> RestConfig {
    let section = DOC
        .split("\n## ")
        .find(|s| s.starts_with(heading))
        .unwrap_or_else(|| panic!("no section `{heading}` in docs/rest-routes.md"));
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .unwrap_or_else(|| panic!("no TOML block under `{heading}`"));
    toml::from_str(block).unwrap_or_else(|e| panic!("`{heading}` does not parse: {e}"))
}

/// The shapes: doc heading, table, how the server behaves.
fn shapes() -> [(&'static str, &'static str, CollectionConfig); 4] {
    let config = CollectionConfig::default;
    [
        (
            "6. If-Match with a bare version",
            "tasks",
            config().concurrency(Concurrency::BareIfMatch404),
        ),
        (
            "7. A conflict answered as 400",
            "items",
            config().concurrency(Concurrency::Conflict400),
        ),
        ("8. Conditional update by query", "posts", config()),
        (
            "9. Row envelopes, options and required fields",
            "rows",
            config()
                .row_envelope(true)
                .required_fields(&["deleted", "version"]),
        ),
    ]
}

async fn server_for(table: &str, config: CollectionConfig) -> ReferenceServer {
    ReferenceServer::builder()
        .without_auth()
        .collection(table, config)
        .start()
        .await
}

fn engine_for(server: &ReferenceServer, heading: &str, table: &str, client_wins: bool) -> Engine {
    engine_with(server, heading, table, |b| {
        if client_wins {
            b.conflicts(table, ClientWins)
        } else {
            b
        }
    })
}

fn engine_with(
    server: &ReferenceServer,
    heading: &str,
    table: &str,
    tweak: impl FnOnce(tidesync::EngineBuilder) -> tidesync::EngineBuilder,
) -> Engine {
    let mut config = recipe(heading);
    config.base_url = server.url().to_owned();
    let transport = RestTransport::from_config(config)
        .request_timeout(Duration::from_secs(2))
        .build()
        .expect("the recipe builds");
    let builder = Engine::builder()
        .store(MemoryStore::new())
        .table(TableSpec::new(table))
        .transport(transport)
        .settings(settings());
    tweak(builder).start().expect("engine starts")
}

/// Live records by id, without the server-owned `updatedAt`.
fn by_id(records: Vec<Value>) -> BTreeMap<String, Value> {
    records
        .into_iter()
        .map(|mut r| {
            if let Some(map) = r.as_object_mut() {
                map.remove("updatedAt");
            }
            // A string-keyed table holds the server's integer ids as text.
            let id = match &r["id"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if let Some(map) = r.as_object_mut() {
                map.insert("id".into(), Value::String(id.clone()));
            }
            (id, r)
        })
        .collect()
}

async fn local(engine: &Engine, table: &str) -> BTreeMap<String, Value> {
    let t = engine.table::<Value>(table).expect("table");
    by_id(t.scan(None, 1000).await.expect("scan"))
}

/// One more cycle sends nothing: every request it makes is a GET.
async fn quiet_cycle(server: &ReferenceServer, engine: &Engine, what: &str) {
    server.clear_log();
    let report = engine.sync().await.expect("sync");
    assert_eq!(report.pushed, 0, "{what}");
    let writes: Vec<_> = server
        .request_log()
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(writes.is_empty(), "{what}: sent again: {writes:?}");
}

#[tokio::test]
async fn queued_creates_updates_and_deletes_converge_on_every_write_shape() {
    for (heading, table, server_config) in shapes() {
        let server = server_for(table, server_config).await;
        let engine = engine_for(&server, heading, table, false);
        let t = engine.table::<Value>(table).expect("table");
        for id in ["a", "b", "c"] {
            t.put(&json!({"id": id, "title": id})).await.expect("put");
        }
        engine.sync().await.expect("first sync");
        // Queued while not syncing: updates and deletes of synced records (they carry a base
        // version, so the precondition travels), a create edited twice, a create deleted.
        t.update("a", json!({"title": "a2"})).await.expect("update");
        t.update("a", json!({"title": "a3"})).await.expect("update");
        t.delete("b").await.expect("delete");
        t.put(&json!({"id": "d", "title": "d"})).await.expect("put");
        t.update("d", json!({"title": "d2"})).await.expect("update");
        t.put(&json!({"id": "e", "title": "e"})).await.expect("put");
        t.delete("e").await.expect("delete");
        let report = engine.sync().await.expect("sync");
        assert_eq!(
            (report.dead_lettered, report.conflicts),
            (0, 0),
            "{heading}: {report:?}"
        );
        let on_server = by_id(server.records(table));
        assert_eq!(
            on_server.keys().collect::<Vec<_>>(),
            ["a", "c", "d"],
            "{heading}"
        );
        assert_eq!(on_server["a"]["title"], "a3", "{heading}");
        assert_eq!(on_server["d"]["title"], "d2", "{heading}");
        assert_eq!(
            server.record_any(table, "b").expect("tombstone")["deleted"],
            true,
            "{heading}: the delete reached the server"
        );
        assert_eq!(
            local(&engine, table).await,
            on_server,
            "{heading}: converged"
        );
        quiet_cycle(&server, &engine, heading).await;
    }
}

/// A synced record, then an edit on the server (another client, which writes the next
/// version as a client-owned-version server expects) and a local edit of the same field.
async fn both_edited(server: &ReferenceServer, engine: &Engine, table: &str) {
    let t = engine.table::<Value>(table).expect("table");
    t.put(&json!({"id": "p1", "title": "base", "body": "b"}))
        .await
        .expect("put");
    engine.sync().await.expect("sync");
    assert_eq!(server.record(table, "p1").expect("pushed")["version"], 1);
    server
        .update_direct(table, "p1", json!({"title": "remote", "version": 2}))
        .expect("remote edit");
    t.update("p1", json!({"title": "local"}))
        .await
        .expect("edit");
}

#[tokio::test]
async fn server_wins_on_the_push_path_on_every_write_shape() {
    for (heading, table, server_config) in shapes() {
        let server = server_for(table, server_config).await;
        let engine = engine_for(&server, heading, table, false);
        both_edited(&server, &engine, table).await;
        let report = engine.push().await.expect("push");
        assert_eq!(
            (report.conflicts, report.dead_lettered),
            (1, 0),
            "{heading}: {report:?}"
        );
        let on_server = server.record(table, "p1").expect("live");
        assert_eq!(
            (on_server["title"].clone(), on_server["version"].clone()),
            (json!("remote"), json!(2)),
            "{heading}: the server's version stands"
        );
        assert_eq!(
            local(&engine, table).await["p1"]["title"],
            "remote",
            "{heading}"
        );
        assert!(
            engine.outbox(None, 10).expect("outbox").is_empty(),
            "{heading}"
        );
        quiet_cycle(&server, &engine, heading).await;
        assert_eq!(
            local(&engine, table).await,
            by_id(server.records(table)),
            "{heading}"
        );
    }
}

#[tokio::test]
async fn client_wins_on_the_push_path_on_every_write_shape() {
    for (heading, table, server_config) in shapes() {
        let server = server_for(table, server_config).await;
        let engine = engine_for(&server, heading, table, true);
        both_edited(&server, &engine, table).await;
        let report = engine.push().await.expect("push");
        assert_eq!(
            (report.conflicts, report.dead_lettered),
            (1, 0),
            "{heading}: {report:?}"
        );
        engine.sync().await.expect("sync");
        let on_server = server.record(table, "p1").expect("live");
        assert_eq!(
            (on_server["title"].clone(), on_server["version"].clone()),
            (json!("local"), json!(3)),
            "{heading}: the local version was written over the remote one"
        );
        assert_eq!(
            local(&engine, table).await,
            by_id(server.records(table)),
            "{heading}"
        );
        assert!(
            engine.outbox(None, 10).expect("outbox").is_empty(),
            "{heading}"
        );
        quiet_cycle(&server, &engine, heading).await;
    }
}

/// A local delete meets a remote edit: the precondition refuses the delete (a 404, a 400 or
/// `[]` depending on the shape), never "already gone". Server wins brings the record back;
/// client wins deletes it on the server.
#[tokio::test]
async fn a_refused_delete_is_a_conflict_on_every_write_shape() {
    for client_wins in [false, true] {
        for (heading, table, server_config) in shapes() {
            let server = server_for(table, server_config).await;
            let engine = engine_for(&server, heading, table, client_wins);
            both_edited(&server, &engine, table).await;
            let t = engine.table::<Value>(table).expect("table");
            t.delete("p1").await.expect("delete");
            let report = engine.push().await.expect("push");
            assert_eq!(
                (report.conflicts, report.dead_lettered),
                (1, 0),
                "{heading}, client wins {client_wins}: {report:?}"
            );
            engine.sync().await.expect("sync");
            if client_wins {
                assert!(server.record(table, "p1").is_none(), "{heading}: deleted");
                assert!(t.get("p1").await.expect("get").is_none(), "{heading}");
            } else {
                assert_eq!(
                    server.record(table, "p1").expect("still live")["title"],
                    "remote",
                    "{heading}"
                );
                assert_eq!(
                    t.get("p1").await.expect("get").expect("back")["title"],
                    "remote",
                    "{heading}: the server's version is back locally"
                );
            }
            assert_eq!(
                local(&engine, table).await,
                by_id(server.records(table)),
                "{heading}"
            );
            quiet_cycle(&server, &engine, heading).await;
        }
    }
}

/// Server-assigned keys (recipe 10): the create leaves the temporary key and the local-only
/// field out, the minted id replaces the temporary key locally, records created on the server
/// pull in, queued edits and deletes converge, conflicts resolve both ways.
#[tokio::test]
async fn server_assigned_keys_converge_and_resolve_conflicts() {
    let heading = "10. Server-assigned keys";
    for client_wins in [false, true] {
        let server = server_for(
            "memos",
            CollectionConfig::default()
                .server_ids(true)
                .refuse_client_ids(true),
        )
        .await;
        let engine = engine_for(&server, heading, "memos", client_wins);
        let t = engine.table::<Value>("memos").expect("table");
        t.put(&json!({"id": "tmp-1", "text": "a", "draft": "mine"}))
            .await
            .expect("put");
        t.put(&json!({"id": "tmp-2", "text": "b"}))
            .await
            .expect("put");
        server
            .insert_direct("memos", json!({"text": "from the server"}))
            .expect("server create");
        let report = engine.sync().await.expect("sync");
        assert_eq!(report.dead_lettered, 0, "{report:?}");
        let posts: Vec<Value> = server
            .request_log()
            .into_iter()
            .filter(|r| r.method == "POST")
            .map(|r| serde_json::from_str(&r.body).expect("json body"))
            .collect();
        assert!(
            posts
                .iter()
                .all(|b| b.get("id").is_none() && b.get("draft").is_none()),
            "{posts:?}"
        );
        assert!(t.get("tmp-1").await.expect("get").is_none(), "remapped");
        let mut on_server = by_id(server.records("memos"));
        assert_eq!(on_server.len(), 3, "{on_server:?}");
        let mut here = local(&engine, "memos").await;
        for record in here.values_mut() {
            record.as_object_mut().map(|r| r.remove("draft"));
        }
        assert_eq!(here, on_server, "converged, the server's record pulled in");
        // Queued edits on minted keys, a remote edit meeting a local one.
        let by_text = |text: &str| {
            on_server
                .iter()
                .find(|(_, r)| r["text"] == text)
                .map(|(k, _)| k.clone())
                .expect("record")
        };
        let (a, b, s) = (by_text("a"), by_text("b"), by_text("from the server"));
        t.update(a.as_str(), json!({"text": "a2"}))
            .await
            .expect("update");
        t.delete(s.as_str()).await.expect("delete");
        server
            .update_direct("memos", b.as_str(), json!({"text": "remote"}))
            .expect("remote edit");
        t.update(b.as_str(), json!({"text": "local"}))
            .await
            .expect("update");
        let report = engine.push().await.expect("push");
        assert_eq!(
            (report.conflicts, report.dead_lettered),
            (1, 0),
            "{report:?}"
        );
        engine.sync().await.expect("sync");
        on_server = by_id(server.records("memos"));
        let want_b = if client_wins { "local" } else { "remote" };
        assert_eq!(on_server[&b]["text"], want_b, "client wins {client_wins}");
        assert_eq!(on_server[&a]["text"], "a2");
        assert!(!on_server.contains_key(&s), "deleted");
        let mut here = local(&engine, "memos").await;
        for record in here.values_mut() {
            record.as_object_mut().map(|r| r.remove("draft"));
        }
        assert_eq!(here, on_server, "converged");
        quiet_cycle(&server, &engine, heading).await;
    }
}

#[tokio::test]
async fn field_merge_on_the_push_path_on_every_write_shape() {
    for (heading, table, server_config) in shapes() {
        let server = server_for(table, server_config).await;
        let engine = engine_with(&server, heading, table, |b| {
            b.conflicts(table, tidesync_conflict_merge::FieldMerge::new())
        });
        let t = engine.table::<Value>(table).expect("table");
        t.put(&json!({"id": "p1", "title": "base", "body": "b"}))
            .await
            .expect("put");
        engine.sync().await.expect("sync");
        server
            .update_direct(table, "p1", json!({"body": "remote body", "version": 2}))
            .expect("remote edit");
        t.update("p1", json!({"title": "local title"}))
            .await
            .expect("edit");
        let report = engine.push().await.expect("push");
        assert_eq!(
            (report.conflicts, report.dead_lettered),
            (1, 0),
            "{heading}: {report:?}"
        );
        engine.sync().await.expect("sync");
        let on_server = server.record(table, "p1").expect("live");
        assert_eq!(
            (
                on_server["title"].clone(),
                on_server["body"].clone(),
                on_server["version"].clone()
            ),
            (json!("local title"), json!("remote body"), json!(3)),
            "{heading}: both edits kept"
        );
        assert_eq!(
            local(&engine, table).await,
            by_id(server.records(table)),
            "{heading}"
        );
        quiet_cycle(&server, &engine, heading).await;
    }
}

#[tokio::test]
async fn parked_conflicts_on_the_push_path_wait_for_the_application_on_every_write_shape() {
    for (heading, table, server_config) in shapes() {
        let server = server_for(table, server_config).await;
        let engine = engine_with(&server, heading, table, |b| {
            b.conflicts(table, tidesync_conflict_policies::ParkForApp)
        });
        both_edited(&server, &engine, table).await;
        let report = engine.push().await.expect("push");
        assert_eq!(
            (report.conflicts, report.dead_lettered),
            (1, 0),
            "{heading}: {report:?}"
        );
        let parked = engine.parked_conflicts(None).expect("parked");
        assert_eq!(parked.len(), 1, "{heading}");
        engine.push().await.expect("push");
        assert_eq!(
            server.record(table, "p1").expect("live")["title"],
            "remote",
            "{heading}: parked, nothing pushed"
        );
        let merged = json!({"id": "p1", "title": "merged", "body": "b"})
            .as_object()
            .cloned()
            .expect("object");
        engine
            .settle_conflict(table, "p1", tidesync::Resolution::Merged(merged))
            .await
            .expect("settle");
        engine.sync().await.expect("sync");
        let on_server = server.record(table, "p1").expect("live");
        assert_eq!(
            (on_server["title"].clone(), on_server["version"].clone()),
            (json!("merged"), json!(3)),
            "{heading}"
        );
        assert!(engine.parked_conflicts(None).expect("parked").is_empty());
        assert_eq!(
            local(&engine, table).await,
            by_id(server.records(table)),
            "{heading}"
        );
        quiet_cycle(&server, &engine, heading).await;
    }
}

#[tokio::test]
async fn client_wins_on_the_pull_path_pushes_over_the_remote_version_on_every_write_shape() {
    for (heading, table, server_config) in shapes() {
        let server = server_for(table, server_config).await;
        let engine = engine_for(&server, heading, table, true);
        both_edited(&server, &engine, table).await;
        engine.pull(None).await.expect("pull");
        assert_eq!(
            local(&engine, table).await["p1"]["title"],
            "local",
            "{heading}: kept"
        );
        let report = engine.push().await.expect("push");
        assert_eq!(
            (report.pushed, report.conflicts, report.dead_lettered),
            (1, 0, 0),
            "{heading}: {report:?}"
        );
        let on_server = server.record(table, "p1").expect("live");
        assert_eq!(
            (on_server["title"].clone(), on_server["version"].clone()),
            (json!("local"), json!(3)),
            "{heading}"
        );
        assert_eq!(
            local(&engine, table).await,
            by_id(server.records(table)),
            "{heading}"
        );
        quiet_cycle(&server, &engine, heading).await;
    }
}

/// A server with no concurrency control writes a local edit into a row deleted remotely and
/// answers it with `deleted: true`: a remote-delete conflict, never a success, and server wins
/// keeps the delete. (Client wins against it needs a configurable re-create route: the keep-local
/// upsert goes through the update route, a PATCH, which such a server answers with the
/// tombstone again; not done here.)
#[tokio::test]
async fn a_write_answered_with_a_tombstone_is_a_remote_delete_conflict() {
    let server = server_for(
        "posts",
        CollectionConfig::default().concurrency(Concurrency::Unchecked),
    )
    .await;
    let routes = tidesync_transport_rest::TableRoutes::reference_server("posts").update(
        tidesync_transport_rest::WriteRoute::patch("/api/posts/{id}"),
    );
    let transport = RestTransport::builder(server.url())
        .request_timeout(Duration::from_secs(2))
        .table("posts", routes)
        .build()
        .expect("transport");
    let engine = Engine::builder()
        .store(MemoryStore::new())
        .table(TableSpec::new("posts"))
        .transport(transport)
        .settings(settings())
        .start()
        .expect("engine");
    let t = engine.table::<Value>("posts").expect("table");
    t.put(&json!({"id": "p1", "title": "base"}))
        .await
        .expect("put");
    engine.sync().await.expect("sync");
    server.delete_direct("posts", "p1").expect("remote delete");
    t.update("p1", json!({"title": "local"}))
        .await
        .expect("edit");
    let report = engine.push().await.expect("push");
    assert_eq!(
        (report.conflicts, report.dead_lettered, report.pushed),
        (1, 0, 0),
        "{report:?}"
    );
    engine.sync().await.expect("sync");
    assert!(server.record("posts", "p1").is_none(), "the delete stands");
    assert!(t.get("p1").await.expect("get").is_none(), "and locally");
    assert!(engine.outbox(None, 10).expect("outbox").is_empty());
    assert_eq!(
        local(&engine, "posts").await,
        by_id(server.records("posts"))
    );
    quiet_cycle(&server, &engine, "tombstone answer").await;
}

/// Plain-row bulk routes (recipe 12): queued creates, updates and deletes go out as one
/// plain-row request per kind, converge exactly, and a record edited on both sides meets its
/// conflict on the pull path first (the routes check no versions); one more cycle sends
/// nothing.
#[tokio::test]
async fn plain_row_bulk_routes_converge() {
    let heading = "12. Plain-row bulk routes";
    let server = server_for("lines", CollectionConfig::default()).await;
    let engine = engine_for(&server, heading, "lines", false);
    let t = engine.table::<Value>("lines").expect("table");
    for i in 0..5 {
        t.put(&json!({"id": format!("l{i}"), "title": "new", "n": i}))
            .await
            .expect("put");
    }
    let report = engine.sync().await.expect("sync");
    assert_eq!((report.pushed, report.dead_lettered), (5, 0), "{report:?}");
    let writes = |server: &ReferenceServer| -> Vec<String> {
        server
            .request_log()
            .into_iter()
            .filter(|r| r.method != "GET")
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    };
    assert_eq!(writes(&server), ["POST /api/lines/rows"]);
    server.clear_log();
    for i in 0..3 {
        t.update(format!("l{i}").as_str(), json!({"title": "edited"}))
            .await
            .expect("update");
    }
    t.delete("l4").await.expect("delete");
    // Another client edits l0 meanwhile: the pull before the push finds the conflict, and
    // the server's version wins (the default strategy).
    server
        .update_direct("lines", "l0", json!({"title": "remote"}))
        .expect("remote edit");
    let report = engine.sync().await.expect("sync");
    assert_eq!(
        (report.pushed, report.conflicts, report.dead_lettered),
        (3, 1, 0),
        "{report:?}"
    );
    assert_eq!(
        writes(&server),
        ["PATCH /api/lines/rows", "DELETE /api/lines/rows"]
    );
    let on_server = by_id(server.records("lines"));
    assert_eq!(
        on_server.keys().collect::<Vec<_>>(),
        ["l0", "l1", "l2", "l3"]
    );
    assert_eq!(on_server["l0"]["title"], "remote");
    assert_eq!(on_server["l1"]["title"], "edited");
    assert_eq!(local(&engine, "lines").await, on_server, "converged");
    quiet_cycle(&server, &engine, heading).await;
}

/// `dead-letters edit` on a server-assigned-key table: the fixed record is written as the
/// server's records are, without its key; the dead letter keeps its key and goes out again,
/// and the minted id replaces the temporary one.
#[tokio::test]
async fn a_dead_lettered_create_of_a_server_id_table_is_edited_without_its_key() {
    use tidesync_testkit::server::{FaultFilter, FaultKind};
    let heading = "10. Server-assigned keys";
    let server = server_for(
        "memos",
        CollectionConfig::default()
            .server_ids(true)
            .refuse_client_ids(true),
    )
    .await;
    let engine = engine_for(&server, heading, "memos", false);
    let t = engine.table::<Value>("memos").expect("table");
    t.put(&json!({"id": "tmp-1", "text": "typo"}))
        .await
        .expect("put");
    server.fail_next_where(
        FaultFilter::writes().under("/api/memos"),
        1,
        FaultKind::status(422),
    );
    let report = engine.sync().await.expect("sync");
    assert_eq!(report.dead_lettered, 1, "{report:?}");
    let dead = engine.dead_letters(Some("memos")).expect("dead letters");
    let seq = dead.first().expect("one").seq;
    // A record with another key is still refused.
    let err = engine
        .retry_dead_letter(
            seq,
            json!({"id": "tmp-9", "text": "x"}).as_object().cloned(),
        )
        .await
        .expect_err("another key");
    assert_eq!(err.kind(), tidesync::ErrorKind::InvalidInput, "{err}");
    let edited = engine
        .retry_dead_letter(seq, json!({"text": "fixed"}).as_object().cloned())
        .await
        .expect("edited without its key");
    assert_eq!(
        edited.record.as_ref().map(|r| r["id"].clone()),
        Some(json!("tmp-1"))
    );
    let report = engine.sync().await.expect("sync");
    assert_eq!((report.pushed, report.dead_lettered), (1, 0), "{report:?}");
    let on_server = by_id(server.records("memos"));
    assert_eq!(on_server.len(), 1);
    assert_eq!(on_server.values().next().expect("one")["text"], "fixed");
    assert_eq!(local(&engine, "memos").await, on_server, "remapped");
    quiet_cycle(&server, &engine, heading).await;
}

#[tokio::test]
async fn server_wins_on_the_pull_path_on_every_write_shape() {
    for (heading, table, server_config) in shapes() {
        let server = server_for(table, server_config).await;
        let engine = engine_for(&server, heading, table, false);
        both_edited(&server, &engine, table).await;
        let pulled = engine.pull(None).await.expect("pull");
        assert_eq!(pulled.conflicts, 1, "{heading}: {pulled:?}");
        assert_eq!(
            local(&engine, table).await["p1"]["title"],
            "remote",
            "{heading}: the server's version replaced the local edit"
        );
        assert!(
            engine.outbox(None, 10).expect("outbox").is_empty(),
            "{heading}: the local edit was dropped, not queued"
        );
        let on_server = server.record(table, "p1").expect("live");
        assert_eq!(
            (on_server["title"].clone(), on_server["version"].clone()),
            (json!("remote"), json!(2)),
            "{heading}"
        );
        quiet_cycle(&server, &engine, heading).await;
        assert_eq!(
            local(&engine, table).await,
            by_id(server.records(table)),
            "{heading}"
        );
    }
}

#[tokio::test]
async fn field_merge_on_the_pull_path_on_every_write_shape() {
    for (heading, table, server_config) in shapes() {
        let server = server_for(table, server_config).await;
        let engine = engine_with(&server, heading, table, |b| {
            b.conflicts(table, tidesync_conflict_merge::FieldMerge::new())
        });
        let t = engine.table::<Value>(table).expect("table");
        t.put(&json!({"id": "p1", "title": "base", "body": "b"}))
            .await
            .expect("put");
        engine.sync().await.expect("sync");
        server
            .update_direct(table, "p1", json!({"body": "remote body", "version": 2}))
            .expect("remote edit");
        t.update("p1", json!({"title": "local title"}))
            .await
            .expect("edit");
        let pulled = engine.pull(None).await.expect("pull");
        assert_eq!(pulled.conflicts, 1, "{heading}: {pulled:?}");
        let merged = local(&engine, table).await;
        assert_eq!(
            (merged["p1"]["title"].clone(), merged["p1"]["body"].clone()),
            (json!("local title"), json!("remote body")),
            "{heading}: merged locally"
        );
        let report = engine.push().await.expect("push");
        assert_eq!(
            (report.pushed, report.conflicts, report.dead_lettered),
            (1, 0, 0),
            "{heading}: the merge goes out against the remote version: {report:?}"
        );
        let on_server = server.record(table, "p1").expect("live");
        assert_eq!(
            (
                on_server["title"].clone(),
                on_server["body"].clone(),
                on_server["version"].clone()
            ),
            (json!("local title"), json!("remote body"), json!(3)),
            "{heading}: both edits kept"
        );
        quiet_cycle(&server, &engine, heading).await;
        assert_eq!(
            local(&engine, table).await,
            by_id(server.records(table)),
            "{heading}"
        );
    }
}

/// Last write wins, the local edit being the later one (made 2.1 s after the server's: the
/// server's clock is known through its `Date` header, to the second, so edits closer than that
/// cannot be ordered and a tie goes to the server): on the push path the refused write is
/// decided for the local side and written over the remote version; on the pull path the pulled
/// version loses to the pending edit, which then goes out. Either way the server ends with the
/// local edit, once.
#[tokio::test]
async fn last_write_wins_on_both_paths_on_every_write_shape() {
    let mut cases = Vec::new();
    for pull_first in [false, true] {
        for (heading, table, server_config) in shapes() {
            let server = server_for(table, server_config).await;
            let engine = engine_with(&server, heading, table, |b| {
                b.conflicts(table, tidesync_conflict_policies::LastWriteWins::new())
            });
            let t = engine.table::<Value>(table).expect("table");
            t.put(&json!({"id": "p1", "title": "base", "body": "b"}))
                .await
                .expect("put");
            engine.sync().await.expect("sync");
            server
                .update_direct(table, "p1", json!({"title": "remote", "version": 2}))
                .expect("remote edit");
            cases.push((pull_first, heading, table, server, engine));
        }
    }
    // One wait for every case: the local edits come clearly later.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for (pull_first, heading, table, server, engine) in cases {
        let path = if pull_first { "pull path" } else { "push path" };
        let t = engine.table::<Value>(table).expect("table");
        t.update("p1", json!({"title": "local"}))
            .await
            .expect("edit");
        if pull_first {
            let pulled = engine.pull(None).await.expect("pull");
            assert_eq!(pulled.conflicts, 1, "{heading}, {path}: {pulled:?}");
            assert_eq!(
                local(&engine, table).await["p1"]["title"],
                "local",
                "{heading}, {path}: the later local edit is kept"
            );
        }
        engine.sync().await.expect("sync");
        engine.sync().await.expect("sync");
        let on_server = server.record(table, "p1").expect("live");
        assert_eq!(
            on_server["title"],
            json!("local"),
            "{heading}, {path}: the later write wins"
        );
        assert!(
            engine.outbox(None, 10).expect("outbox").is_empty(),
            "{heading}, {path}"
        );
        quiet_cycle(&server, &engine, heading).await;
        assert_eq!(
            local(&engine, table).await,
            by_id(server.records(table)),
            "{heading}, {path}"
        );
    }
}
