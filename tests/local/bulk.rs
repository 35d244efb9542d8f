//! `Table::write_batch` / `Table::bulk_write`: one transaction per batch, refused records
//! reported by position, the others committed with their outbox entries.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tidesync::{BulkMode, ErrorKind, Key};

use crate::{memory_engine, redb_engine};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Draft {
    id: String,
    text: String,
}

#[tokio::test]
async fn a_batch_commits_its_good_records_and_reports_the_bad_ones_by_position() {
    let dir = tempfile::tempdir().unwrap();
    let engine = redb_engine(dir.path());
    let posts = engine.table::<Value>("posts").unwrap();
    posts
        .put(&json!({"id": "old", "title": "Old"}))
        .await
        .unwrap();
    let before = engine.outbox_stats("posts").unwrap().depth;

    let result = posts
        .write_batch(
            vec![
                json!({"id": "a", "title": "A"}),
                json!({"id": 5}),
                json!({"id": "old", "title": "again"}),
                json!("not an object"),
                json!({"id": "b", "updatedAt": [1, 2]}),
                json!({"title": "no key"}),
            ],
            BulkMode::Insert,
        )
        .await
        .unwrap();
    assert_eq!(result.records, 6);
    assert_eq!(result.written, 2);
    assert_eq!(result.changed, 2);
    let rejected: Vec<(usize, Option<Key>, ErrorKind)> = result
        .rejected
        .iter()
        .map(|r| (r.index, r.key.clone(), r.error.kind()))
        .collect();
    assert_eq!(
        rejected,
        vec![
            (1, None, ErrorKind::InvalidInput),
            (2, Some(Key::from("old")), ErrorKind::AlreadyExists),
            (3, None, ErrorKind::InvalidInput),
            (4, Some(Key::from("b")), ErrorKind::InvalidInput),
        ]
    );
    assert_eq!(
        result.rejected[3].error.to_string(),
        "invalid_input: an indexed field must be null, a boolean, a number or a string, got an \
         array (table `posts`, key `b`, field `updatedAt`)"
    );
    // The good records and exactly their outbox entries; the refused ones left nothing.
    assert_eq!(posts.count().await.unwrap(), 3);
    assert_eq!(posts.get("old").await.unwrap().unwrap()["title"], "Old");
    assert!(posts.get("b").await.unwrap().is_none());
    assert_eq!(engine.outbox_stats("posts").unwrap().depth, before + 2);
    assert_eq!(
        posts
            .query_eq("updatedAt", Value::Null, 10)
            .await
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test]
async fn bulk_write_batches_in_order_and_merge_patches_existing_records() {
    let engine = memory_engine();
    let drafts = engine.table::<Draft>("drafts").unwrap();
    let records: Vec<Draft> = (0..25)
        .map(|i| Draft {
            id: format!("d{i:02}"),
            text: format!("text {i}"),
        })
        .collect();
    let report = drafts
        .bulk_write(records.clone(), BulkMode::Upsert, 10)
        .await
        .unwrap();
    let shape: Vec<(usize, usize, usize)> = report
        .batches
        .iter()
        .map(|b| (b.first, b.records, b.written))
        .collect();
    assert_eq!(shape, vec![(0, 10, 10), (10, 10, 10), (20, 5, 5)]);
    assert_eq!(report.written(), 25);
    assert_eq!(drafts.scan(None, 100).await.unwrap(), records);
    // A local-only table queues nothing.
    assert_eq!(engine.outbox_stats("drafts").unwrap().depth, 0);

    // Merge: a patch per record; an unknown key is refused with its position over all batches.
    let json = engine.table::<Value>("drafts").unwrap();
    let report = json
        .bulk_write(
            vec![
                json!({"id": "d00", "text": null, "extra": 1}),
                json!({"id": "zz", "text": "new"}),
                json!({"id": "d24", "text": "changed"}),
            ],
            BulkMode::Merge,
            2,
        )
        .await
        .unwrap();
    assert_eq!(report.written(), 2);
    let rejected: Vec<(usize, ErrorKind)> = report
        .rejected()
        .map(|r| (r.index, r.error.kind()))
        .collect();
    assert_eq!(rejected, vec![(1, ErrorKind::NotFound)]);
    assert_eq!(
        json.get("d00").await.unwrap(),
        Some(json!({"id": "d00", "extra": 1}))
    );
    assert_eq!(json.get("d24").await.unwrap().unwrap()["text"], "changed");
    assert!(json.get("zz").await.unwrap().is_none());
}

#[tokio::test]
async fn a_refusal_only_the_write_itself_finds_still_leaves_the_rest_of_the_batch() {
    // Too big to store: found only when the record is encoded, after the pre-write checks; the
    // batch runs again record by record and commits the others.
    let engine = memory_engine();
    let posts = engine.table::<Value>("posts").unwrap();
    let huge = "x".repeat(tidesync::core::local::MAX_RECORD_BYTES);
    let result = posts
        .write_batch(
            vec![
                json!({"id": "a"}),
                json!({"id": "huge", "body": huge}),
                json!({"id": "b"}),
            ],
            BulkMode::Upsert,
        )
        .await
        .unwrap();
    assert_eq!(result.written, 2);
    assert_eq!(result.rejected.len(), 1);
    assert_eq!(result.rejected[0].index, 1);
    assert!(
        result.rejected[0]
            .error
            .to_string()
            .contains("byte limit (table `posts`, key `huge`)"),
        "{}",
        result.rejected[0].error
    );
    assert_eq!(posts.count().await.unwrap(), 2);
    assert_eq!(engine.outbox_stats("posts").unwrap().depth, 2);

    // A merge patch that makes a stored record too big is found only by the write itself:
    // the batch runs again record by record and commits the others.
    let result = posts
        .write_batch(
            vec![
                json!({"id": "a", "n": 1}),
                json!({"id": "b", "body": "x".repeat(tidesync::core::local::MAX_RECORD_BYTES)}),
                json!({"id": "b", "n": 2}),
            ],
            BulkMode::Merge,
        )
        .await
        .unwrap();
    assert_eq!(result.written, 2);
    let rejected: Vec<(usize, ErrorKind)> = result
        .rejected
        .iter()
        .map(|r| (r.index, r.error.kind()))
        .collect();
    assert_eq!(rejected, vec![(1, ErrorKind::InvalidInput)]);
    assert!(
        result.rejected[0]
            .error
            .to_string()
            .contains("byte limit (table `posts`, key `b`)"),
        "{}",
        result.rejected[0].error
    );
    assert_eq!(
        posts.get("a").await.unwrap(),
        Some(json!({"id": "a", "n": 1}))
    );
    assert_eq!(
        posts.get("b").await.unwrap(),
        Some(json!({"id": "b", "n": 2}))
    );
}

/// A bulk writer prepares each batch while the one before commits: `write` answers for the
/// batch before the one it is given, `finish` for the last, with positions over the whole
/// input; a batch is checked against what the batches before it wrote.
#[tokio::test]
async fn a_bulk_writer_answers_for_each_batch_when_the_next_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let engine = redb_engine(dir.path());
    let posts = engine.table::<Value>("posts").unwrap();
    let mut writer = posts.bulk_writer(BulkMode::Insert);
    let nothing_before = writer
        .write(vec![json!({"id": "a"}), json!({"id": "b"})])
        .await
        .unwrap();
    assert!(nothing_before.is_none());
    let first = writer
        .write(vec![json!({"id": "c"}), json!({"id": "a"}), json!(7)])
        .await
        .unwrap()
        .expect("the first batch's outcome");
    assert_eq!((first.first, first.records, first.written), (0, 2, 2));
    assert!(first.rejected.is_empty());
    // "c" again: the batch before (still being written when this one is prepared) wrote it.
    let second = writer
        .write(vec![json!({"id": "c"})])
        .await
        .unwrap()
        .expect("the second batch's outcome");
    assert_eq!((second.first, second.records, second.written), (2, 3, 1));
    let refused = |result: &tidesync::BatchResult| -> Vec<(usize, Option<Key>, ErrorKind)> {
        result
            .rejected
            .iter()
            .map(|r| (r.index, r.key.clone(), r.error.kind()))
            .collect()
    };
    assert_eq!(
        refused(&second),
        vec![
            (3, Some(Key::from("a")), ErrorKind::AlreadyExists),
            (4, None, ErrorKind::InvalidInput),
        ]
    );
    let last = writer
        .finish()
        .await
        .unwrap()
        .expect("the last batch's outcome");
    assert_eq!((last.first, last.records, last.written), (5, 1, 0));
    assert_eq!(
        refused(&last),
        vec![(5, Some(Key::from("c")), ErrorKind::AlreadyExists)]
    );
    assert_eq!(posts.count().await.unwrap(), 3);
    assert_eq!(engine.outbox_stats("posts").unwrap().depth, 3);
    // Nothing queued: nothing to answer for.
    assert!(
        posts
            .bulk_writer(BulkMode::Upsert)
            .finish()
            .await
            .unwrap()
            .is_none()
    );
}

