//! The happy paths: local writes reach the server, remote changes come back, nothing echoes.

use serde_json::{Value, json};
use tidesync::Op;

use crate::support::engine;
use tidesync_testkit::server::ReferenceServer;
use tidesync_transport_rest::TableRoutes;

#[tokio::test]
async fn create_update_delete_reach_the_server_with_the_client_id() {
    // Upstream scenario 22 (client UUIDs kept everywhere) and 25 (delete after sync).
    let server = ReferenceServer::start().await;
    let engine = engine(&server);
    let posts = engine.table::<Value>("posts").unwrap();
    let key = posts.put(&json!({"title": "hello"})).await.unwrap();
    let report = engine.sync().await.unwrap();
    assert_eq!(report.pushed, 1);
    let on_server = server
        .record("posts", key.to_string())
        .expect("created on the server");
    assert_eq!(on_server["title"], "hello");
    assert_eq!(on_server["id"], key.to_string());

    posts
        .update(key.clone(), json!({"title": "edited"}))
        .await
        .unwrap();
    engine.sync().await.unwrap();
    assert_eq!(
        server.record("posts", key.to_string()).unwrap()["title"],
        "edited"
    );

    posts.delete(key.clone()).await.unwrap();
    assert_eq!(engine.outbox_stats("posts").unwrap().depth, 1);
    engine.sync().await.unwrap();
    assert!(
        server.record("posts", key.to_string()).is_none(),
        "deleted on the server"
    );
    let methods: Vec<String> = server
        .request_log()
        .into_iter()
        .filter(|r| {
            r.path.starts_with("/api/posts/") || (r.path == "/api/posts" && r.method == "POST")
        })
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        methods,
        [
            "POST /api/posts".to_string(),
            format!("PUT /api/posts/{key}"),
            format!("DELETE /api/posts/{key}")
        ]
    );
    assert_eq!(engine.outbox(None, 10).unwrap(), vec![]);
}

#[tokio::test]
async fn server_fields_are_merged_into_the_local_record() {
    // Upstream scenario 16: the server's response (updatedAt, version) lands locally; the
    // local id and fields are kept.
    let server = ReferenceServer::start().await;
    let engine = engine(&server);
    let posts = engine.table::<Value>("posts").unwrap();
    let key = posts
        .put(&json!({"id": "p1", "title": "v1"}))
        .await
        .unwrap();
    engine.sync().await.unwrap();
    let local = posts.get(key).await.unwrap().unwrap();
    assert_eq!(local["title"], "v1");
    assert_eq!(local["id"], "p1");
    assert_eq!(local["version"], 1);
    assert!(
        local["updatedAt"].is_i64(),
        "server-stamped updatedAt merged: {local}"
    );
}

#[tokio::test]
async fn pulled_records_never_echo_into_the_outbox() {
    // Probe P1: after a pull the outbox is empty.
    let server = ReferenceServer::start().await;
    for i in 0..120 {
        server
            .insert_direct(
                "posts",
                json!({"id": format!("s{i:03}"), "title": "from server"}),
            )
            .unwrap();
    }
    let engine = engine(&server);
    let report = engine.sync().await.unwrap();
    assert_eq!(report.applied, 120);
    assert!(report.pages >= 3, "paged with page_size 50: {report:?}");
    let posts = engine.table::<Value>("posts").unwrap();
    assert_eq!(posts.count().await.unwrap(), 120);
    assert!(engine.outbox(None, 10).unwrap().is_empty(), "no echo");
    // A second sync finds nothing new and pushes nothing.
    let again = engine.sync().await.unwrap();
    assert_eq!((again.pushed, again.applied), (0, 0));
}

#[tokio::test]
async fn records_sharing_a_timestamp_across_page_boundaries_are_all_pulled() {
    let server = ReferenceServer::start().await;
    server.freeze_clock(Some(1_700_000_000_000));
    for i in 0..137 {
        server
            .insert_direct("posts", json!({"id": format!("t{i:03}")}))
            .unwrap();
    }
    server.freeze_clock(None);
    let engine = engine(&server);
    engine.sync().await.unwrap();
    assert_eq!(
        engine
            .table::<Value>("posts")
            .unwrap()
            .count()
            .await
            .unwrap(),
        137
    );
}

