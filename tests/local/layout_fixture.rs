//! A store written by storage layout v1 (the layout before issue 20), kept as a fixture file:
//! `tests/fixtures/layout-v1.redb`, with what the v1 code read back from it in
//! `tests/fixtures/layout-v1.expected.json`. Newer layouts must open it and read the same.
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
use tidesync::core::local::{ChangeState, LocalDb, RemoteMeta, Schema, WriteOp};
use tidesync::core::outbox::DeadLetterInfo;
use tidesync::core::transport::{PullPage, PushOutcome};
use tidesync::core::{
    Conflict, DetectedBy, HybridClock, Key, ReadTxn, Resolution, Store, TableSpec,
};

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

fn fixture_db() -> LocalDb {
    LocalDb::new(
        Schema::new(fixture_specs()).expect("fixture schema"),
        Arc::new(HybridClock::new()),
    )
}

fn key(s: &str) -> Key {
    Key::from_json(&json!(s)).expect("string key")
}

/// Everything the local database logic reads back from a store, as JSON: what a newer layout
/// must read the same from a migrated store.
pub fn describe_store(db: &LocalDb, txn: &dyn ReadTxn) -> Value {
    let mut tables = BTreeMap::new();
    for spec in db.schema().tables() {
        let records = db
            .scan(txn, &spec.name, None, usize::MAX)
            .expect("scan records");
        let rows: Vec<Value> = records
            .into_iter()
            .map(|record| {
                let key = Key::from_json(&record[&spec.key]).expect("record key");
                let base = db.base(txn, &spec.name, &key).expect("read base");
                json!({"key": key.to_json(), "record": record, "base": base})
            })
            .collect();
        let indexed: Vec<Value> = spec
            .indexes
            .iter()
            .map(|field| {
                let hits = db
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
                "checkpoint": db.checkpoint(txn, &spec.name).expect("checkpoint"),
                "reconciled_at": db.reconciled_at(txn, &spec.name).expect("reconciled_at"),
                "outbox_depth": db.outbox_stats(txn, &spec.name).expect("stats").depth,
            }),
        );
    }
    let entries = db.outbox(txn, None, usize::MAX).expect("outbox");
    let max_seq = entries.iter().map(|e| e.seq).max().unwrap_or(0) + 3;
    let states: Vec<Value> = (1..=max_seq)
        .map(|seq| {
            let state = match db.change_state(txn, seq).expect("change state") {
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
        "dead_letters": db.dead_letters(txn, None).expect("dead letters"),
        "parked": db.parked_conflicts(txn, None).expect("parked"),
        "quarantined": db.quarantined(txn, usize::MAX).expect("quarantined"),
        "states": states,
        "epoch_7_accepted": db.check_epoch(txn, Some(7)).is_ok(),
        "epoch_6_refused": db.check_epoch(txn, Some(6)).is_err(),
    })
}