/// A batch that fails stops the writer: its error is returned once, and later batches are
/// refused instead of being written after a gap.
#[tokio::test]
async fn a_bulk_writer_stops_at_the_first_failed_batch() {
    let engine = memory_engine();
    let posts = engine.table::<Value>("posts").unwrap();
    let mut writer = posts.bulk_writer(BulkMode::Upsert);
    writer.write(vec![json!({"id": "a"})]).await.unwrap();
    engine.shutdown();
    let mut failed = None;
    for n in 0..5 {
        if let Err(err) = writer.write(vec![json!({"id": format!("b{n}")})]).await {
            failed = Some(err);
            break;
        }
    }
    let failed = failed.expect("a write after shutdown fails");
    assert_eq!(failed.kind(), ErrorKind::Closed, "{failed}");
    let after = writer
        .write(vec![json!({"id": "late"})])
        .await
        .expect_err("a stopped writer writes nothing more");
    assert_eq!(after.kind(), ErrorKind::InvalidInput);
    assert!(
        after.to_string().contains("stopped at a failed batch"),
        "{after}"
    );
}

/// A batch of new keys skips the reads that would find nothing (one proof over the batch's
/// span); a batch whose span holds queued work reads per record. Either way each record ends
/// with one queued entry that says what the server must learn, numbered in write order.
#[tokio::test]
async fn bulk_writes_queue_the_same_entries_whether_their_keys_are_new_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let engine = redb_engine(dir.path());
    let posts = engine.table::<Value>("posts").unwrap();
    let post = |id: &str, n: u32| json!({"id": id, "title": format!("t{n}"), "author": "ann"});

    let write = |records: Vec<Value>, mode: BulkMode| {
        let posts = posts.clone();
        async move { posts.bulk_write(records, mode, 10).await.unwrap() }
    };

    // "b" has an unsent create: a batch over a..c must fold into it, not queue a second one.
    posts.put(&post("b", 0)).await.unwrap();
    let report = write(
        vec![post("a", 1), post("b", 1), post("c", 1)],
        BulkMode::Upsert,
    )
    .await;
    assert_eq!(report.written(), 3);
    // All new (x, y lie past every stored key), one of them twice in the batch.
    let report = write(
        vec![post("x", 2), post("y", 2), post("x", 3)],
        BulkMode::Upsert,
    )
    .await;
    assert_eq!(report.written(), 3);
    // Insert mode refuses a key repeated in the batch, and one already stored.
    let report = write(
        vec![post("z", 4), post("z", 5), post("a", 5)],
        BulkMode::Insert,
    )
    .await;
    let refused: Vec<(usize, ErrorKind)> = report
        .rejected()
        .map(|r| (r.index, r.error.kind()))
        .collect();
    assert_eq!(
        refused,
        vec![(1, ErrorKind::AlreadyExists), (2, ErrorKind::AlreadyExists)]
    );

    let queue: Vec<(String, String, Option<Value>)> = engine
        .outbox(Some("posts"), 100)
        .unwrap()
        .into_iter()
        .map(|e| {
            let title = e.record.as_ref().and_then(|r| r.get("title")).cloned();
            (e.key.to_string(), format!("{:?}", e.op), title)
        })
        .collect();
    let expect = |k: &str, n: u32| {
        (
            k.to_owned(),
            "Create".to_owned(),
            Some(json!(format!("t{n}"))),
        )
    };
    assert_eq!(
        queue,
        vec![
            expect("b", 1),
            expect("a", 1),
            expect("c", 1),
            expect("x", 3),
            expect("y", 2),
            expect("z", 4)
        ]
    );
    let seqs: Vec<u64> = engine
        .outbox(Some("posts"), 100)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(posts.count().await.unwrap(), 6);
    // The index rows were written for the new records too.
    assert_eq!(posts.query_eq("author", "ann", 10).await.unwrap().len(), 6);
}

