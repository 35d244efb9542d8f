//! Quarantined pulled items: counted in `status()` and `health()`, retried, discarded.

use std::sync::Arc;

use serde_json::{Value, json};
use tidesync::{Engine, ErrorKind, HealthStatus, MemoryStore, Store, TableSpec};
use tidesync_testkit::server::ReferenceServer;

use crate::support::{engine, settings, transport};

#[tokio::test]
async fn quarantined_items_are_counted_retried_and_discarded() {
    let server = ReferenceServer::start().await;
    // A nested object in the indexed `author` field cannot be stored.
    let bad = json!({"id": "nested", "author": {"name": "x"}});
    server.insert_direct("posts", bad).unwrap();
    server
        .insert_direct("posts", json!({"id": "good"}))
        .unwrap();
    let engine = engine(&server);
    engine.sync().await.unwrap();
    assert_eq!(engine.status().unwrap().quarantined, 1);
    let health = engine.health().await;
    let check = health
        .checks
        .iter()
        .find(|c| c.name == "quarantine")
        .expect("a quarantine check");
    assert!(!check.ok);
    assert_eq!(check.detail, "1 pulled items quarantined");
    assert_eq!(health.status, HealthStatus::Degraded);

    let items = engine.quarantined(10).unwrap();
    assert_eq!(items.len(), 1);
    let first = &items[0];
    assert_eq!(first.key.as_deref(), Some("nested"));
    assert!(first.seq > 0);
    assert_eq!(
        first.record.as_ref().and_then(|r| r.get("author")),
        Some(&json!({"name": "x"})),
        "the whole record is kept"
    );

    // The spec did not change: refused again, back under a new number; nothing written.
    let applied = engine.retry_quarantined(first.seq).await.unwrap();
    assert!(applied.changes.is_empty());
    assert_eq!(applied.quarantined.len(), 1);
    let again = applied.quarantined[0].seq;
    assert!(again > first.seq, "{again} after {}", first.seq);
    assert_eq!(engine.status().unwrap().quarantined, 1);
    let posts = engine.table::<Value>("posts").unwrap();
    assert_eq!(posts.get("nested").await.unwrap(), None);
    let gone = engine.retry_quarantined(first.seq).await.unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound);

    let dropped = engine.discard_quarantined(again).await.unwrap();
    assert_eq!(dropped.key.as_deref(), Some("nested"));
    assert_eq!(engine.status().unwrap().quarantined, 0);
    let health = engine.health().await;
    assert!(
        health
            .checks
            .iter()
            .any(|c| c.name == "quarantine" && c.ok && c.detail == "0 pulled items quarantined")
    );
    let err = engine.discard_quarantined(again).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        err.to_string(),
        format!("not_found: no quarantined item number {again}")
    );
    engine.shutdown();
}

#[tokio::test]
async fn a_retry_after_the_spec_is_fixed_applies_the_record_but_never_over_local_changes() {
    let server = ReferenceServer::start().await;
    let bad = json!({"id": "nested", "author": {"name": "x"}});
    server.insert_direct("posts", bad).unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let start = |posts: TableSpec| {
        Engine::builder()
            .shared_store(store.clone())
            .table(posts)
            .transport(transport(&server, &["posts"], 2_000))
            .settings(settings())
            .start()
            .unwrap()
    };
    // With an index on `author`, the pulled record cannot be stored.
    let first = start(TableSpec::new("posts").index("author"));
    first.sync().await.unwrap();
    let seq = first.quarantined(10).unwrap()[0].seq;
    first.shutdown();

    // The spec is fixed (no index on `author`), but the record has a local change waiting:
    // the retry is refused and changes nothing (the item keeps its number).
    let fixed = start(TableSpec::new("posts"));
    let posts = fixed.table::<Value>("posts").unwrap();
    posts
        .put(&json!({"id": "nested", "author": "local"}))
        .await
        .unwrap();
    let err = fixed.retry_quarantined(seq).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(
        err.to_string(),
        "conflict: the record has local changes waiting to be pushed; push them (sync) and \
         retry (table `posts`, key `nested`)"
    );
    assert_eq!(fixed.quarantined(10).unwrap()[0].seq, seq);
    assert_eq!(
        posts.get("nested").await.unwrap().unwrap()["author"],
        "local"
    );

    // Nothing waiting any more (create + delete coalesce to nothing): the retry applies it.
    assert!(posts.delete("nested").await.unwrap());
    assert_eq!(fixed.outbox_stats("posts").unwrap().depth, 0);
    let applied = fixed.retry_quarantined(seq).await.unwrap();
    assert!(applied.quarantined.is_empty());
    assert_eq!(applied.changes.len(), 1);
    let stored = posts.get("nested").await.unwrap().expect("applied");
    assert_eq!(
        stored["author"],
        json!({"name": "x"}),
        "the server's version: {stored}"
    );
    assert_eq!(fixed.status().unwrap().quarantined, 0);
    // Applied as a pull: nothing is queued for push.
    assert_eq!(fixed.outbox_stats("posts").unwrap().depth, 0);
    fixed.shutdown();
}