#[tokio::test]
async fn a_pull_stops_at_its_page_budget_without_fetching_ahead_past_it() {
    let server = ReferenceServer::start().await;
    for i in 0..10 {
        server
            .insert_direct("posts", json!({"id": format!("b{i:02}")}))
            .unwrap();
    }
    let engine = crate::support::engine_with(
        &server,
        tidesync::SyncSettings {
            page_size: 2,
            max_pages: 3,
            // A first sync runs to its end unless it has a budget of its own: give it one.
            initial_max_pages: Some(3),
            ..crate::support::settings()
        },
        |b| b,
    );
    let feed_requests = || {
        server
            .request_log()
            .iter()
            .filter(|r| r.method == "GET" && r.path == "/api/posts")
            .count()
    };
    let first = engine.pull(Some("posts")).await.unwrap();
    assert_eq!((first.pages, first.applied), (3, 6));
    assert_eq!(first.remaining.pulls_cut_at_budget, ["posts"], "{first:?}");
    assert_eq!(
        feed_requests(),
        3,
        "the page fetched ahead never goes past the budget"
    );
    let posts = engine.table::<Value>("posts").unwrap();
    assert_eq!(posts.count().await.unwrap(), 6);
    // The next pull resumes from the checkpoint and gets the rest.
    let second = engine.pull(Some("posts")).await.unwrap();
    assert_eq!(second.applied, 4);
    assert_eq!(posts.count().await.unwrap(), 10);
}

#[tokio::test]
async fn server_deletes_reach_the_local_store() {
    let server = ReferenceServer::start().await;
    server.insert_direct("posts", json!({"id": "a"})).unwrap();
    server.insert_direct("posts", json!({"id": "b"})).unwrap();
    let engine = engine(&server);
    engine.sync().await.unwrap();
    server.delete_direct("posts", "a").unwrap();
    let mut watch = engine.watch(Some("posts")).unwrap();
    engine.sync().await.unwrap();
    let posts = engine.table::<Value>("posts").unwrap();
    assert_eq!(posts.get("a").await.unwrap(), None);
    assert!(posts.get("b").await.unwrap().is_some());
    let Some(tidesync::WatchEvent::Change(change)) = watch.next().await else {
        panic!("change")
    };
    assert_eq!(
        (change.op, change.origin),
        (Op::Delete, tidesync::Origin::Pull)
    );
    assert!(engine.outbox(None, 10).unwrap().is_empty());
}

#[tokio::test]
async fn create_then_delete_offline_sends_nothing() {
    // Upstream scenario 24.
    let server = ReferenceServer::start().await;
    let engine = engine(&server);
    let posts = engine.table::<Value>("posts").unwrap();
    let key = posts.put(&json!({"title": "tmp"})).await.unwrap();
    posts.delete(key).await.unwrap();
    assert_eq!(engine.outbox_stats("posts").unwrap().depth, 0);
    let report = engine.push().await.unwrap();
    assert_eq!(report.pushed, 0);
    assert!(server.request_log().iter().all(|r| r.method == "GET"));
}

#[tokio::test]
async fn a_hundred_offline_edits_cost_one_request() {
    let server = ReferenceServer::start().await;
    let engine = engine(&server);
    let posts = engine.table::<Value>("posts").unwrap();
    posts.put(&json!({"id": "p1", "n": 0})).await.unwrap();
    for n in 1..=100 {
        posts.update("p1", json!({"n": n})).await.unwrap();
    }
    engine.push().await.unwrap();
    let writes: Vec<_> = server
        .request_log()
        .into_iter()
        .filter(|r| r.method != "GET")
        .collect();
    assert_eq!(writes.len(), 1, "one coalesced create");
    assert_eq!(server.record("posts", "p1").unwrap()["n"], 100);
}

