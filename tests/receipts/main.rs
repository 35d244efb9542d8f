//! Write receipts against the reference server: every receipt resolves exactly once, with the
//! right outcome (acknowledged, a conflict's outcome, a dead letter), also across restarts of
//! a real redb file and when another process pushed the write; `synced_through` reports the
//! stored checkpoints.
//!
//! No assertion here is about time: a receipt that never resolves fails the test through the
//! generous `resolve` guard (a hang, not a slow answer, is the defect it catches).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use tidesync::{
    ChangeId, Engine, EventItem, MemoryStore, PushError, Pushed, Receipt, ReceiptState, RedbStore,
    SyncEvent, SyncSettings, TableSpec,
};
use tidesync_conflict_merge::{FieldMerge, MergePolicy};
use tidesync_conflict_policies::ClientWins;
use tidesync_testkit::server::{FaultFilter, FaultKind, ReferenceServer};
use tidesync_transport_rest::{RestTransport, TableRoutes};

const CHILD_DB: &str = "TIDESYNC_RECEIPTS_CHILD_DB";
const CHILD_URL: &str = "TIDESYNC_RECEIPTS_CHILD_URL";

/// Fast settings; local writes do not push by themselves (the tests push), except where a
/// test says so.
fn settings() -> SyncSettings {
    SyncSettings {
        interval: None,
        sync_on_start: false,
        debounce: Duration::from_secs(600),
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(200),
        probe_base: Duration::from_millis(50),
        probe_cap: Duration::from_millis(200),
        concurrency: 1,
        ..SyncSettings::default()
    }
}

fn transport(url: &str) -> RestTransport {
    RestTransport::builder(url)
        .table("posts", TableRoutes::reference_server("posts"))
        .request_timeout(Duration::from_secs(2))
        .build()
        .expect("transport")
}

fn builder(url: &str, settings: SyncSettings) -> tidesync::EngineBuilder {
    Engine::builder()
        .table(TableSpec::new("posts"))
        .table(TableSpec::new("notes").local_only())
        .transport(transport(url))
        .settings(settings)
}

fn memory_engine(server: &ReferenceServer) -> Engine {
    builder(server.url(), settings())
        .store(MemoryStore::new())
        .start()
        .expect("engine starts")
}

fn redb_engine(path: &Path, url: &str) -> Engine {
    builder(url, settings())
        .store(RedbStore::open(path).expect("store opens"))
        .start()
        .expect("engine starts")
}

/// Awaits a receipt, failing the test if it never resolves (a hang guard, not a deadline).
async fn resolve(receipt: &Receipt) -> Result<Pushed, PushError> {
    tokio::time::timeout(Duration::from_secs(30), receipt.pushed())
        .await
        .unwrap_or_else(|_| panic!("receipt {:?} never resolved", receipt.change_id()))
}

fn id(receipt: &Receipt) -> ChangeId {
    receipt.change_id().expect("the write queued an entry")
}

/// The `Acknowledged` events already published, by change id.
async fn acknowledged(events: &mut tidesync::Events) -> Vec<u64> {
    let mut out = Vec::new();
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(50), events.next()).await
    {
        if let EventItem::Event(SyncEvent::Acknowledged { seq, .. }) = item {
            out.push(seq);
        }
    }
    out
}

