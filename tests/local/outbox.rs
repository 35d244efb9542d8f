//! The outbox as the application's writes leave it: same transaction, coalesced, no echo.

use serde_json::{Value, json};
use tidesync::actors::StoreClosure;
use tidesync::{Op, Record};

use crate::memory_engine;

/// What the pusher does when the server acknowledged an entry.
async fn ack(engine: &tidesync::Engine, seq: u64) {
    engine
        .store_writer()
        .send(StoreClosure::new(move |db, txn| {
            Ok((db.outbox().remove(txn, seq)?, Vec::new()))
        }))
        .await
        .unwrap()
        .unwrap();
}

/// What the pusher does when it hands an entry to the transport.
async fn mark_in_flight(engine: &tidesync::Engine, seq: u64) {
    engine
        .store_writer()
        .send(StoreClosure::new(move |db, txn| {
            Ok((db.outbox().mark_in_flight(txn, seq)?, Vec::new()))
        }))
        .await
        .unwrap()
        .unwrap();
}

fn rec(v: Value) -> Record {
    v.as_object().cloned().expect("object")
}

#[tokio::test]
async fn every_local_write_has_exactly_one_coalesced_entry() {
    let engine = memory_engine();
    let posts = engine.table::<Value>("posts").unwrap();
    posts.put(&json!({"id": "p1", "title": "a"})).await.unwrap();
    for i in 0..100 {
        posts
            .update("p1", json!({"title": format!("edit {i}")}))
            .await
            .unwrap();
    }
    let outbox = engine.outbox(None, 100).unwrap();
    assert_eq!(
        outbox.len(),
        1,
        "100 offline edits of a new record → one create"
    );
    assert_eq!(outbox[0].op, Op::Create);
    assert_eq!(
        outbox[0].record,
        Some(rec(json!({"id": "p1", "title": "edit 99"})))
    );
    assert_eq!(outbox[0].attempts, 0);
    assert!(outbox[0].hlc > 0);
    assert_eq!(
        uuid::Uuid::parse_str(&outbox[0].idempotency_key)
            .unwrap()
            .get_version_num(),
        7
    );
}

#[tokio::test]
async fn create_then_delete_leaves_nothing_to_push() {
    let engine = memory_engine();
    let posts = engine.table::<Value>("posts").unwrap();
    posts.put(&json!({"id": "p1"})).await.unwrap();
    posts.delete("p1").await.unwrap();
    assert!(engine.outbox(None, 10).unwrap().is_empty());
    let stats = engine.outbox_stats("posts").unwrap();
    assert_eq!(stats.depth, 0);
    assert_eq!(stats.oldest_created_at_ms, None);
}

#[tokio::test]
async fn identical_put_queues_nothing() {
    let engine = memory_engine();
    let posts = engine.table::<Value>("posts").unwrap();
    posts.put(&json!({"id": "p1", "title": "a"})).await.unwrap();
    let before = engine.outbox(None, 10).unwrap();
    posts.put(&json!({"id": "p1", "title": "a"})).await.unwrap();
    assert_eq!(engine.outbox(None, 10).unwrap(), before);
}

#[tokio::test]
async fn local_only_tables_never_queue() {
    let engine = memory_engine();
    let drafts = engine.table::<Value>("drafts").unwrap();
    drafts.put(&json!({"id": "d1", "text": "x"})).await.unwrap();
    assert_eq!(drafts.count().await.unwrap(), 1);
    assert!(engine.outbox(None, 10).unwrap().is_empty());
}

#[tokio::test]
async fn queue_depth_and_oldest_age_are_per_table() {
    let engine = memory_engine();
    engine
        .batch()
        .put("posts", &json!({"id": "p1"}))
        .put("posts", &json!({"id": "p2"}))
        .put("comments", &json!({"id": "c1"}))
        .commit()
        .await
        .unwrap();
    let posts = engine.outbox_stats("posts").unwrap();
    let comments = engine.outbox_stats("comments").unwrap();
    assert_eq!((posts.depth, comments.depth), (2, 1));
    let oldest = posts.oldest_created_at_ms.expect("has an oldest entry");
    let now = tidesync::core::hlc::wall_millis();
    assert!(oldest <= now && now - oldest < 60_000);
    assert_eq!(
        engine.outbox(Some("comments"), 10).unwrap()[0].key,
        "c1".into()
    );
}

