//! Schema changes at open (issue 17): building a new index over N stored records, and a
//! record migration step over them, next to a raw redb rewrite of the same rows in the same
//! run.
//!
//! Run: `cargo bench --bench schema`. Per run (figures are the median of
//! `TIDESYNC_BENCH_RUNS`, default 3), from the same seeded store copied afresh:
//! 1. open with nothing to do (the fixed cost of an open, subtracted from 2 and 3);
//! 2. open declaring a new index on `author`: `EngineBuilder::start` builds it (1 000 records
//!    per transaction);
//! 3. open declaring version 1 with a migration that adds a field: `start` rewrites every
//!    record (500 per transaction, each batch also storing the step's progress);
//! 4. raw redb, same rows (N records of about 1 KB JSON, one table, no index): read 1 000,
//!    parse, insert an index row (`author ‖ key → key`) into a second table, one
//!    transaction per batch (the index build's baseline);
//! 5. raw redb: read 500, parse, apply the same closure, serialize, write back, one
//!    transaction per batch (the migration's baseline).
//!
//! Both sides use `Durability::Immediate` (one fsync per commit) and the same cache size. The
//! table is local-only, so the migration rewrites records only (no outbox, no bases).
//!
//! Env: `TIDESYNC_BENCH_SCHEMA` (N, default 100 000), `TIDESYNC_BENCH_RUNS`.

#[allow(dead_code)]
mod common;

use std::path::Path;
use std::time::Instant;

use redb::{Database, Durability, ReadableDatabase, TableDefinition};
use serde_json::{Value, json};
use tidesync::{BulkMode, Engine, RedbStore, TableSpec};
use tidesync_store_redb::DEFAULT_CACHE_SIZE;

use common::{env_usize, median, runs, secs, section, section_end, thousands};

const RAW: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raw");
const RAW_INDEX: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raw_index");

/// Record `i`: about 1 KB of JSON.
fn record_1k(i: usize) -> Value {
    json!({
        "id": format!("rec-{i:08}"),
        "title": format!("title {i}"),
        "author": format!("author-{}", i % 97),
        "score": i as f64 / 7.0,
        "tags": ["alpha", "beta", format!("t{}", i % 13)],
        "body": "lorem ipsum dolor sit amet ".repeat(34),
    })
}

/// The migration step both sides run.
fn step(mut record: Value) -> Result<Value, String> {
    let fields = record.as_object_mut().ok_or("not an object")?;
    let title = fields.get("title").cloned().unwrap_or(Value::Null);
    fields.insert("headline".into(), title);
    Ok(record)
}

fn spec() -> TableSpec {
    TableSpec::new("posts").local_only()
}

fn seed_engine(path: &Path, records: &[Value]) {
    let rt = common::runtime();
    let engine = Engine::builder()
        .store(RedbStore::open(path).expect("store"))
        .table(spec())
        .start()
        .expect("engine");
    let posts = engine.table::<Value>("posts").expect("table");
    rt.block_on(posts.bulk_write(records.to_vec(), BulkMode::Upsert, 1000))
        .expect("seed");
    engine.shutdown();
}

fn seed_raw(path: &Path, records: &[Value]) {
    let db = Database::builder()
        .set_cache_size(DEFAULT_CACHE_SIZE)
        .create(path)
        .expect("create");
    for chunk in records.chunks(1000) {
        let txn = db.begin_write().expect("begin");
        {
            let mut table = txn.open_table(RAW).expect("table");
            for record in chunk {
                let key = record["id"].as_str().expect("id");
                let bytes = serde_json::to_vec(record).expect("json");
                table
                    .insert(key.as_bytes(), bytes.as_slice())
                    .expect("insert");
            }
        }
        txn.commit().expect("commit");
    }
}

/// Opens a copy of the seeded store with `spec`; returns the seconds `start` took.
fn open(seeded: &Path, copy: &Path, spec: TableSpec, migrate: bool, n: usize) -> f64 {
    std::fs::copy(seeded, copy).expect("copy");
    let store = RedbStore::open(copy).expect("store");
    let start = Instant::now();
    let mut builder = Engine::builder().store(store).table(spec);
    if migrate {
        builder = builder.migration("posts", 1, step);
    }
    let engine = builder.start().expect("engine");
    let elapsed = secs(start);
    let changes = engine.schema_changes();
    if migrate {
        assert_eq!(changes.migrations[0].records, n as u64, "{changes:?}");
    } else if let Some((_, _, built)) = changes.indexes_built.first() {
        assert_eq!(*built, n as u64);
    }
    engine.shutdown();
    std::fs::remove_file(copy).expect("remove");
    elapsed
}

