//! A store written by storage layout v1 (the layout before issue 20), kept as a fixture file:
//! `tests/fixtures/layout-v1.redb`, with what the v1 code read back from it (through
//! [`describe_store`]) in `tests/fixtures/layout-v1.expected.json`. Newer layouts must open it
//! and read the same. Both files were written by the v1 code at commit `5a8b23c` (the test
//! `make_layout_v1_fixture` there, removed since: today's code writes today's layout).
//!
//! The fixture holds every kind of state the v1 layout stores: records of four tables (one
//! local-only, one with integer keys, one with an index, one with references), bases, pending
//! creates, updates and deletes (coalesced and not), an entry in flight, one waiting out a
//! retry delay, a dead letter, acknowledged and superseded settlements (receipts), a remapped
//! temporary key, a parked conflict, a quarantined pulled item, checkpoints, a reconciliation
//! time and a leadership epoch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use tidesync::RedbStore;
use tidesync::core::local::{ChangeState, LAYOUT_VERSION, LocalDb, Schema};
use tidesync::core::{HybridClock, Key, ReadTxn, Store, TableSpec};

/// Where the fixture files live.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The tables of the fixture.
pub fn fixture_specs() -> Vec<TableSpec> {
    vec![
        TableSpec::new("posts").index("author"),
        TableSpec::new("comments").references("postId", "posts"),
        TableSpec::new("counters").integer_keys(),
        TableSpec::new("drafts").local_only(),
    ]
}

pub fn fixture_db() -> LocalDb {
    LocalDb::new(
        Schema::new(fixture_specs()).expect("fixture schema"),
        Arc::new(HybridClock::new()),
    )
}

/// Everything the local database logic reads back from a store, as JSON: what a newer layout
/// must read the same from a migrated store.
pub fn describe_store(db: &LocalDb, txn: &dyn ReadTxn) -> Value {
    let mut tables = BTreeMap::new();
    for spec in db.schema().tables() {
        let records = db
            .records()
            .scan(txn, &spec.name, None, usize::MAX)
            .expect("scan records");
        let rows: Vec<Value> = records
            .into_iter()
            .map(|record| {
                let key = Key::from_json(&record[&spec.key]).expect("record key");
                let base = db.records().base(txn, &spec.name, &key).expect("read base");
                json!({"key": key.to_json(), "record": record, "base": base})
            })
            .collect();
        let indexed: Vec<Value> = spec
            .indexes
            .iter()
            .map(|field| {
                let hits = db
                    .records()
                    .query(
                        txn,
                        &spec.name,
                        field,
                        &tidesync::core::local::IndexRange::Between(
                            std::ops::Bound::Unbounded,
                            std::ops::Bound::Unbounded,
                        ),
                        usize::MAX,
                    )
                    .expect("query index");
                let keys: Vec<&Value> = hits.iter().map(|r| &r[&spec.key]).collect();
                json!({"field": field, "keys": keys})
            })
            .collect();
        tables.insert(
            spec.name.clone(),
            json!({
                "records": rows,
                "indexes": indexed,
                "checkpoint": db.remote().checkpoint(txn, &spec.name).expect("checkpoint"),
                "reconciled_at": db.remote().reconciled_at(txn, &spec.name).expect("reconciled_at"),
                "outbox_depth": db.outbox().stats(txn, &spec.name).expect("stats").depth,
            }),
        );
    }
    let entries = db.outbox().entries(txn, None, usize::MAX).expect("outbox");
    let max_seq = entries.iter().map(|e| e.seq).max().unwrap_or(0) + 3;
    let states: Vec<Value> = (1..=max_seq)
        .map(|seq| {
            let state = match db.outbox().change_state(txn, seq).expect("change state") {
                ChangeState::Pending(entry) => json!({"pending": entry.seq}),
                ChangeState::Refused(entry) => json!({"refused": entry.seq}),
                ChangeState::Settled(settled) => json!({"settled": settled}),
                ChangeState::Unknown { issued } => json!({"unknown": {"issued": issued}}),
            };
            json!({"seq": seq, "state": state})
        })
        .collect();
    json!({
        "tables": tables,
        "outbox": entries,
        "dead_letters": db.outbox().dead_letters(txn, None).expect("dead letters"),
        "parked": db.parked().parked_conflicts(txn, None).expect("parked"),
        "quarantined": db.parked().quarantined(txn, usize::MAX).expect("quarantined"),
        "states": states,
        "epoch_7_accepted": db.fence().check_epoch(txn, Some(7)).is_ok(),
        "epoch_6_refused": db.fence().check_epoch(txn, Some(6)).is_err(),
    })
}