#[tokio::test]
async fn update_entries_carry_the_merged_changed_fields() {
    let engine = memory_engine();
    let posts = engine.table::<Value>("posts").unwrap();
    posts
        .put(&json!({"id": "p1", "title": "a", "body": "x", "tag": "t"}))
        .await
        .unwrap();
    // Pretend the create reached the server: drop its entry the way the pusher will.
    let seq = engine.outbox(None, 1).unwrap()[0].seq;
    ack(&engine, seq).await;
    posts.update("p1", json!({"title": "b"})).await.unwrap();
    posts.update("p1", json!({"tag": null})).await.unwrap();
    let outbox = engine.outbox(None, 10).unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].op, Op::Update);
    assert_eq!(
        outbox[0].changed,
        vec!["tag".to_string(), "title".to_string()]
    );
    posts.delete("p1").await.unwrap();
    let outbox = engine.outbox(None, 10).unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].op, Op::Delete, "update+delete → delete");
    assert_eq!(
        outbox[0].record.as_ref().unwrap()["body"],
        "x",
        "delete keeps the last record"
    );
}

#[tokio::test]
async fn edits_queue_behind_an_in_flight_entry_instead_of_rewriting_it() {
    let engine = memory_engine();
    let posts = engine.table::<Value>("posts").unwrap();
    posts.put(&json!({"id": "p1", "title": "a"})).await.unwrap();
    let create = engine.outbox(None, 1).unwrap().remove(0);
    mark_in_flight(&engine, create.seq).await;

    posts.update("p1", json!({"title": "b"})).await.unwrap();
    posts.update("p1", json!({"title": "c"})).await.unwrap();
    let outbox = engine.outbox(None, 10).unwrap();
    assert_eq!(
        outbox.len(),
        2,
        "in-flight create + one coalesced update behind it"
    );
    assert_eq!(outbox[0].op, Op::Create);
    assert_eq!(
        outbox[0].record.as_ref().unwrap()["title"],
        "a",
        "in-flight entry untouched"
    );
    assert_eq!(outbox[0].idempotency_key, create.idempotency_key);
    assert_eq!(outbox[1].op, Op::Update);
    assert_eq!(outbox[1].record.as_ref().unwrap()["title"], "c");

    // A delete while the create is in flight must still reach the server (no orphan there).
    posts.delete("p1").await.unwrap();
    let outbox = engine.outbox(None, 10).unwrap();
    assert_eq!(
        outbox.iter().map(|e| e.op).collect::<Vec<_>>(),
        [Op::Create, Op::Delete]
    );
}

#[tokio::test]
async fn only_record_heads_are_ready_and_references_wait_for_their_create() {
    let engine = memory_engine();
    engine
        .batch()
        .put("posts", &json!({"id": "p1"}))
        .put("comments", &json!({"id": "c1", "postId": "p1"}))
        .put("comments", &json!({"id": "c2", "postId": "elsewhere"}))
        .commit()
        .await
        .unwrap();
    let ready = |engine: &tidesync::Engine| {
        engine
            .ready_for_push(10)
            .unwrap()
            .into_iter()
            .map(|e| e.key.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ready(&engine), ["p1", "c2"], "c1 waits for p1's create");
    let p1 = engine.outbox(Some("posts"), 1).unwrap().remove(0);
    ack(&engine, p1.seq).await;
    assert_eq!(ready(&engine), ["c1", "c2"]);
}

#[tokio::test]
async fn a_table_queue_can_be_walked_page_by_page() {
    let engine = memory_engine();
    let mut batch = engine.batch();
    for i in 0..25 {
        batch = batch
            .put("posts", &json!({"id": format!("p{i}")}))
            .put("comments", &json!({"id": format!("c{i}")}));
    }
    batch.commit().await.unwrap();
    let all: Vec<u64> = engine
        .outbox(Some("posts"), 100)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(all.len(), 25);
    let walked = engine
        .store_writer()
        .send(StoreClosure::new(|db, txn| {
            let mut seqs = Vec::new();
            let mut after = None;
            loop {
                let page = db.outbox().entries_after(&*txn, "posts", after, 7)?;
                assert!(page.len() <= 7 && page.iter().all(|e| e.table == "posts"));
                let Some(last) = page.last() else { break };
                after = Some(last.seq);
                seqs.extend(page.iter().map(|e| e.seq));
            }
            Ok((seqs, Vec::new()))
        }))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        walked, all,
        "every entry once, in order, none of another table"
    );
}