/// Raw redb: every row read in batches of `batch`, parsed, and either indexed (a row in a
/// second table) or rewritten through `step`.
fn raw_pass(seeded: &Path, copy: &Path, batch: usize, rewrite: bool) -> f64 {
    std::fs::copy(seeded, copy).expect("copy");
    let db = Database::builder()
        .set_cache_size(DEFAULT_CACHE_SIZE)
        .create(copy)
        .expect("open");
    let start = Instant::now();
    let mut after: Option<Vec<u8>> = None;
    let mut done = 0usize;
    loop {
        let rows: Vec<(Vec<u8>, Vec<u8>)> = {
            let read = db.begin_read().expect("read");
            let table = read.open_table(RAW).expect("table");
            let range = match &after {
                Some(key) => table.range::<&[u8]>((
                    std::ops::Bound::Excluded(key.as_slice()),
                    std::ops::Bound::Unbounded,
                )),
                None => table.range::<&[u8]>(..),
            }
            .expect("range");
            range
                .take(batch)
                .map(|row| {
                    let (k, v) = row.expect("row");
                    (k.value().to_vec(), v.value().to_vec())
                })
                .collect()
        };
        let Some((last, _)) = rows.last() else { break };
        after = Some(last.clone());
        let mut txn = db.begin_write().expect("begin");
        txn.set_durability(Durability::Immediate)
            .expect("durability");
        {
            let mut table = txn.open_table(RAW).expect("table");
            let mut index = txn.open_table(RAW_INDEX).expect("index");
            for (key, value) in &rows {
                let record: Value = serde_json::from_slice(value).expect("json");
                if rewrite {
                    let bytes = serde_json::to_vec(&step(record).expect("step")).expect("json");
                    table
                        .insert(key.as_slice(), bytes.as_slice())
                        .expect("insert");
                } else {
                    let mut entry = record["author"]
                        .as_str()
                        .expect("author")
                        .as_bytes()
                        .to_vec();
                    entry.push(0);
                    entry.extend_from_slice(key);
                    index
                        .insert(entry.as_slice(), key.as_slice())
                        .expect("insert");
                }
            }
        }
        txn.commit().expect("commit");
        done += rows.len();
    }
    let elapsed = secs(start);
    drop(db);
    std::fs::remove_file(copy).expect("remove");
    assert!(done > 0);
    elapsed
}

fn main() {
    let n = env_usize("TIDESYNC_BENCH_SCHEMA", 100_000, 500);
    let runs = runs();
    let records: Vec<Value> = (0..n).map(record_1k).collect();
    let work = tempfile::tempdir_in(std::env::temp_dir()).expect("temp dir");
    let seeded = work.path().join("seeded.redb");
    let raw_seeded = work.path().join("raw-seeded.redb");
    seed_engine(&seeded, &records);
    seed_raw(&raw_seeded, &records);
    drop(records);
    let copy = work.path().join("copy.redb");

    section(&format!(
        "schema changes at open over {} records of ~1 KB, {runs} runs",
        thousands(n as f64)
    ));
    let (mut plain, mut index, mut migrate, mut raw_index, mut raw_rewrite) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let p = open(&seeded, &copy, spec(), false, n);
        let i = open(&seeded, &copy, spec().index("author"), false, n);
        let m = open(&seeded, &copy, spec().version(1), true, n);
        let ri = raw_pass(&raw_seeded, &copy, 1000, false);
        let rr = raw_pass(&raw_seeded, &copy, 500, true);
        println!(
            "   run {}: open {p:.3} s, open + index build {i:.2} s, open + migration {m:.2} s, \
             raw index pass {ri:.2} s, raw rewrite {rr:.2} s",
            run + 1
        );
        plain.push(p);
        index.push(i);
        migrate.push(m);
        raw_index.push(ri);
        raw_rewrite.push(rr);
    }
    let (p, i, m, ri, rr) = (
        median(&plain),
        median(&index),
        median(&migrate),
        median(&raw_index),
        median(&raw_rewrite),
    );
    let rate = |s: f64| n as f64 / s.max(1e-9);
    let build = (i - p).max(1e-9);
    let migration = (m - p).max(1e-9);
    println!(
        "   index build:      {} rec/s (open {:.3} s subtracted) vs raw redb index pass {} rec/s: {:.2}×",
        thousands(rate(build)),
        p,
        thousands(rate(ri)),
        rate(build) / rate(ri)
    );
    println!(
        "   record migration: {} rec/s vs raw redb rewrite {} rec/s: {:.2}×",
        thousands(rate(migration)),
        thousands(rate(rr)),
        rate(migration) / rate(rr)
    );
    section_end();
}
