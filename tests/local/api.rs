use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tidesync::{IndexRange, Key, Op, Origin, WatchEvent};

use crate::{memory_engine, redb_engine};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Post {
    id: String,
    title: String,
    author: String,
    updated_at: i64,
}

#[tokio::test]
async fn put_without_key_generates_a_uuid_v7_and_get_reads_it_back() {
    let engine = memory_engine();
    let posts = engine.table::<Post>("posts").unwrap();
    let key = posts
        .put(&Post {
            title: "Hello".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let Key::Str(id) = &key else {
        panic!("string key expected")
    };
    let parsed = uuid::Uuid::parse_str(id).expect("a uuid");
    assert_eq!(parsed.get_version_num(), 7);
    let stored = posts.get(key.clone()).await.unwrap().expect("stored");
    assert_eq!(stored.id, *id);
    assert_eq!(stored.title, "Hello");
}

#[tokio::test]
async fn insert_refuses_an_existing_key_and_writes_nothing() {
    let engine = memory_engine();
    let posts = engine.table::<Value>("posts").unwrap();
    posts
        .insert(&json!({"id": "p1", "title": "a"}))
        .await
        .unwrap();
    let err = posts
        .insert(&json!({"id": "p1", "title": "b"}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), tidesync::ErrorKind::AlreadyExists);
    assert_eq!(err.record_key(), Some("p1"));
    assert_eq!(posts.get("p1").await.unwrap().unwrap()["title"], "a");
    assert_eq!(engine.outbox(None, 10).unwrap().len(), 1);
}

#[tokio::test]
async fn update_applies_a_merge_patch_and_delete_removes() {
    let engine = memory_engine();
    let posts = engine.table::<Value>("posts").unwrap();
    posts
        .put(&json!({"id": "p1", "title": "a", "meta": {"x": 1, "y": 2}}))
        .await
        .unwrap();
    let updated = posts
        .update("p1", json!({"title": "b", "meta": {"x": null, "z": 3}}))
        .await
        .unwrap();
    assert_eq!(
        updated,
        json!({"id": "p1", "title": "b", "meta": {"y": 2, "z": 3}})
    );
    assert!(posts.delete("p1").await.unwrap());
    assert!(
        !posts.delete("p1").await.unwrap(),
        "second delete is a no-op"
    );
    assert_eq!(posts.get("p1").await.unwrap(), None);
}

#[tokio::test]
async fn scan_count_and_index_queries() {
    let engine = memory_engine();
    let posts = engine.table::<Post>("posts").unwrap();
    for i in 0..20 {
        posts
            .put(&Post {
                id: format!("p{i:02}"),
                title: format!("t{i}"),
                author: if i % 2 == 0 {
                    "ann".into()
                } else {
                    "bob".into()
                },
                updated_at: 1000 + i,
            })
            .await
            .unwrap();
    }
    assert_eq!(posts.count().await.unwrap(), 20);
    let first = posts.scan(None, 5).await.unwrap();
    assert_eq!(
        first.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        ["p00", "p01", "p02", "p03", "p04"]
    );
    let next = posts.scan(Some(&Key::from("p04")), 3).await.unwrap();
    assert_eq!(
        next.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        ["p05", "p06", "p07"]
    );

    let anns = posts.query_eq("author", "ann", 100).await.unwrap();
    assert_eq!(anns.len(), 10);
    assert!(anns.iter().all(|p| p.author == "ann"));

    use std::ops::Bound::{Excluded, Included};
    let window = posts
        .query(
            "updatedAt",
            IndexRange::Between(Included(json!(1005)), Excluded(json!(1009))),
            100,
        )
        .await
        .unwrap();
    assert_eq!(
        window.iter().map(|p| p.updated_at).collect::<Vec<_>>(),
        [1005, 1006, 1007, 1008]
    );

    // Index entries follow updates: moving a record out of the range removes it from results.
    posts.update("p06", json!({"author": "cy"})).await.unwrap();
    let anns = posts.query_eq("author", "ann", 100).await.unwrap();
    assert_eq!(anns.len(), 9);
}

#[tokio::test]
async fn batches_span_tables_and_are_all_or_nothing() {
    let engine = memory_engine();
    let changes = engine
        .batch()
        .put("posts", &json!({"id": "p1", "title": "a"}))
        .put(
            "comments",
            &json!({"id": "c1", "postId": "p1", "text": "hi"}),
        )
        .commit()
        .await
        .unwrap();
    assert_eq!(changes.len(), 2);

    // The second write fails (no such record), so the first one must not land either.
    let err = engine
        .batch()
        .put("posts", &json!({"id": "p2", "title": "b"}))
        .update("comments", "missing", json!({"text": "x"}))
        .commit()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), tidesync::ErrorKind::NotFound);
    assert_eq!(err.record_key(), Some("missing"));
    let posts = engine.table::<Value>("posts").unwrap();
    assert_eq!(posts.get("p2").await.unwrap(), None);
    assert_eq!(
        engine.outbox(None, 10).unwrap().len(),
        2,
        "only the first batch queued"
    );
}