/// A copy of the v1 fixture in `dir` (the committed file is never opened for writing).
fn fixture_copy(dir: &Path) -> PathBuf {
    let path = dir.join("layout-v1.redb");
    std::fs::copy(fixture_dir().join("layout-v1.redb"), &path).expect("copy the fixture");
    path
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture_dir().join("layout-v1.expected.json"))
        .expect("read the fixture's expected reading");
    serde_json::from_str(&text).expect("parse the fixture's expected reading")
}

fn legacy_rows(store: &RedbStore) -> (u64, usize) {
    let read = store.read().unwrap();
    let by_table = read
        .len(tidesync::core::local::layout::LEGACY_OUTBOX_BY_TABLE)
        .unwrap();
    let depths = read
        .scan_prefix(
            tidesync::core::local::layout::META,
            tidesync::core::local::layout::LEGACY_META_DEPTH_PREFIX,
            None,
        )
        .unwrap()
        .len();
    (by_table, depths)
}

/// Rows left in layout v3's per-record queue index.
pub fn queue_index_rows(store: &RedbStore) -> u64 {
    store
        .read()
        .unwrap()
        .len(tidesync::core::local::layout::LEGACY_OUTBOX_BY_RECORD)
        .unwrap()
}

#[test]
fn a_store_written_by_layout_v1_is_upgraded_and_reads_exactly_as_v1_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(fixture_copy(dir.path())).unwrap();
    let db = fixture_db();
    let (by_table, depths) = legacy_rows(&store);
    assert_eq!(
        (by_table, depths),
        (11, 3),
        "the fixture holds v1's per-table rows"
    );

    let upgrade = db
        .upgrade_layout(&store)
        .unwrap()
        .expect("a v1 store is upgraded");
    assert_eq!((upgrade.from, upgrade.to), (1, LAYOUT_VERSION));
    // v1's 11 per-table rows and 3 depth counters, and its 11 per-record queue rows (which
    // layout v4 moves into the record rows' headers).
    assert_eq!(upgrade.rows_removed, 25);
    assert_eq!(legacy_rows(&store), (0, 0));
    assert_eq!(queue_index_rows(&store), 0);
    assert_eq!(db.upgrade_layout(&store).unwrap(), None, "once is enough");

    let read = store.read().unwrap();
    assert_eq!(describe_store(&db, &*read), expected());
    // The totals read from the keyspaces' lengths agree with the tables' counts, dead letters
    // left out, on a store whose indexes an older layout wrote.
    let totals = db.outbox().totals(&*read).unwrap();
    let (mut depth, mut oldest) = (0, None::<u64>);
    for spec in fixture_specs() {
        let stats = db.outbox().stats(&*read, &spec.name).unwrap();
        depth += stats.depth;
        oldest = match (oldest, stats.oldest_created_at_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    assert_eq!((totals.depth, totals.oldest_created_at_ms), (depth, oldest));
    assert!(depth > 0, "the fixture has a queue");
}

/// Layout v3 only adds an entry form (an entry pointing at its record row): a v2 store is
/// raised to v3 with nothing rewritten, and reads as before.
#[test]
fn a_layout_v2_store_is_raised_with_nothing_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(fixture_copy(dir.path())).unwrap();
    let db = fixture_db();
    db.upgrade_layout(&store)
        .unwrap()
        .expect("a v1 store is upgraded");
    let mut txn = store.write().unwrap();
    txn.put(
        tidesync::core::local::layout::META,
        tidesync::core::local::layout::META_LAYOUT,
        &2u64.to_be_bytes(),
    )
    .unwrap();
    txn.commit().unwrap();
    let upgrade = db.upgrade_layout(&store).unwrap().expect("v2 is raised");
    assert_eq!(
        (upgrade.from, upgrade.to, upgrade.rows_removed),
        (2, LAYOUT_VERSION, 0)
    );
    let read = store.read().unwrap();
    assert_eq!(describe_store(&db, &*read), expected());
}

