//! Hard-delete reconciliation on an interval (`reconcile_every`): a server that deletes rows
//! for good is learned by the scheduler's cycles, never at the cost of a pending local change;
//! a completed pass is remembered across restarts, an interrupted one runs again.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tidesync::{Engine, Key, RedbStore, SyncEvent, TableSpec};
use tidesync_testkit::server::{CollectionConfig, FaultFilter, FaultKind, ReferenceServer};
use tidesync_transport_rest::{RestTransport, TableRoutes};

use crate::support::{drain, settings};

/// A server whose `posts` are deleted for good (no tombstone, no deleted-ids feed).
async fn hard_delete_server(posts: usize) -> ReferenceServer {
    let server = ReferenceServer::builder()
        .collection("posts", CollectionConfig::default().hard_deletes(true))
        .start()
        .await;
    for n in 0..posts {
        server
            .insert_direct("posts", json!({ "id": format!("p{n:02}"), "title": "t" }))
            .expect("server insert");
    }
    server
}

/// An engine on a redb file whose `posts` reconcile every `every`, 7 records per page (so a
/// listing walks several pages).
fn open(server: &ReferenceServer, path: &Path, every: Duration) -> Engine {
    let transport = RestTransport::builder(server.url())
        .table(
            "posts",
            TableRoutes::reference_server("posts").reconcile_every(every),
        )
        .request_timeout(Duration::from_secs(5))
        .build()
        .expect("transport");
    Engine::builder()
        .store(RedbStore::open(path).expect("store"))
        .table(TableSpec::new("posts"))
        .transport(transport)
        .settings(tidesync::SyncSettings {
            page_size: 7,
            ..settings()
        })
        .start()
        .expect("engine starts")
}

async fn local_ids(engine: &Engine) -> Vec<String> {
    let posts = engine.table::<Value>("posts").expect("table");
    let mut ids: Vec<String> = posts
        .scan(None, 1_000)
        .await
        .expect("scan")
        .into_iter()
        .filter_map(|post| post["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

fn reconciled(events: &[SyncEvent]) -> Vec<(u64, u64, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            SyncEvent::Reconciled {
                table,
                listed,
                deleted,
                kept,
                ..
            } if table == "posts" => Some((*listed, *deleted, *kept)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn the_scheduler_learns_hard_deletes_and_never_deletes_a_pending_change() {
    let server = hard_delete_server(30).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(&server, &dir.path().join("r.redb"), Duration::from_secs(1));
    let mut events = engine.events();

    // The first cycle pulls everything and (never reconciled) reconciles: nothing to delete.
    let first = engine.sync().await.expect("first sync");
    assert_eq!(first.reconciled, 0);
    assert_eq!(local_ids(&engine).await.len(), 30);
    assert_eq!(reconciled(&drain(&mut events).await), vec![(30, 0, 0)]);

    // Another client deletes ten posts for good: no pull can see that.
    for n in 0..10 {
        let gone = server
            .delete_direct("posts", format!("p{n:02}"))
            .expect("server delete");
        assert!(gone.is_null(), "a hard delete leaves nothing: {gone}");
    }
    // Local changes wait to be pushed: an edit of a post the server deleted, and a create
    // the server has never seen. (Pull-only cycles below: they stay pending.)
    let posts = engine.table::<Value>("posts").expect("table");
    posts
        .update(Key::from("p05"), json!({"title": "edited here"}))
        .await
        .expect("local edit");
    posts
        .put(&json!({"id": "local-new", "title": "mine"}))
        .await
        .expect("local create");

    // Once the interval has passed, a cycle reconciles on its own.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let report = engine.pull(None).await.expect("pull cycle");
    assert_eq!(report.reconciled, 9, "{report:?}");
    // Kept: the edited p05 and the unsent create.
    assert_eq!(reconciled(&drain(&mut events).await), vec![(20, 9, 2)]);
    let mut expected: Vec<String> = (10..30).map(|n| format!("p{n:02}")).collect();
    expected.extend(["local-new".to_owned(), "p05".to_owned()]);
    expected.sort();
    assert_eq!(local_ids(&engine).await, expected);
    let kept = posts
        .get(Key::from("p05"))
        .await
        .expect("get")
        .expect("the pending edit is kept");
    assert_eq!(kept["title"], "edited here");
    assert_eq!(
        engine.outbox_stats("posts").expect("stats").depth,
        2,
        "the pending changes still wait for their push"
    );
    engine.shutdown();
}

#[tokio::test]
async fn an_interrupted_pass_runs_again_and_a_completed_one_is_not_redone_after_a_restart() {
    let server = hard_delete_server(20).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.redb");
    let hour = Duration::from_secs(3_600);

    // The first sync's listing breaks on its second page. GETs in order: the pull's three
    // pages (7 + 7 + 6), the listing's first page, then the failing one.
    let gets = FaultFilter::method("GET");
    server.fail_next_where(gets.clone(), 4, FaultKind::Delay(Duration::ZERO));
    server.fail_next_where(gets, 1, FaultKind::status(400));
    let engine = open(&server, &path, hour);
    let mut events = engine.events();
    let err = engine.sync().await.expect_err("the listing failed");
    assert!(
        err.to_string().contains("hard-delete reconciliation"),
        "{err}"
    );
    assert!(reconciled(&drain(&mut events).await).is_empty());
    assert_eq!(
        local_ids(&engine).await.len(),
        20,
        "the pull itself completed"
    );
    engine.shutdown();
    drop(engine);

    // Restarted: the interrupted pass recorded nothing, so it is due and runs again.
    server.delete_direct("posts", "p00").expect("server delete");
    let engine = open(&server, &path, hour);
    let mut events = engine.events();
    let report = engine.sync().await.expect("sync after restart");
    assert_eq!(report.reconciled, 1);
    assert_eq!(reconciled(&drain(&mut events).await), vec![(19, 1, 0)]);
    assert!(!local_ids(&engine).await.contains(&"p00".to_owned()));
    engine.shutdown();
    drop(engine);

    // Restarted again within the hour: the completed pass is not redone.
    server.delete_direct("posts", "p01").expect("server delete");
    let engine = open(&server, &path, hour);
    let mut events = engine.events();
    let report = engine.sync().await.expect("sync after the second restart");
    assert_eq!(report.reconciled, 0);
    assert!(
        reconciled(&drain(&mut events).await).is_empty(),
        "not due again"
    );
    assert!(local_ids(&engine).await.contains(&"p01".to_owned()));
    engine.shutdown();
}
