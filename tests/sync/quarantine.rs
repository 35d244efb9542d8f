//! Quarantined pulled items: counted in `status()` and `health()`, retried, discarded.

use serde_json::{Value, json};
use tidesync::{ErrorKind, HealthStatus};
use tidesync_testkit::server::ReferenceServer;

use crate::support::engine;

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