#[tokio::test]
async fn a_pushed_write_resolves_acked_exactly_once_and_folded_writes_share_it() {
    let server = ReferenceServer::start().await;
    let engine = memory_engine(&server);
    let posts = engine.table::<Value>("posts").unwrap();
    let mut events = engine.events();

    let first = posts
        .put_with_receipt(&json!({"id": "p1", "title": "a"}))
        .await
        .unwrap();
    // A second edit before the push folds into the same entry: same change id.
    let second = posts
        .update_with_receipt("p1", json!({"title": "b"}))
        .await
        .unwrap();
    assert_eq!(second.value["title"], "b");
    assert_eq!(id(&first.receipt), id(&second.receipt));
    let other = posts
        .put_with_receipt(&json!({"id": "p2", "title": "c"}))
        .await
        .unwrap();
    assert_ne!(id(&first.receipt), id(&other.receipt));
    assert!(matches!(first.receipt.state(), ReceiptState::Pending(_)));

    // Waiters started before the push resolve when it acknowledges.
    let waiting = {
        let receipt = first.receipt.clone();
        tokio::spawn(async move { resolve(&receipt).await })
    };
    let report = engine.push().await.unwrap();
    assert_eq!(report.pushed, 2);
    assert_eq!(waiting.await.unwrap(), Ok(Pushed::Acked));
    assert_eq!(resolve(&second.receipt).await, Ok(Pushed::Acked));
    assert_eq!(resolve(&other.receipt).await, Ok(Pushed::Acked));
    assert_eq!(server.record("posts", "p1").unwrap()["title"], "b");

    // The answer is final: asked again (or re-obtained from the id), it is the same.
    assert_eq!(resolve(&first.receipt).await, Ok(Pushed::Acked));
    assert_eq!(
        resolve(&engine.receipt(id(&first.receipt))).await,
        Ok(Pushed::Acked)
    );
    // Exactly one acknowledgement per change, even with more pushes.
    engine.push().await.unwrap();
    let mut acks = acknowledged(&mut events).await;
    acks.sort_unstable();
    let mut expected = vec![id(&first.receipt).0, id(&other.receipt).0];
    expected.sort_unstable();
    assert_eq!(acks, expected);

    // A write that changes nothing queues nothing, and says so.
    let same = posts
        .update_with_receipt("p1", json!({"title": "b"}))
        .await
        .unwrap();
    assert_eq!(same.receipt.change_id(), None);
    assert_eq!(resolve(&same.receipt).await, Ok(Pushed::NothingToPush));
    engine.shutdown();
}

#[tokio::test]
async fn batch_receipts_and_a_create_cancelled_by_a_delete() {
    let server = ReferenceServer::start().await;
    let engine = memory_engine(&server);
    let written = engine
        .batch()
        .put("posts", &json!({"id": "b1", "title": "x"}))
        .put("posts", &json!({"id": "b2", "title": "y"}))
        .put("notes", &json!({"id": "n1", "text": "local only"}))
        .commit_with_receipts()
        .await
        .unwrap();
    assert_eq!(written.receipts.len(), 3);
    assert_eq!(written.changes.len(), 3);
    // The local-only table queues nothing.
    assert_eq!(written.receipts[2].change_id(), None);

    // b2 is deleted before it was ever sent: its create is cancelled, the delete queues
    // nothing, and the server never hears of b2.
    let posts = engine.table::<Value>("posts").unwrap();
    let deleted = posts.delete_with_receipt("b2").await.unwrap();
    assert!(deleted.value);
    assert_eq!(resolve(&deleted.receipt).await, Ok(Pushed::NothingToPush));
    assert_eq!(resolve(&written.receipts[1]).await, Ok(Pushed::Superseded));

    engine.push().await.unwrap();
    assert_eq!(resolve(&written.receipts[0]).await, Ok(Pushed::Acked));
    assert_eq!(
        resolve(&written.receipts[2]).await,
        Ok(Pushed::NothingToPush)
    );
    assert!(server.record("posts", "b1").is_some());
    assert!(server.record("posts", "b2").is_none());
    engine.shutdown();
}

