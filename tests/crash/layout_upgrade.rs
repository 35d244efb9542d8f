//! The storage layout v3 → v4 upgrade killed with SIGKILL between two of its commits (issue
//! 20): the next open finishes it and the store reads as it did before the upgrade.
//!
//! The parent writes a store with today's code (20 000 queued records; some in flight, some
//! deleted locally behind a sent create, some acknowledged), reads everything the outbox says
//! about it, and rewrites it into layout v3's form: each record row's queue header becomes
//! `o/by_record` rows (`table ‖ key ‖ seq`), the `d/` rows likewise, and the layout version
//! goes back to 3. The child (`layout_upgrade_child`, ignored in normal runs) opens it and
//! upgrades, logging each committed chunk; the parent SIGKILLs it right after the first one.
//! Reopened, the store must still hold some v3 rows (the kill landed in the middle), finish
//! the upgrade, and read exactly as before.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use serde_json::{Value, json};
use tidesync::core::local::{LocalDb, Schema, WriteOp, layout};
use tidesync::core::{HybridClock, Key, Store};
use tidesync::{RedbStore, TableSpec};

const CHILD_ENV: &str = "TIDESYNC_LAYOUT_UPGRADE_DB";
const RECORDS: usize = 20_000;

fn db() -> LocalDb {
    LocalDb::new(
        Schema::new([TableSpec::new("posts").index("n")]).unwrap(),
        Arc::new(HybridClock::new()),
    )
}

#[test]
#[ignore = "the child process of the SIGKILL layout upgrade test"]
fn layout_upgrade_child() {
    let path = std::env::var(CHILD_ENV).expect("started by the parent with the store path");
    tracing_subscriber::fmt()
        .with_writer(std::io::stdout)
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        .with_ansi(false)
        .init();
    let store = RedbStore::open(&path).unwrap();
    db().upgrade_layout(&store).unwrap();
    println!("FINISHED WITHOUT BEING KILLED");
}

/// Writes the store with today's layout: every record queued, every 7th sent (in flight),
/// every 11th of those deleted behind its sent create, every 13th acknowledged.
fn write_store(store: &RedbStore, db: &LocalDb) {
    db.upgrade_layout(store).unwrap();
    for chunk in (0..RECORDS).collect::<Vec<_>>().chunks(1000) {
        let mut txn = store.write().unwrap();
        let ops: Vec<WriteOp> = chunk
            .iter()
            .map(|i| WriteOp::Put {
                table: "posts".into(),
                record: json!({"id": format!("p{i:05}"), "n": i % 97, "body": "x".repeat(200)}),
            })
            .collect();
        db.records().apply_local(&mut *txn, &ops).unwrap();
        txn.commit().unwrap();
    }
    let mut txn = store.write().unwrap();
    for i in (0..RECORDS).step_by(7) {
        let key = Key::from(format!("p{i:05}"));
        let seq = db.outbox().pending(&*txn, "posts", &key).unwrap()[0].seq;
        db.outbox().mark_in_flight(&mut *txn, seq).unwrap();
        if i % 11 == 0 {
            let delete = WriteOp::Delete {
                table: "posts".into(),
                key: key.clone(),
            };
            db.records().apply_local(&mut *txn, &[delete]).unwrap();
        } else if i % 13 == 0 {
            db.outbox().remove(&mut *txn, seq).unwrap();
        }
    }
    txn.commit().unwrap();
}

/// Everything the outbox and the records say, as JSON.
fn describe(store: &RedbStore, db: &LocalDb) -> Value {
    let read = store.read().unwrap();
    let records = db
        .records()
        .scan(&*read, "posts", None, usize::MAX)
        .unwrap();
    let mut queues = Vec::new();
    for i in 0..RECORDS {
        let key = Key::from(format!("p{i:05}"));
        let pending: Vec<u64> = db
            .outbox()
            .pending(&*read, "posts", &key)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        queues.push(json!([key.to_json(), pending]));
    }
    let heads: Vec<u64> = db
        .outbox()
        .ready_heads(
            &*read,
            u64::MAX,
            usize::MAX,
            &Default::default(),
            &Default::default(),
        )
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    json!({
        "records": records,
        "queues": queues,
        "outbox": db.outbox().entries(&*read, None, usize::MAX).unwrap(),
        "depth": db.outbox().stats(&*read, "posts").unwrap().depth,
        "heads": heads,
    })
}

