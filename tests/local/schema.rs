//! Schema changes between two opens of one store (DESIGN invariant 13): an index declared by
//! the next version of the app answers completely over records the previous version wrote; a
//! dropped index is removed; a changed key is refused; an undeclared table is kept.

use std::path::Path;

use serde_json::{Value, json};
use tidesync::{Engine, ErrorKind, RedbStore, TableSpec};

fn open(path: &Path, specs: &[TableSpec]) -> tidesync::Result<Engine> {
    let mut builder = Engine::builder().store(RedbStore::open(path).expect("open redb"));
    for spec in specs {
        builder = builder.table(spec.clone());
    }
    builder.start()
}

async fn titles(engine: &Engine, title: &str) -> Vec<String> {
    let mut keys: Vec<String> = engine
        .table::<Value>("posts")
        .unwrap()
        .query_eq("title", json!(title), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn an_index_added_by_an_upgrade_answers_over_the_records_stored_before() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.redb");
    // Version 1 of the app: no index on `title`.
    let v1 = open(&path, &[TableSpec::new("posts")]).unwrap();
    let posts = v1.table::<Value>("posts").unwrap();
    for (id, title) in [("a", "hello"), ("b", "hello"), ("c", "other")] {
        posts.put(&json!({"id": id, "title": title})).await.unwrap();
    }
    assert!(v1.schema_changes().tables_added == vec!["posts".to_owned()]);
    v1.shutdown();
    drop((posts, v1));

    // Version 2 declares the index: it is built at open, before any query can run.
    let v2_spec = [TableSpec::new("posts").index("title")];
    let v2 = open(&path, &v2_spec).unwrap();
    assert_eq!(
        v2.schema_changes().indexes_built,
        vec![("posts".to_owned(), "title".to_owned(), 3)]
    );
    assert_eq!(titles(&v2, "hello").await, ["a", "b"]);
    assert_eq!(titles(&v2, "other").await, ["c"]);
    // Writes after the build keep it in step.
    let posts = v2.table::<Value>("posts").unwrap();
    posts.update("c", json!({"title": "hello"})).await.unwrap();
    assert_eq!(titles(&v2, "hello").await, ["a", "b", "c"]);
    v2.shutdown();
    drop((posts, v2));

    // The same version again: nothing to do.
    let again = open(&path, &v2_spec).unwrap();
    assert!(
        again.schema_changes().is_empty(),
        "{:?}",
        again.schema_changes()
    );
    again.shutdown();
    drop(again);

    // A version that drops the index, writes, then one that declares it again: the index
    // is rebuilt from what is stored, not from rows left over from before.
    let v3 = open(&path, &[TableSpec::new("posts")]).unwrap();
    assert_eq!(
        v3.schema_changes().indexes_dropped,
        vec![("posts".to_owned(), "title".to_owned())]
    );
    v3.table::<Value>("posts")
        .unwrap()
        .update("a", json!({"title": "renamed"}))
        .await
        .unwrap();
    v3.shutdown();
    drop(v3);
    let v4 = open(&path, &v2_spec).unwrap();
    assert_eq!(titles(&v4, "hello").await, ["b", "c"]);
    assert_eq!(titles(&v4, "renamed").await, ["a"]);
    v4.shutdown();
}

#[tokio::test]
async fn a_changed_key_is_refused_and_an_undeclared_table_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.redb");
    let v1 = open(&path, &[TableSpec::new("posts"), TableSpec::new("notes")]).unwrap();
    v1.table::<Value>("posts")
        .unwrap()
        .put(&json!({"id": "a", "uid": 1}))
        .await
        .unwrap();
    v1.table::<Value>("notes")
        .unwrap()
        .put(&json!({"id": "n"}))
        .await
        .unwrap();
    v1.shutdown();
    drop(v1);

    let refused = open(
        &path,
        &[
            TableSpec::new("posts").key("uid").integer_keys(),
            TableSpec::new("notes"),
        ],
    )
    .expect_err("a changed key over stored records is refused");
    assert_eq!(refused.kind(), ErrorKind::Config, "{refused}");
    assert_eq!(refused.table_name(), Some("posts"), "{refused}");
    assert!(refused.to_string().contains("under key `id`"), "{refused}");

    // `notes` left out of the schema: reported, and its records are still there later.
    let v2 = open(&path, &[TableSpec::new("posts")]).unwrap();
    assert_eq!(v2.schema_changes().tables_not_declared, ["notes"]);
    v2.shutdown();
    drop(v2);
    let v3 = open(&path, &[TableSpec::new("posts"), TableSpec::new("notes")]).unwrap();
    let note = v3.table::<Value>("notes").unwrap().get("n").await.unwrap();
    assert!(note.is_some(), "an undeclared table is kept untouched");
    v3.shutdown();
}

