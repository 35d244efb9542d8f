//! The seed SDK's probes and ordering scenarios, restated with the behaviour tidesync
//! guarantees (reference/seed-inventory.md §4). The rest of the 25 upstream scenarios are
//! covered where their feature lives; `docs/seed-scenarios.md` maps each one to its test.

use std::time::Duration;

use serde_json::{Value, json};
use tidesync_testkit::server::{FaultFilter, FaultKind, ReferenceServer, RetryAfter};

use crate::support::{engine, engine_with, settings};

fn writes(server: &ReferenceServer, path_prefix: &str) -> Vec<String> {
    server
        .request_log()
        .into_iter()
        .filter(|r| r.method != "GET" && r.path.starts_with(path_prefix))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

#[tokio::test]
async fn scenario_15_entries_of_one_record_go_out_in_order_one_at_a_time() {
    let server = ReferenceServer::start().await;
    let engine = engine_with(
        &server,
        tidesync::SyncSettings {
            concurrency: 3,
            ..settings()
        },
        |b| b,
    );
    let posts = engine.table::<Value>("posts").unwrap();
    // The create is attempted once (and fails), so it is sealed: later edits queue behind it.
    // `Retry-After` fixes the retry time: with the jittered backoff alone, the automatic retry
    // could fire before the edits below are made.
    let retry_in_a_second = FaultKind::status_retry_after(503, RetryAfter::Seconds(1));
    server.fail_next_where(FaultFilter::method("POST"), 1, retry_in_a_second);
    posts.put(&json!({"id": "p1", "v": 0})).await.unwrap();
    assert!(engine.push().await.is_err());
    posts.update("p1", json!({"v": 1})).await.unwrap();
    posts.update("p1", json!({"v": 2})).await.unwrap();
    assert_eq!(
        engine.outbox(None, 10).unwrap().len(),
        2,
        "create (sealed) + one coalesced update"
    );
    server.clear_log();
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the create's Retry-After
    engine.push().await.unwrap();
    assert_eq!(
        writes(&server, "/api/posts"),
        ["POST /api/posts", "PUT /api/posts/p1"]
    );
    assert_eq!(server.record("posts", "p1").unwrap()["v"], 2);
}

#[tokio::test]
async fn probe_p3_a_head_in_backoff_holds_back_its_record_but_not_others() {
    let server = ReferenceServer::start().await;
    let engine = engine(&server);
    let posts = engine.table::<Value>("posts").unwrap();
    let retry_later = FaultKind::status_retry_after(503, RetryAfter::Seconds(30));
    server.fail_next_where(FaultFilter::method("POST"), 1, retry_later);
    posts.put(&json!({"id": "slow"})).await.unwrap();
    assert!(engine.push().await.is_err());
    posts.update("slow", json!({"later": true})).await.unwrap();
    posts.put(&json!({"id": "other"})).await.unwrap();
    server.clear_log();
    engine.push().await.unwrap();
    assert_eq!(
        writes(&server, "/api/posts"),
        ["POST /api/posts"],
        "only `other` went out"
    );
    assert!(server.record("posts", "other").is_some());
    assert!(
        server.record("posts", "slow").is_none(),
        "the update waits behind its create"
    );
}

#[tokio::test]
async fn probe_p4_a_delete_while_the_create_is_in_flight_still_deletes_on_the_server() {
    let server = ReferenceServer::start().await;
    let engine = engine(&server);
    let posts = engine.table::<Value>("posts").unwrap();
    server.fail_next_where(
        FaultFilter::method("POST"),
        1,
        FaultKind::Delay(Duration::from_millis(400)),
    );
    posts.put(&json!({"id": "p4"})).await.unwrap();
    let pushing = tokio::spawn({
        let engine = engine.clone();
        async move { engine.push().await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await; // the create is in flight now
    posts.delete("p4").await.unwrap();
    pushing.await.unwrap().unwrap();
    engine.push().await.unwrap();
    assert!(
        server.record("posts", "p4").is_none(),
        "no orphan left on the server"
    );
    assert_eq!(server.create_count("posts", "p4"), 1);
    assert_eq!(
        writes(&server, "/api/posts"),
        ["POST /api/posts", "DELETE /api/posts/p4"]
    );
}

#[tokio::test]
async fn probe_p9_empty_pull_pages_keep_the_checkpoint() {
    let server = ReferenceServer::start().await;
    let engine = engine(&server);
    engine.sync().await.unwrap();
    engine.sync().await.unwrap();
    server
        .insert_direct("posts", json!({"id": "late"}))
        .unwrap();
    let report = engine.sync().await.unwrap();
    assert_eq!(report.applied, 1, "nothing skipped after empty pages");
    assert!(
        engine
            .table::<Value>("posts")
            .unwrap()
            .get("late")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn probe_p10_pull_only_tables_never_queue_or_dead_letter_local_writes() {
    let server = ReferenceServer::start().await;
    server
        .insert_direct("catalog", json!({"id": "c1", "name": "from server"}))
        .unwrap();
    let transport = crate::support::transport(&server, &["catalog"], 2_000);
    let engine = tidesync::Engine::builder()
        .store(tidesync::MemoryStore::new())
        .table(tidesync::TableSpec::new("catalog").pull_only())
        .transport(transport)
        .settings(settings())
        .start()
        .unwrap();
    let catalog = engine.table::<Value>("catalog").unwrap();
    catalog.put(&json!({"id": "local-note"})).await.unwrap();
    engine.sync().await.unwrap();
    assert!(engine.outbox(None, 10).unwrap().is_empty());
    assert!(engine.dead_letters(None).unwrap().is_empty());
    assert!(catalog.get("c1").await.unwrap().is_some(), "pulled");
    assert!(
        server.record("catalog", "local-note").is_none(),
        "never pushed"
    );
}

#[tokio::test]
async fn probe_p5_an_aborted_batch_queues_nothing() {
    let server = ReferenceServer::start().await;
    let engine = engine(&server);
    let result = engine
        .batch()
        .put("posts", &json!({"id": "a"}))
        .put("posts", &json!({"id": "b", "author": ["not", "scalar"]}))
        .commit()
        .await;
    assert!(result.is_err());
    assert!(engine.outbox(None, 10).unwrap().is_empty());
    engine.push().await.unwrap();
    assert!(writes(&server, "/api").is_empty());
}