/// Rewrites a store of today's layout into layout v3's form: queue headers (`0x01 ‖ n ‖ n ×
/// seq ‖ JSON`) become `o/by_record` rows, `d/` rows go, the layout version is 3.
fn rewrite_as_layout_v3(store: &RedbStore) -> u64 {
    let mut txn = store.write().unwrap();
    let mut queue_rows = 0;
    for keyspace in [layout::records("posts"), layout::deleted("posts")] {
        let rows = txn
            .range(
                &keyspace,
                std::ops::Bound::Unbounded,
                std::ops::Bound::Unbounded,
                None,
                false,
            )
            .unwrap();
        for (key_bytes, row) in rows {
            let (seqs, json) = split_header(&row);
            let (key, _) = Key::decode(&key_bytes).unwrap();
            for seq in seqs {
                if txn
                    .get(layout::OUTBOX, &seq.to_be_bytes())
                    .unwrap()
                    .is_some()
                {
                    let mut index_row = layout::record_prefix("posts", &key);
                    index_row.extend_from_slice(&seq.to_be_bytes());
                    txn.put(layout::LEGACY_OUTBOX_BY_RECORD, &index_row, &[])
                        .unwrap();
                    queue_rows += 1;
                }
            }
            if keyspace.starts_with("d/") {
                txn.delete(&keyspace, &key_bytes).unwrap();
            } else {
                txn.put(&keyspace, &key_bytes, json).unwrap();
            }
        }
    }
    txn.put(layout::META, layout::META_LAYOUT, &3u64.to_be_bytes())
        .unwrap();
    txn.commit().unwrap();
    queue_rows
}

fn split_header(row: &[u8]) -> (Vec<u64>, &[u8]) {
    if row.first() != Some(&0x01) {
        return (Vec::new(), row);
    }
    let n = u32::from_be_bytes(row[1..5].try_into().unwrap()) as usize;
    let seqs = (0..n)
        .map(|i| u64::from_be_bytes(row[5 + 8 * i..13 + 8 * i].try_into().unwrap()))
        .collect();
    (seqs, &row[5 + 8 * n..])
}

fn queue_index_rows(path: &Path) -> (u64, u64) {
    let store = RedbStore::open(path).unwrap();
    let read = store.read().unwrap();
    let rows = read.len(layout::LEGACY_OUTBOX_BY_RECORD).unwrap();
    let version = read
        .get(layout::META, layout::META_LAYOUT)
        .unwrap()
        .map(|b| u64::from_be_bytes(b[..8].try_into().unwrap()))
        .unwrap_or(1);
    (rows, version)
}

#[test]
fn sigkill_between_the_chunks_of_the_layout_v4_upgrade_is_finished_by_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v3.redb");
    let db = db();
    let (expected, queue_rows) = {
        let store = RedbStore::open(&path).unwrap();
        write_store(&store, &db);
        let expected = describe(&store, &db);
        (expected, rewrite_as_layout_v3(&store))
    };
    assert!(queue_rows > 10_000, "{queue_rows} queue rows");
    assert_eq!(queue_index_rows(&path), (queue_rows, 3));

    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(&exe)
        .args([
            "layout_upgrade::layout_upgrade_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let chunk_committed = line.contains("queue index rows moved");
        seen.push(line);
        if chunk_committed {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    assert!(
        seen.iter().any(|l| l.contains("queue index rows moved")),
        "the child never committed a chunk: {seen:?}"
    );

    let (left, version) = queue_index_rows(&path);
    assert_eq!(version, 3, "the kill landed before the last commit");
    assert!(
        left > 0 && left < queue_rows,
        "the kill landed between two chunks: {left} of {queue_rows} rows left"
    );
    eprintln!("killed after a chunk: {left} of {queue_rows} queue rows left to move");
    let store = RedbStore::open(&path).unwrap();
    let upgrade = db.upgrade_layout(&store).unwrap().expect("still v3");
    assert_eq!((upgrade.from, upgrade.rows_removed), (3, left));
    drop(store);
    assert_eq!(queue_index_rows(&path).0, 0);
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(describe(&store, &db), expected);
}
