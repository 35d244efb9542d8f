//! Records from the server in another shape (DESIGN invariant 13): pulled records and the
//! records push answers carry go through the table's `from_remote` decoder and the version
//! steps from the version they carry; a record written by a newer app version is quarantined
//! (and applied once an upgraded app retries it), or stored as it is when the table opts in.

use serde_json::{Value, json};
use tidesync::{Engine, EngineBuilder, MemoryStore, TableSpec};
use tidesync_testkit::server::ReferenceServer;

use crate::support::{settings, transport};

/// Version 2 renamed `name` to `title`; version 3 adds `tags`.
fn posts(version: u32) -> TableSpec {
    TableSpec::new("posts")
        .index("title")
        .version(version)
        .remote_version_field("schemaVersion")
}

fn app(server: &ReferenceServer, store: &MemoryStore, spec: TableSpec) -> EngineBuilder {
    let version = spec.version;
    let mut builder = Engine::builder()
        .store(store.clone())
        .table(spec)
        .transport(transport(server, &["posts"], 2_000))
        .settings(settings())
        .migration("posts", 2, |mut v| {
            let name = v["name"].take();
            let record = v.as_object_mut().ok_or("not an object")?;
            record.remove("name");
            record.insert("title".into(), name);
            Ok(v)
        });
    if version >= 3 {
        builder = builder.migration("posts", 3, |mut v| {
            v["tags"] = json!([]);
            Ok(v)
        });
    }
    builder
}

async fn get(engine: &Engine, id: &str) -> Option<Value> {
    engine
        .table::<Value>("posts")
        .unwrap()
        .get(id)
        .await
        .unwrap()
}

#[tokio::test]
async fn pulled_records_of_older_shapes_are_migrated_and_newer_ones_wait_for_an_upgrade() {
    let server = ReferenceServer::start().await;
    for record in [
        json!({"id": "v1", "schemaVersion": 1, "name": "old"}),
        json!({"id": "v2", "schemaVersion": 2, "title": "current"}),
        // No version field: the table's version is assumed.
        json!({"id": "none", "title": "unversioned"}),
        json!({"id": "v3", "schemaVersion": 3, "title": "future", "tags": ["x"]}),
    ] {
        server.insert_direct("posts", record).unwrap();
    }
    let store = MemoryStore::new();
    let v2 = app(&server, &store, posts(2)).start().unwrap();
    v2.sync().await.unwrap();

    let migrated = get(&v2, "v1").await.expect("the v1 record is stored");
    assert_eq!(migrated["title"], "old", "{migrated}");
    assert_eq!(migrated.get("name"), None, "{migrated}");
    assert_eq!(migrated["schemaVersion"], 2, "{migrated}");
    assert_eq!(get(&v2, "v2").await.unwrap()["title"], "current");
    assert_eq!(get(&v2, "none").await.unwrap()["title"], "unversioned");
    // The index holds the migrated shape.
    let by_title = v2
        .table::<Value>("posts")
        .unwrap()
        .query_eq("title", json!("old"), 10)
        .await
        .unwrap();
    assert_eq!(by_title.len(), 1);

    // Written by a newer app version: quarantined with that reason, not stored wrongly.
    assert_eq!(get(&v2, "v3").await, None);
    let quarantined = v2.quarantined(10).unwrap();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    let item = &quarantined[0];
    assert_eq!(item.key.as_deref(), Some("v3"));
    assert!(
        item.error.contains("written by a newer app version")
            && item.error.contains("table `posts`")
            && item.error.contains("field `schemaVersion`"),
        "{}",
        item.error
    );
    // Still too new for this version on retry.
    let again = v2.retry_quarantined(item.seq).await.unwrap();
    assert_eq!(again.quarantined.len(), 1);
    let seq = again.quarantined[0].seq;
    v2.shutdown();

    // The upgraded app (version 3) migrates what is stored and takes the quarantined record.
    let v3 = app(&server, &store, posts(3)).start().unwrap();
    let changes = v3.schema_changes();
    assert_eq!(changes.migrations.len(), 1, "{changes:?}");
    assert_eq!(changes.migrations[0].records, 3, "{changes:?}");
    let applied = v3.retry_quarantined(seq).await.unwrap();
    assert!(applied.quarantined.is_empty(), "{applied:?}");
    assert_eq!(get(&v3, "v3").await.unwrap()["tags"], json!(["x"]));
    assert_eq!(get(&v3, "v1").await.unwrap()["tags"], json!([]));
    assert_eq!(v3.status().unwrap().quarantined, 0);

    // A record the server still holds in shape 1 is migrated through both steps on pull.
    server
        .insert_direct(
            "posts",
            json!({"id": "late", "schemaVersion": 1, "name": "n"}),
        )
        .unwrap();
    v3.sync().await.unwrap();
    let late = get(&v3, "late").await.unwrap();
    assert_eq!(
        (
            late["title"].clone(),
            late["tags"].clone(),
            late["schemaVersion"].clone()
        ),
        (json!("n"), json!([]), json!(3)),
        "{late}"
    );
    // Nothing was pushed back: migrating a pulled record is not a local write.
    assert!(v3.outbox(None, 10).unwrap().is_empty());
    v3.shutdown();
}