/// Writes the v1 fixture with the v1 code. It was run once, at the commit that added it; the
/// files it wrote are committed. Kept for the record of how they were made.
#[test]
#[ignore = "writes tests/fixtures/layout-v1.*; run only by hand, with the layout it records"]
fn make_layout_v1_fixture() {
    let dir = fixture_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("layout-v1.redb");
    let _ = std::fs::remove_file(&path);
    let store = RedbStore::open(&path).unwrap();
    let db = fixture_db();
    let write = |f: &dyn Fn(&mut dyn tidesync::core::WriteTxn)| {
        let mut txn = store.write().unwrap();
        f(&mut *txn);
        txn.commit().unwrap();
    };
    let seq_of = |table: &str, k: &Key| -> u64 {
        let txn = store.read().unwrap();
        db.pending(&*txn, table, k).unwrap().last().unwrap().seq
    };
    // Creates (seq 1..), a local-only record and integer keys.
    write(&|txn| {
        for i in 1..=7 {
            let author = if i % 2 == 0 { "ann" } else { "bob" };
            db.apply_local(
                txn,
                &[WriteOp::Put {
                    table: "posts".into(),
                    record: json!({"id": format!("p{i}"), "title": format!("post {i}"), "author": author}),
                }],
            )
            .unwrap();
        }
        db.apply_local(
            txn,
            &[
                WriteOp::Put {
                    table: "comments".into(),
                    record: json!({"id": "c1", "postId": "p1", "text": "first"}),
                },
                WriteOp::Put {
                    table: "comments".into(),
                    record: json!({"id": "c2", "postId": "p6", "text": "on a temporary key"}),
                },
                WriteOp::Put {
                    table: "counters".into(),
                    record: json!({"id": 1, "n": 10}),
                },
                WriteOp::Put {
                    table: "counters".into(),
                    record: json!({"id": 2, "n": 20}),
                },
                WriteOp::Put {
                    table: "drafts".into(),
                    record: json!({"id": "d1", "body": "never pushed"}),
                },
            ],
        )
        .unwrap();
        // Coalesced into p2's pending create.
        db.apply_local(
            txn,
            &[WriteOp::Update {
                table: "posts".into(),
                key: key("p2"),
                patch: json!({"title": "post 2, edited"}),
            }],
        )
        .unwrap();
    });
    // p1 and p7: sent and acknowledged (bases, Acked receipts).
    for k in ["p1", "p7"] {
        let seq = seq_of("posts", &key(k));
        write(&|txn| {
            db.mark_in_flight(txn, seq).unwrap();
            let mut record = db.get(&*txn, "posts", &key(k)).unwrap().unwrap();
            record.insert("version".into(), json!("v1"));
            db.ack_push(
                txn,
                seq,
                &PushOutcome {
                    record: Some(record),
                    version: Some("v1".into()),
                    server_key: None,
                    server_time_ms: Some(1_765_000_000_000),
                },
            )
            .unwrap();
        });
    }
    // p3 in flight; p4 waiting out a retry delay; p5 dead-lettered.
    let (s3, s4, s5) = (
        seq_of("posts", &key("p3")),
        seq_of("posts", &key("p4")),
        seq_of("posts", &key("p5")),
    );
    write(&|txn| {
        db.mark_in_flight(txn, s3).unwrap();
        db.mark_in_flight(txn, s4).unwrap();
        db.retry_later(txn, s4, 4_102_444_800_000, "503 Service Unavailable")
            .unwrap();
        db.mark_in_flight(txn, s5).unwrap();
        db.dead_letter(
            txn,
            s5,
            DeadLetterInfo {
                kind: "permanent".into(),
                error: "422 Unprocessable Entity: title too long".into(),
                status: Some(422),
                response_excerpt: Some("{\"error\":\"title too long\"}".into()),
                at_ms: 1_765_000_000_500,
            },
        )
        .unwrap();
    });
    // p6 acknowledged under a server-assigned key: c2's reference is remapped, and the old
    // key is remembered.
    let s6 = seq_of("posts", &key("p6"));
    write(&|txn| {
        db.mark_in_flight(txn, s6).unwrap();
        let mut record = db.get(&*txn, "posts", &key("p6")).unwrap().unwrap();
        record.insert("id".into(), json!("srv-6"));
        db.ack_push(
            txn,
            s6,
            &PushOutcome {
                record: Some(record),
                version: Some("v1".into()),
                server_key: Some(key("srv-6")),
                server_time_ms: None,
            },
        )
        .unwrap();
    });
    // After the acks: an update of p1 (not coalesced), a delete of p7, a create and its delete
    // (the create is superseded), a pending update behind p3's in-flight create.
    write(&|txn| {
        db.apply_local(
            txn,
            &[
                WriteOp::Update {
                    table: "posts".into(),
                    key: key("p1"),
                    patch: json!({"title": "post 1, after sync"}),
                },
                WriteOp::Delete {
                    table: "posts".into(),
                    key: key("p7"),
                },
                WriteOp::Put {
                    table: "posts".into(),
                    record: json!({"id": "p8", "title": "short-lived", "author": "ann"}),
                },
                WriteOp::Delete {
                    table: "posts".into(),
                    key: key("p8"),
                },
                WriteOp::Update {
                    table: "posts".into(),
                    key: key("p3"),
                    patch: json!({"title": "post 3, edited in flight"}),
                },
            ],
        )
        .unwrap();
    });
    // A pulled page: one record applied, one without a key quarantined, and a checkpoint.
    write(&|txn| {
        let page = PullPage {
            records: vec![
                serde_json::from_value(
                    json!({"id": "s1", "title": "from the server", "author": "cy", "version": "v9"}),
                )
                .unwrap(),
                serde_json::from_value(json!({"title": "no key"})).unwrap(),
            ],
            deleted: vec![],
            cursor: Some(json!({"since": 1_765_000_001_000_i64, "id": "s1"})),
            has_more: false,
            server_time_ms: Some(1_765_000_001_000),
            total: Some(2),
            warnings: vec![],
        };
        db.apply_pull_page(txn, "posts", &page, &|r| RemoteMeta {
            version: r.get("version").and_then(Value::as_str).map(str::to_owned),
            modified_ms: None,
        })
        .unwrap();
        db.set_checkpoint(txn, "comments", Some(&json!("opaque-cursor-17")))
            .unwrap();
        db.set_reconciled_at(txn, "posts", 1_765_000_002_000)
            .unwrap();
        db.claim_epoch(txn, 7).unwrap();
    });
    // A parked conflict on counter 1 (its create is pending).
    write(&|txn| {
        let local = db.get(&*txn, "counters", &Key::Int(1)).unwrap();
        let conflict = Conflict {
            table: "counters".into(),
            key: Key::Int(1),
            base: None,
            local,
            remote: Some(serde_json::from_value(json!({"id": 1, "n": 11})).unwrap()),
            detected_by: DetectedBy::Pull,
            local_hlc: 1,
            remote_time_ms: Some(1_765_000_003_000),
        };
        db.apply_resolution(txn, &conflict, Some("r3".into()), &Resolution::Park)
            .unwrap();
    });
    drop(store);
    let store = RedbStore::open(&path).unwrap();
    let txn = store.read().unwrap();
    let described = describe_store(&db, &*txn);
    std::fs::write(
        dir.join("layout-v1.expected.json"),
        serde_json::to_string_pretty(&described).unwrap() + "\n",
    )
    .unwrap();
}