#[tokio::test]
async fn a_stored_value_a_new_index_cannot_hold_is_named_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.redb");
    let v1 = open(&path, &[TableSpec::new("posts")]).unwrap();
    v1.table::<Value>("posts")
        .unwrap()
        .put(&json!({"id": "x", "title": {"nested": true}}))
        .await
        .unwrap();
    v1.shutdown();
    drop(v1);
    let err = open(&path, &[TableSpec::new("posts").index("title")]).expect_err("refused");
    assert_eq!(
        (err.table_name(), err.record_key(), err.field_name()),
        (Some("posts"), Some("x"), Some("title")),
        "{err}"
    );
    // Nothing was lost: the old schema still opens the store with the record.
    let back = open(&path, &[TableSpec::new("posts")]).unwrap();
    assert!(
        back.table::<Value>("posts")
            .unwrap()
            .get("x")
            .await
            .unwrap()
            .is_some()
    );
    back.shutdown();
}

#[tokio::test]
async fn lifecycle_calls_on_a_local_only_engine_succeed_and_do_nothing() {
    let engine = crate::memory_engine();
    engine.stop().expect("stop");
    engine.pause().expect("pause");
    engine.resume().expect("resume");
    engine.set_online(false).expect("set_online");
    engine.foreground().expect("foreground");
    engine.start().expect("start");
    let err = engine.sync().await.expect_err("nothing to sync with");
    assert_eq!(err.kind(), ErrorKind::Config);
    engine.shutdown();
}

/// Each step appends its letter to `steps`, so a record migrated twice would show it.
fn appending(letter: &'static str) -> impl Fn(Value) -> Result<Value, String> + Send + Sync {
    move |mut record: Value| {
        if record.get("bad").is_some() && letter == "b" {
            return Err("step b cannot read a record marked bad".into());
        }
        let steps = record
            .as_object_mut()
            .ok_or("not an object")?
            .entry("steps")
            .or_insert_with(|| json!([]));
        steps
            .as_array_mut()
            .ok_or("steps is not an array")?
            .push(json!(letter));
        Ok(record)
    }
}

fn open_v3(path: &Path, panic_at: Option<usize>) -> tidesync::Result<Engine> {
    let seen = std::sync::atomic::AtomicUsize::new(0);
    let b = appending("b");
    Engine::builder()
        .store(RedbStore::open(path).expect("open redb"))
        .table(TableSpec::new("posts").index("title").version(3))
        .migration("posts", 1, appending("a"))
        .migration("posts", 2, move |record| {
            // A crash in the middle of step 2 (a panic unwinds like a kill: the batch in
            // progress is not committed, the ones before are).
            let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if Some(n) == panic_at {
                panic!("simulated crash during the migration");
            }
            b(record)
        })
        .migration("posts", 3, appending("c"))
        .start()
}

#[tokio::test]
async fn a_three_step_migration_covers_records_and_unsent_entries_once_across_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.redb");
    let (sealed_seq, total) = {
        let v0 = open(&path, &[TableSpec::new("posts").index("title")]).unwrap();
        let posts = v0.table::<Value>("posts").unwrap();
        let mut batch = v0.batch();
        for i in 0..1_200 {
            batch = batch.put("posts", &json!({"id": format!("p{i:04}"), "title": "t"}));
        }
        batch.commit().await.unwrap();
        posts
            .put(&json!({"id": "x", "title": "refused", "bad": true}))
            .await
            .unwrap();
        // One entry was already handed to the transport: sealed, it keeps its bytes.
        let sealed = v0.outbox(None, 1).unwrap()[0].seq;
        v0.store_writer()
            .send(tidesync::actors::StoreClosure::new(move |db, txn| {
                Ok((db.outbox().mark_in_flight(txn, sealed)?, Vec::new()))
            }))
            .await
            .unwrap()
            .unwrap();
        v0.shutdown();
        drop((posts, v0));
        (sealed, 1_201)
    };

    // The first attempt dies in the middle of step 2.
    let crashed = std::panic::catch_unwind(|| open_v3(&path, Some(700)));
    assert!(crashed.is_err(), "the simulated crash happened");

    // The next open resumes: every record migrated exactly once by every step.
    let v3 = open_v3(&path, None).unwrap();
    let posts = v3.table::<Value>("posts").unwrap();
    assert_eq!(
        posts.count().await.unwrap(),
        1_200,
        "the refused record left the table"
    );
    for record in posts.scan(None, 2_000).await.unwrap() {
        assert_eq!(record["steps"], json!(["a", "b", "c"]), "{record}");
    }
    // Queries on the index see the migrated records (the index was kept in step).
    assert_eq!(
        posts
            .query_eq("title", json!("t"), 5_000)
            .await
            .unwrap()
            .len(),
        1_200
    );
    // The record step b refused is quarantined with the reason; its unsent create is a dead
    // letter (editable, retryable).
    let quarantined = v3.quarantined(10).unwrap();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert_eq!(quarantined[0].key.as_deref(), Some("x"));
    assert!(
        quarantined[0].error.contains("step b cannot read"),
        "{quarantined:?}"
    );
    let dead = v3.dead_letters(None).unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        dead[0].dead.as_ref().map(|d| d.kind.as_str()),
        Some("migration_failed")
    );
    // Unsent payloads were migrated; the sealed one kept its bytes.
    let entries = v3.outbox(None, 5_000).unwrap();
    assert_eq!(entries.len(), total);
    for entry in &entries {
        let steps = entry.record.as_ref().and_then(|r| r.get("steps")).cloned();
        if entry.seq == sealed_seq {
            assert_eq!(steps, None, "a sealed entry keeps its bytes: {entry:?}");
        } else if entry.dead.is_none() {
            assert_eq!(steps, Some(json!(["a", "b", "c"])), "{entry:?}");
        }
    }
    let done = &v3.schema_changes().migrations;
    assert_eq!(
        done.iter().map(|m| m.to_version).collect::<Vec<_>>(),
        [2, 3],
        "step 1 finished before the crash; 2 resumed; 3 ran: {done:?}"
    );
    v3.shutdown();
    drop((posts, v3));

    // Opened again: nothing left to migrate; a store newer than the app is refused.
    let again = open_v3(&path, None).unwrap();
    assert!(again.schema_changes().migrations.is_empty());
    again.shutdown();
    drop(again);
    let older_app = open(&path, &[TableSpec::new("posts").index("title").version(2)])
        .expect_err("a store written by a newer version is refused");
    assert_eq!(older_app.field_name(), Some("version"), "{older_app}");
    // A missing step is named.
    let missing = Engine::builder()
        .store(RedbStore::open(&path).unwrap())
        .table(TableSpec::new("posts").index("title").version(4))
        .start()
        .expect_err("no migration to version 4");
    assert!(
        missing.to_string().contains("no migration to version 4"),
        "{missing}"
    );
}

