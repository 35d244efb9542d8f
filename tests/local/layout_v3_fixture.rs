//! A store written by storage layout v3 (the layout before v4 moved the per-record queue index
//! into the record rows), kept as a fixture file: `tests/fixtures/layout-v3.redb`, with what
//! the v3 code read back from it (through [`describe_store`]) in
//! `tests/fixtures/layout-v3.expected.json`. Both were written by the v3 code at commit
//! `5307b8c`, by the generator kept in `tests/fixtures/layout-v3.generator.rs.txt`.
//!
//! The fixture holds 14 rows of `o/by_record`: records with one queued entry pointing at its
//! row, two records with an entry sent (in flight) or dead-lettered and another queued behind
//! it, two records deleted locally (a queued delete, a delete in flight), a key remapped by
//! the server with its entry moved, coalesced edits, a conflict's follow-up entry, a parked
//! conflict and a quarantined item, bases of both forms and every kind of settlement.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tidesync::RedbStore;
use tidesync::core::Store;
use tidesync::core::local::{LAYOUT_VERSION, layout};

use crate::layout_fixture::{describe_store, fixture_db, fixture_dir, queue_index_rows};

fn fixture_copy(dir: &Path) -> PathBuf {
    let path = dir.join("layout-v3.redb");
    std::fs::copy(fixture_dir().join("layout-v3.redb"), &path).expect("copy the fixture");
    path
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture_dir().join("layout-v3.expected.json"))
        .expect("read the fixture's expected reading");
    serde_json::from_str(&text).expect("parse the fixture's expected reading")
}

/// Every outbox entry is its record's queue in order: for each record, the entries the
/// outbox holds for it are exactly what `pending` lists, and the first is its head.
fn queues_agree_with_the_outbox(store: &RedbStore) {
    let db = fixture_db();
    let read = store.read().unwrap();
    let mut by_record: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for entry in db.outbox().entries(&*read, None, usize::MAX).unwrap() {
        by_record
            .entry((entry.table.clone(), entry.key.to_string()))
            .or_default()
            .push(entry.seq);
    }
    assert!(!by_record.is_empty());
    for ((table, _), seqs) in &by_record {
        let first = db
            .outbox()
            .entries(&*read, Some(table), usize::MAX)
            .unwrap()
            .into_iter()
            .find(|e| e.seq == seqs[0])
            .unwrap();
        let pending: Vec<u64> = db
            .outbox()
            .pending(&*read, table, &first.key)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(&pending, seqs, "{table}/{}", first.key);
    }
}

#[test]
fn a_store_written_by_layout_v3_moves_its_queue_index_into_the_record_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(fixture_copy(dir.path())).unwrap();
    assert_eq!(
        queue_index_rows(&store),
        14,
        "the fixture holds v3's queue rows"
    );
    let db = fixture_db();
    let upgrade = db
        .upgrade_layout(&store)
        .unwrap()
        .expect("a v3 store is upgraded");
    assert_eq!(
        (upgrade.from, upgrade.to, upgrade.rows_removed),
        (3, LAYOUT_VERSION, 14)
    );
    assert_eq!(queue_index_rows(&store), 0);
    assert_eq!(db.upgrade_layout(&store).unwrap(), None, "once is enough");
    assert_eq!(describe_store(&db, &*store.read().unwrap()), expected());
    queues_agree_with_the_outbox(&store);
    // The two records deleted locally with entries still queued keep a `d/` row each.
    let read = store.read().unwrap();
    assert_eq!(read.len(&layout::deleted("posts")).unwrap(), 2);
}

#[test]
fn a_v3_upgrade_cut_short_is_finished_by_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(fixture_copy(dir.path())).unwrap();
    // What a crash after a first chunk leaves: a chunk's rows moved, the version still 3. A
    // chunk is moved here by the upgrade itself, on a store holding only those rows.
    let all = store
        .read()
        .unwrap()
        .range(
            layout::LEGACY_OUTBOX_BY_RECORD,
            std::ops::Bound::Unbounded,
            std::ops::Bound::Unbounded,
            None,
            false,
        )
        .unwrap();
    let (first, rest) = all.split_at(6);
    let mut txn = store.write().unwrap();
    for (row, _) in rest {
        txn.delete(layout::LEGACY_OUTBOX_BY_RECORD, row).unwrap();
    }
    txn.commit().unwrap();
    let db = fixture_db();
    let moved = db.upgrade_layout(&store).unwrap().expect("v3");
    assert_eq!(moved.rows_removed, first.len() as u64);
    // Back to a v3 store with the other rows still to move.
    let mut txn = store.write().unwrap();
    for (row, _) in rest {
        txn.put(layout::LEGACY_OUTBOX_BY_RECORD, row, &[]).unwrap();
    }
    txn.put(layout::META, layout::META_LAYOUT, &3u64.to_be_bytes())
        .unwrap();
    txn.commit().unwrap();
    let finished = db.upgrade_layout(&store).unwrap().expect("still v3");
    assert_eq!(finished.rows_removed, rest.len() as u64);
    assert_eq!(queue_index_rows(&store), 0);
    assert_eq!(describe_store(&db, &*store.read().unwrap()), expected());
    queues_agree_with_the_outbox(&store);
}

#[test]
fn a_v3_store_in_the_middle_of_a_migration_s_outbox_phase_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(fixture_copy(dir.path())).unwrap();
    let progress = serde_json::json!({
        "to_version": 2,
        "phase": "Outbox",
        "after": [0, 1, 2],
        "visited": 3,
        "done": {"table": "posts", "to_version": 2, "records": 7, "entries": 1, "bases": 0,
                 "quarantined": 0, "dead_lettered": 0},
    });
    let mut txn = store.write().unwrap();
    txn.put(
        layout::META,
        b"migration/posts",
        progress.to_string().as_bytes(),
    )
    .unwrap();
    txn.commit().unwrap();
    let err = fixture_db().upgrade_layout(&store).unwrap_err().to_string();
    assert!(
        err.contains("posts") && err.contains("outbox phase") && err.contains("v3"),
        "{err}"
    );
    // Nothing was changed: the store is still v3 with its queue rows.
    assert_eq!(queue_index_rows(&store), 14);
}

#[test]
fn the_engine_opens_a_v3_store_and_pushes_what_it_queued() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture_copy(dir.path());
    let mut builder = tidesync::Engine::builder().store(RedbStore::open(&path).unwrap());
    for spec in crate::layout_fixture::fixture_specs() {
        builder = builder.table(spec);
    }
    let engine = builder.start().expect("the engine opens a v3 store");
    let expected = expected();
    assert_eq!(
        engine.outbox_stats("posts").unwrap().depth,
        expected["tables"]["posts"]["outbox_depth"]
            .as_u64()
            .unwrap()
    );
    let ready = engine.ready_for_push(100).unwrap();
    assert!(!ready.is_empty());
    for entry in &ready {
        let queue: Vec<u64> = engine
            .outbox(Some(&entry.table), usize::MAX)
            .unwrap()
            .iter()
            .filter(|e| e.key == entry.key)
            .map(|e| e.seq)
            .collect();
        assert_eq!(queue.first(), Some(&entry.seq), "only heads are ready");
    }
    engine.shutdown();
}
