//! Local write throughput and latency, next to raw redb in the same run.
//!
//! Run: `cargo bench --bench local_writes` (release). Prints:
//! 1. durable writes/s through the table API vs raw redb inserts of the same records with the
//!    same durability (one `Durability::Immediate` commit each, same cache size), and their
//!    ratio (target >= 0.8);
//! 2. 16 concurrent writers through the table API (group commit) vs raw redb with one commit
//!    per write from 16 threads, and their ratio (target >= 10x);
//! 3. p50 / p99 latency of one durable write through the table API, next to the p50 / p99 of
//!    one raw redb commit (the floor: the fsync).
//!
//! Fairness: both sides write the same record bytes (`common::record`, ~260 bytes of JSON)
//! under the same key, into a fresh file in the same directory, with the same fsync policy
//! (`Durability::Immediate`) and the same redb cache size; which side runs first alternates
//! between runs. The table API does more per write (the outbox entry, its two index rows,
//! the queue depth, the clock): that is the cost being measured.
//!
//! Env: `TIDESYNC_BENCH_RUNS` (default 3; each figure is the median), `TIDESYNC_BENCH_WRITES`
//! (sequential writes per run, default 500; the concurrent case writes the same number per
//! writer / 4 x 16 writers).

#[allow(dead_code)]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, Durability, TableDefinition};
use tidesync::{Engine, RedbStore};
use tidesync_store_redb::DEFAULT_CACHE_SIZE;

use common::{median, percentile, record, secs, thousands};

const RAW: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raw");

fn engine(dir: &std::path::Path) -> Engine {
    Engine::builder()
        .store(RedbStore::open(dir.join("engine.redb")).expect("open"))
        .table(common::posts())
        .start()
        .expect("start")
}

fn raw_db(dir: &std::path::Path) -> Arc<Database> {
    Arc::new(
        Database::builder()
            .set_cache_size(DEFAULT_CACHE_SIZE)
            .create(dir.join("raw.redb"))
            .expect("create"),
    )
}

fn raw_insert(db: &Database, i: usize) {
    let value = serde_json::to_vec(&record(i)).expect("json");
    let key = format!("rec-{i:08}");
    let mut txn = db.begin_write().expect("begin");
    txn.set_durability(Durability::Immediate)
        .expect("durability");
    {
        let mut table = txn.open_table(RAW).expect("table");
        table
            .insert(key.as_bytes(), value.as_slice())
            .expect("insert");
    }
    txn.commit().expect("commit");
}

/// Writes/s and per-write latencies of `n` sequential durable writes through the table API.
fn api_sequential(n: usize, rt: &tokio::runtime::Runtime) -> (f64, Vec<Duration>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path());
    let posts = engine.table::<serde_json::Value>("posts").expect("table");
    let mut latencies = Vec::with_capacity(n);
    let start = Instant::now();
    rt.block_on(async {
        for i in 0..n {
            let t = Instant::now();
            posts.put(&record(i)).await.expect("put");
            latencies.push(t.elapsed());
        }
    });
    let rate = n as f64 / secs(start);
    engine.shutdown();
    (rate, latencies)
}

/// Writes/s and per-commit latencies of `n` sequential raw redb commits.
fn raw_sequential(n: usize) -> (f64, Vec<Duration>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = raw_db(dir.path());
    let mut latencies = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        raw_insert(&db, i);
        latencies.push(t.elapsed());
    }
    (n as f64 / secs(start), latencies)
}

fn api_concurrent(writers: usize, per_writer: usize, rt: &tokio::runtime::Runtime) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path());
    let posts = engine.table::<serde_json::Value>("posts").expect("table");
    let start = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let posts = posts.clone();
                tokio::spawn(async move {
                    for i in 0..per_writer {
                        posts.put(&record(w * per_writer + i)).await.expect("put");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("writer");
        }
    });
    let rate = (writers * per_writer) as f64 / secs(start);
    engine.shutdown();
    rate
}

fn raw_concurrent(writers: usize, per_writer: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = raw_db(dir.path());
    let start = Instant::now();
    std::thread::scope(|scope| {
        for w in 0..writers {
            let db = &db;
            scope.spawn(move || {
                for i in 0..per_writer {
                    raw_insert(db, w * per_writer + i);
                }
            });
        }
    });
    (writers * per_writer) as f64 / secs(start)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let runs = common::runs();
    let n = common::env_usize("TIDESYNC_BENCH_WRITES", 500, 40);
    let rt = common::runtime();
    println!(
        "local_writes: records of {} bytes, Durability::Immediate, median of {runs} runs{}",
        record(0).to_string().len(),
        if common::bench_mode() {
            ""
        } else {
            " (smoke mode: run with `cargo bench` for figures)"
        }
    );

    common::section(&format!("sequential durable writes ({n} per run)"));
    let (mut api, mut raw, mut ratio) = (vec![], vec![], vec![]);
    let (mut p50, mut p99, mut raw_p50, mut raw_p99) = (vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        let ((a, mut lat), (r, mut raw_lat)) = if run % 2 == 0 {
            let a = api_sequential(n, &rt);
            (a, raw_sequential(n))
        } else {
            let r = raw_sequential(n);
            (api_sequential(n, &rt), r)
        };
        lat.sort();
        raw_lat.sort();
        api.push(a);
        raw.push(r);
        ratio.push(a / r);
        p50.push(ms(percentile(&lat, 50.0)));
        p99.push(ms(percentile(&lat, 99.0)));
        raw_p50.push(ms(percentile(&raw_lat, 50.0)));
        raw_p99.push(ms(percentile(&raw_lat, 99.0)));
    }
    println!("  table API        {:>9} writes/s", thousands(median(&api)));
    println!("  raw redb         {:>9} writes/s", thousands(median(&raw)));
    println!(
        "  ratio            {:>9.2}   (target >= 0.8)",
        median(&ratio)
    );
    println!(
        "  latency p50      {:>9.3} ms   (raw redb commit {:.3} ms)",
        median(&p50),
        median(&raw_p50)
    );
    println!(
        "  latency p99      {:>9.3} ms   (raw redb commit {:.3} ms)",
        median(&p99),
        median(&raw_p99)
    );
    common::section_end();

    let writers = 16;
    let per_writer = (n / 4).max(1);
    common::section(&format!(
        "{writers} concurrent writers ({} records per run)",
        writers * per_writer
    ));
    let (mut api, mut raw, mut ratio) = (vec![], vec![], vec![]);
    for run in 0..runs {
        let (a, r) = if run % 2 == 0 {
            let a = api_concurrent(writers, per_writer, &rt);
            (a, raw_concurrent(writers, per_writer))
        } else {
            let r = raw_concurrent(writers, per_writer);
            (api_concurrent(writers, per_writer, &rt), r)
        };
        api.push(a);
        raw.push(r);
        ratio.push(a / r);
    }
    println!(
        "  table API, group commit     {:>9} writes/s",
        thousands(median(&api))
    );
    println!(
        "  raw redb, commit per write  {:>9} writes/s",
        thousands(median(&raw))
    );
    println!(
        "  ratio                       {:>9.1}x  (target >= 10x)",
        median(&ratio)
    );
    common::section_end();
}