#[tokio::test]
async fn watch_sees_committed_changes_of_its_table_only() {
    let engine = memory_engine();
    let mut watch = engine.table::<Value>("posts").unwrap().watch().unwrap();
    engine
        .batch()
        .put("comments", &json!({"id": "c1", "text": "x"}))
        .put("posts", &json!({"id": "p1", "title": "a"}))
        .commit()
        .await
        .unwrap();
    engine
        .table::<Value>("posts")
        .unwrap()
        .delete("p1")
        .await
        .unwrap();
    let Some(WatchEvent::Change(first)) = watch.next().await else {
        panic!("change expected")
    };
    assert_eq!(
        (first.table.as_str(), first.op, first.origin),
        ("posts", Op::Create, Origin::Local)
    );
    let Some(WatchEvent::Change(second)) = watch.next().await else {
        panic!("change expected")
    };
    assert_eq!(second.op, Op::Delete);
    assert_eq!(second.record, None);
}

#[tokio::test]
async fn concurrent_writers_all_land_with_their_own_results() {
    let engine = memory_engine();
    let posts = engine.table::<Value>("posts").unwrap();
    let mut tasks = Vec::new();
    for writer in 0..16 {
        let posts = posts.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                posts
                    .put(&json!({"id": format!("w{writer}-{i}"), "n": i}))
                    .await
                    .unwrap();
            }
            // One invalid write per writer: it fails alone, the others of its group commit.
            posts
                .put(&json!({"id": format!("w{writer}-bad"), "author": {"not": "scalar"}}))
                .await
        }));
    }
    for task in tasks {
        let err = task.await.unwrap().unwrap_err();
        assert_eq!(err.field_name(), Some("author"));
    }
    assert_eq!(posts.count().await.unwrap(), 16 * 25);
    assert_eq!(engine.outbox_stats("posts").unwrap().depth, 16 * 25);
}

#[tokio::test]
async fn redb_store_keeps_records_and_outbox_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = redb_engine(dir.path());
        let posts = engine.table::<Value>("posts").unwrap();
        posts.put(&json!({"id": "p1", "title": "a"})).await.unwrap();
        posts.update("p1", json!({"title": "b"})).await.unwrap();
        engine.shutdown();
    }
    let engine = redb_engine(dir.path());
    let posts = engine.table::<Value>("posts").unwrap();
    assert_eq!(posts.get("p1").await.unwrap().unwrap()["title"], "b");
    let outbox = engine.outbox(Some("posts"), 10).unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(
        outbox[0].op,
        Op::Create,
        "create+update coalesced into one create"
    );
    assert_eq!(outbox[0].record.as_ref().unwrap()["title"], "b");
}

#[tokio::test]
async fn engine_starts_from_a_plain_thread_without_any_runtime() {
    let engine = memory_engine();
    let posts = engine.table::<Value>("posts").unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(posts.put(&json!({"id": "p1"}))).unwrap();
    })
    .join()
    .unwrap();
    assert_eq!(
        engine
            .table::<Value>("posts")
            .unwrap()
            .count()
            .await
            .unwrap(),
        1
    );
}