#[tokio::test]
async fn a_refused_write_fails_with_the_dead_letter_reason_even_once_discarded() {
    let server = ReferenceServer::start().await;
    let engine = memory_engine(&server);
    let posts = engine.table::<Value>("posts").unwrap();
    server.fail_next_where(FaultFilter::method("POST"), 1, FaultKind::status(422));
    let bad = posts
        .put_with_receipt(&json!({"id": "bad", "title": "x"}))
        .await
        .unwrap();
    let waiting = {
        let receipt = bad.receipt.clone();
        tokio::spawn(async move { resolve(&receipt).await })
    };
    let report = engine.push().await.unwrap();
    assert_eq!(report.dead_lettered, 1);
    let refused = waiting.await.unwrap();
    match &refused {
        Err(PushError::Refused {
            change,
            table,
            key,
            reason,
            discarded,
        }) => {
            assert_eq!(*change, id(&bad.receipt));
            assert_eq!((table.as_str(), key), ("posts", &"bad".into()));
            assert_eq!(reason.status, Some(422));
            assert!(!discarded);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let message = refused.unwrap_err().to_string();
    assert!(message.contains("posts/bad"), "{message}");

    // Discarded by the application: still refused (the trace remembers why), never acked.
    engine
        .discard_dead_letter(id(&bad.receipt).0)
        .await
        .unwrap();
    match resolve(&engine.receipt(id(&bad.receipt))).await {
        Err(PushError::Refused {
            reason, discarded, ..
        }) => {
            assert!(discarded);
            assert_eq!(reason.status, Some(422));
        }
        other => panic!("expected a discarded refusal, got {other:?}"),
    }
    // A number this store never issued has no trace.
    assert_eq!(
        resolve(&engine.receipt(ChangeId(9_999))).await,
        Err(PushError::Unknown {
            change: ChangeId(9_999),
            issued: false
        })
    );
    engine.shutdown();
}

async fn synced_post(engine: &Engine) -> tidesync::Table<Value> {
    let posts = engine.table::<Value>("posts").unwrap();
    posts
        .put(&json!({"id": "p1", "title": "base", "body": "b"}))
        .await
        .unwrap();
    engine.sync().await.unwrap();
    posts
}

#[tokio::test]
async fn a_push_conflict_resolves_with_the_server_wins_outcome() {
    let server = ReferenceServer::start().await;
    let engine = memory_engine(&server);
    let posts = synced_post(&engine).await;
    server
        .update_direct("posts", "p1", json!({"title": "remote"}))
        .unwrap();
    let edit = posts
        .update_with_receipt("p1", json!({"body": "local body"}))
        .await
        .unwrap();
    let waiting = {
        let receipt = edit.receipt.clone();
        tokio::spawn(async move { resolve(&receipt).await })
    };
    let report = engine.push().await.unwrap();
    assert_eq!(report.conflicts, 1);
    assert_eq!(
        waiting.await.unwrap(),
        Ok(Pushed::Conflict {
            resolution: "take_remote".into(),
            follow_up: None
        })
    );
    assert_eq!(posts.get("p1").await.unwrap().unwrap()["body"], "b");
    engine.shutdown();
}

#[tokio::test]
async fn a_pull_conflict_settles_the_receipt_too() {
    let server = ReferenceServer::start().await;
    let engine = memory_engine(&server);
    let posts = synced_post(&engine).await;
    let edit = posts
        .update_with_receipt("p1", json!({"title": "local"}))
        .await
        .unwrap();
    server
        .update_direct("posts", "p1", json!({"title": "remote"}))
        .unwrap();
    engine.pull(None).await.unwrap();
    assert_eq!(
        resolve(&edit.receipt).await,
        Ok(Pushed::Conflict {
            resolution: "take_remote".into(),
            follow_up: None
        })
    );
    engine.shutdown();
}

#[tokio::test]
async fn client_wins_names_the_follow_up_change_which_then_resolves_acked() {
    let server = ReferenceServer::start().await;
    let engine = builder(server.url(), settings())
        .store(MemoryStore::new())
        .conflicts("posts", ClientWins)
        .start()
        .unwrap();
    let posts = synced_post(&engine).await;
    server
        .update_direct("posts", "p1", json!({"title": "remote"}))
        .unwrap();
    let edit = posts
        .update_with_receipt("p1", json!({"title": "local"}))
        .await
        .unwrap();
    engine.push().await.unwrap(); // 409 → keep local → the outcome queued anew
    let follow_up = match resolve(&edit.receipt).await {
        Ok(Pushed::Conflict {
            resolution,
            follow_up: Some(follow_up),
        }) => {
            assert_eq!(resolution, "keep_local");
            follow_up
        }
        other => panic!("expected keep_local with a follow-up, got {other:?}"),
    };
    assert_ne!(follow_up, id(&edit.receipt));
    let next = engine.receipt(follow_up);
    assert!(matches!(next.state(), ReceiptState::Pending(_)));
    engine.push().await.unwrap();
    assert_eq!(resolve(&next).await, Ok(Pushed::Acked));
    assert_eq!(server.record("posts", "p1").unwrap()["title"], "local");
    engine.shutdown();
}

#[tokio::test]
async fn a_field_merge_resolves_merged_and_its_follow_up_pushes_the_merged_record() {
    let server = ReferenceServer::start().await;
    let engine = builder(server.url(), settings())
        .store(MemoryStore::new())
        .conflicts("posts", FieldMerge::with_default(MergePolicy::PreferRemote))
        .start()
        .unwrap();
    let posts = synced_post(&engine).await;
    // Both sides edit different fields: the merge keeps both.
    server
        .update_direct("posts", "p1", json!({"title": "remote title"}))
        .unwrap();
    let edit = posts
        .update_with_receipt("p1", json!({"body": "local body"}))
        .await
        .unwrap();
    let waiting = {
        let receipt = edit.receipt.clone();
        tokio::spawn(async move { resolve(&receipt).await })
    };
    engine.push().await.unwrap();
    let follow_up = match waiting.await.unwrap() {
        Ok(Pushed::Conflict {
            resolution,
            follow_up: Some(follow_up),
        }) => {
            assert_eq!(resolution, "merged");
            follow_up
        }
        other => panic!("expected merged with a follow-up, got {other:?}"),
    };
    engine.push().await.unwrap();
    assert_eq!(resolve(&engine.receipt(follow_up)).await, Ok(Pushed::Acked));
    let on_server = server.record("posts", "p1").unwrap();
    assert_eq!(
        (&on_server["title"], &on_server["body"]),
        (&json!("remote title"), &json!("local body"))
    );
    engine.shutdown();
}

#[tokio::test]
async fn a_receipt_is_re_obtained_from_its_change_id_after_a_restart() {
    let server = ReferenceServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.redb");

    let engine = redb_engine(&path, server.url());
    let change = {
        let posts = engine.table::<Value>("posts").unwrap();
        let written = posts
            .put_with_receipt(&json!({"id": "r1", "title": "before the restart"}))
            .await
            .unwrap();
        id(&written.receipt)
    };
    // Gone before anything was pushed.
    engine.shutdown();
    drop(engine);
    assert!(server.record("posts", "r1").is_none());

    let engine = redb_engine(&path, server.url());
    let receipt = engine.receipt(change);
    assert!(matches!(receipt.state(), ReceiptState::Pending(_)));
    let waiting = {
        let receipt = receipt.clone();
        tokio::spawn(async move { resolve(&receipt).await })
    };
    engine.sync().await.unwrap();
    assert_eq!(waiting.await.unwrap(), Ok(Pushed::Acked));
    assert!(server.record("posts", "r1").is_some());
    engine.shutdown();
    drop((engine, receipt));

    // And after one more restart, the store still knows.
    let engine = redb_engine(&path, server.url());
    assert_eq!(resolve(&engine.receipt(change)).await, Ok(Pushed::Acked));
    engine.shutdown();
}

/// Runs as a child process when `CHILD_DB` is set: opens the store, syncs once, exits. A
/// no-op in a normal test run.
#[tokio::test]
async fn receipts_child() {
    let (Ok(path), Ok(url)) = (std::env::var(CHILD_DB), std::env::var(CHILD_URL)) else {
        return;
    };
    let engine = redb_engine(Path::new(&path), &url);
    let report = engine.sync().await.expect("the child syncs");
    println!("CHILD_PUSHED {}", report.pushed);
    engine.shutdown();
}

#[tokio::test]
async fn a_write_pushed_by_another_process_resolves_from_the_store() {
    let server = ReferenceServer::start_background();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.redb");

    let engine = redb_engine(&path, server.url());
    let (refused, acked) = {
        let posts = engine.table::<Value>("posts").unwrap();
        // One request at a time, in queue order: x2's create is the first POST.
        let refused = posts
            .put_with_receipt(&json!({"id": "x2", "title": "refused elsewhere"}))
            .await
            .unwrap();
        let acked = posts
            .put_with_receipt(&json!({"id": "x1", "title": "pushed elsewhere"}))
            .await
            .unwrap();
        (id(&refused.receipt), id(&acked.receipt))
    };
    engine.shutdown();
    drop(engine);

    // Another process instance opens the file and pushes while this one is gone; the server
    // refuses the first create.
    server.fail_next_where(FaultFilter::method("POST"), 1, FaultKind::status(422));
    let exe = std::env::current_exe().unwrap();
    let output = tokio::task::spawn_blocking({
        let path = path.clone();
        let url = server.url().to_owned();
        move || {
            Command::new(exe)
                .args([
                    "receipts_child",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_DB, &path)
                .env(CHILD_URL, url)
                .output()
                .expect("the child runs")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "child failed: {output:?}");
    assert!(stdout.contains("CHILD_PUSHED 1"), "{stdout}");
    assert!(server.record("posts", "x1").is_some());
    assert!(server.record("posts", "x2").is_none());

    // Reopened here, nothing pushed by this instance: the answers come from the store.
    let engine = redb_engine(&path, server.url());
    assert_eq!(resolve(&engine.receipt(acked)).await, Ok(Pushed::Acked));
    match resolve(&engine.receipt(refused)).await {
        Err(PushError::Refused { reason, key, .. }) => {
            assert_eq!(reason.status, Some(422));
            assert_eq!(key, "x2".into());
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    engine.shutdown();
}

#[tokio::test]
async fn a_write_made_offline_resolves_once_the_server_is_back() {
    // A port with nothing listening yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let engine = builder(&url, settings())
        .store(MemoryStore::new())
        .start()
        .unwrap();
    let posts = engine.table::<Value>("posts").unwrap();
    let written = posts
        .put_with_receipt(&json!({"id": "o1", "title": "offline"}))
        .await
        .unwrap();
    let waiting = {
        let receipt = written.receipt.clone();
        tokio::spawn(async move { resolve(&receipt).await })
    };
    let err = engine.push().await.unwrap_err();
    assert_eq!(err.kind(), tidesync::ErrorKind::Network, "{err}");
    assert!(matches!(written.receipt.state(), ReceiptState::Pending(_)));
    assert!(!waiting.is_finished());

    // The server comes up on that port: the engine's probe finds it and pushes by itself.
    let server = ReferenceServer::builder().port(port).start().await;
    assert_eq!(waiting.await.unwrap(), Ok(Pushed::Acked));
    assert!(server.record("posts", "o1").is_some());
    engine.shutdown();
}

#[tokio::test]
async fn a_local_only_engine_says_so_instead_of_hanging() {
    let engine = Engine::builder()
        .store(MemoryStore::new())
        .table(TableSpec::new("posts"))
        .start()
        .unwrap();
    let posts = engine.table::<Value>("posts").unwrap();
    let written = posts
        .put_with_receipt(&json!({"id": "l1", "title": "local"}))
        .await
        .unwrap();
    match resolve(&written.receipt).await {
        Err(PushError::LocalOnly { change, table, key }) => {
            assert_eq!(change, id(&written.receipt));
            assert_eq!((table.as_str(), key), ("posts", "l1".into()));
        }
        other => panic!("expected LocalOnly, got {other:?}"),
    }
    engine.shutdown();
}

#[tokio::test]
async fn a_pending_receipt_fails_closed_when_the_engine_shuts_down() {
    let server = ReferenceServer::start().await;
    let engine = memory_engine(&server);
    let posts = engine.table::<Value>("posts").unwrap();
    let written = posts.put_with_receipt(&json!({"id": "s1"})).await.unwrap();
    let waiting = {
        let receipt = written.receipt.clone();
        tokio::spawn(async move { resolve(&receipt).await })
    };
    engine.shutdown();
    assert!(matches!(
        waiting.await.unwrap(),
        Err(PushError::Closed { .. })
    ));
}

#[tokio::test]
async fn synced_through_reports_each_pulling_tables_stored_checkpoint() {
    let server = ReferenceServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.redb");
    let engine = redb_engine(&path, server.url());
    let before = engine.synced_through().unwrap();
    assert_eq!(before.tables.len(), 1, "notes does not pull: {before:?}");
    assert_eq!(before.table("posts"), None);
    assert_eq!(before.tables.get("posts"), Some(&None));

    server
        .insert_direct("posts", json!({"id": "s1", "title": "from the server"}))
        .unwrap();
    engine.sync().await.unwrap();
    let after = engine.synced_through().unwrap();
    let cursor = after.table("posts").cloned().expect("pulled: a checkpoint");
    assert_ne!(cursor, Value::Null);
    engine.shutdown();
    drop(engine);

    // What a restart resumes from.
    let engine = redb_engine(&path, server.url());
    assert_eq!(
        engine.synced_through().unwrap().table("posts"),
        Some(&cursor)
    );
    engine.shutdown();
}