#[tokio::test]
async fn references_wait_for_the_referenced_create() {
    let server = ReferenceServer::start().await;
    let engine = engine(&server);
    engine
        .batch()
        .put(
            "comments",
            &json!({"id": "c1", "postId": "p1", "text": "first!"}),
        )
        .put("posts", &json!({"id": "p1", "title": "post"}))
        .commit()
        .await
        .unwrap();
    engine.push().await.unwrap();
    let creates: Vec<String> = server
        .request_log()
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.path)
        .collect();
    assert_eq!(
        creates,
        ["/api/posts", "/api/comments"],
        "the post is created before its comment"
    );
}

#[tokio::test]
async fn local_writes_trigger_a_debounced_push_without_a_manual_call() {
    let server = ReferenceServer::start().await;
    let settings = tidesync::SyncSettings {
        debounce: std::time::Duration::from_millis(20),
        ..crate::support::settings()
    };
    let engine = crate::support::engine_with(&server, settings, |b| b);
    let mut events = engine.events();
    engine
        .table::<Value>("posts")
        .unwrap()
        .put(&json!({"id": "auto"}))
        .await
        .unwrap();
    crate::support::expect_event(&mut events, 5, "push completed", |e| {
        matches!(e, tidesync::SyncEvent::PushCompleted { pushed: 1, .. })
    })
    .await;
    assert!(server.record("posts", "auto").is_some());
}

#[tokio::test]
async fn server_assigned_ids_remap_the_local_key_its_entries_and_references() {
    use tidesync_testkit::server::CollectionConfig;
    let server = ReferenceServer::builder()
        .collection("tasks", CollectionConfig::default().server_ids(true))
        .start()
        .await;
    let transport = tidesync_transport_rest::RestTransport::builder(server.url())
        .table("tasks", TableRoutes::reference_server("tasks").server_ids())
        .table("notes", TableRoutes::reference_server("notes"))
        .build()
        .unwrap();
    let engine = tidesync::Engine::builder()
        .store(tidesync::MemoryStore::new())
        .table(tidesync::TableSpec::new("tasks"))
        .table(tidesync::TableSpec::new("notes").references("taskId", "tasks"))
        .transport(transport)
        .settings(crate::support::settings())
        .start()
        .unwrap();
    let tasks = engine.table::<Value>("tasks").unwrap();
    let notes = engine.table::<Value>("notes").unwrap();
    let temp = tasks.put(&json!({"title": "write docs"})).await.unwrap();
    notes
        .put(&json!({"id": "n1", "taskId": temp.to_string(), "text": "see README"}))
        .await
        .unwrap();
    // An edit queued behind the create, still under the temporary id.
    let mut events = engine.events();
    engine.push().await.unwrap();

    let server_tasks = server.records("tasks");
    assert_eq!(server_tasks.len(), 1);
    let server_id = server_tasks[0]["id"]
        .as_i64()
        .expect("the server assigned an integer id");
    assert_eq!(
        tasks.get(temp.clone()).await.unwrap(),
        None,
        "the temporary key is gone"
    );
    let moved = tasks
        .get(server_id.to_string())
        .await
        .unwrap()
        .expect("record under the server id");
    assert_eq!(moved["title"], "write docs");
    let note = notes.get("n1").await.unwrap().unwrap();
    assert_eq!(
        note["taskId"],
        server_id.to_string(),
        "the reference follows the remap"
    );
    assert_eq!(
        server.record("notes", "n1").unwrap()["taskId"],
        server_id.to_string(),
        "the note was pushed after the remap, with the server's id"
    );
    let remapped = crate::support::drain(&mut events)
        .await
        .into_iter()
        .any(|e| matches!(e, tidesync::SyncEvent::IdRemapped { ref from, .. } if from == &temp));
    assert!(remapped, "an IdRemapped event was emitted");

    // Later edits go to the server id.
    tasks
        .update(server_id.to_string(), json!({"title": "write better docs"}))
        .await
        .unwrap();
    engine.sync().await.unwrap();
    assert_eq!(
        server.record("tasks", server_id).unwrap()["title"],
        "write better docs"
    );
    assert_eq!(server.records("tasks").len(), 1, "no duplicate task");
    assert_eq!(
        tasks.count().await.unwrap(),
        1,
        "the pull did not bring a second copy"
    );
}