#[tokio::test]
async fn a_table_can_store_newer_shapes_as_they_are() {
    let server = ReferenceServer::start().await;
    server
        .insert_direct(
            "posts",
            json!({"id": "f", "schemaVersion": 9, "title": "future"}),
        )
        .unwrap();
    let store = MemoryStore::new();
    let engine = app(&server, &store, posts(2).accept_newer_remote())
        .start()
        .unwrap();
    engine.sync().await.unwrap();
    assert_eq!(get(&engine, "f").await.unwrap()["schemaVersion"], 9);
    assert_eq!(engine.status().unwrap().quarantined, 0);
    engine.shutdown();
}

#[tokio::test]
async fn the_from_remote_decoder_runs_on_pulled_records_and_on_push_answers() {
    let server = ReferenceServer::start().await;
    // An older server shape the decoder understands (an envelope), and one it refuses.
    server
        .insert_direct(
            "posts",
            json!({"id": "wrapped", "data": {"title": "inner"}}),
        )
        .unwrap();
    server
        .insert_direct("posts", json!({"id": "broken", "data": "not an object"}))
        .unwrap();
    let store = MemoryStore::new();
    let engine = Engine::builder()
        .store(store.clone())
        .table(TableSpec::new("posts").index("title"))
        .transport(transport(&server, &["posts"], 2_000))
        .settings(settings())
        .from_remote("posts", |mut v| {
            let record = v.as_object_mut().ok_or("not an object")?;
            if let Some(data) = record.remove("data") {
                let Value::Object(fields) = data else {
                    return Err(format!("`data` is {data}, not an object"));
                };
                record.extend(fields);
            }
            // Marks what it saw (idempotent: a decoded record decodes to itself).
            record.insert("decoded".into(), json!(true));
            Ok(v)
        })
        .start()
        .unwrap();
    engine.sync().await.unwrap();
    let wrapped = get(&engine, "wrapped").await.unwrap();
    assert_eq!(
        (
            wrapped["title"].clone(),
            wrapped["decoded"].clone(),
            wrapped.get("data")
        ),
        (json!("inner"), json!(true), None),
        "{wrapped}"
    );
    assert_eq!(get(&engine, "broken").await, None);
    let quarantined = engine.quarantined(10).unwrap();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert!(
        quarantined[0].error.contains("from_remote")
            && quarantined[0].error.contains("not an object")
            && quarantined[0].error.contains("key `broken`"),
        "{}",
        quarantined[0].error
    );
    assert_eq!(
        quarantined[0].record.as_ref().and_then(|r| r.get("data")),
        Some(&json!("not an object")),
        "the record is kept as the server sent it"
    );

    // A local write: the server's answer carries the record, which is decoded too before
    // its fields are merged into the local record and kept as the base.
    let posts = engine.table::<Value>("posts").unwrap();
    posts
        .put(&json!({"id": "mine", "title": "t"}))
        .await
        .unwrap();
    engine.push().await.unwrap();
    assert!(engine.outbox(None, 10).unwrap().is_empty());
    let mine = get(&engine, "mine").await.unwrap();
    assert_eq!(mine["decoded"], true, "the push answer was decoded: {mine}");
    assert_eq!(server.record("posts", "mine").unwrap().get("decoded"), None);
    engine.shutdown();
}

#[tokio::test]
async fn a_push_conflict_sees_the_server_version_in_this_app_shape() {
    // The server's current version (in the 409 answer) was written by an older app (shape 1):
    // the strategy (server wins) gets it migrated, so the local record takes the new shape.
    let server = ReferenceServer::start().await;
    let store = MemoryStore::new();
    let engine = app(&server, &store, posts(2)).start().unwrap();
    let table = engine.table::<Value>("posts").unwrap();
    table
        .put(&json!({"id": "p", "schemaVersion": 2, "title": "base"}))
        .await
        .unwrap();
    engine.sync().await.unwrap();
    server
        .update_direct(
            "posts",
            "p",
            json!({"schemaVersion": 1, "name": "older app", "title": null}),
        )
        .unwrap();
    table.update("p", json!({"title": "local"})).await.unwrap();
    let report = engine.push().await.unwrap();
    assert_eq!(report.conflicts, 1, "{report:?}");
    let local = get(&engine, "p").await.unwrap();
    assert_eq!(
        (
            local["title"].clone(),
            local.get("name"),
            local["schemaVersion"].clone()
        ),
        (json!("older app"), None, json!(2)),
        "{local}"
    );
    assert!(engine.outbox(None, 10).unwrap().is_empty());

    // A server version from a newer app cannot be decided on: the entry waits, with the
    // reason, instead of handing the strategy a shape this version misreads.
    engine.sync().await.unwrap();
    server
        .update_direct(
            "posts",
            "p",
            json!({"schemaVersion": 3, "title": "newer app"}),
        )
        .unwrap();
    table.update("p", json!({"title": "mine"})).await.unwrap();
    let _ = engine.push().await;
    let queued = engine.outbox(None, 10).unwrap();
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert!(queued[0].dead.is_none(), "{queued:?}");
    assert!(
        queued[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("written by a newer app version")),
        "{queued:?}"
    );
    assert_eq!(get(&engine, "p").await.unwrap()["title"], "mine");
    engine.shutdown();
}