#[test]
fn an_upgrade_cut_short_is_finished_by_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(fixture_copy(dir.path())).unwrap();
    // What a crash after the upgrade's first batch leaves: some v1 rows gone, no new version.
    {
        let mut txn = store.write().unwrap();
        let rows = txn
            .range(
                tidesync::core::local::layout::LEGACY_OUTBOX_BY_TABLE,
                std::ops::Bound::Unbounded,
                std::ops::Bound::Unbounded,
                Some(5),
                false,
            )
            .unwrap();
        for (key, _) in rows {
            txn.delete(tidesync::core::local::layout::LEGACY_OUTBOX_BY_TABLE, &key)
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let db = fixture_db();
    let upgrade = db.upgrade_layout(&store).unwrap().expect("still v1");
    assert_eq!(upgrade.rows_removed, 9 + 11);
    assert_eq!(legacy_rows(&store), (0, 0));
    assert_eq!(describe_store(&db, &*store.read().unwrap()), expected());
}

#[test]
fn the_engine_opens_a_v1_store_and_goes_on_numbering_after_its_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture_copy(dir.path());
    let mut builder = tidesync::Engine::builder().store(RedbStore::open(&path).unwrap());
    for spec in fixture_specs() {
        builder = builder.table(spec);
    }
    let engine = builder.start().expect("the engine opens a v1 store");
    assert_eq!(engine.outbox_stats("posts").unwrap().depth, 6);
    assert_eq!(engine.outbox_stats("comments").unwrap().depth, 2);
    assert_eq!(engine.dead_letters(None).unwrap().len(), 1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let written = runtime
        .block_on(async {
            engine
                .table::<Value>("posts")?
                .put_with_receipt(&json!({"id": "p9", "title": "after the upgrade"}))
                .await
        })
        .unwrap();
    assert_eq!(
        written.receipt.change_id().map(|c| c.0),
        Some(16),
        "numbers continue after the last one v1 issued (15), none reused"
    );
    engine.shutdown();
}

#[test]
fn a_store_written_by_a_newer_layout_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        let mut txn = store.write().unwrap();
        txn.put(
            tidesync::core::local::layout::META,
            tidesync::core::local::layout::META_LAYOUT,
            &(LAYOUT_VERSION + 1).to_be_bytes(),
        )
        .unwrap();
        txn.commit().unwrap();
    }
    let mut builder = tidesync::Engine::builder().store(RedbStore::open(&path).unwrap());
    for spec in fixture_specs() {
        builder = builder.table(spec);
    }
    let Err(err) = builder.start() else {
        panic!("a store of a newer layout was opened");
    };
    let message = err.to_string();
    assert!(
        message.contains(&format!("storage layout v{}", LAYOUT_VERSION + 1))
            && message.contains(&format!("up to v{LAYOUT_VERSION}")),
        "{message}"
    );
    // Refused, not touched: the version is still the newer one.
    let store = RedbStore::open(&path).unwrap();
    let version = store
        .read()
        .unwrap()
        .get(
            tidesync::core::local::layout::META,
            tidesync::core::local::layout::META_LAYOUT,
        )
        .unwrap();
    assert_eq!(version, Some((LAYOUT_VERSION + 1).to_be_bytes().to_vec()));
}