/// Batches big enough that their rows go into redb a keyspace at a time (`put_rows`), over
/// stored records, queued entries and a key repeated in the batch, leave the same records,
/// index rows and outbox as the same writes made one `put` at a time.
#[tokio::test]
async fn big_batches_store_what_single_puts_store() {
    let bulk_dir = tempfile::tempdir().unwrap();
    let single_dir = tempfile::tempdir().unwrap();
    let bulk_engine = redb_engine(bulk_dir.path());
    let single_engine = redb_engine(single_dir.path());
    let post = |i: u32, n: u32| json!({"id": format!("p{i:04}"), "title": format!("t{n}"), "author": format!("a{}", i % 7)});
    // Stored before, each with an unsent create queued: every tenth key.
    let before: Vec<Value> = (0..300).step_by(10).map(|i| post(i, 0)).collect();
    // A batch of new keys (proved new: no reads, rows inserted a keyspace at a time), then
    // one interleaved with the stored keys (read per record), with p0005 (new) twice.
    let fresh: Vec<Value> = (1000..1200).map(|i| post(i, 1)).collect();
    let mut mixed: Vec<Value> = (0..300).step_by(3).map(|i| post(i, 1)).collect();
    mixed.push(post(5, 2));
    for engine in [&bulk_engine, &single_engine] {
        let posts = engine.table::<Value>("posts").unwrap();
        for record in &before {
            posts.put(record).await.unwrap();
        }
    }
    let bulk_posts = bulk_engine.table::<Value>("posts").unwrap();
    let single_posts = single_engine.table::<Value>("posts").unwrap();
    for batch in [&fresh, &mixed] {
        let report = bulk_posts
            .bulk_write(batch.clone(), BulkMode::Upsert, 1000)
            .await
            .unwrap();
        assert_eq!(report.written(), batch.len());
        for record in batch {
            single_posts.put(record).await.unwrap();
        }
    }

    let records = |posts: &tidesync::Table<Value>| {
        let posts = posts.clone();
        async move { posts.scan(None, 10_000).await.unwrap() }
    };
    assert_eq!(records(&bulk_posts).await, records(&single_posts).await);
    assert_eq!(bulk_posts.count().await.unwrap(), 321);
    for author in 0..7 {
        let a = format!("a{author}");
        assert_eq!(
            bulk_posts
                .query_eq("author", a.clone(), 1000)
                .await
                .unwrap(),
            single_posts.query_eq("author", a, 1000).await.unwrap()
        );
    }
    let queue = |engine: &tidesync::Engine| -> Vec<(String, String, Option<tidesync::Record>, Vec<String>)> {
        engine
            .outbox(Some("posts"), 10_000)
            .unwrap()
            .into_iter()
            .map(|e| {
                let mut changed: Vec<String> = e.changed.to_vec();
                changed.sort();
                (e.key.to_string(), format!("{:?}", e.op), e.record, changed)
            })
            .collect()
    };
    let bulk_queue = queue(&bulk_engine);
    assert_eq!(bulk_queue, queue(&single_engine));
    assert_eq!(bulk_queue.len(), 321);
}