/// The schema work of an open reports its progress, batch by batch, before the engine exists:
/// nothing can query the store meanwhile (the engine is not returned yet, and the redb file is
/// held, so no other handle can open it), so a half-built index is never seen.
#[tokio::test]
async fn index_builds_and_migrations_report_progress_and_nothing_reads_a_half_built_index() {
    use std::sync::{Arc, Mutex};
    use tidesync::SchemaProgress;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.redb");
    let v1 = open(&path, &[TableSpec::new("posts")]).unwrap();
    let mut batch = v1.batch();
    for i in 0..2_500 {
        batch = batch.put(
            "posts",
            &json!({"id": format!("p{i:05}"), "title": format!("t{}", i % 10)}),
        );
    }
    batch.commit().await.unwrap();
    v1.shutdown();
    drop(v1);

    let seen: Arc<Mutex<Vec<SchemaProgress>>> = Arc::default();
    let other_opens: Arc<Mutex<Vec<bool>>> = Arc::default();
    let v2 = {
        let seen = seen.clone();
        let other_opens = other_opens.clone();
        let probe = path.clone();
        Engine::builder()
            .store(RedbStore::open(&path).unwrap())
            .table(TableSpec::new("posts").index("title").version(1))
            .migration("posts", 1, |mut v| {
                v["migrated"] = json!(true);
                Ok(v)
            })
            .on_schema_progress(move |p| {
                // While the work runs, another handle on the file is refused.
                other_opens
                    .lock()
                    .unwrap()
                    .push(RedbStore::open(&probe).is_ok());
                seen.lock().unwrap().push(p.clone());
            })
            .start()
            .unwrap()
    };
    let seen = seen.lock().unwrap().clone();
    let builds: Vec<(u64, u64)> = seen
        .iter()
        .filter_map(|p| match p {
            SchemaProgress::IndexBuild {
                table,
                index,
                done,
                total,
            } if table == "posts" && index == "title" => Some((*done, *total)),
            _ => None,
        })
        .collect();
    assert!(builds.len() >= 3, "a report per batch: {builds:?}");
    assert_eq!(builds.first(), Some(&(0, 2_500)), "{builds:?}");
    assert_eq!(builds.last(), Some(&(2_500, 2_500)), "{builds:?}");
    assert!(builds.windows(2).all(|w| w[0].0 < w[1].0), "{builds:?}");
    let records_phase: Vec<(u64, u64)> = seen
        .iter()
        .filter_map(|p| match p {
            SchemaProgress::Migration {
                to_version: 1,
                phase: "records",
                done,
                total,
                ..
            } => Some((*done, *total)),
            _ => None,
        })
        .collect();
    assert_eq!(
        records_phase.last(),
        Some(&(2_500, 2_500)),
        "{records_phase:?}"
    );
    assert!(records_phase.len() >= 5, "{records_phase:?}");
    let outbox_phase = seen
        .iter()
        .filter(|p| {
            matches!(
                p,
                SchemaProgress::Migration {
                    phase: "outbox",
                    ..
                }
            )
        })
        .count();
    assert!(outbox_phase >= 1, "{seen:?}");
    let opens = other_opens.lock().unwrap().clone();
    assert!(!opens.is_empty() && opens.iter().all(|ok| !ok), "{opens:?}");
    // Once the engine exists, the index answers completely, over migrated records.
    let hits = v2
        .table::<Value>("posts")
        .unwrap()
        .query_eq("title", json!("t3"), 1_000)
        .await
        .unwrap();
    assert_eq!(hits.len(), 250);
    assert!(hits.iter().all(|r| r["migrated"] == true));
    v2.shutdown();
}
